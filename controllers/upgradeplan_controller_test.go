package controllers_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/controllers"
	"github.com/meshlift/meshlift/internal/podcache"
	"github.com/meshlift/meshlift/internal/proxyadmin"
	"github.com/meshlift/meshlift/internal/rollout"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// envtest has no kubelet: these tests play its part. kubelet.sync starts every proxy container
// whose image changed (status image := spec image) and reports it ready or not, as the test says.

// rolloutFixture is a namespace with a MeshService "web" whose pods run version from.
type rolloutFixture struct {
	ns       string
	from, to *meshv1alpha1.SidecarVersion
	pods     []string
	// pendingResize, when set, is the PodResizePending condition the test's kubelet reports
	// instead of applying a resize: the containers keep reporting the resources they had.
	pendingResize *corev1.PodCondition
}

func newRolloutFixture(t *testing.T, prefix string, replicas int, opts ...gen.MeshServiceOption) *rolloutFixture {
	t.Helper()
	ctx := context.Background()
	f := &rolloutFixture{ns: env.Namespace(t, prefix)}
	resources := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
	}
	f.from = gen.SidecarVersion(f.ns+"-v1", "1.0.0", func(v *meshv1alpha1.SidecarVersion) { v.Spec.Resources = resources })
	f.to = gen.SidecarVersion(f.ns+"-v2", "2.0.0", func(v *meshv1alpha1.SidecarVersion) { v.Spec.Resources = resources })
	for _, v := range []*meshv1alpha1.SidecarVersion{f.from, f.to} {
		if err := env.Client.Create(ctx, v); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), v) })
	}
	ms := gen.MeshService("web", append([]gen.MeshServiceOption{gen.PinVersion(f.from.Name), gen.MeshServiceMeta(gen.SetNamespace(f.ns))}, opts...)...)
	if err := env.Client.Create(ctx, ms); err != nil {
		t.Fatal(err)
	}
	for i := range replicas {
		name := "web-" + strconv.Itoa(i)
		pod := gen.Pod(name, gen.PodMeta(gen.SetNamespace(f.ns), gen.SetLabels("app", "web")))
		injected := sidecar.Inject(pod, ms, f.from, sidecar.DefaultOptions())
		if injected.Skipped != "" {
			t.Fatalf("injection skipped: %s", injected.Message)
		}
		if err := env.Client.Create(ctx, injected.Pod); err != nil {
			t.Fatal(err)
		}
		f.pods = append(f.pods, name)
	}
	f.sync(t, func(*corev1.Pod, string) bool { return true })
	return f
}

// sync plays the kubelet once for every pod: each container runs its spec image, ready as
// ready(pod, container) says.
func (f *rolloutFixture) sync(t *testing.T, ready func(pod *corev1.Pod, container string) bool) {
	t.Helper()
	ctx := context.Background()
	for _, name := range f.pods {
		pod := &corev1.Pod{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: name}, pod); err != nil {
			t.Fatal(err)
		}
		now := metav1.Now()
		resizing := false
		statuses := func(containers []corev1.Container, previous []corev1.ContainerStatus) []corev1.ContainerStatus {
			var out []corev1.ContainerStatus
			for _, c := range containers {
				// A kubelet that supports in-place resize reports the resources it applied.
				s := corev1.ContainerStatus{Name: c.Name, Image: c.Image, Ready: ready(pod, c.Name),
					State:     corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
					Resources: c.Resources.DeepCopy()}
				for _, p := range previous {
					if p.Name == c.Name {
						s.RestartCount = p.RestartCount
						if p.Image != c.Image {
							s.RestartCount++
						}
						if f.pendingResize != nil && p.Resources != nil && !equality.Semantic.DeepEqual(*p.Resources, c.Resources) {
							s.Resources, resizing = p.Resources, true
						}
					}
				}
				out = append(out, s)
			}
			return out
		}
		pod.Status.Phase = corev1.PodRunning
		if pod.Status.PodIP == "" {
			pod.Status.PodIP = nextPodIP()
		}
		pod.Status.InitContainerStatuses = statuses(pod.Spec.InitContainers, pod.Status.InitContainerStatuses)
		pod.Status.ContainerStatuses = statuses(pod.Spec.Containers, pod.Status.ContainerStatuses)
		allReady := corev1.ConditionTrue
		for _, s := range append(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses...) {
			if !s.Ready && s.Name != sidecar.SlotContainerName(sidecar.IdleSlot(pod)) {
				allReady = corev1.ConditionFalse
			}
		}
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: allReady, LastTransitionTime: now}}
		if resizing {
			pending := *f.pendingResize
			pending.LastTransitionTime = now
			pod.Status.Conditions = append(pod.Status.Conditions, pending)
		}
		if err := env.Client.Status().Update(ctx, pod); err != nil && !apierrors.IsConflict(err) {
			t.Fatal(err)
		}
	}
}

