package controllers_test

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

func TestProxyReadinessGateFollowsTheActiveProxy(t *testing.T) {
	ns := env.Namespace(t, "gate")
	withGate := func(p *corev1.Pod) {
		p.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: meshv1alpha1.ReadinessGateProxyReady}}
	}
	pod := gen.Pod("gated", gen.PodMeta(gen.SetNamespace(ns)), gen.Injected("web", "v1"), withGate)
	createPod(t, pod, gen.NotReady)
	waitForGate := func(want corev1.ConditionStatus) {
		t.Helper()
		testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
			got := &corev1.Pod{}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), got); err != nil {
				return false, err.Error()
			}
			for _, c := range got.Status.Conditions {
				if c.Type == meshv1alpha1.ReadinessGateProxyReady {
					return c.Status == want, fmt.Sprintf("condition is %s (%s)", c.Status, c.Message)
				}
			}
			return false, "no proxy-ready condition"
		})
	}
	waitForGate(corev1.ConditionFalse)

	// The kubelet reports the active proxy ready: the gate opens.
	setPodStatus(t, pod, gen.Ready)
	waitForGate(corev1.ConditionTrue)
}
