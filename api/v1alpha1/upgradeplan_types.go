package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// UpgradePlanSpec is the durable desired sidecar version of a set of MeshServices and how to get
// there. Like a Deployment, it keeps governing after it finished: pods created later get the
// target version too.
//
// +kubebuilder:validation:XValidation:rule="has(self.selector) != has(self.meshServices)",message="set exactly one of spec.selector or spec.meshServices"
type UpgradePlanSpec struct {
	// Selector picks the MeshServices of this namespace that the plan governs, by label. An
	// empty selector ({}) picks every MeshService of the namespace.
	//
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'] && ((e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0)))",message="spec.selector.matchExpressions: operator must be In, NotIn, Exists or DoesNotExist; In and NotIn need values, Exists and DoesNotExist take none"
	Selector *metav1.LabelSelector `json:"selector,omitempty"`

	// MeshServices names the MeshServices of this namespace that the plan governs.
	//
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=100
	// +listType=set
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.all(n, n.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))",message="spec.meshServices must hold MeshService names (DNS labels)"
	MeshServices []string `json:"meshServices,omitempty"`

	// TargetVersion is the name of the SidecarVersion the pods should run.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="spec.targetVersion must be the name of a SidecarVersion"
	TargetVersion string `json:"targetVersion"`

	// Strategy says how each pod is moved to the target and how many at a time.
	//
	// +optional
	// +kubebuilder:default={}
	Strategy UpgradeStrategy `json:"strategy,omitempty"`

	// Paused stops starting new pod upgrades; upgrades in flight finish.
	//
	// +optional
	Paused bool `json:"paused,omitempty"`

	// Health is the per-pod health gate.
	//
	// +optional
	// +kubebuilder:default={}
	Health HealthSpec `json:"health,omitempty"`

	// FailurePolicy applies once more than MaxFailedPods pods failed: Pause (the default) stops
	// the plan, Rollback returns every upgraded pod to the version it came from.
	//
	// +optional
	// +kubebuilder:default=Pause
	FailurePolicy FailurePolicy `json:"failurePolicy,omitempty"`

	// MaxFailedPods is how many pods may fail (each is put back on its old version) before
	// FailurePolicy applies. The default 0 applies it at the first failure.
	//
	// +optional
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	MaxFailedPods int32 `json:"maxFailedPods,omitempty"`
}

// StrategyType is how one pod's sidecar is moved to the target version.
//
// +kubebuilder:validation:Enum=HotUpgrade;InPlace;Recreate
type StrategyType string

// Strategies.
const (
	// StrategyHotUpgrade starts the target in the idle slot, which takes the listening sockets
	// over from the active one; neither the application nor a connection is disturbed.
	StrategyHotUpgrade StrategyType = "HotUpgrade"
	// StrategyInPlace takes the pod out of the endpoints, swaps the proxy image and puts it back.
	StrategyInPlace StrategyType = "InPlace"
	// StrategyRecreate evicts the pod; its replacement is injected with the target.
	StrategyRecreate StrategyType = "Recreate"
)

// FailurePolicy is what a plan does once too many pods failed.
//
// +kubebuilder:validation:Enum=Pause;Rollback
type FailurePolicy string

// Failure policies.
const (
	FailurePolicyPause    FailurePolicy = "Pause"
	FailurePolicyRollback FailurePolicy = "Rollback"
)

