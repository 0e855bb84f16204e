package operator_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// benchPods is the cluster size of the §9 operator memory target.
const benchPods = 10_000

// BenchmarkOperatorMemory10kPods runs the operator binary against an API server holding 10,000
// running, ready, injected pods (the pod the webhook makes of a typical Deployment pod: probes,
// resources, environment, a ConfigMap volume, an owner), all of one MeshService, and reports
// once the MeshService status counts every one of them: the operator's resident memory then
// (operator-RSS-MB) and at its peak, which is the initial list of every pod
// (operator-peak-RSS-MB), its Go heap in use (operator-heap-MB, from its metrics) and what of it
// is live after a collection (operator-live-heap-MB), and how long it took from its start to
// that status (sync-s). The operator starts after the pods exist, as
// after a restart in a large cluster. Target (ARCHITECTURE.md §9): < 150 MB. It runs once
// whatever -benchtime says.
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

	template := sidecar.Inject(typicalPod(ns), ms, version, sidecar.DefaultOptions()).Pod
	start := time.Now()
	createPods(b, c, template)
	b.Logf("created %d ready injected pods in %v", benchPods, time.Since(start).Round(time.Second))

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
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	b.ReportMetric(metricMB(b, metrics, "go_memstats_heap_alloc_bytes"), "operator-live-heap-MB")
	b.ReportMetric(synced.Seconds(), "sync-s")
	b.ReportMetric(0, "ns/op")
}

// typicalPod is a Deployment's pod as the webhook gets it: one app container with ports,
// probes, resources, environment and a ConfigMap volume, owned by a ReplicaSet.
func typicalPod(ns string) *corev1.Pod {
	pod := gen.Pod("web", gen.PodMeta(gen.SetNamespace(ns), gen.SetLabels("app", "web", "pod-template-hash", "7d9f8c6b5")))
	pod.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d9f8c6b5", UID: "3f1e9a52-8c1d-4a5e-9b7f-2d6c0e4a1b93",
		Controller: new(true), BlockOwnerDeletion: new(true),
	}}
	app := &pod.Spec.Containers[0]
	app.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}
	for i := range 6 {
		app.Env = append(app.Env, corev1.EnvVar{Name: fmt.Sprintf("SETTING_%d", i), Value: fmt.Sprintf("value-%d", i)})
	}
	app.Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
	}
	probe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}, PeriodSeconds: 10}
	app.ReadinessProbe, app.LivenessProbe = probe, probe.DeepCopy()
	app.VolumeMounts = []corev1.VolumeMount{{Name: "config", MountPath: "/etc/web"}}
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "config", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "web-config"}},
	}})
	pod.Spec.NodeName = "node-1"
	return pod
}

// createPods creates benchPods copies of template, named web-<n>, and makes each running and
// ready, from 16 goroutines.
func createPods(b *testing.B, c client.Client, template *corev1.Pod) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for {
				n := next.Add(1)
				if n > benchPods {
					return
				}
				pod := template.DeepCopy()
				pod.Name = fmt.Sprintf("web-%05d", n)
				if err := c.Create(context.Background(), pod); err != nil {
					errs <- fmt.Errorf("creating pod %s: %w", pod.Name, err)
					return
				}
				status := pod.Status.DeepCopy()
				gen.Ready(pod)(status)
				status.PodIP = fmt.Sprintf("10.%d.%d.%d", 1+n/65536, n/256%256, n%256)
				status.PodIPs = []corev1.PodIP{{IP: status.PodIP}}
				status.HostIP = "192.168.0.10"
				pod.Status = *status
				if err := c.Status().Update(context.Background(), pod); err != nil {
					errs <- fmt.Errorf("making pod %s ready: %w", pod.Name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// startOperator runs the operator binary with a kubeconfig for envtest's API server (webhooks
// off: their certificates and configurations are not what is measured) and returns it and the
// addresses of its plain-HTTP metrics and profiling endpoints.
func startOperator(b *testing.B) (operator *exec.Cmd, metrics, pprof string) {
	b.Helper()
	dir := b.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(kubeconfigFor(env.Config), kubeconfig); err != nil {
		b.Fatal(err)
	}
	metrics, pprof, probes, controlPlane := freeAddress(b), freeAddress(b), freeAddress(b), freeAddress(b)
	cmd := exec.Command(operatorBinary,
		"--namespace=meshlift-system", "--enable-webhooks=false", "--leader-elect=false",
		"--metrics-bind-address="+metrics, "--metrics-secure=false",
		"--health-probe-bind-address="+probes, "--control-plane-bind-address="+controlPlane,
		"--replica-name=bench", "--log-level=error", "--pprof-bind-address="+pprof)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
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

func freeAddress(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
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
