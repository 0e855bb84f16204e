package rollout_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/rollout"
	"github.com/meshlift/meshlift/internal/sidecar"
)

// plan runs one decision on the simulator's current pods without applying it.
func (s *sim) planOnce() rollout.Result {
	s.t.Helper()
	res, err := rollout.Plan(rollout.Input{Plan: s.plan, Versions: s.versions, Pods: s.pods, Now: s.now, Options: s.opts, Drain: s.drain,
		Retiring: s.retiring(), MeshServices: map[string]*meshv1alpha1.MeshService{s.ms.Name: s.ms}})
	if err != nil {
		s.t.Fatalf("Plan: %v", err)
	}
	return res
}

// advance lets the simulated cluster and controller run for seconds.
func (s *sim) advance(seconds int) rollout.Result {
	var res rollout.Result
	for range seconds {
		res = s.decide()
		s.now = s.now.Add(time.Second)
		s.kubelet()
	}
	return res
}

// startedPods are the pods whose upgrade the decision starts.
func startedPods(s *sim, res rollout.Result) []string {
	var names []string
	for _, action := range res.Actions {
		before := podState(s.pod(action.Pod.Name))
		if action.State != nil && action.State.Active() && (before == nil || !before.Active()) {
			names = append(names, action.Pod.Name)
		}
	}
	return names
}

func actionFor(res rollout.Result, pod string) *rollout.Action {
	for i := range res.Actions {
		if res.Actions[i].Pod.Name == pod {
			return &res.Actions[i]
		}
	}
	return nil
}

func noteFor(notes []rollout.PodNote, pod string) string {
	for _, n := range notes {
		if n.Pod.Name == pod {
			return n.Reason
		}
	}
	return ""
}

func setUnready(pod *corev1.Pod) {
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
}

