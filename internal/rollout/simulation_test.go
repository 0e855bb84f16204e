package rollout_test

import (
	"flag"
	"os"
	"path/filepath"
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

var update = flag.Bool("update", false, "rewrite the golden simulation logs in testdata")

// golden compares the simulation log with testdata/<name>.log.golden (rewritten with -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".log.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("failed to read %s (run go test ./internal/rollout -update): %v", path, err)
	}
	if string(want) != got {
		wantLines, gotLines := strings.Split(string(want), "\n"), strings.Split(got, "\n")
		for i := range min(len(wantLines), len(gotLines)) {
			if wantLines[i] != gotLines[i] {
				t.Fatalf("%s differs at line %d (run go test ./internal/rollout -update if the change is intended):\nwant: %s\ngot:  %s",
					path, i+1, wantLines[i], gotLines[i])
			}
		}
		t.Fatalf("%s differs in length: want %d lines, got %d (run with -update if intended)", path, len(wantLines), len(gotLines))
	}
}

// thousandPods is scenario (a): 1,000 pods, steps 10% (then a 1m pause), 50%, 100%,
// maxUnavailable 10%, three pods misbehaving in three ways (two fail; one flaps and recovers), maxFailedPods 5.
func thousandPods(t *testing.T) *sim {
	plan := testPlan(maxUnavailable(intstr.FromString("10%")), func(p *meshv1alpha1.UpgradePlan) {
		p.Spec.MaxFailedPods = 5
		p.Spec.Strategy.Steps = []meshv1alpha1.UpgradeStep{
			step(intstr.FromString("10%"), pauseFor(time.Minute)),
			step(intstr.FromString("50%"), nil),
			step(intstr.FromString("100%"), nil),
		}
	})
	s := newSim(t, plan, 1000, "proxy-v1")
	s.failures["web-005"] = neverReady
	s.failures["web-300"] = crashLoop
	// web-777's new proxy flaps (ready, then not for six seconds): it is waited for again, not
	// counted stable, and passes once it stays ready, within its deadline.
	s.failures["web-777"] = flapping
	// Two pods are not Ready for a while for reasons of their own: they count against the
	// budget and are upgraded later.
	s.unready["web-100"] = [2]time.Time{t0, t0.Add(100 * time.Second)}
	s.unready["web-101"] = [2]time.Time{t0, t0.Add(100 * time.Second)}
	s.kubelet()
	return s
}

func TestSimulationThousandPodsWithStepsAndFailures(t *testing.T) {
	s := thousandPods(t)
	res := s.run(2000)
	if res.Phase != meshv1alpha1.PhaseSucceeded || res.Counts.Updated != 998 || res.Counts.Failed != 2 {
		t.Errorf("got %s with %d updated and %d failed, want Succeeded with 998 updated and 2 failed", res.Phase, res.Counts.Updated, res.Counts.Failed)
	}
	golden(t, "thousand-pods", s.log.String())
}

func TestSimulationOperatorRestartReachesTheSameEnd(t *testing.T) {
	reference := thousandPods(t)
	reference.run(2000)

	s := thousandPods(t)
	// Crash three times while acting: when the first batch starts, when it retires its old
	// slots and in the middle of the last step. Each time only some actions are patched, none
	// is resized or evicted, and the status is not written. During the step pause the plan's
	// status is lost altogether (restored from a backup without status): the pause starts
	// over, it is never skipped. The planner has no memory: it reads the pods.
	for _, second := range []int{0, 9, 174} {
		s.hooks[second] = func(s *sim) { s.crashAfter = 30 }
	}
	s.hooks[60] = func(s *sim) {
		s.plan.Status = meshv1alpha1.UpgradePlanStatus{}
		s.log.WriteString("  !! the plan's status is lost; the planner decides from the pods' annotations alone\n")
	}
	s.run(2000)
	golden(t, "operator-restart", s.log.String())
	if got, want := s.endState(), reference.endState(); got != want {
		t.Errorf("the rollout with restarts ended elsewhere than without:\n%s", diffLines(want, got))
	}
}

func TestSimulationRollbackWalksUpgradedPodsBack(t *testing.T) {
	plan := testPlan(maxUnavailable(intstr.FromInt32(2)), func(p *meshv1alpha1.UpgradePlan) {
		p.Spec.FailurePolicy = meshv1alpha1.FailurePolicyRollback
		p.Spec.MaxFailedPods = 1
	})
	s := newSim(t, plan, 12, "proxy-v1")
	s.verbose = true
	s.failures["web-05"] = neverReady
	s.failures["web-07"] = crashLoop
	res := s.run(600)
	if res.Phase != meshv1alpha1.PhaseRolledBack {
		t.Errorf("phase %s, want RolledBack: %s", res.Phase, res.Message)
	}
	for i := range s.pods {
		if v := sidecar.Version(&s.pods[i]); v != "proxy-v1" {
			t.Errorf("pod %s runs %s after the rollback", s.pods[i].Name, v)
		}
	}
	golden(t, "rollback", s.log.String())
}

