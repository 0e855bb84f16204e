//go:build e2e

package e2e

// Fault drills for the operator's high availability (ARCHITECTURE §9: two replicas, webhooks and
// control plane on each; a lost leader resumes a plan within its lease time). Each runs under
// steady meshed traffic and ends with both replicas available and the injector reachable, so the
// tests after it start from a whole operator.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/rollout"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

const (
	operatorDeployment = "meshlift-controller-manager"
	leaseName          = "meshlift.mesh.meshlift.io"
	operatorReplicas   = 2
)

// operatorPods lists the operator's pods that are not being deleted.
func operatorPods(t testing.TB) []corev1.Pod {
	t.Helper()
	pods := &corev1.PodList{}
	if err := k8s.List(context.Background(), pods, client.InNamespace(operatorNamespace), client.MatchingLabels{"control-plane": "controller-manager"}); err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, pod := range pods.Items {
		if pod.DeletionTimestamp == nil {
			out = append(out, pod)
		}
	}
	return out
}

// leader returns the name of the operator pod that holds the leader Lease (controller-runtime's
// identity is "<pod name>_<uuid>"), and the Lease's holder identity.
func leader(ctx context.Context) (string, string, error) {
	lease := &coordinationv1.Lease{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: leaseName}, lease); err != nil {
		return "", "", err
	}
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
		return "", "", fmt.Errorf("the lease has no holder")
	}
	holder := *lease.Spec.HolderIdentity
	pod, _, _ := strings.Cut(holder, "_")
	return pod, holder, nil
}

// waitForTheWholeOperator waits until both replicas are available and the API server calls the
// injector again.
func waitForTheWholeOperator(t testing.TB) {
	t.Helper()
	waitAvailable(t, client.ObjectKey{Namespace: operatorNamespace, Name: operatorDeployment}, operatorReplicas)
	waitForTheInjector(t)
}

// scaleOperator sets the operator Deployment's replicas to n.
func scaleOperator(t testing.TB, n int32) {
	t.Helper()
	ctx := context.Background()
	d := &appsv1.Deployment{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: operatorDeployment}, d); err != nil {
		t.Fatal(err)
	}
	d.Spec.Replicas = ptr.To(n)
	if err := k8s.Update(ctx, d); err != nil {
		t.Fatal(err)
	}
}

// waitForNoOperatorPod waits until the operator, scaled to 0, has no pod and no available replica.
func waitForNoOperatorPod(t testing.TB) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) (bool, string) {
		pods := &corev1.PodList{}
		if err := k8s.List(ctx, pods, client.InNamespace(operatorNamespace), client.MatchingLabels{"control-plane": "controller-manager"}); err != nil {
			return false, err.Error()
		}
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: operatorDeployment}, d); err != nil {
			return false, err.Error()
		}
		return len(pods.Items) == 0 && d.Status.AvailableReplicas == 0,
			fmt.Sprintf("%d operator pods, %d available replicas", len(pods.Items), d.Status.AvailableReplicas)
	})
}

// podHistory is what a watch saw of one demo pod during a plan: each distinct upgrade phase in
// order, each value of the active slot, and each pair of slot images.
type podHistory struct {
	phases []rollout.PodPhase
	slots  []string
	images []string
}

