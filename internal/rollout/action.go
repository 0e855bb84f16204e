package rollout

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
)

// ActionKind names what an action does to a pod.
type ActionKind string

// Action kinds.
const (
	// ActionResizeSlotUp gives the idle slot the target's resources (pods/resize) before it
	// takes over.
	ActionResizeSlotUp ActionKind = "ResizeSlotUp"
	// ActionSwapSlot sets the idle slot's image to the target together with active-slot and
	// version, in one patch: the new proxy starts and takes the listeners over.
	ActionSwapSlot ActionKind = "SwapSlot"
	// ActionRecordReady records that the new proxy is ready (start of minReadySeconds).
	ActionRecordReady ActionKind = "RecordReady"
	// ActionStartRetiring records that the pod passed its health gate while its old proxy still
	// serves connections: the old slot keeps its image and resources for now.
	ActionStartRetiring ActionKind = "StartRetiring"
	// ActionRetireSlot sets the old slot's image to the idle placeholder and resizes it down.
	ActionRetireSlot ActionKind = "RetireSlot"
	// ActionResizeSlotDown shrinks a slot to the idle resources.
	ActionResizeSlotDown ActionKind = "ResizeSlotDown"
	// ActionFinish records that the pod runs the target.
	ActionFinish ActionKind = "Finish"
	// ActionExclude takes the pod out of EDS (and its proxy-ready gate False) before a cold
	// restart of its proxy.
	ActionExclude ActionKind = "ExcludeFromEndpoints"
	// ActionSwapImage changes the proxy container's image in place; the proxy restarts cold.
	ActionSwapImage ActionKind = "SwapImage"
	// ActionRestore puts the pod back into EDS.
	ActionRestore ActionKind = "RestoreEndpoints"
	// ActionEvict evicts the pod through the Eviction API; its replacement gets the target.
	ActionEvict ActionKind = "Evict"
	// ActionRevert puts the pod back on the version it came from.
	ActionRevert ActionKind = "Revert"
	// ActionMarkFailed and ActionMarkAborted end an upgrade that has nothing left to undo.
	ActionMarkFailed  ActionKind = "MarkFailed"
	ActionMarkAborted ActionKind = "MarkAborted"
)

// ImageChange sets the image of a proxy container.
type ImageChange struct {
	// Slot is the slot (0: the single proxy container) and Container its name.
	Slot      int
	Container string
	Image     string
}

// AnnotationChange sets (or, with Remove, deletes) a pod annotation.
type AnnotationChange struct {
	Key    string
	Value  string
	Remove bool
}

// Resize is a change of a proxy container's resources through the pods/resize subresource.
type Resize struct {
	Slot      int
	Container string
	Resources corev1.ResourceRequirements
}

// Action is one next step for one pod, as data: the controller turns it into API calls, in this
// order, and stops at the first error (the next decision repeats what did not happen):
//
//  1. one patch of the pod with State (the meshlift.io/upgrade annotation), Annotations and
//     Images: everything a single patch can change atomically, the state first of all;
//  2. ProxyReadyGate, when set, on the pod's status (meshlift.io/proxy-ready condition);
//  3. Resize through pods/resize;
//  4. Evict through the Eviction API.
//
// State is therefore always written before the step it describes is taken.
type Action struct {
	Pod  types.NamespacedName
	UID  types.UID
	Kind ActionKind
	// State is the new value of meshlift.io/upgrade; nil leaves the annotation as it is.
	State *PodState
	// Images and Annotations are changed in the same patch as State.
	Images      []ImageChange
	Annotations []AnnotationChange
	// ProxyReadyGate, when set, is the status the meshlift.io/proxy-ready condition gets (only
	// for pods that carry the readiness gate).
	ProxyReadyGate *corev1.ConditionStatus
	// Resize, when set, is applied after the patch.
	Resize *Resize
	// Evict asks for the pod's eviction after the patch.
	Evict bool
	// Reason explains the action in words (for events and logs).
	Reason string
	// ConnectionsCut marks the retirement of an old proxy that closed connections at the end of
	// its drain budget (or may have: it did not say): the controller warns about it on the pod.
	ConnectionsCut bool
	// DrainUnconfirmed marks an InPlace restart that goes ahead without a confirmed drain (the
	// drain timeout passed): the controller warns about it.
	DrainUnconfirmed bool
}

