package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MeshServiceSpec selects pods that are in the mesh and says how their sidecar is set up.
type MeshServiceSpec struct {
	// Selector picks the pods of this MeshService, in its namespace, by label. It must not be
	// empty: an empty selector would mesh every pod of the namespace.
	//
	// +required
	// +kubebuilder:validation:XValidation:rule="(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)",message="spec.selector must not be empty: set matchLabels or matchExpressions (an empty selector would mesh every pod in the namespace)"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'] && ((e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0)))",message="spec.selector.matchExpressions: operator must be In, NotIn, Exists or DoesNotExist; In and NotIn need values, Exists and DoesNotExist take none"
	Selector metav1.LabelSelector `json:"selector"`

	// Ports are the application's ports that the sidecar serves inbound. The TLS SNI
	// <port-name>.<meshservice>.<namespace> selects the port.
	//
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	// +kubebuilder:validation:XValidation:rule="self.all(p, self.exists_one(q, q.name == p.name))",message="spec.ports must have unique names"
	// +kubebuilder:validation:XValidation:rule="self.all(p, self.exists_one(q, q.port == p.port))",message="spec.ports must have unique port numbers"
	Ports []MeshServicePort `json:"ports,omitempty"`

	// MTLS configures inbound mutual TLS.
	//
	// +optional
	// +kubebuilder:default={}
	MTLS MTLSSpec `json:"mtls,omitempty"`

	// Upstreams are the MeshServices this workload calls. The sidecar opens a localhost listener
	// per upstream on LocalPort and forwards to that MeshService's endpoints over mTLS.
	//
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +kubebuilder:validation:XValidation:rule="self.all(u, self.exists_one(v, v.localPort == u.localPort))",message="spec.upstreams must use each localPort once"
	Upstreams []Upstream `json:"upstreams,omitempty"`

	// Sidecar pins the proxy version of this MeshService. An UpgradePlan that governs the
	// MeshService takes precedence; without either, the default SidecarVersion is used.
	//
	// +optional
	Sidecar SidecarSpec `json:"sidecar,omitempty"`

	// Injection tunes how the sidecar is injected.
	//
	// +optional
	Injection InjectionSpec `json:"injection,omitempty"`

	// Drain sets the drain budget of this MeshService's pods during hot upgrades; it takes
	// precedence over the SidecarVersion's spec.drain.
	//
	// +optional
	Drain *DrainSpec `json:"drain,omitempty"`

	// Capture tunes traffic capture for this MeshService's pods. It applies only when the
	// operator captures traffic (--capture-mode=cni); with the default,
	// none, nothing is captured whatever it says. Inbound connections are always captured
	// under capture (that is what makes STRICT hold for every client); exclude single ports
	// with the pod annotation meshlift.io/exclude-inbound-ports.
	//
	// +optional
	Capture *CaptureSpec `json:"capture,omitempty"`
}

// CaptureSpec tunes traffic capture for a MeshService's pods.
type CaptureSpec struct {
	// Outbound redirects the application's outbound TCP connections to its proxy (true, the
	// default). Set it to false for a workload whose outbound traffic must not go through the
	// proxy; its inbound connections are still captured.
	//
	// +optional
	// +kubebuilder:default=true
	Outbound *bool `json:"outbound,omitempty"`
}

// Protocol is the application protocol of a port.
//
// +kubebuilder:validation:Enum=HTTP;HTTP2;GRPC;TCP
type Protocol string

// Protocols the proxy understands. TCP is the fallback for anything else.
const (
	ProtocolHTTP  Protocol = "HTTP"
	ProtocolHTTP2 Protocol = "HTTP2"
	ProtocolGRPC  Protocol = "GRPC"
	ProtocolTCP   Protocol = "TCP"
)

