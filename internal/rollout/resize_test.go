package rollout_test

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/rollout"
	"github.com/meshlift/meshlift/internal/sidecar"
)

const (
	deferredMessage   = "Node didn't have enough resource: cpu, requested: 100, used: 1950, capacity: 2000"
	infeasibleMessage = "Node didn't have enough capacity: cpu, requested: 100, capacity: 50"
)

func resizePending(reason, message string) corev1.PodCondition {
	return corev1.PodCondition{Type: corev1.PodResizePending, Status: corev1.ConditionTrue, Reason: reason, Message: message}
}

// countResizes counts, from now on, the actions that ask for a resize of pod.
func countResizes(s *sim, pod string) *int {
	n := new(int)
	s.checks = func(_ *sim, res rollout.Result) {
		if a := actionFor(res, pod); a != nil && a.Resize != nil {
			*n++
		}
	}
	return n
}

// recordFor is the pod's status.pods record.
func recordFor(res rollout.Result, pod string) *meshv1alpha1.PodUpgradeStatus {
	for i := range res.Pods {
		if res.Pods[i].Pod == pod {
			return &res.Pods[i]
		}
	}
	return nil
}

// retireWith makes the kubelet leave the shrink of the retired slot pending with condition.
func retireWith(s *sim, pod string, condition corev1.PodCondition) {
	s.checks = func(s *sim, res rollout.Result) {
		if a := actionFor(res, pod); a != nil && a.Kind == rollout.ActionRetireSlot {
			s.resizePending[pod] = condition
		}
	}
}