// podIPs numbers the pods of every test: each gets an IP of its own, which the suite's proxies
// (proxies_test.go) tell apart.
var podIPs atomic.Uint32

func nextPodIP() string {
	n := podIPs.Add(1)
	return fmt.Sprintf("10.%d.%d.%d", 1+n>>16&0xff, n>>8&0xff, n&0xff)
}

func (f *rolloutFixture) list(t *testing.T) []corev1.Pod {
	t.Helper()
	pods := &corev1.PodList{}
	if err := env.Client.List(context.Background(), pods, client.InNamespace(f.ns)); err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

func (f *rolloutFixture) plan(t *testing.T, name string) *meshv1alpha1.UpgradePlan {
	t.Helper()
	plan := &meshv1alpha1.UpgradePlan{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: f.ns, Name: name}, plan); err != nil {
		t.Fatal(err)
	}
	return plan
}

// inFlight counts the pods whose upgrade is in flight and holds the plan's budget: a pod whose
// new proxy passed its health gate (its old slot retires or shrinks) holds none.
func inFlight(pods []corev1.Pod) int {
	n := 0
	for i := range pods {
		if value := pods[i].Annotations[meshv1alpha1.AnnotationUpgrade]; value != "" {
			if s, err := rollout.DecodeState(value); err == nil && s.Active() && s.Phase != rollout.PodRetiring && s.Phase != rollout.PodResizingDown {
				n++
			}
		}
	}
	return n
}

func TestAHotUpgradeMovesEveryPodThroughItsIdleSlot(t *testing.T) {
	f := newRolloutFixture(t, "rollout-hot", 3)
	plan := gen.UpgradePlan("to-v2", f.to.Name, []string{"web"}, gen.UpgradePlanMeta(gen.SetNamespace(f.ns)))
	if err := env.Client.Create(context.Background(), plan); err != nil {
		t.Fatal(err)
	}
	maxInFlight := 0
	testenv.Eventually(t, 2*time.Minute, func(context.Context) (bool, string) {
		f.sync(t, func(*corev1.Pod, string) bool { return true })
		pods := f.list(t)
		maxInFlight = max(maxInFlight, inFlight(pods))
		p := f.plan(t, "to-v2")
		return p.Status.Phase == meshv1alpha1.PhaseSucceeded, fmt.Sprintf("plan %s, counts %+v", p.Status.Phase, p.Status.Counts)
	})
	if maxInFlight > 1 {
		t.Errorf("%d pods were in flight at once, maxUnavailable is 1", maxInFlight)
	}
	for _, pod := range f.list(t) {
		active := sidecar.ActiveSlot(&pod)
		if sidecar.Version(&pod) != f.to.Name || active != 2 ||
			sidecar.SlotImage(&pod, 2) != f.to.Spec.Image || sidecar.SlotImage(&pod, 1) != f.to.Spec.IdleImage {
			t.Errorf("pod %s: version %s, active slot %d, slot images %q %q", pod.Name, sidecar.Version(&pod), active,
				sidecar.SlotImage(&pod, 1), sidecar.SlotImage(&pod, 2))
		}
		if got := sidecar.Container(&pod, 1).Resources; !got.Requests.Memory().Equal(resource.MustParse("8Mi")) {
			t.Errorf("pod %s: the retired slot keeps %v, want the idle resources", pod.Name, got.Requests)
		}
		for _, s := range pod.Status.ContainerStatuses {
			if s.Name == "app" && s.RestartCount != 0 {
				t.Errorf("pod %s: the app restarted", pod.Name)
			}
		}
	}
	p := f.plan(t, "to-v2")
	if p.Status.Counts.Updated != 3 || !meta.IsStatusConditionTrue(p.Status.Conditions, "Complete") {
		t.Errorf("plan status %+v", p.Status)
	}
}