// MeshServicePort is one application port served through the sidecar.
//
// +kubebuilder:validation:XValidation:rule="self.port < 15000 || self.port > 15099",message="spec.ports[].port must not be in 15000-15099: that range is reserved for meshlift-proxy"
type MeshServicePort struct {
	// Name is a DNS label (e.g. http, grpc-api); it is part of the SNI clients use.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="spec.ports[].name must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit"
	Name string `json:"name"`

	// Port is the port the application listens on (on localhost, from the sidecar's view).
	//
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`

	// Protocol of the port: HTTP, HTTP2, GRPC or TCP (the default, which works for anything but
	// gives no per-request stats and no graceful HTTP drain).
	//
	// +optional
	// +kubebuilder:default=TCP
	Protocol Protocol `json:"protocol,omitempty"`
}

// MTLSMode is the inbound mutual TLS mode.
//
// +kubebuilder:validation:Enum=STRICT;PERMISSIVE
type MTLSMode string

// Inbound mutual TLS modes.
const (
	// MTLSStrict accepts only mTLS connections from mesh identities.
	MTLSStrict MTLSMode = "STRICT"
	// MTLSPermissive accepts mTLS and plaintext, for migrating clients into the mesh.
	MTLSPermissive MTLSMode = "PERMISSIVE"
)

// MTLSSpec configures inbound mutual TLS.
type MTLSSpec struct {
	// Mode is STRICT (mTLS only, the default) or PERMISSIVE (mTLS and plaintext).
	//
	// +optional
	// +kubebuilder:default=STRICT
	Mode MTLSMode `json:"mode,omitempty"`
}

// Upstream is a MeshService this workload calls through its sidecar.
//
// +kubebuilder:validation:XValidation:rule="self.localPort < 15000 || self.localPort > 15099",message="spec.upstreams[].localPort must not be in 15000-15099: that range is reserved for meshlift-proxy"
type Upstream struct {
	// MeshService is the upstream's name, or name.namespace for another namespace.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=127
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)?$')",message="spec.upstreams[].meshService must be a MeshService name or name.namespace"
	MeshService string `json:"meshService"`

	// Port is the name of the upstream MeshService's port to call.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="spec.upstreams[].port must be the name of a port of the upstream MeshService"
	Port string `json:"port"`

	// LocalPort is the localhost port the application connects to for this upstream.
	//
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	LocalPort int32 `json:"localPort"`
}

// SidecarSpec pins the sidecar of a MeshService.
type SidecarSpec struct {
	// Version is the name of the SidecarVersion new pods get, unless an UpgradePlan governs
	// this MeshService.
	//
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="spec.sidecar.version must be the name of a SidecarVersion"
	Version string `json:"version,omitempty"`
}

// InjectionSpec tunes injection. Unset fields take the operator's defaults (see docs/).
type InjectionSpec struct {
	// NativeSidecar injects the proxy as restartable init containers (Kubernetes native
	// sidecars) instead of regular containers.
	//
	// +optional
	NativeSidecar *bool `json:"nativeSidecar,omitempty"`

	// HoldApplicationUntilProxyStarts starts the application only once the proxy is ready, so
	// the application never sees "connection refused" from its upstream listeners at startup.
	//
	// +optional
	HoldApplicationUntilProxyStarts *bool `json:"holdApplicationUntilProxyStarts,omitempty"`

	// ProxyReadinessGate adds the meshlift.io/proxy-ready readiness gate, which the operator
	// sets once the active proxy is ready. Off by default: such pods cannot become Ready while
	// the operator is down.
	//
	// +optional
	ProxyReadinessGate bool `json:"proxyReadinessGate,omitempty"`
}

// MeshServiceStatus is the observed state of a MeshService.
type MeshServiceStatus struct {
	// ObservedGeneration is the generation this status was computed from.
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// CurrentVersion is the SidecarVersion new pods of this MeshService get.
	//
	// +optional
	CurrentVersion string `json:"currentVersion,omitempty"`

	// VersionSource says where CurrentVersion comes from: UpgradePlan, MeshService or Default.
	//
	// +optional
	VersionSource VersionSource `json:"versionSource,omitempty"`

	// Identity lists the SPIFFE IDs of the service accounts the pods run as.
	//
	// +optional
	// +listType=atomic
	Identity []string `json:"identity,omitempty"`

	// Pods counts the pods of this MeshService.
	//
	// +optional
	Pods MeshServicePods `json:"pods,omitempty"`

	// Conditions: Ready (a version is resolved and every pod is injected and ready) and
	// VersionDrift (True while injected pods run a version other than CurrentVersion).
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// VersionSource says which rule picked a MeshService's current version.
type VersionSource string

// Version sources, highest precedence first.
const (
	VersionSourceUpgradePlan VersionSource = "UpgradePlan"
	VersionSourceMeshService VersionSource = "MeshService"
	VersionSourceDefault     VersionSource = "Default"
)

// MeshServicePods counts the pods of a MeshService. Terminating and finished pods are not
// counted.
type MeshServicePods struct {
	// Matched is the number of pods the selector matches.
	Matched int32 `json:"matched"`
	// Injected is the number of matched pods that carry a sidecar.
	Injected int32 `json:"injected"`
	// Ready is the number of matched pods that are Ready.
	Ready int32 `json:"ready"`
	// ByVersion counts injected pods per SidecarVersion.
	//
	// +optional
	// +listType=map
	// +listMapKey=version
	ByVersion []VersionCount `json:"byVersion,omitempty"`
}

// VersionCount is the number of pods running one SidecarVersion.
type VersionCount struct {
	// Version is the SidecarVersion name.
	Version string `json:"version"`
	// Pods is the number of pods running it.
	Pods int32 `json:"pods"`
}

// Condition types and reasons of MeshService.
const (
	// ConditionVersionDrift is True while injected pods run a version other than currentVersion.
	ConditionVersionDrift = "VersionDrift"

	ReasonPodsNotInjected     = "PodsNotInjected"
	ReasonNoMatchingPods      = "NoMatchingPods"
	ReasonPodsOnOtherVersions = "PodsOnOtherVersions"
	ReasonAllPodsCurrent      = "AllPodsCurrent"
)

// MeshService is a set of pods in the mesh: the injector gives them a sidecar, the identity
// issuer gives them a SPIFFE identity, and UpgradePlans move their sidecars between versions.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=msvc;meshsvc,categories=meshlift
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.currentVersion`
// +kubebuilder:printcolumn:name="Matched",type=integer,JSONPath=`.status.pods.matched`
// +kubebuilder:printcolumn:name="Injected",type=integer,JSONPath=`.status.pods.injected`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.pods.ready`
// +kubebuilder:printcolumn:name="mTLS",type=string,JSONPath=`.spec.mtls.mode`,priority=1
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeshService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec   MeshServiceSpec   `json:"spec"`
	Status MeshServiceStatus `json:"status,omitempty"`
}

// MeshServiceList is a list of MeshServices.
//
// +kubebuilder:object:root=true
type MeshServiceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshService `json:"items"`
}

func init() {
	SchemeBuilder.Register(&MeshService{}, &MeshServiceList{})
}
