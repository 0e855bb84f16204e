package rollout

import (
	"fmt"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshlift/meshlift/internal/sidecar"
)

// resizeProgress is how far the kubelet got with an in-place resize of a slot.
type resizeProgress int

const (
	// resizeNotAsked: the pod's spec does not have the resources, so the resize is asked for
	// (again: one lost in a crash or a conflict is simply asked for again).
	resizeNotAsked resizeProgress = iota
	// resizeWaiting: the spec has the resources and the kubelet has not applied them yet.
	// Asking again would change nothing: the planner waits.
	resizeWaiting
	// resizeInfeasible: the kubelet refused the resize and will not try it again by itself.
	resizeInfeasible
	// resizeApplied: the container runs with the resources.
	resizeApplied
)

// maxKubeletMessage bounds the part of a kubelet message that goes into a pod's record, which
// must stay under the annotation's limits (MaxStateSize, 512 bytes of reason).
const maxKubeletMessage = 256

// slotResize says how far the resize of slot to want got and, when it is not applied, why in
// words (for the pod's record).
//
// A resize is applied when the spec has the resources, the container's status reports them
// (status.containerStatuses[].resources: what the kubelet enacted) and the pod has no
// PodResizeInProgress condition; PodResizePending (Deferred or Infeasible) holds it too, unless
// the status already reports the resources: the conditions are the pod's, not the container's,
// and then the pending resize is another container's, asked for later.
//
// A kubelet that reports no resources in the container's status (in-place resize disabled, or
// a kubelet from before it reported them) is trusted with the spec once the pod has no resize
// condition: there is nothing else to wait for, and waiting would fail every upgrade at its
// deadline.
func slotResize(pod *corev1.Pod, slot int, want corev1.ResourceRequirements) (resizeProgress, string) {
	container := sidecar.Container(pod, slot)
	if container == nil || !resourcesEqual(container.Resources, want) {
		return resizeNotAsked, ""
	}
	var enacted *corev1.ResourceRequirements
	if status := containerStatus(pod, container.Name); status != nil {
		enacted = status.Resources
	}
	reported := enacted != nil && enactedCovers(*enacted, want)
	pending, inProgress := podCondition(pod, corev1.PodResizePending), podCondition(pod, corev1.PodResizeInProgress)
	switch {
	case pending != nil && !reported && pending.Reason == corev1.PodReasonInfeasible:
		return resizeInfeasible, fmt.Sprintf("the kubelet cannot resize container %s: %s", container.Name, kubeletMessage(pending.Message))
	case pending != nil && !reported && pending.Reason == corev1.PodReasonDeferred:
		return resizeWaiting, "the kubelet deferred the resize: " + kubeletMessage(pending.Message)
	case pending != nil && !reported:
		return resizeWaiting, "the resize is pending on the kubelet"
	case inProgress != nil && inProgress.Reason == corev1.PodReasonError:
		return resizeWaiting, "the kubelet failed to apply the resize and retries: " + kubeletMessage(inProgress.Message)
	case inProgress != nil:
		return resizeWaiting, "the kubelet is applying the resize"
	case enacted != nil && !reported:
		return resizeWaiting, "the kubelet has not applied the resize yet"
	}
	return resizeApplied, ""
}

// enactedCovers reports whether a container's status reports every request and limit of want.
// Only what want names is compared: the status may carry more (ephemeral storage). CPU below the
// kubelet's floors (2m of requests, which become the minimum of 2 cpu shares; 10m of limits) is
// compared as the floor, since that is all the kubelet can read back from the runtime.
func enactedCovers(enacted, want corev1.ResourceRequirements) bool {
	covers := func(got, wanted corev1.ResourceList, cpuFloor int64) bool {
		for name, w := range wanted {
			g, ok := got[name]
			switch {
			case !ok:
				return false
			case name == corev1.ResourceCPU && g.MilliValue() <= cpuFloor && w.MilliValue() <= cpuFloor:
			case g.Cmp(w) != 0:
				return false
			}
		}
		return true
	}
	return covers(enacted.Requests, want.Requests, minCPUShares) && covers(enacted.Limits, want.Limits, minCPULimit)
}

// The kubelet's CPU floors, in millicores (k8s.io/kubernetes/pkg/kubelet/cm MinShares and
// MinMilliCPULimit).
const (
	minCPUShares = 2
	minCPULimit  = 10
)

func podCondition(pod *corev1.Pod, conditionType corev1.PodConditionType) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if c := &pod.Status.Conditions[i]; c.Type == conditionType && c.Status == corev1.ConditionTrue {
			return c
		}
	}
	return nil
}

// kubeletMessage is a kubelet's message cut to maxKubeletMessage bytes, on a rune boundary.
func kubeletMessage(message string) string {
	if message == "" {
		return "no message"
	}
	if len(message) <= maxKubeletMessage {
		return message
	}
	cut := maxKubeletMessage
	for cut > 0 && !utf8.RuneStart(message[cut]) {
		cut--
	}
	return message[:cut] + "..."
}
