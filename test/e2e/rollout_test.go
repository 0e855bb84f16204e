//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/controllers"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// releasedVersion is a SidecarVersion of the real proxy image meshlift/meshlift-proxy:<semver>
// (make load-images loads 1.0.0 and 2.0.0), with the resources a hot upgrade resizes the idle
// slot to.
func releasedVersion(name, semver string) *meshv1alpha1.SidecarVersion {
	return gen.SidecarVersion(name, semver, func(v *meshv1alpha1.SidecarVersion) {
		v.Spec.Image, v.Spec.IdleImage = "meshlift/meshlift-proxy:"+semver, "meshlift/meshlift-idle:dev"
		v.Spec.Resources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
		}
	})
}

// loadPod calls target through its own proxy for d and exits non-zero if a single request failed;
// its termination message is the load generator's summary.
func loadPod(ns, name, target string, d time.Duration) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "client"}},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			Containers: []corev1.Container{{
				Name: "load", Image: "meshlift/meshlift-demo:dev", ImagePullPolicy: corev1.PullIfNotPresent,
				Args: []string{"load", "--target=" + target, "--mode=newconn", "--rps=40", "--duration=" + d.String(),
					"--concurrency=4", "--output=json"},
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
		},
	}
}

// meshedApp is a namespace with the demo app (MeshService demo, replicas pods on version from)
// and a client MeshService whose pods call it on 127.0.0.1:18080 through their proxy.
type meshedApp struct {
	ns       string
	from, to *meshv1alpha1.SidecarVersion
}

func newMeshedApp(t testing.TB, prefix string, replicas int32, to func(ns string) *meshv1alpha1.SidecarVersion) *meshedApp {
	t.Helper()
	ctx := context.Background()
	ns := createNamespace(t, prefix)
	a := &meshedApp{ns: ns, from: releasedVersion(ns+"-v1", "1.0.0"), to: to(ns)}
	for _, v := range []*meshv1alpha1.SidecarVersion{a.from, a.to} {
		if err := k8s.Create(ctx, v); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), v) })
	}
	createDemoMeshServices(t, ns, a.from.Name)
	if err := k8s.Create(ctx, demoDeployment(ns, "demo", replicas)); err != nil {
		t.Fatal(err)
	}
	waitForMeshedPods(t, ns, "demo", int(replicas))
	return a
}

// startLoad starts a client pod sending load to the demo app for d, and waits until it sends.
func (a *meshedApp) startLoad(t testing.TB, name string, d time.Duration) *corev1.Pod {
	t.Helper()
	loader := loadPod(a.ns, name, "http://127.0.0.1:18080/", d)
	if err := k8s.Create(context.Background(), loader); err != nil {
		t.Fatal(err)
	}
	waitForMeshedPods(t, a.ns, "client", 1)
	time.Sleep(3 * time.Second)
	return loader
}

// loadResult waits for the load pod to finish and returns its summary.
func loadResult(t testing.TB, loader *corev1.Pod) loadSummary {
	t.Helper()
	testenv.Eventually(t, 4*time.Minute, func(ctx context.Context) (bool, string) {
		pod := &corev1.Pod{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(loader), pod); err != nil {
			return false, err.Error()
		}
		return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed, fmt.Sprintf("the load pod is %s", pod.Status.Phase)
	})
	clientset, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	logs, err := clientset.CoreV1().Pods(loader.Namespace).GetLogs(loader.Name, &corev1.PodLogOptions{Container: "load"}).DoRaw(context.Background())
	if err != nil {
		t.Fatalf("reading the load's summary: %v", err)
	}
	var summary loadSummary
	if err := json.Unmarshal(logs, &summary); err != nil {
		t.Fatalf("the load printed %q: %v", logs, err)
	}
	return summary
}

// loadSummary is the part of meshlift-demo load's JSON summary the tests read.
type loadSummary struct {
	Sent     int            `json:"sent"`
	OK       int            `json:"ok"`
	Failed   int            `json:"failed"`
	Failures map[string]int `json:"failures"`
}

