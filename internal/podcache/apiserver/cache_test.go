// Package apiserver_test runs the pod cache of internal/podcache, filter included, against
// envtest's kube-apiserver: the pods it lists and watches (as a watch list, with its bookmarks)
// are cached as Slim keeps them.
package apiserver_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/podcache"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	testenv.Main(m, &env)
}

// injectedPod is a pod as the webhook injects it, with an app container that has environment,
// resources and a volume, and annotations of other tools.
func injectedPod(ns, name string) *corev1.Pod {
	pod := gen.Pod(name, gen.PodMeta(gen.SetNamespace(ns), gen.SetLabels("app", "web"),
		gen.SetAnnotations(corev1.LastAppliedConfigAnnotation, `{"kind":"Pod"}`, "prometheus.io/scrape", "true")))
	app := &pod.Spec.Containers[0]
	app.Env = []corev1.EnvVar{{Name: "A", Value: "b"}}
	app.Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}
	app.VolumeMounts = []corev1.VolumeMount{{Name: "config", MountPath: "/etc/web"}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	ms := gen.MeshService("web", gen.MeshServiceMeta(gen.SetNamespace(ns)))
	ms.Spec.Injection.ProxyReadinessGate = true
	return sidecar.Inject(pod, ms, gen.SidecarVersion("v1", "1.0.0"), sidecar.DefaultOptions()).Pod
}

// running makes pod running as a kubelet reports it: conditions, addresses, container statuses.
func running(t *testing.T, c client.Client, pod *corev1.Pod) {
	t.Helper()
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}},
		HostIP: "192.168.0.1", StartTime: &now, QOSClass: corev1.PodQOSBurstable}
	for _, c := range []corev1.PodConditionType{corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled} {
		pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: c, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	statusOf := func(c corev1.Container) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: "docker.io/" + c.Image + "@sha256:00", ContainerID: "containerd://" + c.Name,
			Ready: true, Started: new(true), State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}, Resources: c.Resources.DeepCopy()}
	}
	for _, c := range pod.Spec.InitContainers {
		pod.Status.InitContainerStatuses = append(pod.Status.InitContainerStatuses, statusOf(c))
	}
	for _, c := range pod.Spec.Containers {
		pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, statusOf(c))
	}
	if err := c.Status().Update(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
}

