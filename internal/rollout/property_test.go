package rollout_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
)

// TestPropertyBudgetAndActiveSlot runs seeded random rollouts (fleet size, budget, steps,
// strategies, cold pods, failing pods, pods that are not ready for a while, operator crashes,
// pauses) and checks after every decision, from the pods themselves (sim.checkBudget and
// sim.checkSlots): never more pods in flight than maxUnavailable, never a start that brings in
// flight plus unavailable pods above it, and never a pod whose active slot does not run the
// version it announces (a pod without an active proxy). Every rollout must also end.
func TestPropertyBudgetAndActiveSlot(t *testing.T) {
	seeds := 200
	if testing.Short() {
		seeds = 20
	}
	for seed := range seeds {
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
			s := randomSim(t, seed)
			res := s.run(3000)
			if res.InFlight != 0 {
				t.Errorf("ended with %d pods in flight", res.InFlight)
			}
		})
	}
}

// randomSim builds the random rollout of a seed.
func randomSim(t testing.TB, seed int) *sim {
	rng := rand.New(rand.NewPCG(uint64(seed), 42))
	{
		{
			pods := 1 + rng.IntN(80)
			plan := testPlan(func(p *meshv1alpha1.UpgradePlan) {
				if rng.IntN(2) == 0 {
					p.Spec.Strategy.MaxUnavailable = ptrTo(intstr.FromInt32(int32(1 + rng.IntN(8))))
				} else {
					p.Spec.Strategy.MaxUnavailable = ptrTo(intstr.FromString(fmt.Sprintf("%d%%", 1+rng.IntN(40))))
				}
				switch rng.IntN(6) {
				case 0:
					p.Spec.Strategy.Type = meshv1alpha1.StrategyInPlace
				case 1:
					p.Spec.Strategy.Type = meshv1alpha1.StrategyRecreate
				}
				if rng.IntN(2) == 0 {
					first := 1 + rng.IntN(60)
					p.Spec.Strategy.Steps = []meshv1alpha1.UpgradeStep{
						step(intstr.FromString(fmt.Sprintf("%d%%", first)), pauseFor(time.Duration(rng.IntN(20))*time.Second)),
						step(intstr.FromString("100%"), nil),
					}
				}
				p.Spec.MaxFailedPods = int32(rng.IntN(4))
				if rng.IntN(2) == 0 {
					p.Spec.FailurePolicy = meshv1alpha1.FailurePolicyRollback
				}
				p.Spec.Health.MinReadySeconds = int32(rng.IntN(6))
			})
			s := newSim(t, plan, 0, "proxy-v1")
			s.opts.FullIdleResources = rng.IntN(4) == 0
			for i := range pods {
				version := "proxy-v1"
				if rng.IntN(5) == 0 {
					version = "proxy-legacy"
				}
				name := fmt.Sprintf("web-%02d", i)
				s.addPod(name, version, true)
				switch rng.IntN(12) {
				case 0:
					s.failures[name] = neverReady
				case 1:
					s.failures[name] = crashLoop
				case 2:
					s.failures[name] = flapping
				}
				if rng.IntN(8) == 0 {
					from := t0.Add(time.Duration(rng.IntN(60)) * time.Second)
					s.unready[name] = [2]time.Time{from, from.Add(time.Duration(1+rng.IntN(40)) * time.Second)}
				}
			}
			if rng.IntN(2) == 0 {
				// Old proxies that keep long-lived connections after the takeover, some past a
				// short drain budget, some whose /ready cannot be read.
				s.holds, s.unreadable = map[string]time.Duration{}, map[string]bool{}
				if rng.IntN(2) == 0 {
					s.ms.Spec.Drain = &meshv1alpha1.DrainSpec{MaxDuration: &metav1.Duration{Duration: time.Duration(5+rng.IntN(60)) * time.Second}}
				}
				for i := range s.pods {
					switch rng.IntN(6) {
					case 0:
						s.holds[s.pods[i].Name] = time.Duration(rng.IntN(120)) * time.Second
					case 1:
						s.unreadable[s.pods[i].Name] = rng.IntN(3) == 0
					}
				}
			}
			for range rng.IntN(4) {
				s.hooks[rng.IntN(120)] = func(s *sim) { s.crashAfter = rng.IntN(5) }
			}
			if rng.IntN(3) == 0 {
				at := rng.IntN(60)
				s.hooks[at] = func(s *sim) { s.plan.Spec.Paused = true }
				s.hooks[at+1+rng.IntN(30)] = func(s *sim) { s.plan.Spec.Paused = false }
			}
			return s
		}
	}
}

func ptrTo[T any](v T) *T { return &v }
