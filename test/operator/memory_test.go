package operator_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/latency"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

const (
	// benchPods is the cluster size of the §9 operator memory target: pods of one MeshService.
	benchPods = 10_000
	// unmeshedPods run in a namespace of their own that no MeshService selects: the operator
	// caches every pod of the cluster, and these must cost it little.
	unmeshedPods = 1_000
	// endpointsPerSlice is the EndpointSlice controller's default --max-endpoints-per-slice.
	endpointsPerSlice = 100
	// settle is how long the runtime has to return memory after a collection.
	settle = 15 * time.Second
)

// operatorHeapProfile, when set, is where the benchmark writes the operator's heap profile, taken
// right after a collection once the status counts every pod (go tool pprof reads it).
var operatorHeapProfile = flag.String("operator-heap-profile", "", "write the operator's heap profile (after a collection) to this file")

// BenchmarkOperatorMemory10kPods runs the operator binary, as it runs in a cluster (webhooks
// served, control plane on), against an API server holding 10,000 running, ready, injected pods
// of one MeshService (the pod the webhook makes of a typical Deployment pod: probes, resources,
// environment, a ConfigMap volume, an owner, and the status a kubelet reports), their Service's
// EndpointSlices of 100 endpoints each, and 1,000 pods of another namespace that no MeshService
// selects, with their EndpointSlices. It reports once the MeshService status counts every
// meshed pod and the API server has had a pod injected by the operator's webhook: the operator's
// resident memory then (operator-RSS-MB) and at its peak, which is the initial list of every pod
// (operator-peak-RSS-MB), its Go heap in use (operator-heap-MB, from its metrics), what of it is
// live after a collection (operator-live-heap-MB), its resident memory once settled after that
// collection (operator-settled-RSS-MB), and how long it took from its start to that status
// (sync-s). The operator starts after the pods exist, as after a restart in a large cluster.
// Target (ARCHITECTURE.md §9): < 150 MB, without a memory limit (GOMEMLIMIT) doing the work.
// Variables OPERATOR_<NAME> of the benchmark's environment are the operator's <NAME>
// (OPERATOR_GOMEMLIMIT=135MiB measures it under a soft limit); it gets no GOMEMLIMIT, GOGC or
// MESHLIFT_MEMORY_LIMIT otherwise. It runs once whatever -benchtime says.
func BenchmarkOperatorMemory10kPods(b *testing.B) {
	ctx := context.Background()
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = -1, 0 // no client-side rate limit: creating the pods is not what is measured
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "meshlift-system"}}); client.IgnoreAlreadyExists(err) != nil {
		b.Fatal(err)
	}
	ns := env.Namespace(b, "bench")
	version := gen.SidecarVersion("bench-v1", "1.0.0", gen.AsDefault())
	ms := gen.MeshService("web", gen.MeshServiceMeta(gen.SetNamespace(ns)))
	for _, obj := range []client.Object{version, ms} {
		if err := c.Create(ctx, obj); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() { _ = c.Delete(context.Background(), version) })

	start := time.Now()
	template := sidecar.Inject(typicalPod(ns, "web"), ms, version, sidecar.DefaultOptions()).Pod
	createEndpointSlices(b, c, createService(b, c, ns, "web"), createPods(b, c, template, benchPods))
	unmeshed := env.Namespace(b, "unmeshed")
	createEndpointSlices(b, c, createService(b, c, unmeshed, "api"), createPods(b, c, typicalPod(unmeshed, "api"), unmeshedPods))
	// The control-plane Service, whose endpoints InPlace drains wait for.
	createEndpointSlices(b, c, createService(b, c, "meshlift-system", "meshlift-control-plane"),
		[]endpoint{{name: "bench", uid: "6c1f0a7e-4b8d-4e2f-9a3c-5d7e8f9a0b1c", ip: "10.0.0.2"}})
	b.Logf("created %d ready injected pods, %d other pods and their EndpointSlices in %v", benchPods, unmeshedPods, time.Since(start).Round(time.Second))

	b.ResetTimer()
	operator, metrics, pprof := startOperator(b)
	start = time.Now()
	testenv.Eventually(b, 10*time.Minute, func(ctx context.Context) (bool, string) {
		var got meshv1alpha1.MeshService
		if err := c.Get(ctx, client.ObjectKeyFromObject(ms), &got); err != nil {
			return false, err.Error()
		}
		p := got.Status.Pods
		return p.Matched == benchPods && p.Injected == benchPods && p.Ready == benchPods,
			fmt.Sprintf("MeshService status counts %d matched, %d injected, %d ready pods", p.Matched, p.Injected, p.Ready)
	})
	synced := time.Since(start)
	checkInjection(b, c, ns)
	time.Sleep(5 * time.Second) // the reconcilers settle
	b.StopTimer()

	rss, peak, err := latency.ResidentMB(operator.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(rss, "operator-RSS-MB")
	b.ReportMetric(peak, "operator-peak-RSS-MB")
	b.ReportMetric(metricMB(b, metrics, "go_memstats_heap_inuse_bytes"), "operator-heap-MB")
	// A heap profile asked for with gc=1 runs a collection first: what is allocated right after
	// it is what the operator holds.
	res, err := http.Get("http://" + pprof + "/debug/pprof/heap?gc=1")
	if err != nil {
		b.Fatal(err)
	}
	profile, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil {
		b.Fatal(err)
	}
	if *operatorHeapProfile != "" {
		if err := os.WriteFile(*operatorHeapProfile, profile, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(metricMB(b, metrics, "go_memstats_heap_alloc_bytes"), "operator-live-heap-MB")
	// The heap's goal was set by the last collection of the start, which still saw the start's
	// work in flight: after this collection it is twice what is live, and the runtime returns
	// what is above it to the system. The runtime collects at least every two minutes, so this is
	// what the operator holds once a quiet cluster has let it settle.
	time.Sleep(settle)
	settled, _, err := latency.ResidentMB(operator.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(settled, "operator-settled-RSS-MB")
	b.ReportMetric(synced.Seconds(), "sync-s")
	b.ReportMetric(0, "ns/op")
}

// typicalPod is a Deployment's pod as the webhook gets it: one app container with ports,
// probes, resources, environment and a ConfigMap volume, owned by a ReplicaSet, labelled
// app=<app>.
func typicalPod(ns, app string) *corev1.Pod {
	pod := gen.Pod(app, gen.PodMeta(gen.SetNamespace(ns), gen.SetLabels("app", app, "pod-template-hash", "7d9f8c6b5")))
	pod.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: "apps/v1", Kind: "ReplicaSet", Name: app + "-7d9f8c6b5", UID: "3f1e9a52-8c1d-4a5e-9b7f-2d6c0e4a1b93",
		Controller: new(true), BlockOwnerDeletion: new(true),
	}}
	container := &pod.Spec.Containers[0]
	container.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}
	for i := range 6 {
		container.Env = append(container.Env, corev1.EnvVar{Name: fmt.Sprintf("SETTING_%d", i), Value: fmt.Sprintf("value-%d", i)})
	}
	container.Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
	}
	probe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}, PeriodSeconds: 10}
	container.ReadinessProbe, container.LivenessProbe = probe, probe.DeepCopy()
	container.VolumeMounts = []corev1.VolumeMount{{Name: "config", MountPath: "/etc/" + app}}
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "config", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: app + "-config"}},
	}})
	pod.Spec.NodeName = "node-1"
	return pod
}