func TestAProxyThatNeverBecomesReadyIsPutBackAndThePlanStops(t *testing.T) {
	f := newRolloutFixture(t, "rollout-fail", 3)
	plan := gen.UpgradePlan("to-v2", f.to.Name, []string{"web"}, gen.UpgradePlanMeta(gen.SetNamespace(f.ns)))
	plan.Spec.Health.ProgressDeadlineSeconds = 3
	if err := env.Client.Create(context.Background(), plan); err != nil {
		t.Fatal(err)
	}
	// The target's proxy never becomes ready.
	broken := func(pod *corev1.Pod, container string) bool {
		for _, c := range pod.Spec.InitContainers {
			if c.Name == container {
				return c.Image != f.to.Spec.Image
			}
		}
		return true
	}
	testenv.Eventually(t, 2*time.Minute, func(context.Context) (bool, string) {
		f.sync(t, broken)
		p := f.plan(t, "to-v2")
		return p.Status.Phase == meshv1alpha1.PhaseFailed && inFlight(f.list(t)) == 0,
			fmt.Sprintf("plan %s, counts %+v", p.Status.Phase, p.Status.Counts)
	})
	// Every pod is back on (or still on) the old version, with slot 1 active.
	for _, pod := range f.list(t) {
		if sidecar.Version(&pod) != f.from.Name || sidecar.ActiveSlot(&pod) != 1 ||
			sidecar.SlotImage(&pod, 1) != f.from.Spec.Image || sidecar.SlotImage(&pod, 2) != f.from.Spec.IdleImage {
			t.Errorf("pod %s: version %s, active slot %d, slot images %q %q", pod.Name, sidecar.Version(&pod), sidecar.ActiveSlot(&pod),
				sidecar.SlotImage(&pod, 1), sidecar.SlotImage(&pod, 2))
		}
	}
	p := f.plan(t, "to-v2")
	if p.Status.Counts.Failed != 1 || p.Status.Counts.Updated != 0 {
		t.Errorf("counts %+v: want exactly the first pod failed and none updated (maxFailedPods 0 stops the plan)", p.Status.Counts)
	}
}

func TestTheOlderPlanWinsAConflict(t *testing.T) {
	f := newRolloutFixture(t, "rollout-conflict", 1)
	older := gen.UpgradePlan("older", f.from.Name, []string{"web"}, gen.UpgradePlanMeta(gen.SetNamespace(f.ns)))
	if err := env.Client.Create(context.Background(), older); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // creation timestamps have a resolution of one second
	younger := gen.UpgradePlan("younger", f.to.Name, []string{"web"}, gen.UpgradePlanMeta(gen.SetNamespace(f.ns)))
	if err := env.Client.Create(context.Background(), younger); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, func(context.Context) (bool, string) {
		f.sync(t, func(*corev1.Pod, string) bool { return true })
		y, o := f.plan(t, "younger"), f.plan(t, "older")
		return meta.IsStatusConditionTrue(y.Status.Conditions, controllers.ConditionConflict) &&
				meta.IsStatusConditionFalse(o.Status.Conditions, controllers.ConditionConflict),
			fmt.Sprintf("younger %v, older %v", y.Status.Conditions, o.Status.Conditions)
	})
	time.Sleep(2 * time.Second)
	for _, pod := range f.list(t) {
		if sidecar.Version(&pod) != f.from.Name || sidecar.ActiveSlot(&pod) != 1 {
			t.Errorf("pod %s was moved by the younger plan: version %s, active slot %d", pod.Name, sidecar.Version(&pod), sidecar.ActiveSlot(&pod))
		}
	}
}