func TestSimulationTargetSetBackRollsBack(t *testing.T) {
	plan := testPlan(maxUnavailable(intstr.FromInt32(2)))
	s := newSim(t, plan, 6, "proxy-v1")
	s.verbose = true
	// Halfway, the user sets the target back to proxy-v1: pods in flight are aborted, the
	// upgraded ones walk back.
	s.hooks[25] = func(s *sim) {
		s.plan.Spec.TargetVersion = "proxy-v1"
		s.failImage = ""
		s.log.WriteString("  >> spec.targetVersion set back to proxy-v1\n")
	}
	res := s.run(600)
	if res.Phase != meshv1alpha1.PhaseRolledBack {
		t.Errorf("phase %s, want RolledBack: %s", res.Phase, res.Message)
	}
	golden(t, "target-set-back", s.log.String())
}

func TestSimulationPausedPlan(t *testing.T) {
	plan := testPlan(maxUnavailable(intstr.FromInt32(3)), func(p *meshv1alpha1.UpgradePlan) {
		p.Spec.Paused = true
		p.Spec.Strategy.Steps = []meshv1alpha1.UpgradeStep{
			step(intstr.FromInt32(4), &meshv1alpha1.StepPause{}), // until resumed
			step(intstr.FromString("100%"), nil),
		}
	})
	s := newSim(t, plan, 10, "proxy-v1")
	s.verbose = true
	s.hooks[5] = func(s *sim) {
		s.plan.Spec.Paused = false
		s.log.WriteString("  >> spec.paused set to false\n")
	}
	s.hooks[9] = func(s *sim) {
		s.plan.Spec.Paused = true
		s.log.WriteString("  >> spec.paused set to true while pods are in flight: they finish, none starts\n")
	}
	s.hooks[30] = func(s *sim) {
		s.plan.Spec.Paused = false
		s.log.WriteString("  >> spec.paused set to false\n")
	}
	s.hooks[60] = func(s *sim) {
		s.plan.Annotations = map[string]string{rollout.AnnotationResume: "proxy-v2/0"}
		s.log.WriteString("  >> kubectl meshlift upgrade resume: " + rollout.AnnotationResume + "=proxy-v2/0\n")
	}
	res := s.run(600)
	if res.Phase != meshv1alpha1.PhaseSucceeded {
		t.Errorf("phase %s, want Succeeded: %s", res.Phase, res.Message)
	}
	golden(t, "paused", s.log.String())
}

// TestSimulationMixedFleet runs the deliberate edge cases together: a pod without sidecar, a
// terminating pod, a pod already on the target, a pod with a single (cold) proxy that is moved
// InPlace, a Deployment rolling out, a pod deleted in the middle of its upgrade and a pod with
// a tampered annotation that is fixed later.
func TestSimulationMixedFleet(t *testing.T) {
	plan := testPlan(maxUnavailable(intstr.FromInt32(3)))
	s := newSim(t, plan, 6, "proxy-v1")
	s.verbose = true
	s.addPod("cold-0", "proxy-legacy", true)
	s.addPod("current-0", "proxy-v2", true)
	s.addPlainPod("plain-0")
	leaving := s.addPod("leaving-0", "proxy-v1", true)
	leaving.DeletionTimestamp = &metav1.Time{Time: t0}
	s.removeAt["leaving-0"] = t0.Add(10 * time.Second)
	tampered := s.addPod("tampered-0", "proxy-v1", true)
	tampered.Annotations[meshv1alpha1.AnnotationUpgrade] = `{"plan":"web-v2","phase":"Bogus"}`
	for i, hash := range []string{"aaaa", "aaaa", "bbbb"} {
		pod := s.addPod("deploy-"+string(rune('a'+i)), "proxy-v1", true)
		pod.Labels["pod-template-hash"] = hash
		pod.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "shop-" + hash, Controller: ptr.To(true), APIVersion: "apps/v1"}}
	}
	s.hooks[3] = func(s *sim) {
		pod := s.pod("web-0")
		pod.DeletionTimestamp = &metav1.Time{Time: s.now}
		s.removeAt["web-0"] = s.now.Add(5 * time.Second)
		s.log.WriteString("  >> web-0 deleted in the middle of its upgrade (scale-down)\n")
	}
	s.hooks[40] = func(s *sim) {
		s.pods = removePod(s.pods, "deploy-a")
		s.pods = removePod(s.pods, "deploy-b")
		s.log.WriteString("  >> Deployment shop finished its rollout: the pods of ReplicaSet shop-aaaa are gone\n")
	}
	s.hooks[50] = func(s *sim) {
		delete(s.pod("tampered-0").Annotations, meshv1alpha1.AnnotationUpgrade)
		s.log.WriteString("  >> an administrator removed the malformed " + meshv1alpha1.AnnotationUpgrade + " annotation of tampered-0\n")
	}
	res := s.run(600)
	if res.Phase != meshv1alpha1.PhaseSucceeded {
		t.Errorf("phase %s, want Succeeded: %s", res.Phase, res.Message)
	}
	if got := sidecar.Version(s.pod("cold-0")); got != "proxy-v2" {
		t.Errorf("cold-0 runs %s, want proxy-v2 (InPlace)", got)
	}
	golden(t, "mixed-fleet", s.log.String())
}