func TestInPlaceResize(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*sim)
		check func(*testing.T, *sim, rollout.Result)
	}{
		{
			name: "waits without asking again for a resize the kubelet deferred, and says why",
			setup: func(s *sim) {
				s.resizePending["web-0"] = resizePending(corev1.PodReasonDeferred, deferredMessage)
				resizes := countResizes(s, "web-0")
				s.advance(10)
				if *resizes != 1 {
					s.t.Errorf("the resize was asked for %d times, want once", *resizes)
				}
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				pod := s.pod("web-0")
				if a := actionFor(res, "web-0"); a != nil {
					t.Errorf("got %v, want no action while the kubelet defers the resize", a)
				}
				if state := podState(pod); state == nil || state.Phase != rollout.PodResizingUp || sidecar.ActiveSlot(pod) != 1 {
					t.Errorf("state %+v, active slot %d: want ResizingUp on slot 1", state, sidecar.ActiveSlot(pod))
				}
				if r := recordFor(res, "web-0"); r == nil || r.Reason != "the kubelet deferred the resize: "+deferredMessage {
					t.Errorf("record %+v, want the kubelet's deferral as reason", r)
				}
			},
		},
		{
			name: "fails a pod whose resize the kubelet finds infeasible, with the kubelet's message",
			setup: func(s *sim) {
				s.resizePending["web-0"] = resizePending(corev1.PodReasonInfeasible, infeasibleMessage)
				s.advance(1)
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				a := actionFor(res, "web-0")
				if a == nil || a.Kind != rollout.ActionRevert || a.State == nil || a.State.Outcome != rollout.PodFailed ||
					!strings.Contains(a.State.Reason, infeasibleMessage) || a.Resize == nil || len(a.Images) != 0 {
					t.Fatalf("got %v, want the idle slot resized back and the pod failed with the kubelet's message", a)
				}
				if res.Counts.Failed != 1 {
					t.Errorf("failed %d, want the pod counted as failed", res.Counts.Failed)
				}
				// The revert ends the pod Failed and the plan stops (maxFailedPods 0).
				end := s.run(60)
				if state := podState(s.pod("web-0")); end.Phase != meshv1alpha1.PhaseFailed || state.Phase != rollout.PodFailed ||
					!strings.Contains(state.Reason, infeasibleMessage) {
					t.Errorf("plan %s, pod state %+v", end.Phase, state)
				}
			},
		},
		{
			name: "cuts a long kubelet message so that the pod's record can still be written",
			setup: func(s *sim) {
				s.resizePending["web-0"] = resizePending(corev1.PodReasonInfeasible, strings.Repeat("é", 5000))
				s.advance(1)
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				a := actionFor(res, "web-0")
				if a == nil || a.State == nil || a.State.Outcome != rollout.PodFailed {
					t.Fatalf("got %v, want the pod failed", a)
				}
				if _, err := rollout.EncodeState(a.State); err != nil {
					t.Errorf("the failed pod's record cannot be written: %v", err)
				}
			},
		},
		{
			name: "fails a pod whose deferred resize outlasts progressDeadlineSeconds, with the deferral as reason",
			setup: func(s *sim) {
				s.resizePending["web-0"] = resizePending(corev1.PodReasonDeferred, deferredMessage)
				s.advance(30)
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				a := actionFor(res, "web-0")
				if a == nil || a.State == nil || a.State.Outcome != rollout.PodFailed || !strings.Contains(a.State.Reason, deferredMessage) {
					t.Fatalf("got %v, want a failure that names the deferral", a)
				}
			},
		},
		{
			name: "waits while the kubelet applies a resize and swaps once it reports it applied",
			setup: func(s *sim) {
				s.resizePending["web-0"] = corev1.PodCondition{Type: corev1.PodResizeInProgress, Status: corev1.ConditionTrue}
				s.advance(3)
				if res := s.planOnce(); actionFor(res, "web-0") != nil || recordFor(res, "web-0").Reason != "the kubelet is applying the resize" {
					s.t.Fatalf("got %v with record %+v, want a wait while the resize is in progress", actionFor(res, "web-0"), recordFor(res, "web-0"))
				}
				delete(s.resizePending, "web-0")
				s.now = s.now.Add(time.Second)
				s.kubelet()
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if a := actionFor(res, "web-0"); a == nil || a.Kind != rollout.ActionSwapSlot {
					t.Errorf("got %v, want SwapSlot", a)
				}
			},
		},
		{
			name: "waits for a resize the kubelet has not reported applied even without a resize condition",
			setup: func(s *sim) {
				res := s.decide() // no kubelet runs after it: the spec has the resize, the status not
				if a := actionFor(res, "web-0"); a == nil || a.Kind != rollout.ActionResizeSlotUp {
					s.t.Fatalf("got %v, want the resize", a)
				}
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if a := actionFor(res, "web-0"); a != nil || recordFor(res, "web-0").Reason != "the kubelet has not applied the resize yet" {
					t.Errorf("got %v with record %+v, want a wait", a, recordFor(res, "web-0"))
				}
			},
		},
		{
			name: "trusts the spec when the kubelet reports no resources in container statuses",
			setup: func(s *sim) {
				s.noStatusResources = true
				s.advance(1)
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if a := actionFor(res, "web-0"); a == nil || a.Kind != rollout.ActionSwapSlot {
					t.Errorf("got %v, want SwapSlot", a)
				}
			},
		},
		{
			name: "swaps when the slot reports its resources and a pending resize is another container's",
			setup: func(s *sim) {
				s.advance(1)
				pod := s.pod("web-0")
				pod.Status.Conditions = append(pod.Status.Conditions, resizePending(corev1.PodReasonInfeasible, infeasibleMessage))
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if a := actionFor(res, "web-0"); a == nil || a.Kind != rollout.ActionSwapSlot {
					t.Errorf("got %v, want SwapSlot", a)
				}
			},
		},
		{
			name: "finishes a pod whose retired slot the kubelet cannot shrink, and says so",
			setup: func(s *sim) {
				retireWith(s, "web-0", resizePending(corev1.PodReasonInfeasible, infeasibleMessage))
				s.run(60)
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				state := podState(s.pod("web-0"))
				if res.Phase != meshv1alpha1.PhaseSucceeded || state.Phase != rollout.PodSucceeded ||
					!strings.Contains(state.Reason, "slot 1 keeps its resources") || !strings.Contains(state.Reason, infeasibleMessage) {
					t.Errorf("plan %s, pod state %+v", res.Phase, state)
				}
			},
		},
		{
			name: "does not hold the plan for a shrink of the retired slot that the kubelet defers",
			setup: func(s *sim) {
				retireWith(s, "web-0", resizePending(corev1.PodReasonDeferred, deferredMessage))
				s.run(60)
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				state := podState(s.pod("web-0"))
				if res.Phase != meshv1alpha1.PhaseSucceeded || state.Phase != rollout.PodSucceeded ||
					!strings.Contains(state.Reason, "slot 1 keeps its resources for now") || !strings.Contains(state.Reason, deferredMessage) {
					t.Errorf("plan %s, pod state %+v", res.Phase, state)
				}
				if got := sidecar.Container(s.pod("web-0"), 1).Resources; !equality.Semantic.DeepEqual(got, s.opts.IdleResources) {
					t.Errorf("slot 1 spec resources %+v, want the idle resources asked for", got)
				}
			},
		},
		{
			name: "does not hold the plan for a shrink the kubelet fails to apply and retries",
			setup: func(s *sim) {
				retireWith(s, "web-0", corev1.PodCondition{Type: corev1.PodResizeInProgress, Status: corev1.ConditionTrue,
					Reason: corev1.PodReasonError, Message: "cannot decrease memory limits: missing container memory usage"})
				s.run(60)
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				state := podState(s.pod("web-0"))
				if res.Phase != meshv1alpha1.PhaseSucceeded || state.Phase != rollout.PodSucceeded ||
					!strings.Contains(state.Reason, "the kubelet failed to apply the resize and retries: cannot decrease memory limits") {
					t.Errorf("plan %s, pod state %+v", res.Phase, state)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, testPlan(), 1, "proxy-v1")
			tt.setup(s)
			tt.check(t, s, s.planOnce())
		})
	}
}
