//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/rollout"
	"github.com/meshlift/meshlift/internal/testutil/gen"
)

// BenchmarkHotUpgradePerPod hot-upgrades a 3-pod MeshService of the real proxy on the local
// cluster (1.0.0 -> 2.0.0, then back, and so on: one plan per iteration, one pod at a time)
// and reports the time per pod: from the first patch of its upgrade to the record that it
// runs the target (resize up, takeover, minimum stable time of 3 s, retirement and resize down
// included), as p50 and max over every pod, and the plan's total time per pod. Run it with
// `make bench-e2e` (-benchtime=Nx for N plans).
func BenchmarkHotUpgradePerPod(b *testing.B) {
	const replicas = 3
	a := newMeshedApp(b, "e2e-bench", replicas, func(ns string) *meshv1alpha1.SidecarVersion { return releasedVersion(ns+"-v2", "2.0.0") })
	var perPod []time.Duration
	var total time.Duration
	versions := []*meshv1alpha1.SidecarVersion{a.to, a.from}
	b.ResetTimer()
	for i := range b.N {
		target := versions[i%2]
		plan := gen.UpgradePlan(fmt.Sprintf("bench-%d", i), target.Name, []string{"demo"}, gen.UpgradePlanMeta(gen.SetNamespace(a.ns)))
		started := time.Now()
		if err := k8s.Create(context.Background(), plan); err != nil {
			b.Fatal(err)
		}
		times := watchPodUpgrades(b, a.ns, plan, replicas)
		total += time.Since(started)
		perPod = append(perPod, times...)
		// The next plan governs the same MeshService: the finished one steps aside.
		if err := k8s.Delete(context.Background(), plan); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	slices.Sort(perPod)
	b.ReportMetric(perPod[len(perPod)/2].Seconds(), "p50-s/pod")
	b.ReportMetric(perPod[len(perPod)-1].Seconds(), "max-s/pod")
	b.ReportMetric(total.Seconds()/float64(b.N*replicas), "plan-s/pod")
}

// watchPodUpgrades polls the pods every 100 ms until the plan succeeded and returns, for each
// pod, the time from when its upgrade state first appeared to when the pod was recorded on the
// target.
func watchPodUpgrades(b *testing.B, ns string, plan *meshv1alpha1.UpgradePlan, replicas int) []time.Duration {
	b.Helper()
	ctx := context.Background()
	began, ended := map[string]time.Time{}, map[string]time.Time{}
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		pods := &corev1.PodList{}
		if err := k8s.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{"app": "demo"}); err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		for _, pod := range pods.Items {
			state, err := rollout.DecodeState(pod.Annotations[meshv1alpha1.AnnotationUpgrade])
			if err != nil || state == nil || state.Plan != plan.Name {
				continue
			}
			if _, ok := began[pod.Name]; !ok {
				began[pod.Name] = now
			}
			if _, ok := ended[pod.Name]; !ok && state.Phase == rollout.PodSucceeded {
				ended[pod.Name] = now
			}
		}
		got := &meshv1alpha1.UpgradePlan{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(plan), got); err != nil {
			b.Fatal(err)
		}
		if got.Status.Phase == meshv1alpha1.PhaseSucceeded && len(ended) == replicas {
			out := make([]time.Duration, 0, replicas)
			for name, end := range ended {
				out = append(out, end.Sub(began[name]))
			}
			return out
		}
		if got.Status.Phase == meshv1alpha1.PhaseFailed || got.Status.Phase == meshv1alpha1.PhaseRolledBack {
			b.Fatalf("plan %s ended %s: %+v", plan.Name, got.Status.Phase, got.Status.Counts)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("plan %s did not finish within 5 minutes", plan.Name)
	return nil
}