func TestAPlanWhoseTargetDoesNotExistWaitsAndTouchesNothing(t *testing.T) {
	f := newRolloutFixture(t, "rollout-missing", 1)
	plan := gen.UpgradePlan("to-nowhere", "no-such-version", []string{"web"}, gen.UpgradePlanMeta(gen.SetNamespace(f.ns)))
	maxUnavailable := intstr.FromString("50%")
	plan.Spec.Strategy.MaxUnavailable = &maxUnavailable
	if err := env.Client.Create(context.Background(), plan); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, func(context.Context) (bool, string) {
		c := meta.FindStatusCondition(f.plan(t, "to-nowhere").Status.Conditions, "Progressing")
		return c != nil && c.Reason == controllers.EventReasonTargetNotFound, fmt.Sprintf("Progressing %+v", c)
	})
	for _, pod := range f.list(t) {
		if _, ok := pod.Annotations[meshv1alpha1.AnnotationUpgrade]; ok || sidecar.Version(&pod) != f.from.Name {
			t.Errorf("pod %s was touched: %v", pod.Name, pod.Annotations)
		}
	}
}

func TestAnInPlaceUpgradeRestartsTheProxyOnceEveryControlPlaneReplicaAcknowledgedTheDrain(t *testing.T) {
	ctx := context.Background()
	// Two ready control-plane replicas and one that is not ready (it serves nobody).
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: controlPlane.Namespace}}
	if err := env.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	endpoint := func(name string, ready bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: controlPlane.Namespace, Name: name}}
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: controlPlane.Namespace, Name: "meshlift-control-plane-x1",
			Labels: map[string]string{discoveryv1.LabelServiceName: controlPlane.Service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{endpoint("operator-a", true), endpoint("operator-b", true), endpoint("operator-c", false)},
	}
	if err := env.Client.Create(ctx, slice); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), slice) })

	f := newRolloutFixture(t, "rollout-inplace", 1)
	plan := gen.UpgradePlan("to-v2", f.to.Name, []string{"web"}, gen.UpgradePlanMeta(gen.SetNamespace(f.ns)),
		func(p *meshv1alpha1.UpgradePlan) { p.Spec.Strategy.Type = meshv1alpha1.StrategyInPlace })
	if err := env.Client.Create(ctx, plan); err != nil {
		t.Fatal(err)
	}
	pod := func() *corev1.Pod {
		return &f.list(t)[0]
	}
	testenv.Eventually(t, time.Minute, func(context.Context) (bool, string) {
		f.sync(t, func(*corev1.Pod, string) bool { return true }) // a status update may have lost a race
		return pod().Annotations[meshv1alpha1.AnnotationEDSExcluded] == "true", "the pod is not excluded from EDS yet"
	})
	acknowledge := func(replica string) {
		t.Helper()
		patch := client.RawPatch("application/merge-patch+json",
			[]byte(`{"metadata":{"annotations":{"`+meshv1alpha1.EDSAckAnnotation(replica)+`":"true"}}}`))
		if err := env.Client.Patch(ctx, pod(), patch); err != nil {
			t.Fatal(err)
		}
	}
	// Past the fixed drain duration, with one of the two replicas' acknowledgement: the proxy
	// is not restarted.
	acknowledge("operator-a")
	time.Sleep(rollout.DefaultDrainDuration + 2*time.Second)
	if image := sidecar.SlotImage(pod(), sidecar.ActiveSlot(pod())); image != f.from.Spec.Image {
		t.Fatalf("the proxy was restarted on %s before every replica acknowledged the drain", image)
	}
	acknowledge("operator-b")
	testenv.Eventually(t, 2*time.Minute, func(context.Context) (bool, string) {
		f.sync(t, func(*corev1.Pod, string) bool { return true })
		p := f.plan(t, "to-v2")
		return p.Status.Phase == meshv1alpha1.PhaseSucceeded, fmt.Sprintf("plan %s, counts %+v", p.Status.Phase, p.Status.Counts)
	})
	got := pod()
	if image := sidecar.SlotImage(got, sidecar.ActiveSlot(got)); image != f.to.Spec.Image || sidecar.Version(got) != f.to.Name {
		t.Errorf("the pod runs %s (version %s), want %s", image, sidecar.Version(got), f.to.Spec.Image)
	}
	for k := range got.Annotations {
		if k == meshv1alpha1.AnnotationEDSExcluded || strings.HasPrefix(k, meshv1alpha1.AnnotationPrefixEDSAck) {
			t.Errorf("annotation %s is left on the restored pod", k)
		}
	}
}