// endpoint is what an EndpointSlice says of a pod.
type endpoint struct {
	name string
	uid  types.UID
	ip   string
}

// podIPs counts the pods created, so that every pod gets an address of its own.
var podIPs atomic.Int64

// createPods creates n copies of template, named <template name>-<n>, and makes each running
// and ready as a kubelet reports it, from 16 goroutines. It returns their endpoints, in order.
func createPods(b *testing.B, c client.Client, template *corev1.Pod, n int) []endpoint {
	b.Helper()
	endpoints := make([]endpoint, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				pod := template.DeepCopy()
				pod.Name = fmt.Sprintf("%s-%05d", template.Name, i+1)
				if err := c.Create(context.Background(), pod); err != nil {
					errs <- fmt.Errorf("creating pod %s: %w", pod.Name, err)
					return
				}
				pod.Status = kubeletStatus(pod, podIPs.Add(1))
				if err := c.Status().Update(context.Background(), pod); err != nil {
					errs <- fmt.Errorf("making pod %s ready: %w", pod.Name, err)
					return
				}
				endpoints[i] = endpoint{name: pod.Name, uid: pod.UID, ip: pod.Status.PodIP}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return endpoints
}

// kubeletStatus is the status a kubelet reports of a running pod whose containers (and native
// sidecars) are all ready: the pod's conditions, addresses and QoS class, and of each container
// its image and image ID, container ID, state, resources and mounts. The nth pod has address
// 10.x.y.z of n.
func kubeletStatus(pod *corev1.Pod, n int64) corev1.PodStatus {
	started := metav1.NewTime(time.Now().Add(-time.Hour).Truncate(time.Second))
	ip := fmt.Sprintf("10.%d.%d.%d", 1+n/65536, n/256%256, n%256)
	status := corev1.PodStatus{
		Phase:     corev1.PodRunning,
		HostIP:    "192.168.0.10",
		HostIPs:   []corev1.HostIP{{IP: "192.168.0.10"}},
		PodIP:     ip,
		PodIPs:    []corev1.PodIP{{IP: ip}},
		StartTime: &started,
		QOSClass:  corev1.PodQOSBurstable,
	}
	for _, condition := range []corev1.PodConditionType{"PodReadyToStartContainers", corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled} {
		status.Conditions = append(status.Conditions, corev1.PodCondition{Type: condition, Status: corev1.ConditionTrue, LastTransitionTime: started})
	}
	containerStatus := func(i int, c *corev1.Container) corev1.ContainerStatus {
		s := corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, Ready: true, Started: new(true),
			ImageID:     fmt.Sprintf("docker.io/%s@sha256:%x", strings.Split(c.Image, ":")[0], sha256.Sum256([]byte(c.Image))),
			ContainerID: fmt.Sprintf("containerd://%056x%08x", n, i),
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
			Resources:   c.Resources.DeepCopy(),
			User:        &corev1.ContainerUser{Linux: &corev1.LinuxContainerUser{UID: 65532, GID: 65532, SupplementalGroups: []int64{65532}}},
		}
		if len(c.Resources.Requests) > 0 {
			s.AllocatedResources = c.Resources.Requests.DeepCopy()
		}
		for _, m := range c.VolumeMounts {
			s.VolumeMounts = append(s.VolumeMounts, corev1.VolumeMountStatus{Name: m.Name, MountPath: m.MountPath, ReadOnly: m.ReadOnly})
		}
		return s
	}
	for i := range pod.Spec.InitContainers {
		status.InitContainerStatuses = append(status.InitContainerStatuses, containerStatus(i, &pod.Spec.InitContainers[i]))
	}
	for i := range pod.Spec.Containers {
		status.ContainerStatuses = append(status.ContainerStatuses, containerStatus(len(pod.Spec.InitContainers)+i, &pod.Spec.Containers[i]))
	}
	return status
}