// ApplyPatch returns a copy of pod with the action's single patch applied: State, Annotations
// and Images. The controller may compute its patch with sidecar.CreatePatch(pod, result).
func (a *Action) ApplyPatch(pod *corev1.Pod) (*corev1.Pod, error) {
	out := pod.DeepCopy()
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	if a.State != nil {
		value, err := EncodeState(a.State)
		if err != nil {
			return nil, fmt.Errorf("failed to apply %s to pod %s: %w", a.Kind, a.Pod, err)
		}
		out.Annotations[meshv1alpha1.AnnotationUpgrade] = value
	}
	for _, change := range a.Annotations {
		if change.Remove {
			delete(out.Annotations, change.Key)
		} else {
			out.Annotations[change.Key] = change.Value
		}
	}
	for _, change := range a.Images {
		c := sidecar.Container(out, change.Slot)
		if c == nil {
			return nil, fmt.Errorf("failed to apply %s: pod %s has no container %s", a.Kind, a.Pod, change.Container)
		}
		c.Image = change.Image
	}
	return out, nil
}

// ApplyResize returns a copy of pod with the action's resize applied to the spec (what the
// pods/resize subresource changes); pod itself when the action resizes nothing.
func (a *Action) ApplyResize(pod *corev1.Pod) (*corev1.Pod, error) {
	if a.Resize == nil {
		return pod, nil
	}
	out := pod.DeepCopy()
	c := sidecar.Container(out, a.Resize.Slot)
	if c == nil {
		return nil, fmt.Errorf("failed to resize: pod %s has no container %s", a.Pod, a.Resize.Container)
	}
	c.Resources = *a.Resize.Resources.DeepCopy()
	return out, nil
}

// String renders the action on one line, e.g.
// "SwapSlot web-1: meshlift-proxy-2 image=proxy:2, meshlift.io/active-slot=2 -> WaitingReady".
func (a *Action) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s:", a.Kind, a.Pod.Name)
	var parts []string
	for _, change := range a.Images {
		parts = append(parts, fmt.Sprintf("%s image=%s", change.Container, change.Image))
	}
	for _, change := range a.Annotations {
		if change.Remove {
			parts = append(parts, "-"+change.Key)
		} else {
			parts = append(parts, change.Key+"="+change.Value)
		}
	}
	if a.ProxyReadyGate != nil {
		parts = append(parts, fmt.Sprintf("%s=%s", meshv1alpha1.ReadinessGateProxyReady, *a.ProxyReadyGate))
	}
	if a.Resize != nil {
		parts = append(parts, fmt.Sprintf("resize %s to %s", a.Resize.Container, resourcesString(a.Resize.Resources)))
	}
	if a.Evict {
		parts = append(parts, "evict")
	}
	if len(parts) > 0 {
		b.WriteString(" " + strings.Join(parts, ", "))
	}
	if a.State != nil {
		fmt.Fprintf(&b, " -> %s", a.State.Phase)
		if a.State.Phase == PodReverting {
			fmt.Fprintf(&b, "(%s)", a.State.Outcome)
		}
	}
	if a.Reason != "" {
		fmt.Fprintf(&b, " (%s)", a.Reason)
	}
	return b.String()
}

func resourcesString(r corev1.ResourceRequirements) string {
	list := func(prefix string, l corev1.ResourceList) string {
		var names []string
		for name := range l {
			names = append(names, string(name))
		}
		slices.Sort(names)
		var parts []string
		for _, name := range names {
			q := l[corev1.ResourceName(name)]
			parts = append(parts, name+"="+q.String())
		}
		return prefix + "{" + strings.Join(parts, ",") + "}"
	}
	return list("requests", r.Requests) + " " + list("limits", r.Limits)
}