// recordPodHistories watches the pods of app in ns until stop is closed and returns, per pod, the
// upgrade phases and active slots in the order they were written.
func recordPodHistories(t testing.TB, ns, app string) (stop func() map[string]*podHistory) {
	t.Helper()
	watcher, err := client.NewWithWatch(cfg, client.Options{Scheme: k8s.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	w, err := watcher.Watch(context.Background(), &corev1.PodList{}, client.InNamespace(ns), client.MatchingLabels{"app": app})
	if err != nil {
		t.Fatal(err)
	}
	histories := map[string]*podHistory{}
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			mu.Lock()
			h := histories[pod.Name]
			if h == nil {
				h = &podHistory{}
				histories[pod.Name] = h
			}
			if slot := pod.Annotations[meshv1alpha1.AnnotationActiveSlot]; len(h.slots) == 0 || h.slots[len(h.slots)-1] != slot {
				h.slots = append(h.slots, slot)
			}
			if images := sidecar.SlotImage(pod, 1) + " " + sidecar.SlotImage(pod, 2); len(h.images) == 0 || h.images[len(h.images)-1] != images {
				h.images = append(h.images, images)
			}
			if value, ok := pod.Annotations[meshv1alpha1.AnnotationUpgrade]; !ok {
				// not in flight yet
			} else if state, err := rollout.DecodeState(value); err == nil {
				if len(h.phases) == 0 || h.phases[len(h.phases)-1] != state.Phase {
					h.phases = append(h.phases, state.Phase)
				}
			}
			mu.Unlock()
		}
	}()
	return func() map[string]*podHistory {
		w.Stop()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return histories
	}
}

// TestALostLeaderResumesThePlanAndRepeatsNoStep deletes the leader in the middle of a
// hot-upgrade plan under load: the other replica takes the Lease and finishes the plan, no
// request fails, and no pod goes through a step twice (each pod swaps slots once, its slot images
// change once each, and it resizes and finishes once). It logs how long the new leader took to take over and to move the plan
// on.
func TestALostLeaderResumesThePlanAndRepeatsNoStep(t *testing.T) {
	a := newMeshedApp(t, "e2e-leader", 4, func(ns string) *meshv1alpha1.SidecarVersion { return releasedVersion(ns+"-v2", "2.0.0") })
	waitForTheWholeOperator(t)
	histories := recordPodHistories(t, a.ns, "demo")
	loader := a.startLoad(t, "client", 2*time.Minute)
	plan := gen.UpgradePlan("to-v2", a.to.Name, []string{"demo"}, gen.UpgradePlanMeta(gen.SetNamespace(a.ns)))
	plan.Spec.Strategy.Type = meshv1alpha1.StrategyHotUpgrade
	plan.Spec.Health.MinReadySeconds = 5
	if err := k8s.Create(context.Background(), plan); err != nil {
		t.Fatal(err)
	}
	follower := followPlan(t, plan)

	var before *meshv1alpha1.UpgradePlan
	testenv.Eventually(t, 3*time.Minute, func(ctx context.Context) (bool, string) {
		got := &meshv1alpha1.UpgradePlan{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(plan), got); err != nil {
			return false, err.Error()
		}
		before = got
		return got.Status.Counts.Updated >= 1 && got.Status.Counts.Updated < 4, fmt.Sprintf("plan %s %+v", got.Status.Phase, got.Status.Counts)
	})
	oldLeader, oldHolder, err := leader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	if err := k8s.Delete(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: oldLeader}}); err != nil {
		t.Fatal(err)
	}
	t.Logf("deleted the leader %s with the plan at %+v", oldLeader, before.Status.Counts)

	var newLeader string
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) (bool, string) {
		name, holder, err := leader(ctx)
		if err != nil {
			return false, err.Error()
		}
		newLeader = name
		return holder != oldHolder, "the lease is still held by " + holder
	})
	tookOver := time.Since(deleted)
	// The plan moves on once the new leader acts: a pod's upgrade state or the plan's counts change.
	testenv.Eventually(t, 3*time.Minute, func(ctx context.Context) (bool, string) {
		got := &meshv1alpha1.UpgradePlan{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(plan), got); err != nil {
			return false, err.Error()
		}
		return got.Status.Counts != before.Status.Counts || got.Status.Phase != before.Status.Phase,
			fmt.Sprintf("plan %s %+v", got.Status.Phase, got.Status.Counts)
	})
	resumed := time.Since(deleted)
	t.Logf("new leader %s took the lease %s after the delete and moved the plan on after %s",
		newLeader, tookOver.Round(100*time.Millisecond), resumed.Round(100*time.Millisecond))
	if newLeader == oldLeader {
		t.Errorf("the deleted pod %s leads again", oldLeader)
	}

	testenv.Eventually(t, 5*time.Minute, func(ctx context.Context) (bool, string) {
		got := &meshv1alpha1.UpgradePlan{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(plan), got); err != nil {
			return false, err.Error()
		}
		return got.Status.Phase == meshv1alpha1.PhaseSucceeded, fmt.Sprintf("plan %s %+v", got.Status.Phase, got.Status.Counts)
	})
	checkFollower(t, follower, meshv1alpha1.PhaseSucceeded)
	if r := loadResult(t, loader); r.Failed != 0 || r.OK == 0 {
		t.Errorf("requests failed while the leader changed: %+v", r)
	} else {
		t.Logf("load while the leader changed: sent %d, failed %d", r.Sent, r.Failed)
	}
	a.checkPods(t, 4, a.to, 0)

	// The steps that patch a pod happen once each: the target image into the idle slot, the slot
	// swap, the idle image into the retired slot, and the resizes around them. (WaitingReady and
	// Stabilizing are waits: the health gate goes back to WaitingReady when the new proxy's
	// readiness drops, which is not a repeated step.)
	for name, h := range histories() {
		if len(h.slots) != 2 {
			t.Errorf("pod %s: active slot went %v, want one swap", name, h.slots)
		}
		if len(h.images) != 3 {
			t.Errorf("pod %s: slot images went %q, want the target into the idle slot, then the idle image into the old one", name, h.images)
		}
		seen := map[rollout.PodPhase]int{}
		for _, phase := range h.phases {
			seen[phase]++
		}
		for _, phase := range []rollout.PodPhase{rollout.PodResizingUp, rollout.PodResizingDown, rollout.PodSucceeded} {
			if seen[phase] > 1 {
				t.Errorf("pod %s went through %s %d times: %v", name, phase, seen[phase], h.phases)
			}
		}
		if seen[rollout.PodReverting] != 0 || seen[rollout.PodFailed] != 0 {
			t.Errorf("pod %s: phases %v, want no revert or failure", name, h.phases)
		}
		if len(h.phases) == 0 || h.phases[len(h.phases)-1] != rollout.PodSucceeded {
			t.Errorf("pod %s: phases %v, want them to end in %s", name, h.phases, rollout.PodSucceeded)
		}
	}
	waitForTheWholeOperator(t)
}