// createService creates a Service that selects app=<name> on port 8080.
func createService(b *testing.B, c client.Client, ns, name string) *corev1.Service {
	b.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}},
		},
	}
	if err := c.Create(context.Background(), svc); err != nil {
		b.Fatal(err)
	}
	return svc
}

// createEndpointSlices creates the EndpointSlices the EndpointSlice controller keeps for svc
// with these ready endpoints, endpointsPerSlice in each.
func createEndpointSlices(b *testing.B, c client.Client, svc *corev1.Service, endpoints []endpoint) {
	b.Helper()
	for first := 0; first < len(endpoints); first += endpointsPerSlice {
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				GenerateName: svc.Name + "-",
				Namespace:    svc.Namespace,
				Labels: map[string]string{
					discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io",
				},
				Annotations: map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": time.Now().UTC().Format(time.RFC3339)},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID,
					Controller: new(true), BlockOwnerDeletion: new(true)}},
			},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(8080)), Protocol: new(corev1.ProtocolTCP)}},
		}
		for _, e := range endpoints[first:min(first+endpointsPerSlice, len(endpoints))] {
			slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{e.ip},
				Conditions: discoveryv1.EndpointConditions{Ready: new(true), Serving: new(true), Terminating: new(false)},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: svc.Namespace, Name: e.name, UID: e.uid},
				NodeName:   new("node-1"),
				Zone:       new("zone-a"),
			})
		}
		if err := c.Create(context.Background(), slice); err != nil {
			b.Fatal(err)
		}
	}
}

// checkInjection waits until the API server has the operator's webhook inject a pod the
// MeshService selects (created as a dry run): the webhooks are served, not only configured.
func checkInjection(b *testing.B, c client.Client, ns string) {
	b.Helper()
	testenv.Eventually(b, time.Minute, func(ctx context.Context) (bool, string) {
		pod := typicalPod(ns, "web")
		pod.Name = "web-dry-run"
		if err := c.Create(ctx, pod, client.DryRunAll); err != nil {
			return false, err.Error()
		}
		return sidecar.IsInjected(pod), "the API server admitted a pod without the sidecar: it did not reach the operator's pod injector"
	})
}