func TestAnInPlaceUpgradeOfAPodWithTheReadinessGateWaitsUntilItsEndpointSlicesStopServingIt(t *testing.T) {
	ctx := context.Background()
	f := newRolloutFixture(t, "rollout-gated", 1, func(ms *meshv1alpha1.MeshService) { ms.Spec.Injection.ProxyReadinessGate = true })
	pod := func() *corev1.Pod { return &f.list(t)[0] }
	if !sidecar.HasProxyReadinessGate(pod()) {
		t.Fatal("the pod was injected without the readiness gate")
	}
	// The Service of the app still lists the pod as serving.
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: f.ns, Name: "web-x1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.2"},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: f.ns, Name: pod().Name, UID: pod().UID}}},
	}
	if err := env.Client.Create(ctx, slice); err != nil {
		t.Fatal(err)
	}
	plan := gen.UpgradePlan("to-v2", f.to.Name, []string{"web"}, gen.UpgradePlanMeta(gen.SetNamespace(f.ns)),
		func(p *meshv1alpha1.UpgradePlan) { p.Spec.Strategy.Type = meshv1alpha1.StrategyInPlace })
	if err := env.Client.Create(ctx, plan); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, func(context.Context) (bool, string) {
		f.sync(t, func(*corev1.Pod, string) bool { return true }) // a status update may have lost a race
		p := f.plan(t, "to-v2")
		return pod().Annotations[meshv1alpha1.AnnotationEDSExcluded] == "true",
			fmt.Sprintf("the pod is not excluded from EDS yet: plan %s %+v %v", p.Status.Phase, p.Status.Counts, p.Status.Conditions)
	})
	// No control-plane Service endpoints here: this replica alone acknowledges.
	patch := client.RawPatch("application/merge-patch+json",
		[]byte(`{"metadata":{"annotations":{"`+meshv1alpha1.EDSAckAnnotation(controlPlane.Self)+`":"true"}}}`))
	if err := env.Client.Patch(ctx, pod(), patch); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if image := sidecar.SlotImage(pod(), sidecar.ActiveSlot(pod())); image != f.from.Spec.Image {
		t.Fatalf("the proxy was restarted on %s while an EndpointSlice still served the pod", image)
	}
	// The endpoints controller sees the pod not Ready (the gate is False) and stops serving it.
	slice.Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false)}
	if err := env.Client.Update(ctx, slice); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Minute, func(context.Context) (bool, string) {
		f.sync(t, func(*corev1.Pod, string) bool { return true })
		p := f.plan(t, "to-v2")
		return p.Status.Phase == meshv1alpha1.PhaseSucceeded, fmt.Sprintf("plan %s, counts %+v", p.Status.Phase, p.Status.Counts)
	})
}

// podState is the pod's meshlift.io/upgrade record, or nil.
func podState(pod *corev1.Pod) *rollout.PodState {
	state, err := rollout.DecodeState(pod.Annotations[meshv1alpha1.AnnotationUpgrade])
	if err != nil {
		return nil
	}
	return state
}

// countingSubResources counts the writes a reconciler makes through each subresource
// (pods/resize): a repeated resize leaves no trace in the API server, since it changes nothing.
type countingSubResources struct {
	client.Client
	mu     sync.Mutex
	writes map[string]int
}

func (c *countingSubResources) SubResource(name string) client.SubResourceClient {
	return countingSubResource{SubResourceClient: c.Client.SubResource(name), name: name, parent: c}
}

func (c *countingSubResources) count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes[name]
}

type countingSubResource struct {
	client.SubResourceClient
	name   string
	parent *countingSubResources
}

func (c countingSubResource) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	c.parent.mu.Lock()
	c.parent.writes[c.name]++
	c.parent.mu.Unlock()
	return c.SubResourceClient.Patch(ctx, obj, patch, opts...)
}