// UpgradeStrategy says how pods are moved to the target version.
type UpgradeStrategy struct {
	// Type is HotUpgrade (the default), InPlace or Recreate. Pods whose current version cannot
	// hot-upgrade are moved InPlace.
	//
	// +optional
	// +kubebuilder:default=HotUpgrade
	Type StrategyType `json:"type,omitempty"`

	// MaxUnavailable is how many pods may be upgrading or unavailable at once, as a count (>= 1)
	// or a percentage of the plan's pods (1%..100%, rounded up). Pods that are unavailable for
	// other reasons count against it. Default 1.
	//
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=8
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 1 : self.matches('^(100|[1-9][0-9]?)%$')",message="spec.strategy.maxUnavailable must be an integer >= 1 or a percentage from 1% to 100%"
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`

	// Steps split the plan into stages; each step upgrades pods until Partition pods run the
	// target, then optionally pauses. Partitions strictly increase and the last one is 100% (or
	// the full pod count). Without steps, the plan upgrades all pods in one stage.
	//
	// +optional
	// +kubebuilder:validation:MaxItems=10
	// +listType=atomic
	// +kubebuilder:validation:XValidation:rule="size(self) == 0 || type(self[size(self)-1].partition) == int || self[size(self)-1].partition == '100%'",message="the last of spec.strategy.steps must have partition 100% (or the full pod count) so the plan finishes"
	// +kubebuilder:validation:XValidation:rule="[0,1,2,3,4,5,6,7,8].all(i, i >= size(self) - 1 || (type(self[i].partition) == int && type(self[i+1].partition) == int ? self[i].partition < self[i+1].partition : (type(self[i].partition) == string && type(self[i+1].partition) == string ? int(self[i].partition.replace('%', '')) < int(self[i+1].partition.replace('%', '')) : true)))",message="spec.strategy.steps partitions must strictly increase (counts are compared with counts, percentages with percentages)"
	Steps []UpgradeStep `json:"steps,omitempty"`
}

// UpgradeStep is one stage of a plan.
type UpgradeStep struct {
	// Partition is how many pods run the target at the end of this step: a count (>= 1) or a
	// percentage of the plan's pods (1%..100%, rounded up).
	//
	// +required
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=8
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 1 : self.matches('^(100|[1-9][0-9]?)%$')",message="spec.strategy.steps[].partition must be an integer >= 1 or a percentage from 1% to 100%"
	Partition intstr.IntOrString `json:"partition"`

	// Pause, when set, holds the plan after this step: for Duration, or without a duration
	// until it is resumed (kubectl meshlift upgrade resume).
	//
	// +optional
	Pause *StepPause `json:"pause,omitempty"`
}

// StepPause holds a plan after a step.
type StepPause struct {
	// Duration of the pause, e.g. 30s, 5m or 1h. Without it the plan waits to be resumed.
	//
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$')",message="spec.strategy.steps[].pause.duration must be a duration such as 30s, 5m or 1h30m"
	Duration *metav1.Duration `json:"duration,omitempty"`
}

// HealthSpec is the per-pod health gate of a plan.
type HealthSpec struct {
	// ProgressDeadlineSeconds is how long one pod's new proxy has to become ready before the pod
	// counts as failed and is put back on its old version. Default 300.
	//
	// +optional
	// +kubebuilder:default=300
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=86400
	ProgressDeadlineSeconds int32 `json:"progressDeadlineSeconds,omitempty"`

	// MinReadySeconds is how long a pod's new proxy must stay ready before the pod counts as
	// upgraded. Default 0.
	//
	// +optional
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	MinReadySeconds int32 `json:"minReadySeconds,omitempty"`
}

// UpgradePhase is the coarse state of a plan.
//
// +kubebuilder:validation:Enum=Pending;Progressing;Paused;Succeeded;Failed;RollingBack;RolledBack
type UpgradePhase string

// Plan phases.
const (
	PhasePending     UpgradePhase = "Pending"
	PhaseProgressing UpgradePhase = "Progressing"
	PhasePaused      UpgradePhase = "Paused"
	PhaseSucceeded   UpgradePhase = "Succeeded"
	PhaseFailed      UpgradePhase = "Failed"
	PhaseRollingBack UpgradePhase = "RollingBack"
	PhaseRolledBack  UpgradePhase = "RolledBack"
)

// UpgradePlanStatus is the observed state of an UpgradePlan.
type UpgradePlanStatus struct {
	// Phase is Pending, Progressing, Paused, Succeeded, Failed, RollingBack or RolledBack.
	//
	// +optional
	Phase UpgradePhase `json:"phase,omitempty"`

	// ObservedGeneration is the generation this status was computed from.
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Counts of the pods the plan governs.
	//
	// +optional
	Counts UpgradeCounts `json:"counts,omitempty"`

	// CurrentStep is the index of the step in progress (0 without steps).
	//
	// +optional
	CurrentStep int32 `json:"currentStep,omitempty"`

	// StartTime is when the plan started upgrading its first pod for the current target.
	//
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// CompletionTime is when every pod reached the target.
	//
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// Pods records the pods in flight or failed (bounded; the counts are always complete).
	//
	// +optional
	// +kubebuilder:validation:MaxItems=100
	// +listType=map
	// +listMapKey=pod
	Pods []PodUpgradeStatus `json:"pods,omitempty"`

	// Conditions: Progressing, Paused, Complete, Failed, RolledBack and Conflict.
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// UpgradeCounts counts the pods of a plan.
type UpgradeCounts struct {
	// Total is the number of pods the plan governs.
	Total int32 `json:"total"`
	// Updated is the number of pods running the target version.
	Updated int32 `json:"updated"`
	// Ready is the number of updated pods that passed the health gate.
	Ready int32 `json:"ready"`
	// Failed is the number of pods whose upgrade failed.
	Failed int32 `json:"failed"`
	// Retiring is the number of updated pods whose old proxy still serves connections that could
	// not move without loss (spec.drain.maxDuration of the SidecarVersion or MeshService).
	//
	// +optional
	Retiring int32 `json:"retiring,omitempty"`
	// RetiringConnections is how many connections those old proxies held at their last report.
	//
	// +optional
	RetiringConnections int32 `json:"retiringConnections,omitempty"`
}

// PodUpgradeStatus is the state of one pod's upgrade.
type PodUpgradeStatus struct {
	// Pod is the pod name.
	Pod string `json:"pod"`
	// From is the SidecarVersion the pod ran before.
	From string `json:"from,omitempty"`
	// To is the SidecarVersion the pod is moving to.
	To string `json:"to,omitempty"`
	// Phase is the pod's step in its upgrade, e.g. Resizing, Swapping, Draining, Failed.
	Phase string `json:"phase"`
	// Reason explains a failure.
	//
	// +optional
	Reason string `json:"reason,omitempty"`
	// Connections is, for a Retiring pod, how many connections its old proxy still served at its
	// last report.
	//
	// +optional
	Connections *int32 `json:"connections,omitempty"`
	// LastTransitionTime is when Phase last changed.
	//
	// +optional
	LastTransitionTime *metav1.Time `json:"lastTransitionTime,omitempty"`
}

// Condition types of UpgradePlan.
const (
	ConditionProgressing = "Progressing"
	ConditionPaused      = "Paused"
	ConditionComplete    = "Complete"
	ConditionFailed      = "Failed"
	ConditionRolledBack  = "RolledBack"
	// ConditionConflict is True when an older plan governs the same MeshService.
	ConditionConflict = "Conflict"
)

// UpgradePlan is the sidecar version a set of MeshServices should run and how to get there:
// strategy, batches, budget, health gate and what to do on failure.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=up;uplan,categories=meshlift
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.targetVersion`
// +kubebuilder:printcolumn:name="Strategy",type=string,JSONPath=`.spec.strategy.type`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Updated",type=integer,JSONPath=`.status.counts.updated`
// +kubebuilder:printcolumn:name="Total",type=integer,JSONPath=`.status.counts.total`
// +kubebuilder:printcolumn:name="Retiring",type=integer,JSONPath=`.status.counts.retiring`,priority=1
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.counts.failed`,priority=1
// +kubebuilder:printcolumn:name="Paused",type=boolean,JSONPath=`.spec.paused`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type UpgradePlan struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec   UpgradePlanSpec   `json:"spec"`
	Status UpgradePlanStatus `json:"status,omitempty"`
}

// UpgradePlanList is a list of UpgradePlans.
//
// +kubebuilder:object:root=true
type UpgradePlanList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []UpgradePlan `json:"items"`
}

func init() {
	SchemeBuilder.Register(&UpgradePlan{}, &UpgradePlanList{})
}