func TestPlan(t *testing.T) {
	tests := []struct {
		name  string
		pods  int
		plan  []func(*meshv1alpha1.UpgradePlan)
		setup func(*sim)
		check func(*testing.T, *sim, rollout.Result)
	}{
		{
			name: "does not exceed maxUnavailable when two pods are already not ready",
			pods: 10,
			plan: []func(*meshv1alpha1.UpgradePlan){maxUnavailable(intstr.FromInt32(3))},
			setup: func(s *sim) {
				setUnready(s.pod("web-3"))
				setUnready(s.pod("web-7"))
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if got := startedPods(s, res); !slices.Equal(got, []string{"web-0"}) {
					t.Errorf("started %v, want only web-0", got)
				}
				if res.Unavailable != 3 || noteFor(res.Held, "web-3") != rollout.PodNotReady {
					t.Errorf("unavailable %d, held %v", res.Unavailable, res.Held)
				}
			},
		},
		{
			name: "rounds a percentage maxUnavailable up",
			pods: 15,
			plan: []func(*meshv1alpha1.UpgradePlan){maxUnavailable(intstr.FromString("10%"))},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if len(startedPods(s, res)) != 2 || res.MaxUnavailable != 2 {
					t.Errorf("started %v with maxUnavailable %d, want 2 (10%% of 15 rounded up)", startedPods(s, res), res.MaxUnavailable)
				}
			},
		},
		{
			name: "upgrades one pod at a time without maxUnavailable",
			pods: 5,
			plan: []func(*meshv1alpha1.UpgradePlan){func(p *meshv1alpha1.UpgradePlan) { p.Spec.Strategy.MaxUnavailable = nil }},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if len(startedPods(s, res)) != 1 {
					t.Errorf("started %v, want one pod", startedPods(s, res))
				}
			},
		},
		{
			name: "rounds a step's partition percentage up",
			pods: 15,
			plan: []func(*meshv1alpha1.UpgradePlan){maxUnavailable(intstr.FromInt32(10)), func(p *meshv1alpha1.UpgradePlan) {
				p.Spec.Strategy.Steps = []meshv1alpha1.UpgradeStep{step(intstr.FromString("10%"), pauseFor(time.Hour)), step(intstr.FromString("100%"), nil)}
			}},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if len(startedPods(s, res)) != 2 {
					t.Errorf("started %v, want 2 (10%% of 15 rounded up)", startedPods(s, res))
				}
			},
		},
		{
			name: "starts nothing while spec.paused is set",
			pods: 4,
			plan: []func(*meshv1alpha1.UpgradePlan){func(p *meshv1alpha1.UpgradePlan) { p.Spec.Paused = true }},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if len(res.Actions) != 0 || res.Phase != meshv1alpha1.PhasePaused || res.Reason != rollout.ReasonPaused {
					t.Errorf("got %s/%s with %d actions, want Paused and none", res.Phase, res.Reason, len(res.Actions))
				}
			},
		},
		{
			name: "lets pods in flight finish while spec.paused is set",
			pods: 4,
			setup: func(s *sim) {
				s.advance(2) // web-0 resized and swapped
				s.plan.Spec.Paused = true
				s.advance(2) // the new proxy is ready at 4s
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if a := actionFor(res, "web-0"); a == nil || a.Kind != rollout.ActionRecordReady || len(startedPods(s, res)) != 0 {
					t.Errorf("got actions %v, want only web-0 to advance", res.Actions)
				}
			},
		},
		{
			name: "never starts a terminating pod and leaves it out of the total",
			pods: 3,
			setup: func(s *sim) {
				s.pod("web-0").DeletionTimestamp = &metav1.Time{Time: t0}
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if res.Counts.Total != 2 || noteFor(res.Ignored, "web-0") != rollout.PodTerminating || slices.Contains(startedPods(s, res), "web-0") {
					t.Errorf("total %d, ignored %v, started %v", res.Counts.Total, res.Ignored, startedPods(s, res))
				}
			},
		},
		{
			name:  "ignores pods without a sidecar and reports them",
			pods:  2,
			setup: func(s *sim) { s.addPlainPod("legacy-0") },
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if res.Counts.Total != 2 || noteFor(res.Ignored, "legacy-0") != rollout.PodNotInjected {
					t.Errorf("total %d, ignored %v", res.Counts.Total, res.Ignored)
				}
			},
		},
		{
			name: "counts pods already on the target as updated and leaves them alone",
			pods: 2,
			setup: func(s *sim) {
				s.addPod("new-0", "proxy-v2", true)
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if res.Counts.Updated != 1 || res.Counts.Ready != 1 || actionFor(res, "new-0") != nil {
					t.Errorf("updated %d ready %d, action %v", res.Counts.Updated, res.Counts.Ready, actionFor(res, "new-0"))
				}
			},
		},
		{
			name: "holds the pods of a Deployment whose pods belong to two ReplicaSets",
			pods: 0,
			setup: func(s *sim) {
				for _, p := range []struct{ name, hash string }{{"shop-1", "aaa"}, {"shop-2", "bbb"}} {
					pod := s.addPod(p.name, "proxy-v1", true)
					pod.Labels["pod-template-hash"] = p.hash
					pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "shop-" + p.hash, Controller: ptr.To(true)}}
				}
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if len(res.Actions) != 0 || noteFor(res.Held, "shop-1") != rollout.PodWorkloadRolling || res.Counts.Total != 2 {
					t.Errorf("actions %v, held %v", res.Actions, res.Held)
				}
				if res.Phase == meshv1alpha1.PhaseSucceeded || res.Reason != rollout.ReasonWaiting {
					t.Errorf("a plan with held pods is not complete: %s/%s", res.Phase, res.Reason)
				}
			},
		},
		{
			name: "upgrades the pods of a Deployment that is not rolling out",
			pods: 0,
			setup: func(s *sim) {
				for _, name := range []string{"shop-1", "shop-2"} {
					pod := s.addPod(name, "proxy-v1", true)
					pod.Labels["pod-template-hash"] = "aaa"
					pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "shop-aaa", Controller: ptr.To(true)}}
				}
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if len(startedPods(s, res)) != 1 || len(res.Held) != 0 {
					t.Errorf("started %v, held %v", startedPods(s, res), res.Held)
				}
			},
		},
		{
			name: "abandons a pod deleted in the middle of its upgrade and frees its budget",
			pods: 3,
			setup: func(s *sim) {
				s.advance(2)
				s.pod("web-0").DeletionTimestamp = &metav1.Time{Time: s.now}
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if noteFor(res.Ignored, "web-0") != rollout.PodDeletedMidUpgrade || actionFor(res, "web-0") != nil {
					t.Errorf("ignored %v, action %v", res.Ignored, actionFor(res, "web-0"))
				}
				if got := startedPods(s, res); !slices.Equal(got, []string{"web-1"}) {
					t.Errorf("started %v, want web-1", got)
				}
			},
		},
		{
			name: "moves a pod whose version cannot hot-upgrade in place, out of the endpoints first",
			pods: 0,
			setup: func(s *sim) {
				pod := s.addPod("cold-0", "proxy-legacy", true)
				pod.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: meshv1alpha1.ReadinessGateProxyReady}}
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				a := actionFor(res, "cold-0")
				if a == nil || a.Kind != rollout.ActionExclude || a.State.Strategy != meshv1alpha1.StrategyInPlace ||
					a.ProxyReadyGate == nil || *a.ProxyReadyGate != corev1.ConditionFalse {
					t.Fatalf("got %v", a)
				}
				if !slices.Contains(a.Annotations, rollout.AnnotationChange{Key: meshv1alpha1.AnnotationEDSExcluded, Value: "true"}) {
					t.Errorf("annotations %v do not exclude the pod from EDS", a.Annotations)
				}
			},
		},
		{
			name: "moves a two-slot pod in place when its version's SidecarVersion is unknown",
			pods: 1,
			setup: func(s *sim) {
				delete(s.versions, "proxy-v1")
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if a := actionFor(res, "web-0"); a == nil || a.State.Strategy != meshv1alpha1.StrategyInPlace {
					t.Errorf("got %v, want InPlace", a)
				}
			},
		},
		{
			name: "evicts pods with the Recreate strategy and counts them until they are gone",
			pods: 3,
			plan: []func(*meshv1alpha1.UpgradePlan){func(p *meshv1alpha1.UpgradePlan) { p.Spec.Strategy.Type = meshv1alpha1.StrategyRecreate }},
			setup: func(s *sim) {
				s.advance(1) // web-0 evicted, replacement web-0-r1 created not ready
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if noteFor(res.Ignored, "web-0") != rollout.PodEvicted || res.Unavailable != 2 || len(startedPods(s, res)) != 0 {
					t.Errorf("ignored %v unavailable %d started %v", res.Ignored, res.Unavailable, startedPods(s, res))
				}
			},
		},
		{
			name:  "does not resize when the operator gives idle slots full resources",
			pods:  1,
			setup: func(s *sim) { s.opts.FullIdleResources = true },
			check: func(t *testing.T, s *sim, res rollout.Result) {
				a := actionFor(res, "web-0")
				if a == nil || a.Kind != rollout.ActionSwapSlot || a.Resize != nil {
					t.Fatalf("got %v, want SwapSlot without resize", a)
				}
			},
		},
		{
			name:  "swaps the idle slot image together with active-slot and version in one action",
			pods:  1,
			setup: func(s *sim) { s.advance(1) },
			check: func(t *testing.T, s *sim, res rollout.Result) {
				a := actionFor(res, "web-0")
				want := []rollout.AnnotationChange{{Key: meshv1alpha1.AnnotationActiveSlot, Value: "2"}, {Key: meshv1alpha1.AnnotationVersion, Value: "proxy-v2"}}
				if a == nil || a.Kind != rollout.ActionSwapSlot || !slices.Equal(a.Annotations, want) ||
					len(a.Images) != 1 || a.Images[0].Container != "meshlift-proxy-2" || a.Images[0].Image != "meshlift/meshlift-proxy:2.0.0" {
					t.Fatalf("got %v", a)
				}
				// The result is what the webhook would have rendered for proxy-v2 in slot 2.
				patched, err := a.ApplyPatch(s.pod("web-0"))
				if err != nil {
					t.Fatal(err)
				}
				rendered, err := sidecar.WithSlotRunning(s.pod("web-0"), 2, s.versions["proxy-v2"])
				if err != nil {
					t.Fatal(err)
				}
				delete(patched.Annotations, meshv1alpha1.AnnotationUpgrade)
				if sidecar.SlotImage(patched, 2) != sidecar.SlotImage(rendered, 2) || sidecar.ActiveSlot(patched) != sidecar.ActiveSlot(rendered) ||
					sidecar.Version(patched) != sidecar.Version(rendered) {
					t.Errorf("the swap differs from sidecar.WithSlotRunning")
				}
			},
		},
		{
			name: "fails a pod whose new proxy is not ready by progressDeadlineSeconds and puts the idle image back",
			pods: 1,
			setup: func(s *sim) {
				s.failures["web-0"] = neverReady
				s.advance(30)
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				a := actionFor(res, "web-0")
				if a == nil || a.Kind != rollout.ActionRevert || a.State.Outcome != rollout.PodFailed || res.Counts.Failed != 1 {
					t.Fatalf("got %v, failed %d", a, res.Counts.Failed)
				}
				wantImages := []rollout.ImageChange{
					{Slot: 2, Container: "meshlift-proxy-2", Image: "meshlift/meshlift-idle:1.0.0"},
					{Slot: 1, Container: "meshlift-proxy-1", Image: "meshlift/meshlift-proxy:1.0.0"},
				}
				wantAnnotations := []rollout.AnnotationChange{{Key: meshv1alpha1.AnnotationActiveSlot, Value: "1"}, {Key: meshv1alpha1.AnnotationVersion, Value: "proxy-v1"}}
				if !slices.Equal(a.Images, wantImages) || !slices.Equal(a.Annotations, wantAnnotations) || a.Resize == nil || a.Resize.Container != "meshlift-proxy-2" {
					t.Errorf("revert %v", a)
				}
			},
		},
		{
			name: "does not fail a pod one second before its deadline",
			pods: 1,
			setup: func(s *sim) {
				s.failures["web-0"] = neverReady
				s.advance(29)
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if len(res.Actions) != 0 || res.Counts.Failed != 0 || res.RequeueAfter != time.Second {
					t.Errorf("actions %v failed %d requeue %s", res.Actions, res.Counts.Failed, res.RequeueAfter)
				}
			},
		},
		{
			name: "fails a pod at once when its new container is in CrashLoopBackOff",
			pods: 1,
			setup: func(s *sim) {
				s.failures["web-0"] = crashLoop
				s.advance(2) // swapped at 1s, crashing at 2s
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if a := actionFor(res, "web-0"); a == nil || a.Kind != rollout.ActionRevert || !strings.Contains(a.Reason, "CrashLoopBackOff") {
					t.Errorf("got %v", a)
				}
			},
		},
		{
			name:  "counts a pod as updated only after its new proxy was ready for minReadySeconds",
			pods:  1,
			setup: func(s *sim) { s.advance(5) }, // ready at 3s, recorded at 4s
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if res.Counts.Updated != 0 || res.InFlight != 1 || len(res.Actions) != 0 || res.RequeueAfter != 4*time.Second {
					t.Errorf("updated %d in flight %d actions %v requeue %s", res.Counts.Updated, res.InFlight, res.Actions, res.RequeueAfter)
				}
			},
		},
		{
			name: "waits again for a pod whose new proxy stops being ready within minReadySeconds",
			pods: 1,
			setup: func(s *sim) {
				s.failures["web-0"] = flapping
				s.advance(6)
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if a := actionFor(res, "web-0"); a == nil || a.Kind != rollout.ActionRecordReady || a.State.Phase != rollout.PodWaitingReady || a.State.ReadySince != nil {
					t.Errorf("got %v", a)
				}
			},
		},
		{
			name: "applies failurePolicy Pause once more than maxFailedPods pods failed",
			pods: 4,
			plan: []func(*meshv1alpha1.UpgradePlan){maxUnavailable(intstr.FromInt32(2))},
			setup: func(s *sim) {
				s.failures["web-0"] = crashLoop
				s.advance(4)
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if res.Phase != meshv1alpha1.PhaseFailed || len(startedPods(s, res)) != 0 {
					t.Errorf("got %s with starts %v, want Failed and none", res.Phase, startedPods(s, res))
				}
				if c := findCondition(res.Conditions, meshv1alpha1.ConditionFailed); c == nil || c.Status != metav1.ConditionTrue {
					t.Errorf("Failed condition %v", c)
				}
			},
		},
		{
			name: "keeps going while failures stay within maxFailedPods",
			pods: 4,
			plan: []func(*meshv1alpha1.UpgradePlan){maxUnavailable(intstr.FromInt32(2)), func(p *meshv1alpha1.UpgradePlan) { p.Spec.MaxFailedPods = 1 }},
			setup: func(s *sim) {
				s.failures["web-0"] = crashLoop
				s.advance(5)
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if res.Phase != meshv1alpha1.PhaseProgressing || res.Counts.Failed != 1 {
					t.Errorf("got %s with %d failed", res.Phase, res.Counts.Failed)
				}
			},
		},
		{
			name: "walks upgraded pods back with failurePolicy Rollback",
			pods: 3,
			plan: []func(*meshv1alpha1.UpgradePlan){func(p *meshv1alpha1.UpgradePlan) { p.Spec.FailurePolicy = meshv1alpha1.FailurePolicyRollback }},
			setup: func(s *sim) {
				s.failures["web-1"] = crashLoop
				s.advance(15) // web-0 upgraded, web-1 fails
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if res.Phase != meshv1alpha1.PhaseRollingBack {
					t.Fatalf("phase %s: %s", res.Phase, res.Message)
				}
				a := actionFor(res, "web-0")
				if a == nil || a.State == nil || !a.State.Rollback || a.State.To != "proxy-v1" {
					t.Errorf("web-0: %v", a)
				}
			},
		},
		{
			name: "holds after a step with a timed pause until the duration passed",
			pods: 10,
			plan: []func(*meshv1alpha1.UpgradePlan){maxUnavailable(intstr.FromInt32(5)), func(p *meshv1alpha1.UpgradePlan) {
				p.Spec.Health.MinReadySeconds = 0
				p.Spec.Strategy.Steps = []meshv1alpha1.UpgradeStep{step(intstr.FromInt32(2), pauseFor(time.Minute)), step(intstr.FromString("100%"), nil)}
			}},
			setup: func(s *sim) { s.advance(70) },
			check: func(t *testing.T, s *sim, res rollout.Result) {
				// Step 1 finished at about 6s: the pause ends about a minute later, not before.
				if res.CurrentStep != 1 || res.Counts.Updated+res.InFlight <= 2 {
					t.Errorf("step %d, updated %d in flight %d: the pause should be over", res.CurrentStep, res.Counts.Updated, res.InFlight)
				}
			},
		},
		{
			name: "releases a manual step pause only for a resume annotation naming the same target",
			pods: 4,
			plan: []func(*meshv1alpha1.UpgradePlan){maxUnavailable(intstr.FromInt32(4)), func(p *meshv1alpha1.UpgradePlan) {
				p.Spec.Strategy.Steps = []meshv1alpha1.UpgradeStep{step(intstr.FromInt32(1), &meshv1alpha1.StepPause{}), step(intstr.FromString("100%"), nil)}
				p.Annotations = map[string]string{rollout.AnnotationResume: "proxy-v9/0"}
			}},
			setup: func(s *sim) { s.advance(15) },
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if res.Reason != rollout.ReasonStepPause || len(res.Actions) != 0 {
					t.Fatalf("got %s with %v, want a step pause", res.Reason, res.Actions)
				}
				s.plan.Annotations[rollout.AnnotationResume] = "proxy-v2/0"
				if res := s.planOnce(); len(startedPods(s, res)) != 3 || res.CurrentStep != 1 {
					t.Errorf("after resume: started %v at step %d", startedPods(s, res), res.CurrentStep)
				}
			},
		},
		{
			name: "leaves a pod with a malformed annotation alone and counts it against the budget",
			pods: 2,
			setup: func(s *sim) {
				s.pod("web-0").Annotations[meshv1alpha1.AnnotationUpgrade] = `{"plan":`
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if actionFor(res, "web-0") != nil || noteFor(res.Held, "web-0") != rollout.PodMalformedState || len(startedPods(s, res)) != 0 {
					t.Errorf("actions %v held %v", res.Actions, res.Held)
				}
			},
		},
		{
			name: "leaves a pod alone that another plan is upgrading",
			pods: 1,
			setup: func(s *sim) {
				state := validState()
				state.Plan = "other"
				value, _ := rollout.EncodeState(state)
				s.pod("web-0").Annotations[meshv1alpha1.AnnotationUpgrade] = value
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if len(res.Actions) != 0 || noteFor(res.Held, "web-0") != rollout.PodOwnedByOtherPlan {
					t.Errorf("actions %v held %v", res.Actions, res.Held)
				}
			},
		},
		{
			name: "aborts pods in flight when the target changes and reverts them to where they came from",
			pods: 1,
			setup: func(s *sim) {
				s.advance(2)
				s.plan.Spec.TargetVersion = "proxy-v3"
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if a := actionFor(res, "web-0"); a == nil || a.Kind != rollout.ActionRevert || a.State.Outcome != rollout.PodAborted || res.Counts.Failed != 0 {
					t.Errorf("got %v, failed %d", a, res.Counts.Failed)
				}
			},
		},
		{
			name: "completes a plan with no pods",
			pods: 0,
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if res.Phase != meshv1alpha1.PhaseSucceeded {
					t.Errorf("phase %s", res.Phase)
				}
			},
		},
		{
			name: "repeats a resize that did not happen instead of moving on",
			pods: 1,
			setup: func(s *sim) {
				res := s.planOnce()
				a := actionFor(res, "web-0")
				patched, _ := a.ApplyPatch(s.pod("web-0")) // the state is written, the resize is lost
				*s.pod("web-0") = *patched
			},
			check: func(t *testing.T, s *sim, res rollout.Result) {
				if a := actionFor(res, "web-0"); a == nil || a.Kind != rollout.ActionResizeSlotUp || a.State != nil || a.Resize == nil {
					t.Errorf("got %v, want the resize again", a)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, testPlan(tt.plan...), tt.pods, "proxy-v1")
			if tt.setup != nil {
				tt.setup(s)
			}
			tt.check(t, s, s.planOnce())
		})
	}
}