// cachedClient is a client that reads from a cache of its own, with the indexes the reconcilers
// list by, as a second operator process would have.
func cachedClient(t *testing.T) client.Client {
	t.Helper()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  podcache.CacheOptions(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := controllers.SetupIndexes(ctx, mgr); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Logf("the cache stopped with an error: %v", err)
		}
	})
	return mgr.GetClient()
}

func TestAResizeTheKubeletDefersKeepsThePodWaitingWithoutAskingAgain(t *testing.T) {
	ctx := context.Background()
	const message = "Node didn't have enough resource: cpu, requested: 10, used: 1995, capacity: 2000"
	f := newRolloutFixture(t, "rollout-deferred", 1)
	f.pendingResize = &corev1.PodCondition{Type: corev1.PodResizePending, Status: corev1.ConditionTrue, Reason: corev1.PodReasonDeferred, Message: message}
	plan := gen.UpgradePlan("to-v2", f.to.Name, []string{"web"}, gen.UpgradePlanMeta(gen.SetNamespace(f.ns)))
	if err := env.Client.Create(ctx, plan); err != nil {
		t.Fatal(err)
	}
	want := "the kubelet deferred the resize: " + message
	testenv.Eventually(t, time.Minute, func(context.Context) (bool, string) {
		f.sync(t, func(*corev1.Pod, string) bool { return true })
		p := f.plan(t, "to-v2")
		return len(p.Status.Pods) == 1 && p.Status.Pods[0].Reason == want, fmt.Sprintf("plan %s, pods %+v", p.Status.Phase, p.Status.Pods)
	})

	// A second operator process, deciding on the same pod, does not ask for the resize again.
	counted := &countingSubResources{Client: cachedClient(t), writes: map[string]int{}}
	reconciler := controllers.NewUpgradePlanReconciler(counted, &events.FakeRecorder{}, rollout.DefaultOptions())
	key := client.ObjectKey{Namespace: f.ns, Name: f.pods[0]}
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) (bool, string) {
		pod := &corev1.Pod{}
		if err := counted.Get(ctx, key, pod); err != nil {
			return false, err.Error()
		}
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodResizePending {
				return true, ""
			}
		}
		return false, "the cache has not seen the deferral yet"
	})
	for range 3 {
		if _, err := reconciler.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(plan)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := counted.count("resize"); n != 0 {
		t.Errorf("the resize was asked for again %d times while the kubelet deferred it", n)
	}

	time.Sleep(2 * time.Second)
	f.sync(t, func(*corev1.Pod, string) bool { return true })
	pod := &f.list(t)[0]
	idle := sidecar.Container(pod, 2)
	if state := podState(pod); state == nil || state.Phase != rollout.PodResizingUp || sidecar.ActiveSlot(pod) != 1 ||
		idle.Image != f.from.Spec.IdleImage || !equality.Semantic.DeepEqual(idle.Resources, f.to.Spec.Resources) {
		t.Errorf("state %+v, active slot %d, idle slot %s with %v: want slot 2 resized in the spec, waiting, not swapped",
			state, sidecar.ActiveSlot(pod), idle.Image, idle.Resources)
	}
}

func TestAResizeTheKubeletFindsInfeasibleFailsThePodWithTheKubeletsMessage(t *testing.T) {
	const message = "Node didn't have enough capacity: memory, requested: 33554432, capacity: 16777216"
	f := newRolloutFixture(t, "rollout-infeasible", 2)
	f.pendingResize = &corev1.PodCondition{Type: corev1.PodResizePending, Status: corev1.ConditionTrue, Reason: corev1.PodReasonInfeasible, Message: message}
	plan := gen.UpgradePlan("to-v2", f.to.Name, []string{"web"}, gen.UpgradePlanMeta(gen.SetNamespace(f.ns)))
	if err := env.Client.Create(context.Background(), plan); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, func(context.Context) (bool, string) {
		f.sync(t, func(*corev1.Pod, string) bool { return true })
		p := f.plan(t, "to-v2")
		failed := len(p.Status.Pods) == 1 && p.Status.Pods[0].Phase == string(rollout.PodFailed)
		return p.Status.Phase == meshv1alpha1.PhaseFailed && failed && inFlight(f.list(t)) == 0,
			fmt.Sprintf("plan %s, counts %+v, pods %+v", p.Status.Phase, p.Status.Counts, p.Status.Pods)
	})
	p := f.plan(t, "to-v2")
	if p.Status.Counts.Failed != 1 || !strings.Contains(p.Status.Pods[0].Reason, message) {
		t.Errorf("counts %+v, pods %+v: want one pod failed with the kubelet's message", p.Status.Counts, p.Status.Pods)
	}
	idleResources := sidecar.DefaultOptions().IdleResources
	for _, pod := range f.list(t) {
		if sidecar.Version(&pod) != f.from.Name || sidecar.ActiveSlot(&pod) != 1 ||
			!equality.Semantic.DeepEqual(sidecar.Container(&pod, 2).Resources, idleResources) {
			t.Errorf("pod %s: version %s, active slot %d, idle slot resources %v: want it on %s with an idle slot",
				pod.Name, sidecar.Version(&pod), sidecar.ActiveSlot(&pod), sidecar.Container(&pod, 2).Resources, f.from.Name)
		}
	}
}

