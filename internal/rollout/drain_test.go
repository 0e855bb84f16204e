package rollout_test

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/rollout"
)

// drainSim has one pod that can only move in place, with the readiness gate when gate is set,
// and the plan already excluded it from EDS (the first decision).
func drainSim(t *testing.T, gate bool, replicas ...string) (*sim, *corev1.Pod) {
	t.Helper()
	s := newSim(t, testPlan(), 0, "proxy-v1")
	pod := s.addPod("cold-0", "proxy-legacy", true)
	if gate {
		pod.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: meshv1alpha1.ReadinessGateProxyReady}}
	}
	s.drain = &rollout.DrainInput{Replicas: replicas, Serving: map[types.UID]bool{}}
	res := s.decide()
	if a := actionFor(res, "cold-0"); a == nil || a.Kind != rollout.ActionExclude {
		t.Fatalf("the first decision is %v, want the exclusion", a)
	}
	return s, s.pod("cold-0")
}

// draining advances the clock by seconds and checks that the pod is still draining.
func stillDraining(t *testing.T, s *sim, seconds int) {
	t.Helper()
	res := s.advance(seconds)
	if a := actionFor(res, "cold-0"); a != nil {
		t.Fatalf("after %d more seconds: %v, want the pod still draining", seconds, a)
	}
	if state := podState(s.pod("cold-0")); state == nil || state.Phase != rollout.PodDraining {
		t.Fatalf("the pod is in %v, want Draining", state)
	}
}

func swapped(t *testing.T, s *sim, wantReason string) {
	t.Helper()
	res := s.decide()
	a := actionFor(res, "cold-0")
	if a == nil || a.Kind != rollout.ActionSwapImage {
		t.Fatalf("got %v, want the proxy restarted on the target", a)
	}
	if unconfirmed := strings.Contains(wantReason, "not confirmed"); a.DrainUnconfirmed != unconfirmed {
		t.Errorf("DrainUnconfirmed is %v, want %v", a.DrainUnconfirmed, unconfirmed)
	}
	if !strings.Contains(a.Reason, wantReason) {
		t.Errorf("reason %q does not say %q", a.Reason, wantReason)
	}
}

func TestAnInPlaceUpgradeRestartsTheProxyOnceEveryReplicaAcknowledgedTheDrain(t *testing.T) {
	s, pod := drainSim(t, false, "operator-a", "operator-b")
	stillDraining(t, s, 10) // past the fixed DrainDuration: the acknowledgements decide
	pod.Annotations[meshv1alpha1.EDSAckAnnotation("operator-a")] = "true"
	stillDraining(t, s, 1)
	pod.Annotations[meshv1alpha1.EDSAckAnnotation("operator-b")] = "true"
	swapped(t, s, "every client proxy applied endpoints without the pod")

	// The acknowledgements leave with the exclusion once the new proxy passed its health gate.
	res := s.advance(20)
	if state := podState(s.pod("cold-0")); state == nil || state.Phase != rollout.PodSucceeded {
		t.Fatalf("the pod ends in %v (last decision %s), want Succeeded", state, res.Message)
	}
	for k := range s.pod("cold-0").Annotations {
		if k == meshv1alpha1.AnnotationEDSExcluded || strings.HasPrefix(k, meshv1alpha1.AnnotationPrefixEDSAck) {
			t.Errorf("annotation %s is left on the restored pod", k)
		}
	}
}

func TestAnInPlaceUpgradeWaitsForTheEndpointSlicesWhenThePodHasTheReadinessGate(t *testing.T) {
	s, pod := drainSim(t, true, "operator-a")
	pod.Annotations[meshv1alpha1.EDSAckAnnotation("operator-a")] = "true"
	s.drain.Serving[pod.UID] = true
	stillDraining(t, s, 5)
	if res := s.planOnce(); res.RequeueAfter <= 0 || res.RequeueAfter > 1e9 {
		t.Errorf("RequeueAfter %s while waiting for EndpointSlices, want a recheck within a second", res.RequeueAfter)
	}
	delete(s.drain.Serving, pod.UID)
	swapped(t, s, "every client proxy applied endpoints without the pod")
}

func TestAnInPlaceUpgradeIgnoresTheEndpointSlicesOfAPodWithoutTheReadinessGate(t *testing.T) {
	// Without the gate the pod never leaves its Services' EndpointSlices during the upgrade.
	s, pod := drainSim(t, false, "operator-a")
	pod.Annotations[meshv1alpha1.EDSAckAnnotation("operator-a")] = "true"
	s.drain.Serving[pod.UID] = true
	swapped(t, s, "every client proxy applied endpoints without the pod")
}

func TestAnInPlaceUpgradeRestartsTheProxyAfterTheDrainTimeoutWithoutAcknowledgement(t *testing.T) {
	s, _ := drainSim(t, false, "operator-a")
	s.opts.DrainTimeout = 10e9
	stillDraining(t, s, 9)
	s.now = s.now.Add(1e9)
	swapped(t, s, "the drain was not confirmed within 10s (waiting for control-plane replica operator-a)")
}

func TestTheDrainTimeoutLeavesHalfTheProgressDeadlineToTheRestart(t *testing.T) {
	s, _ := drainSim(t, false, "operator-a") // progressDeadlineSeconds 30, DrainTimeout 60s
	stillDraining(t, s, 14)
	s.now = s.now.Add(1e9)
	swapped(t, s, "the drain was not confirmed within 15s")
}

func TestAnInPlaceUpgradeWaitsTheDrainDurationWithoutDrainInput(t *testing.T) {
	s, _ := drainSim(t, false)
	s.drain = nil
	stillDraining(t, s, 4)
	s.now = s.now.Add(1e9)
	swapped(t, s, "the pod is out of the endpoints for 5s")
}