// startCache starts the manager's cache of pods as main.go configures it.
func startCache(t *testing.T) cache.Cache {
	t.Helper()
	opts, err := podcache.CacheOptionsFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	opts.Scheme = env.Scheme
	c, err := cache.New(env.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetInformer(context.Background(), &corev1.Pod{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Start(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	syncCtx, cancelSync := context.WithTimeout(ctx, time.Minute)
	defer cancelSync()
	if !c.WaitForCacheSync(syncCtx) {
		t.Fatal("the pod cache did not sync")
	}
	return c
}

// cachedAsSlimKeeps waits until the cache holds every pod of ns as Slim keeps the API server's.
func cachedAsSlimKeeps(t *testing.T, cached cache.Cache, ns string) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) (bool, string) {
		var pods, cachedPods corev1.PodList
		if err := env.Client.List(ctx, &pods, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		if err := cached.List(ctx, &cachedPods, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		if len(cachedPods.Items) != len(pods.Items) {
			return false, fmt.Sprintf("the cache has %d pods, the API server %d", len(cachedPods.Items), len(pods.Items))
		}
		byName := map[string]*corev1.Pod{}
		for i := range cachedPods.Items {
			byName[cachedPods.Items[i].Name] = &cachedPods.Items[i]
		}
		for i := range pods.Items {
			want := pods.Items[i].DeepCopy()
			podcache.Slim(want)
			got := byName[want.Name]
			if got == nil {
				return false, "the cache has no pod " + want.Name
			}
			got.TypeMeta, want.TypeMeta = metav1.TypeMeta{}, metav1.TypeMeta{}
			if !equality.Semantic.DeepEqual(got, want) {
				return false, fmt.Sprintf("pod %s is cached as\n%+v\nwant\n%+v", want.Name, got, want)
			}
		}
		return true, ""
	})
}

func TestTheCacheHoldsWhatSlimKeepsOfThePods(t *testing.T) {
	c := env.Client
	ns := env.Namespace(t, "podcache")
	ctx := context.Background()
	for i := range 3 {
		pod := injectedPod(ns, fmt.Sprintf("web-%d", i))
		if err := c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			running(t, c, pod)
		}
	}
	bare := gen.Pod("bare", gen.PodMeta(gen.SetNamespace(ns)))
	if err := c.Create(ctx, bare); err != nil {
		t.Fatal(err)
	}

	cached := startCache(t)
	t.Run("from the initial list", func(t *testing.T) { cachedAsSlimKeeps(t, cached, ns) })

	t.Run("from the watch", func(t *testing.T) {
		added := injectedPod(ns, "web-added")
		if err := c.Create(ctx, added); err != nil {
			t.Fatal(err)
		}
		running(t, c, added)
		changed := &corev1.Pod{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-1"}, changed); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(changed.DeepCopy())
		changed.Annotations[meshv1alpha1.AnnotationEDSExcluded] = "true"
		changed.Annotations["other.example.com/note"] = "x"
		if err := c.Patch(ctx, changed, patch); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, bare); err != nil {
			t.Fatal(err)
		}
		cachedAsSlimKeeps(t, cached, ns)
	})
}

// TestPodsReadsTheCachedPodsInPlace: podcache.Pods hands out the cache's own pods (the same
// pointer on every read, no copy) of one namespace or of all, filtered; an API reader is listed.
func TestPodsReadsTheCachedPodsInPlace(t *testing.T) {
	ctx := context.Background()
	c, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	first, second := env.Namespace(t, "pods-a"), env.Namespace(t, "pods-b")
	for _, pod := range []*corev1.Pod{injectedPod(first, "web-1"), injectedPod(first, "web-2"), injectedPod(second, "web-3")} {
		if err := c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	cached := startCache(t)
	names := func(pods []*corev1.Pod) []string {
		var out []string
		for _, pod := range pods {
			out = append(out, pod.Namespace+"/"+pod.Name)
		}
		slices.Sort(out)
		return out
	}
	all := func(*corev1.Pod) bool { return true }
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) (bool, string) {
		pods, err := podcache.Pods(ctx, cached, first, all)
		if err != nil {
			return false, err.Error()
		}
		return len(pods) == 2, fmt.Sprintf("pods of %s in the cache: %v", first, names(pods))
	})

	once, err := podcache.Pods(ctx, cached, first, all)
	if err != nil {
		t.Fatal(err)
	}
	again, err := podcache.Pods(ctx, cached, first, func(pod *corev1.Pod) bool { return pod.Name == "web-2" })
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 1 || !slices.Contains(once, again[0]) {
		t.Errorf("a second read of %s/web-2 got %v, not the pointer of the first read (%v): the cache's object was copied", first, again, once)
	}
	everywhere, err := podcache.Pods(ctx, cached, metav1.NamespaceAll, func(pod *corev1.Pod) bool {
		return pod.Namespace == first || pod.Namespace == second
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(everywhere), []string{first + "/web-1", first + "/web-2", second + "/web-3"}; !slices.Equal(got, want) {
		t.Errorf("pods of every namespace = %v, want %v", got, want)
	}
	for _, pod := range everywhere {
		if pod.Spec.Volumes != nil || pod.ManagedFields != nil {
			t.Errorf("pod %s/%s read from the cache is not the slim pod: it has volumes or managed fields", pod.Namespace, pod.Name)
		}
	}

	listed, err := podcache.Pods(ctx, c, second, all)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(listed); !slices.Equal(got, []string{second + "/web-3"}) {
		t.Errorf("pods listed by the API reader = %v, want %s/web-3", got, second)
	} else if listed[0].Spec.Volumes == nil {
		t.Errorf("the API reader's %s/web-3 has no volumes: it should be the whole pod", second)
	}
}