// A plan reads every pod it governs on each reconcile but writes only a few: the reconcile must
// not copy the pods out of the cache. Measured as the allocations each more pod costs, so that
// what a reconcile costs anyway (plans, versions, status) does not count.
func TestAReconcileDoesNotCopyThePodsItOnlyReads(t *testing.T) {
	ctx := context.Background()
	c := cachedClient(t)
	reconciler := controllers.NewUpgradePlanReconciler(c, &events.FakeRecorder{}, rollout.DefaultOptions())
	allocs := func(replicas int) float64 {
		f := newRolloutFixture(t, fmt.Sprintf("rollout-allocs-%d", replicas), replicas)
		// Every pod already runs the target: the plan only reads them.
		plan := gen.UpgradePlan("settled", f.from.Name, []string{"web"}, gen.UpgradePlanMeta(gen.SetNamespace(f.ns)))
		if err := env.Client.Create(ctx, plan); err != nil {
			t.Fatal(err)
		}
		req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(plan)}
		testenv.Eventually(t, 30*time.Second, func(ctx context.Context) (bool, string) {
			pods := &corev1.PodList{}
			if err := c.List(ctx, pods, client.InNamespace(f.ns)); err != nil {
				return false, err.Error()
			}
			p := &meshv1alpha1.UpgradePlan{}
			if err := c.Get(ctx, req.NamespacedName, p); err != nil {
				return false, err.Error()
			}
			return len(pods.Items) == replicas && p.Status.Phase == meshv1alpha1.PhaseSucceeded,
				fmt.Sprintf("the cache shows %d pods and a plan %s", len(pods.Items), p.Status.Phase)
		})
		return testing.AllocsPerRun(5, func() {
			if _, err := reconciler.Reconcile(ctx, req); err != nil {
				t.Fatal(err)
			}
		})
	}
	few, many := allocs(5), allocs(45)
	perPod := (many - few) / 40
	t.Logf("a reconcile allocates %.0f times with 5 pods, %.0f with 45: %.1f per pod", few, many, perPod)
	if perPod > 10 {
		t.Errorf("a reconcile allocates %.1f times per pod it reads: it copies them", perPod)
	}
}