// upgrade creates a plan of the demo MeshService to a.to with strategy, and waits until it
// reaches want; it returns the plan and how long that took.
func (a *meshedApp) upgrade(t testing.TB, strategy meshv1alpha1.StrategyType, edit func(*meshv1alpha1.UpgradePlan), want meshv1alpha1.UpgradePhase) (*meshv1alpha1.UpgradePlan, time.Duration) {
	t.Helper()
	started := time.Now()
	plan := gen.UpgradePlan("to-v2", a.to.Name, []string{"demo"}, gen.UpgradePlanMeta(gen.SetNamespace(a.ns)))
	plan.Spec.Strategy.Type = strategy
	if edit != nil {
		edit(plan)
	}
	if err := k8s.Create(context.Background(), plan); err != nil {
		t.Fatal(err)
	}
	// Users follow a plan with the kubectl plugin: it must see it through to the end and exit
	// with its outcome (a manual step pause counts as the end with --success-on-pause).
	var followArgs []string
	if want == meshv1alpha1.PhasePaused {
		followArgs = append(followArgs, "--success-on-pause")
	}
	follower := followPlan(t, plan, followArgs...)
	got := &meshv1alpha1.UpgradePlan{}
	testenv.Eventually(t, 5*time.Minute, func(ctx context.Context) (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(plan), got); err != nil {
			return false, err.Error()
		}
		return got.Status.Phase == want, fmt.Sprintf("plan %s %+v %v", got.Status.Phase, got.Status.Counts, got.Status.Pods)
	})
	took := time.Since(started)
	checkFollower(t, follower, want)
	return got, took
}

// checkPods checks that every running demo pod runs version in slot (0: the single-slot check is
// skipped) and that no application container restarted.
func (a *meshedApp) checkPods(t testing.TB, want int, version *meshv1alpha1.SidecarVersion, slot int) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) (bool, string) {
		pods, err := runningPods(ctx, a.ns, "demo")
		return err == nil && len(pods) == want, fmt.Sprintf("%d demo pods run and are ready (%v), want %d", len(pods), err, want)
	})
	pods, err := runningPods(context.Background(), a.ns, "demo")
	if err != nil {
		t.Fatal(err)
	}
	for _, pod := range pods {
		if sidecar.Version(&pod) != version.Name || sidecar.SlotImage(&pod, sidecar.ActiveSlot(&pod)) != version.Spec.Image ||
			(slot != 0 && sidecar.ActiveSlot(&pod) != slot) || sidecar.SlotImage(&pod, sidecar.IdleSlot(&pod)) != version.Spec.IdleImage {
			t.Errorf("pod %s: version %s, active slot %d, slot images %q %q", pod.Name, sidecar.Version(&pod), sidecar.ActiveSlot(&pod),
				sidecar.SlotImage(&pod, 1), sidecar.SlotImage(&pod, 2))
		}
		for _, s := range pod.Status.ContainerStatuses {
			if s.Name == "demo" && s.RestartCount != 0 {
				t.Errorf("pod %s: the application restarted %d times", pod.Name, s.RestartCount)
			}
		}
	}
}

// TestAHotUpgradeUnderLoadDropsNothing hot-upgrades a 5-replica MeshService from the real proxy
// 1.0.0 to 2.0.0 while a client sends a steady bounded load through its own proxy: not one
// request fails, no application container restarts, and every pod ends on the target in its
// other slot with the idle image in the first.
func TestAHotUpgradeUnderLoadDropsNothing(t *testing.T) {
	a := newMeshedApp(t, "e2e-hot", 5, func(ns string) *meshv1alpha1.SidecarVersion { return releasedVersion(ns+"-v2", "2.0.0") })
	loader := a.startLoad(t, "client", 90*time.Second)
	_, took := a.upgrade(t, meshv1alpha1.StrategyHotUpgrade, nil, meshv1alpha1.PhaseSucceeded)
	t.Logf("HotUpgrade: 5 pods in %s", took.Round(time.Second))
	r := loadResult(t, loader)
	t.Logf("HotUpgrade under load: sent %d, failed %d", r.Sent, r.Failed)
	if r.Failed != 0 || r.OK == 0 {
		t.Errorf("requests failed during the hot upgrade: %+v", r)
	}
	a.checkPods(t, 5, a.to, 2)
}

