package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SidecarVersionSpec describes one release of the sidecar proxy.
//
// +kubebuilder:validation:XValidation:rule="!has(self.hotUpgrade) || has(self.idleImage)",message="spec.idleImage is required when spec.hotUpgrade is set: the idle slot needs a placeholder image"
type SidecarVersionSpec struct {
	// Version is the semantic version of this release, e.g. 1.4.2 or 1.5.0-rc.1 (a leading v is
	// allowed). It is immutable: a new release is a new SidecarVersion.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.matches('^v?(0|[1-9][0-9]*)[.](0|[1-9][0-9]*)[.](0|[1-9][0-9]*)(-[0-9A-Za-z-]+([.][0-9A-Za-z-]+)*)?([+][0-9A-Za-z-]+([.][0-9A-Za-z-]+)*)?$')",message="spec.version must be a semantic version such as 1.4.2 or 1.5.0-rc.1"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.version is immutable: create a new SidecarVersion for a new release"
	Version string `json:"version"`

	// Image is the proxy container image. It is immutable: a new image is a new SidecarVersion.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="!self.contains(' ')",message="spec.image must not contain spaces"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.image is immutable: create a new SidecarVersion for a new image"
	Image string `json:"image"`

	// IdleImage is the placeholder that occupies the idle slot of a hot-upgrade capable pod. Its
	// entrypoint must ignore the proxy arguments. Required when HotUpgrade is set.
	//
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	IdleImage string `json:"idleImage,omitempty"`

	// HotUpgrade, when set, says this build can take over listening sockets from a running proxy
	// (and hand them over) with the given handoff protocol. Without it, pods running this version
	// get a single proxy container and are upgraded by InPlace or Recreate.
	//
	// +optional
	HotUpgrade *HotUpgradeSpec `json:"hotUpgrade,omitempty"`

	// Resources of the active proxy container. The idle slot gets minimal resources.
	//
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// Args are appended to the arguments the injector renders from the MeshService: at most 64,
	// of at most 1024 characters each. Every injected pod carries them (twice, in both slots), so
	// the limits keep a SidecarVersion from making pods too large to store.
	//
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=1024
	// +listType=atomic
	Args []string `json:"args,omitempty"`

	// Env is added to the proxy containers' environment: at most 64 variables, names of at most
	// 256 characters, values of at most 4096.
	//
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +kubebuilder:validation:XValidation:rule="self.all(e, !e.name.startsWith('MESHLIFT_'))",message="spec.env must not set MESHLIFT_* variables: the injector owns them"
	// +kubebuilder:validation:XValidation:rule="self.all(e, size(e.name) <= 256)",message="spec.env[].name must be at most 256 characters"
	// +kubebuilder:validation:XValidation:rule="self.all(e, !has(e.value) || size(e.value) <= 4096)",message="spec.env[].value must be at most 4096 characters"
	Env []corev1.EnvVar `json:"env,omitempty"`

	// Default marks the version that pods get when neither an UpgradePlan nor the MeshService
	// names one. At most one SidecarVersion may be the default; when several claim it, each gets a
	// DefaultConflict condition and no default is used until the conflict is resolved.
	//
	// +optional
	Default bool `json:"default,omitempty"`

	// Drain tunes how a proxy of this version that handed its listeners over to a newer one
	// retires. A MeshService's spec.drain takes precedence.
	//
	// +optional
	Drain *DrainSpec `json:"drain,omitempty"`
}

// DrainSpec is the drain budget of a hot upgrade.
type DrainSpec struct {
	// MaxDuration is how long the old proxy of a hot-upgraded pod keeps serving the connections
	// that cannot move to the new proxy without loss (raw TCP streams, upgraded connections such as
	// WebSocket, HTTP/2 streams in flight) before it closes them. HTTP/1.1 and HTTP/2 clients are
	// moved at the next request boundary whatever the budget. The pod counts as upgraded once the
	// new proxy took over; its old slot keeps its image and resources ("retiring") until its last
	// connection closes or the budget ends. From 1s to 24h; default 10m (Envoy's hot-restart drain
	// time).
	//
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('24h')",message="spec.drain.maxDuration must be from 1s to 24h, e.g. 10m"
	MaxDuration *metav1.Duration `json:"maxDuration,omitempty"`
}

// HotUpgradeSpec describes the hot-upgrade capability of a proxy build.
type HotUpgradeSpec struct {
	// Protocol is the version of the handoff protocol this build speaks, e.g. "1".
	//
	// +required
	// +kubebuilder:validation:XValidation:rule="self.matches('^[1-9][0-9]{0,3}$')",message="spec.hotUpgrade.protocol must be a positive integer such as \"1\""
	Protocol string `json:"protocol"`
}

// SidecarVersionStatus is the observed state of a SidecarVersion.
type SidecarVersionStatus struct {
	// ObservedGeneration is the generation this status was computed from.
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Pods is the number of pods whose active proxy runs this version.
	//
	// +optional
	Pods int32 `json:"pods"`

	// ReadyPods is the number of those pods whose active proxy container is ready.
	//
	// +optional
	ReadyPods int32 `json:"readyPods"`

	// Conditions: Ready (every pod running this version has a ready proxy) and DefaultConflict
	// (True when more than one SidecarVersion claims spec.default).
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Condition types and reasons of SidecarVersion.
const (
	// ConditionDefaultConflict is True on every default SidecarVersion while more than one exists.
	ConditionDefaultConflict = "DefaultConflict"

	ReasonAllPodsReady      = "AllPodsReady"
	ReasonNoPods            = "NoPods"
	ReasonPodsNotReady      = "PodsNotReady"
	ReasonMultipleDefaults  = "MultipleDefaults"
	ReasonSingleDefault     = "SingleDefault"
	ReasonVersionUnresolved = "VersionUnresolved"
)

// SidecarVersion is one release of the sidecar proxy: its image, the placeholder for the idle
// hot-upgrade slot, the handoff protocol it speaks and its resources.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=sv;sidecarver,categories=meshlift
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.spec.version`
// +kubebuilder:printcolumn:name="Image",type=string,JSONPath=`.spec.image`,priority=1
// +kubebuilder:printcolumn:name="Hot-Upgrade",type=string,JSONPath=`.spec.hotUpgrade.protocol`
// +kubebuilder:printcolumn:name="Default",type=boolean,JSONPath=`.spec.default`
// +kubebuilder:printcolumn:name="Pods",type=integer,JSONPath=`.status.pods`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type SidecarVersion struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec   SidecarVersionSpec   `json:"spec"`
	Status SidecarVersionStatus `json:"status,omitempty"`
}

// SidecarVersionList is a list of SidecarVersions.
//
// +kubebuilder:object:root=true
type SidecarVersionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SidecarVersion `json:"items"`
}

// HotUpgradeCapable reports whether pods running this version get two slots.
func (v *SidecarVersion) HotUpgradeCapable() bool {
	return v.Spec.HotUpgrade != nil && v.Spec.HotUpgrade.Protocol != ""
}

func init() {
	SchemeBuilder.Register(&SidecarVersion{}, &SidecarVersionList{})
}