func TestPlanRefusesAMissingTarget(t *testing.T) {
	plan := testPlan(func(p *meshv1alpha1.UpgradePlan) { p.Spec.TargetVersion = "proxy-v9" })
	_, err := rollout.Plan(rollout.Input{Plan: plan, Versions: testVersions(), Now: t0})
	if !errors.Is(err, rollout.ErrVersionNotFound) {
		t.Fatalf("got %v, want ErrVersionNotFound", err)
	}
}

func TestPlanIsDeterministicAndDoesNotModifyItsInput(t *testing.T) {
	s := newSim(t, testPlan(maxUnavailable(intstr.FromInt32(3))), 20, "proxy-v1")
	s.failures["web-04"] = neverReady
	s.advance(12)
	for range 50 { // a moment at which the plan acts
		if len(s.planOnce().Actions) > 0 {
			break
		}
		s.advance(1)
	}
	before := make([]corev1.Pod, len(s.pods))
	for i := range s.pods {
		before[i] = *s.pods[i].DeepCopy()
	}
	first, second := s.planOnce(), s.planOnce()
	if len(first.Actions) == 0 {
		t.Fatal("no actions to compare")
	}
	for i := range first.Actions {
		if first.Actions[i].String() != second.Actions[i].String() {
			t.Errorf("decisions differ: %s vs %s", first.Actions[i].String(), second.Actions[i].String())
		}
	}
	for i := range s.pods {
		if s.pods[i].String() != before[i].String() {
			t.Fatalf("Plan modified pod %s", s.pods[i].Name)
		}
	}
}

