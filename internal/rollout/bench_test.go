package rollout_test

import (
	"testing"

	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/rollout"
)

// BenchmarkPlan10kPods measures one planner decision for 10,000 pods in the middle of a rollout
// (target < 50 ms, ARCHITECTURE.md section 9), in the middle of a rollout and near its end, when
// nearly every pod carries an upgrade record to decode. maxUnavailable 10%: 1,000 pods in flight
// across the phases of their state machine, three failed.
func BenchmarkPlan10kPods(b *testing.B) {
	for _, bench := range []struct {
		name    string
		seconds int
	}{
		{"MidRollout", 24},  // 2,000 upgraded, 1,000 in flight, 7,000 waiting
		{"NearlyDone", 100}, // 9,000 upgraded with records, 1,000 in flight
	} {
		b.Run(bench.name, func(b *testing.B) {
			plan := testPlan(maxUnavailable(intstr.FromString("10%")), func(p *meshv1alpha1.UpgradePlan) { p.Spec.MaxFailedPods = 50 })
			s := newSim(b, plan, 10000, "proxy-v1")
			for _, name := range []string{"web-0042", "web-0777", "web-1234"} {
				s.failures[name] = crashLoop
			}
			s.advance(bench.seconds)
			in := rollout.Input{Plan: s.plan, Versions: s.versions, Pods: s.pods, Now: s.now, Options: s.opts}
			res, err := rollout.Plan(in)
			if err != nil {
				b.Fatal(err)
			}
			b.Logf("decision: %d pods, %d updated, %d in flight, %d failed, %d actions",
				res.Counts.Total, res.Counts.Updated, res.InFlight, res.Counts.Failed, len(res.Actions))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := rollout.Plan(in); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()*1000/float64(b.N), "ms/decision")
		})
	}
}