// TestSimulationRetiringOldProxies plays old proxies that keep long-lived connections after the
// takeover: their pods count as upgraded at once (the next pods start while they retire), the old
// slot keeps its image and resources until the last connection closed, the drain budget cuts
// what outlives it (the action says so), an old proxy whose /ready cannot be read retires at the
// budget's end plus the grace, and the plan completes only once every old slot retired.
func TestSimulationRetiringOldProxies(t *testing.T) {
	plan := testPlan(maxUnavailable(intstr.FromInt32(2)))
	s := newSim(t, plan, 6, "proxy-v1")
	s.ms.Spec.Drain = &meshv1alpha1.DrainSpec{MaxDuration: &metav1.Duration{Duration: 40 * time.Second}}
	s.verbose = true
	s.holds = map[string]time.Duration{"web-0": 25 * time.Second, "web-1": 90 * time.Second, "web-3": 15 * time.Second}
	s.unreadable = map[string]bool{"web-4": true}
	var cut []string
	var sawRetiringWhileStarting bool
	s.checks = func(s *sim, res rollout.Result) {
		starts := false
		for _, a := range res.Actions {
			if a.ConnectionsCut {
				cut = append(cut, a.Pod.Name)
			}
			if a.Kind == rollout.ActionResizeSlotUp || a.Kind == rollout.ActionSwapSlot {
				starts = starts || a.State != nil && a.State.StartedAt.Equal(a.State.PhaseSince)
			}
			if a.Kind == rollout.ActionSwapSlot && a.Pod.Name == "web-2" {
				if got := s.pod("web-2").Annotations["meshlift.io/drain-max-duration"]; got != "40s" {
					t.Errorf("web-2's drain budget annotation is %q after its slot swap, want the MeshService's 40s", got)
				}
			}
		}
		sawRetiringWhileStarting = sawRetiringWhileStarting || starts && res.Counts.Retiring > 0
		for _, r := range res.Pods {
			if r.Phase == string(rollout.PodRetiring) && r.Pod != "web-4" && (r.Connections == nil || *r.Connections != heldConnections) {
				t.Errorf("status record of %s: connections %v, want %d", r.Pod, r.Connections, heldConnections)
			}
		}
	}
	res := s.run(600)
	if res.Phase != meshv1alpha1.PhaseSucceeded {
		t.Errorf("phase %s, want Succeeded: %s", res.Phase, res.Message)
	}
	if !sawRetiringWhileStarting {
		t.Error("no pod started while another retired: retiring pods must not hold the budget")
	}
	if want := []string{"web-1", "web-4"}; !slices.Equal(cut, want) {
		t.Errorf("retirements that cut connections: %v, want %v", cut, want)
	}
	golden(t, "retiring", s.log.String())
}

func removePod(pods []corev1.Pod, name string) []corev1.Pod {
	out := pods[:0]
	for _, pod := range pods {
		if pod.Name != name {
			out = append(out, pod)
		}
	}
	return out
}

func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var out []string
	for i := range max(len(w), len(g)) {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			out = append(out, "- "+a, "+ "+b)
		}
		if len(out) > 20 {
			break
		}
	}
	return strings.Join(out, "\n")
}

// A plan held by a step pause without a duration, whose target is then set back: the pause
// belongs to the old target, so the upgraded pods walk back at once.
func TestTargetSetBackDuringAStepPauseWalksBack(t *testing.T) {
	plan := testPlan(func(p *meshv1alpha1.UpgradePlan) {
		p.Spec.Strategy.Steps = []meshv1alpha1.UpgradeStep{
			step(intstr.FromInt32(2), &meshv1alpha1.StepPause{}),
			step(intstr.FromString("100%"), nil),
		}
	})
	s := newSim(t, plan, 3, "proxy-v1")
	s.hooks[60] = func(s *sim) { s.plan.Spec.TargetVersion = "proxy-v1" }
	res := s.run(600)
	if res.Phase != meshv1alpha1.PhaseRolledBack || res.Counts.Updated != 3 {
		t.Errorf("phase %s with %+v, want RolledBack with all 3 pods on proxy-v1: %s", res.Phase, res.Counts, res.Message)
	}
}