// TestATargetThatNeverBecomesReadyIsRolledBack targets a proxy that never becomes ready (its
// image cannot be pulled: the machine has no registry): the first pod fails its health gate, is
// put back on the old proxy (which never stopped serving), and the plan stops (maxFailedPods 0,
// failurePolicy Rollback) with every pod on the old version.
func TestATargetThatNeverBecomesReadyIsRolledBack(t *testing.T) {
	a := newMeshedApp(t, "e2e-broken", 3, func(ns string) *meshv1alpha1.SidecarVersion {
		return releasedVersion(ns+"-v2", "0.0.0-does-not-exist")
	})
	loader := a.startLoad(t, "client", 60*time.Second)
	plan, took := a.upgrade(t, meshv1alpha1.StrategyHotUpgrade, func(p *meshv1alpha1.UpgradePlan) {
		p.Spec.Health.ProgressDeadlineSeconds = 20
		p.Spec.FailurePolicy = meshv1alpha1.FailurePolicyRollback
	}, meshv1alpha1.PhaseRolledBack)
	t.Logf("rolled back after %s: %+v", took.Round(time.Second), plan.Status.Counts)
	if plan.Status.Counts.Failed != 1 {
		t.Errorf("counts %+v, want exactly one failed pod", plan.Status.Counts)
	}
	if r := loadResult(t, loader); r.Failed != 0 || r.OK == 0 {
		t.Errorf("requests failed while the broken version was tried and put back: %+v", r)
	}
	a.checkPods(t, 3, a.from, 1)
}

// TestAPlanSurvivesTheOperatorBeingDeleted deletes the operator's pod while a plan runs: the new
// operator pod continues from the pods' annotations and the plan completes.
func TestAPlanSurvivesTheOperatorBeingDeleted(t *testing.T) {
	a := newMeshedApp(t, "e2e-restart", 4, func(ns string) *meshv1alpha1.SidecarVersion { return releasedVersion(ns+"-v2", "2.0.0") })
	loader := a.startLoad(t, "client", 90*time.Second)
	plan := gen.UpgradePlan("to-v2", a.to.Name, []string{"demo"}, gen.UpgradePlanMeta(gen.SetNamespace(a.ns)))
	plan.Spec.Health.MinReadySeconds = 3
	if err := k8s.Create(context.Background(), plan); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) (bool, string) {
		got := &meshv1alpha1.UpgradePlan{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(plan), got); err != nil {
			return false, err.Error()
		}
		return got.Status.Counts.Updated >= 1 && len(got.Status.Pods) > 0, fmt.Sprintf("plan %+v", got.Status.Counts)
	})
	operators := &corev1.PodList{}
	if err := k8s.List(context.Background(), operators, client.InNamespace("meshlift-system"), client.MatchingLabels{"control-plane": "controller-manager"}); err != nil {
		t.Fatal(err)
	}
	for i := range operators.Items {
		if err := k8s.Delete(context.Background(), &operators.Items[i]); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("deleted %d operator pod(s) in the middle of the plan", len(operators.Items))
	testenv.Eventually(t, 5*time.Minute, func(ctx context.Context) (bool, string) {
		got := &meshv1alpha1.UpgradePlan{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(plan), got); err != nil {
			return false, err.Error()
		}
		return got.Status.Phase == meshv1alpha1.PhaseSucceeded, fmt.Sprintf("plan %s %+v", got.Status.Phase, got.Status.Counts)
	})
	if r := loadResult(t, loader); r.Failed != 0 || r.OK == 0 {
		t.Errorf("requests failed: %+v", r)
	}
	a.checkPods(t, 4, a.to, 0)
}