// startOperator runs the operator binary with a kubeconfig for envtest's API server, its
// webhooks served with the certificate envtest made for the webhook configurations it installed
// (the external certificate mode, as under OLM), and returns it and the addresses of its
// plain-HTTP metrics and profiling endpoints.
func startOperator(b *testing.B) (operator *exec.Cmd, metrics, pprof string) {
	b.Helper()
	dir := b.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(kubeconfigFor(env.Config), kubeconfig); err != nil {
		b.Fatal(err)
	}
	webhooks := env.WebhookServerOptions()
	addresses := freeAddresses(b, 4, webhooks.Port)
	metrics, pprof, probes, controlPlane := addresses[0], addresses[1], addresses[2], addresses[3]
	cmd := exec.Command(operatorBinary,
		"--namespace=meshlift-system", "--leader-elect=false",
		"--webhook-cert-mode=external", "--webhook-cert-dir="+webhooks.CertDir, "--webhook-port="+strconv.Itoa(webhooks.Port),
		"--metrics-bind-address="+metrics, "--metrics-secure=false",
		"--health-probe-bind-address="+probes, "--control-plane-bind-address="+controlPlane,
		"--replica-name=bench", "--log-level=error", "--pprof-bind-address="+pprof)
	cmd.Env = append(operatorEnv(os.Environ()), "KUBECONFIG="+kubeconfig)
	for _, v := range cmd.Env {
		if name, _, _ := strings.Cut(v, "="); slices.Contains(runtimeMemoryVariables, name) {
			b.Logf("operator environment: %s", v)
		}
	}
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if b.Failed() {
			b.Logf("operator output:\n%s", output.String())
		}
	})
	return cmd, metrics, pprof
}

// runtimeMemoryVariables change how much memory the operator holds: the benchmark's own are not
// passed on.
var runtimeMemoryVariables = []string{"GOMEMLIMIT", "GOGC", "MESHLIFT_MEMORY_LIMIT"}

// operatorEnv is the operator's environment made of the benchmark's: without the variables of
// runtimeMemoryVariables, and with OPERATOR_<NAME>=value as <NAME>=value.
func operatorEnv(environ []string) []string {
	var out, set []string
	for _, v := range environ {
		name, value, _ := strings.Cut(v, "=")
		if name, ok := strings.CutPrefix(name, "OPERATOR_"); ok && name != "" {
			set = append(set, name+"="+value)
			continue
		}
		if !slices.Contains(runtimeMemoryVariables, name) {
			out = append(out, v)
		}
	}
	return append(out, set...)
}

func kubeconfigFor(cfg *rest.Config) clientcmdapi.Config {
	return clientcmdapi.Config{
		Clusters: map[string]*clientcmdapi.Cluster{"envtest": {Server: cfg.Host, CertificateAuthorityData: cfg.CAData}},
		AuthInfos: map[string]*clientcmdapi.AuthInfo{"admin": {
			ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken,
		}},
		Contexts:       map[string]*clientcmdapi.Context{"envtest": {Cluster: "envtest", AuthInfo: "admin"}},
		CurrentContext: "envtest",
	}
}

// freeAddresses are n distinct free local addresses, none on port taken (envtest's webhook
// port, which it freed for the operator to listen on).
func freeAddresses(b *testing.B, n, taken int) []string {
	b.Helper()
	var addresses []string
	for len(addresses) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close() // held until all are chosen, so that they differ
		if l.Addr().(*net.TCPAddr).Port != taken {
			addresses = append(addresses, l.Addr().String())
		}
	}
	return addresses
}

// metricMB reads a metric in bytes from the operator's metrics endpoint, in MiB.
func metricMB(b *testing.B, address, name string) float64 {
	b.Helper()
	res, err := http.Get("http://" + address + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	scanner := bufio.NewScanner(res.Body)
	for scanner.Scan() {
		if value, ok := strings.CutPrefix(scanner.Text(), name+" "); ok {
			bytes, err := strconv.ParseFloat(value, 64)
			if err != nil {
				b.Fatalf("parsing %s %q: %v", name, value, err)
			}
			return bytes / (1 << 20)
		}
	}
	b.Fatalf("no %s in the operator's metrics (%v)", name, scanner.Err())
	return 0
}
