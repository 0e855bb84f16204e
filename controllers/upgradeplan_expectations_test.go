package controllers

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshlift/meshlift/internal/rollout"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
)

// apiServerStub plays the API server for the writes of apply: every write that changes the pod
// gives it the next resourceVersion. The reads the expectations are about are the test's.
type apiServerStub struct {
	client.Client
	mu sync.Mutex
	rv int
}

func (s *apiServerStub) Patch(_ context.Context, obj client.Object, _ client.Patch, _ ...client.PatchOption) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rv++
	obj.SetResourceVersion(strconv.Itoa(s.rv))
	return nil
}

func (s *apiServerStub) SubResource(string) client.SubResourceClient {
	return subResourceStub{server: s}
}

type subResourceStub struct {
	client.SubResourceClient
	server *apiServerStub
}

func (s subResourceStub) Patch(ctx context.Context, obj client.Object, patch client.Patch, _ ...client.SubResourcePatchOption) error {
	return s.server.Patch(ctx, obj, patch)
}

// injectedPod is an injected pod as the cache shows it at resourceVersion rv.
func injectedPod(name string, rv int) corev1.Pod {
	pod := gen.Pod(name, gen.PodMeta(gen.SetLabels("app", name)))
	out := sidecar.Inject(pod, gen.MeshService(name), gen.SidecarVersion("v1", "1.0.0"), sidecar.DefaultOptions()).Pod
	out.UID = types.UID("uid-" + name)
	out.ResourceVersion = strconv.Itoa(rv)
	return *out
}

func withVersion(pod corev1.Pod, rv string) []corev1.Pod {
	pod.ResourceVersion = rv
	return []corev1.Pod{pod}
}

// Two plans over disjoint pods, reconciled alternately (MaxConcurrentReconciles may even run
// them at once): what one plan wrote must stay expected while the other plan is reconciled.
func TestAWriteForOnePlanIsStillExpectedAfterReconcilingAnotherPlan(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := clocktesting.NewFakePassiveClock(now)
	server := &apiServerStub{rv: 100}
	r := &UpgradePlanReconciler{Client: server, Recorder: &events.FakeRecorder{}, Clock: clock}
	podOfA, podOfB := injectedPod("a-0", 10), injectedPod("b-0", 20)

	// Plan A's reconcile: the cache is current, and the pod is patched (to version 101).
	if r.cacheIsBehind([]corev1.Pod{podOfA}) {
		t.Fatal("behind before any write")
	}
	patch := &rollout.Action{Pod: client.ObjectKeyFromObject(&podOfA), UID: podOfA.UID, Kind: rollout.ActionExclude,
		Annotations: []rollout.AnnotationChange{{Key: "meshlift.io/eds-excluded", Value: "true"}}}
	if changed, err := r.apply(ctx, &podOfA, patch); err != nil || !changed {
		t.Fatalf("apply: %v, %v", changed, err)
	}
	// Plan B's reconcile, on its own pods: its cache is current.
	if r.cacheIsBehind([]corev1.Pod{podOfB}) {
		t.Error("plan B waits for a write to plan A's pod")
	}
	// Plan A's next reconcile, on a cache that has not seen the patch yet: it must wait.
	if !r.cacheIsBehind([]corev1.Pod{podOfA}) {
		t.Fatal("plan B's reconcile forgot the write to plan A's pod: plan A would decide on a pod without its patch")
	}
	// Once the cache shows the patch, the expectation is met and forgotten.
	if r.cacheIsBehind(withVersion(podOfA, "101")) || r.expectations.pending() != 0 {
		t.Errorf("still behind (%d expectations) once the cache shows the patch", r.expectations.pending())
	}
}

func TestACacheThatShowsThePatchButNotTheResizeIsBehind(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	server := &apiServerStub{rv: 100}
	r := &UpgradePlanReconciler{Client: server, Recorder: &events.FakeRecorder{}, Clock: clocktesting.NewFakePassiveClock(now)}
	pod := injectedPod("a-0", 10)
	resources := corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}}
	action := &rollout.Action{Pod: client.ObjectKeyFromObject(&pod), UID: pod.UID, Kind: rollout.ActionResizeSlotUp,
		Annotations: []rollout.AnnotationChange{{Key: "meshlift.io/eds-excluded", Value: "true"}},
		Resize:      &rollout.Resize{Slot: 2, Container: sidecar.SlotContainerName(2), Resources: resources}}
	if _, err := r.apply(context.Background(), &pod, action); err != nil {
		t.Fatal(err)
	}
	// The cache shows the pod before the patch, after the patch, then after the resize.
	for _, step := range []struct {
		rv     string
		behind bool
	}{{"10", true}, {"101", true}, {"102", false}} {
		if got := r.cacheIsBehind(withVersion(pod, step.rv)); got != step.behind {
			t.Errorf("at resourceVersion %s: behind %v, want %v", step.rv, got, step.behind)
		}
	}
}

func TestTheExpectationOfAPodNoPlanListsAnyMoreEndsAfterATimeout(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := clocktesting.NewFakePassiveClock(now)
	r := &UpgradePlanReconciler{Clock: clock}
	gone, other := injectedPod("gone-0", 10), injectedPod("other-0", 30)
	r.expectations.wrote(gone.UID, "10", "11", now)
	clock.SetTime(now.Add(time.Minute))
	if r.cacheIsBehind([]corev1.Pod{other}); r.expectations.pending() != 1 {
		t.Fatal("the expectation of a pod that another plan's list does not show was dropped at once")
	}
	clock.SetTime(now.Add(expectationTimeout + time.Second))
	if r.cacheIsBehind([]corev1.Pod{other}); r.expectations.pending() != 0 {
		t.Error("the expectation of a deleted pod is kept forever")
	}
}

func TestAWriteThatChangesNothingIsNotExpected(t *testing.T) {
	r := &UpgradePlanReconciler{Clock: clocktesting.NewFakePassiveClock(time.Now())}
	pod := injectedPod("a-0", 10)
	r.expectations.wrote(pod.UID, "10", "10", time.Now())
	if r.cacheIsBehind([]corev1.Pod{pod}) {
		t.Error("a no-op write (same resourceVersion) would hold the plan until the timeout")
	}
}

// Plans are reconciled concurrently (MaxConcurrentReconciles): each one's writes and checks of
// its own pods must not disturb the others' (run with -race).
func TestExpectationsOfConcurrentPlansStayApart(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	r := &UpgradePlanReconciler{Clock: clocktesting.NewFakePassiveClock(now)}
	var wg sync.WaitGroup
	for plan := range 8 {
		wg.Go(func() {
			pod := injectedPod(fmt.Sprintf("plan%d-0", plan), 10)
			for rv := 10; rv < 200; rv++ {
				r.expectations.wrote(pod.UID, strconv.Itoa(rv), strconv.Itoa(rv+1), now)
				if !r.cacheIsBehind(withVersion(pod, strconv.Itoa(rv))) {
					t.Errorf("plan %d: its write at %d is forgotten", plan, rv)
					return
				}
				if r.cacheIsBehind(withVersion(pod, strconv.Itoa(rv+1))) {
					t.Errorf("plan %d: behind once the cache shows %d", plan, rv+1)
					return
				}
			}
		})
	}
	wg.Wait()
}