// TestInPlaceAndRecreateComplete runs the two other strategies, each under the same load as the
// hot upgrade, and logs their failed requests and time next to each other. InPlace restarts the
// proxy cold after taking the pod out of the endpoints; Recreate evicts the pods (the
// Deployment replaces them and the injector gives them the target). Neither restarts an app
// container in place.
func TestInPlaceAndRecreateComplete(t *testing.T) {
	for _, strategy := range []meshv1alpha1.StrategyType{meshv1alpha1.StrategyInPlace, meshv1alpha1.StrategyRecreate} {
		t.Run(string(strategy), func(t *testing.T) {
			a := newMeshedApp(t, "e2e-"+strings.ToLower(string(strategy)), 3, func(ns string) *meshv1alpha1.SidecarVersion {
				return releasedVersion(ns+"-v2", "2.0.0")
			})
			loader := a.startLoad(t, "client", 90*time.Second)
			_, took := a.upgrade(t, strategy, nil, meshv1alpha1.PhaseSucceeded)
			r := loadResult(t, loader)
			t.Logf("%s: 3 pods in %s; under load sent %d, failed %d %v", strategy, took.Round(time.Second), r.Sent, r.Failed, r.Failures)
			if r.OK == 0 {
				t.Errorf("no request got through: %+v", r)
			}
			a.checkPods(t, 3, a.to, 0)
			if strategy == meshv1alpha1.StrategyInPlace {
				// Every drain was confirmed by the control plane, none went ahead on the timeout.
				events := &eventsv1.EventList{}
				if err := k8s.List(context.Background(), events, client.InNamespace(a.ns)); err != nil {
					t.Fatal(err)
				}
				for _, e := range events.Items {
					if e.Reason == controllers.EventReasonDrainUnconfirmed {
						t.Errorf("event %s: %s", e.Reason, e.Note)
					}
				}
			}
		})
	}
}

// TestSettingTheTargetBackWalksUpgradedPodsBack stops a plan after its first step (2 of 3 pods
// upgraded, a pause without a duration), then sets the target back: the upgraded pods walk back
// to the old version the same way, by hot upgrade, under load, and the plan ends RolledBack.
func TestSettingTheTargetBackWalksUpgradedPodsBack(t *testing.T) {
	a := newMeshedApp(t, "e2e-back", 3, func(ns string) *meshv1alpha1.SidecarVersion { return releasedVersion(ns+"-v2", "2.0.0") })
	loader := a.startLoad(t, "client", 90*time.Second)
	plan, _ := a.upgrade(t, meshv1alpha1.StrategyHotUpgrade, func(p *meshv1alpha1.UpgradePlan) {
		p.Spec.Strategy.Steps = []meshv1alpha1.UpgradeStep{
			{Partition: intstr.FromInt32(2), Pause: &meshv1alpha1.StepPause{}},
			{Partition: intstr.FromString("100%")},
		}
	}, meshv1alpha1.PhasePaused)
	if plan.Status.Counts.Updated != 2 {
		t.Fatalf("the first step stopped at %+v, want 2 updated", plan.Status.Counts)
	}
	// The plan is paused after its step: rollback refuses (it is still in progress); abort sets
	// the target back to where the pods came from, read from their records.
	if out, code := runPlugin(t, "rollback", plan.Name, "-n", a.ns); code == 0 || !strings.Contains(out, "still in progress") {
		t.Errorf("kubectl meshlift rollback of a paused plan exited %d: %s", code, out)
	}
	out, code := runPlugin(t, "abort", plan.Name, "-n", a.ns)
	t.Logf("kubectl meshlift abort: %s", out)
	if code != 0 || !strings.Contains(out, "set back from "+a.to.Name+" to "+a.from.Name) {
		t.Fatalf("kubectl meshlift abort exited %d", code)
	}
	follower := followPlan(t, plan)
	got := &meshv1alpha1.UpgradePlan{}
	testenv.Eventually(t, 5*time.Minute, func(ctx context.Context) (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(plan), got); err != nil {
			return false, err.Error()
		}
		return got.Status.Phase == meshv1alpha1.PhaseRolledBack || got.Status.Phase == meshv1alpha1.PhaseSucceeded,
			fmt.Sprintf("plan %s %+v %v", got.Status.Phase, got.Status.Counts, got.Status.Pods)
	})
	if got.Spec.TargetVersion != a.from.Name {
		t.Errorf("after abort the plan targets %s, want %s", got.Spec.TargetVersion, a.from.Name)
	}
	checkFollower(t, follower, got.Status.Phase)
	if r := loadResult(t, loader); r.Failed != 0 || r.OK == 0 {
		t.Errorf("requests failed while pods walked back: %+v", r)
	}
	a.checkPods(t, 3, a.from, 0)
}