// TestAnOldProxyWithLongLivedConnectionsRetiresBeforeItsSlotIsReclaimed: web-0's old proxy still
// serves connections after the takeover. The pod counts as upgraded at once (web-1 starts while
// it retires), the status shows it retiring with its connections, its old slot keeps the old
// image and resources until the proxy reports idle, and the connections it cut at its drain
// budget become a Warning event on the pod.
func TestAnOldProxyWithLongLivedConnectionsRetiresBeforeItsSlotIsReclaimed(t *testing.T) {
	f := newRolloutFixture(t, "rollout-retire", 2, func(ms *meshv1alpha1.MeshService) {
		ms.Spec.Drain = &meshv1alpha1.DrainSpec{MaxDuration: &metav1.Duration{Duration: 5 * time.Minute}}
	})
	ctx := context.Background()
	pod0 := &corev1.Pod{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "web-0"}, pod0); err != nil {
		t.Fatal(err)
	}
	held := atomic.Int64{}
	held.Store(9)
	old := proxyadmin.NewState("1.0.0", 1)
	old.SetHeldConnections(func() int { return int(held.Load()) })
	old.SetRole(proxyadmin.RoleRetiring)
	proxies.set(fmt.Sprintf("%s:%d", pod0.Status.PodIP, sidecar.AdminPort(1)), old)

	plan := gen.UpgradePlan("to-v2", f.to.Name, []string{"web"}, gen.UpgradePlanMeta(gen.SetNamespace(f.ns)))
	if err := env.Client.Create(ctx, plan); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Minute, func(context.Context) (bool, string) {
		f.sync(t, func(*corev1.Pod, string) bool { return true })
		p := f.plan(t, "to-v2")
		web1 := ""
		for _, pod := range f.list(t) {
			if pod.Name == "web-1" {
				web1 = sidecar.Version(&pod)
			}
		}
		return p.Status.Counts.Retiring == 1 && p.Status.Counts.RetiringConnections == 9 && web1 == f.to.Name,
			fmt.Sprintf("plan %s counts %+v, web-1 runs %s", p.Status.Phase, p.Status.Counts, web1)
	})
	p := f.plan(t, "to-v2")
	if p.Status.Phase != meshv1alpha1.PhaseProgressing || p.Status.Counts.Updated < 1 {
		t.Errorf("while web-0 retires the plan is %s with counts %+v: want Progressing with web-0 counted as updated", p.Status.Phase, p.Status.Counts)
	}
	var record *meshv1alpha1.PodUpgradeStatus
	for i := range p.Status.Pods {
		if p.Status.Pods[i].Pod == "web-0" {
			record = &p.Status.Pods[i]
		}
	}
	if record == nil || record.Phase != string(rollout.PodRetiring) || record.Connections == nil || *record.Connections != 9 {
		t.Errorf("status record of web-0: %+v, want phase Retiring with 9 connections", record)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod0), pod0); err != nil {
		t.Fatal(err)
	}
	if got := sidecar.SlotImage(pod0, 1); got != f.from.Spec.Image {
		t.Errorf("web-0's old slot runs %s while its proxy retires, want %s", got, f.from.Spec.Image)
	}
	if got := sidecar.Container(pod0, 1).Resources.Requests.Memory(); !got.Equal(resource.MustParse("32Mi")) {
		t.Errorf("web-0's old slot has %v of memory while its proxy retires, want the version's 32Mi", got)
	}
	if got := pod0.Annotations["meshlift.io/drain-max-duration"]; got != "5m0s" {
		t.Errorf("web-0's drain budget annotation is %q, want the MeshService's 5m0s", got)
	}

	// The budget ends: the old proxy cuts its connections and says so.
	held.Store(0)
	old.SetCutConnections(func() int { return 9 })
	old.SetRole(proxyadmin.RoleIdle)
	testenv.Eventually(t, time.Minute, func(context.Context) (bool, string) {
		f.sync(t, func(*corev1.Pod, string) bool { return true })
		p := f.plan(t, "to-v2")
		return p.Status.Phase == meshv1alpha1.PhaseSucceeded, fmt.Sprintf("plan %s counts %+v", p.Status.Phase, p.Status.Counts)
	})
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod0), pod0); err != nil {
		t.Fatal(err)
	}
	if got := sidecar.SlotImage(pod0, 1); got != f.to.Spec.IdleImage {
		t.Errorf("web-0's old slot runs %s after its proxy retired, want the idle image %s", got, f.to.Spec.IdleImage)
	}
	testenv.Eventually(t, 30*time.Second, func(context.Context) (bool, string) {
		list := &eventsv1.EventList{}
		if err := env.Client.List(ctx, list, client.InNamespace(f.ns)); err != nil {
			return false, err.Error()
		}
		for _, e := range list.Items {
			if e.Reason == controllers.EventReasonConnectionsCut && e.Regarding.Name == "web-0" && e.Type == corev1.EventTypeWarning &&
				strings.Contains(e.Note, "cut 9 connections") {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events, none a ConnectionsCut warning about web-0's 9 connections", len(list.Items))
	})
}