func findCondition(conditions []metav1.Condition, conditionType string) *metav1.Condition {
	for i := range conditions {
		if conditions[i].Type == conditionType {
			return &conditions[i]
		}
	}
	return nil
}

func TestPlanHoldsAPodWhoseIdleSlotAlreadyRunsTheTargetImage(t *testing.T) {
	s := newSim(t, testPlan(), 1, "proxy-v1")
	// A target whose proxy image is the image the idle slot runs: the kubelet would not restart
	// the container, so its readiness could not prove a takeover.
	s.versions["proxy-v2"].Spec.Image = s.versions["proxy-v1"].Spec.IdleImage
	res := s.planOnce()
	if len(res.Actions) != 0 {
		t.Fatalf("the planner acted: %v", res.Actions)
	}
	if got := noteFor(res.Held, s.pods[0].Name); got != rollout.PodImageNotDistinct {
		t.Errorf("the pod is held for %q, want %s", got, rollout.PodImageNotDistinct)
	}
}

func TestAPlanCreatedAgainTriesThePodsThatFailedUnderTheEarlierOneAgain(t *testing.T) {
	s := newSim(t, testPlan(), 3, "proxy-v1")
	s.failures["web-0"] = neverReady
	if res := s.run(300); res.Phase != meshv1alpha1.PhaseFailed {
		t.Fatalf("the first plan ended %s, want Failed", res.Phase)
	}
	// The same plan again, as it was: the failed record still counts.
	if res := s.planOnce(); res.Phase != meshv1alpha1.PhaseFailed || len(res.Actions) != 0 {
		t.Fatalf("the failed plan decided %s with %v", res.Phase, res.Actions)
	}
	// Deleted and created again under the same name (the proxy was fixed meanwhile): a new plan.
	delete(s.failures, "web-0")
	s.now = s.now.Add(time.Minute)
	s.plan = testPlan()
	s.plan.CreationTimestamp = metav1.NewTime(s.now)
	if res := s.run(300); res.Phase != meshv1alpha1.PhaseSucceeded || res.Counts.Updated != 3 || res.Counts.Failed != 0 {
		t.Fatalf("the plan created again ended %s with %+v, want every pod upgraded", res.Phase, res.Counts)
	}
}