// TestEveryPodCreatedWhileAReplicaGoesIsInjected creates pods one after another while one
// replica of the operator is deleted and replaced: the other replica serves the injector, so
// every pod gets its sidecar (the injector fails open, so a pod it missed would run without one).
func TestEveryPodCreatedWhileAReplicaGoesIsInjected(t *testing.T) {
	ns, _ := webMeshService(t, "e2e-replica-gone")
	waitForTheWholeOperator(t)
	victim := operatorPods(t)[0]

	// Pods that never get scheduled: what counts is what the injector did when they were created.
	create := func(ctx context.Context) error {
		pod := webPodIn(ns)
		pod.Spec.NodeSelector = map[string]string{"meshlift.io/e2e": "nowhere"}
		return k8s.Create(ctx, pod)
	}
	var created int
	deadline := time.Now().Add(40 * time.Second)
	deleteAt := time.Now().Add(5 * time.Second)
	var deletedAt time.Time
	for time.Now().Before(deadline) {
		if deletedAt.IsZero() && time.Now().After(deleteAt) {
			if err := k8s.Delete(context.Background(), &victim); err != nil {
				t.Fatal(err)
			}
			deletedAt = time.Now()
			t.Logf("deleted replica %s after %d pods", victim.Name, created)
		}
		if err := create(context.Background()); err != nil {
			t.Fatalf("creating pod %d: %v", created+1, err)
		}
		created++
		time.Sleep(150 * time.Millisecond)
	}
	// Keep creating until the replacement replica serves, so the window of its start is covered too.
	for {
		pods := operatorPods(t)
		var ready int
		for _, pod := range pods {
			if sidecar.PodReady(&pod) && pod.Name != victim.Name {
				ready++
			}
		}
		if ready == operatorReplicas {
			break
		}
		if time.Since(deletedAt) > 3*time.Minute {
			t.Fatalf("the operator did not get back to %d ready replicas", operatorReplicas)
		}
		if err := create(context.Background()); err != nil {
			t.Fatalf("creating pod %d: %v", created+1, err)
		}
		created++
		time.Sleep(150 * time.Millisecond)
	}
	for i := 0; i < 20; i++ {
		if err := create(context.Background()); err != nil {
			t.Fatalf("creating pod %d: %v", created+1, err)
		}
		created++
		time.Sleep(150 * time.Millisecond)
	}

	pods := &corev1.PodList{}
	if err := k8s.List(context.Background(), pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var missed []string
	for i := range pods.Items {
		if !sidecar.IsInjected(&pods.Items[i]) {
			missed = append(missed, pods.Items[i].Name)
		}
	}
	t.Logf("%d pods created while replica %s was deleted and replaced; %d without a sidecar", len(pods.Items), victim.Name, len(missed))
	if len(pods.Items) != created {
		t.Errorf("%d pods exist, %d were created", len(pods.Items), created)
	}
	if len(missed) != 0 {
		t.Errorf("%d pods were created without a sidecar: %v", len(missed), missed)
	}
	waitForTheWholeOperator(t)
}

// TestRunningProxiesKeepServingWhileEveryReplicaRestarts deletes every replica of the operator
// at once under meshed load on new connections: the proxies keep serving on the certificates
// they hold, every new mTLS connection succeeds, and once the replicas are back the proxies
// reconnect to the control plane.
func TestRunningProxiesKeepServingWhileEveryReplicaRestarts(t *testing.T) {
	a := newMeshedApp(t, "e2e-restart-all", 3, func(ns string) *meshv1alpha1.SidecarVersion { return releasedVersion(ns+"-v2", "2.0.0") })
	waitForTheWholeOperator(t)
	loader := a.startLoad(t, "client", 80*time.Second)
	certificates := func(ctx context.Context) (map[string]string, error) {
		pods, err := runningPods(ctx, a.ns, "demo")
		out := map[string]string{}
		for _, pod := range pods {
			out[pod.Name] = pod.Annotations[meshv1alpha1.AnnotationCertificateNotAfter]
		}
		return out, err
	}
	before, err := certificates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	old := operatorPods(t)
	for i := range old {
		if err := k8s.Delete(context.Background(), &old[i]); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("deleted all %d operator replicas under load", len(old))
	waitAvailable(t, client.ObjectKey{Namespace: operatorNamespace, Name: operatorDeployment}, operatorReplicas)
	for _, pod := range operatorPods(t) {
		for _, o := range old {
			if pod.Name == o.Name {
				t.Errorf("replica %s was not replaced", pod.Name)
			}
		}
	}
	if r := loadResult(t, loader); r.Failed != 0 || r.OK == 0 {
		t.Errorf("requests failed while every replica restarted: %+v", r)
	} else {
		t.Logf("load while every replica restarted: sent %d, failed %d", r.Sent, r.Failed)
	}
	// The proxies are connected to the new replicas again: each got a new certificate from them
	// (the replica that serves a proxy records its certificate's expiry on the pod).
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) (bool, string) {
		after, err := certificates(ctx)
		if err != nil {
			return false, err.Error()
		}
		for name, notAfter := range after {
			if notAfter == "" || notAfter <= before[name] {
				return false, fmt.Sprintf("pod %s: certificate expiry %q, before the restart %q", name, notAfter, before[name])
			}
		}
		return len(after) == 3, fmt.Sprintf("%d demo pods", len(after))
	})
	waitForTheInjector(t)
}
