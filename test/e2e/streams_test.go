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
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/controllers"
	"github.com/meshlift/meshlift/internal/rollout"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// streamsSummary is the part of meshlift-demo streams' JSON summary the test reads.
type streamsSummary struct {
	Streams  int            `json:"streams"`
	Lines    int64          `json:"lines"`
	Broken   int            `json:"broken"`
	Failures map[string]int `json:"failures"`
}

// TestLongLivedStreamsSurviveAHotUpgradeOfBothSides keeps four long-lived TCP streams (a line
// echo every 10 ms, as a database client or a WebSocket would) from a client pod through its
// sidecar and the demo pods' sidecars to the demo app's TCP echo, with HTTP load on new
// connections in the same pod, while one UpgradePlan hot-upgrades the client and both demo pods.
// Every pod counts as upgraded once its new proxy took over, while its old proxy retires with
// the streams (the plan shows them); the plan completes once the streams ended; not one stream
// broke and not one request failed.
func TestLongLivedStreamsSurviveAHotUpgradeOfBothSides(t *testing.T) {
	ctx := context.Background()
	ns := createNamespace(t, "e2e-streams")
	from, to := releasedVersion(ns+"-v1", "1.0.0"), releasedVersion(ns+"-v2", "2.0.0")
	for _, v := range []*meshv1alpha1.SidecarVersion{from, to} {
		if err := k8s.Create(ctx, v); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), v) })
	}
	server := gen.MeshService("demo", gen.PinVersion(from.Name), gen.MeshServiceMeta(gen.SetNamespace(ns)))
	server.Spec.Ports = append(server.Spec.Ports, meshv1alpha1.MeshServicePort{Name: "echo", Port: 9000, Protocol: meshv1alpha1.ProtocolTCP})
	caller := gen.MeshService("client", gen.PinVersion(from.Name), gen.MeshServiceMeta(gen.SetNamespace(ns)))
	caller.Spec.Ports = nil
	caller.Spec.Upstreams = []meshv1alpha1.Upstream{
		{MeshService: "demo", Port: "http", LocalPort: 18080},
		{MeshService: "demo", Port: "echo", LocalPort: 19000},
	}
	for _, ms := range []*meshv1alpha1.MeshService{server, caller} {
		if err := k8s.Create(ctx, ms); err != nil {
			t.Fatal(err)
		}
	}
	demo := demoDeployment(ns, "demo", 2)
	app := &demo.Spec.Template.Spec.Containers[0]
	app.Args = append(app.Args, "--tcp-echo-listen=:9000")
	app.Ports = append(app.Ports, corev1.ContainerPort{Name: "echo", ContainerPort: 9000})
	if err := k8s.Create(ctx, demo); err != nil {
		t.Fatal(err)
	}
	waitForMeshedPods(t, ns, "demo", 2)

	const run = 150 * time.Second
	caller0 := loadPod(ns, "client", "http://127.0.0.1:18080/", run)
	caller0.Spec.Containers = append(caller0.Spec.Containers, corev1.Container{
		Name: "streams", Image: "meshlift/meshlift-demo:dev", ImagePullPolicy: corev1.PullIfNotPresent,
		Args: []string{"streams", "--target=127.0.0.1:19000", "--streams=4", "--interval=10ms", "--duration=" + run.String(),
			"--timeout=10s", "--output=json"},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	})
	if err := k8s.Create(ctx, caller0); err != nil {
		t.Fatal(err)
	}
	waitForMeshedPods(t, ns, "client", 1)
	time.Sleep(3 * time.Second)

	plan := gen.UpgradePlan("to-v2", to.Name, []string{"demo", "client"}, gen.UpgradePlanMeta(gen.SetNamespace(ns)))
	plan.Spec.Strategy.MaxUnavailable = ptr.To(intstr.FromInt32(1))
	started := time.Now()
	if err := k8s.Create(ctx, plan); err != nil {
		t.Fatal(err)
	}
	// Every pod runs the target while the streams are still up: the old proxies retire with them.
	got := &meshv1alpha1.UpgradePlan{}
	testenv.Eventually(t, run-10*time.Second, func(ctx context.Context) (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(plan), got); err != nil {
			return false, err.Error()
		}
		c := got.Status.Counts
		return c.Total == 3 && c.Updated == 3 && c.Retiring > 0 && c.RetiringConnections > 0,
			fmt.Sprintf("plan %s %+v %v", got.Status.Phase, c, got.Status.Pods)
	})
	t.Logf("all 3 pods run %s after %s; %d old proxies retire with %d connections", to.Name, time.Since(started).Round(time.Second),
		got.Status.Counts.Retiring, got.Status.Counts.RetiringConnections)
	if got.Status.Phase != meshv1alpha1.PhaseProgressing {
		t.Errorf("while old proxies retire the plan is %s, want Progressing", got.Status.Phase)
	}
	retiring := map[string]bool{}
	for _, p := range got.Status.Pods {
		if p.Phase == string(rollout.PodRetiring) {
			retiring[p.Pod] = true
		}
	}
	pods := &corev1.PodList{}
	if err := k8s.List(ctx, pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !retiring[pod.Name] {
			continue
		}
		// The old slot keeps its proxy (image) while it retires.
		if old := sidecar.IdleSlot(pod); sidecar.SlotImage(pod, old) != from.Spec.Image {
			t.Errorf("pod %s retires, but its old slot %d runs %s, want %s", pod.Name, old, sidecar.SlotImage(pod, old), from.Spec.Image)
		}
	}

	// The streams end; the old proxies go idle; their slots retire; the plan completes.
	testenv.Eventually(t, run+3*time.Minute, func(ctx context.Context) (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(plan), got); err != nil {
			return false, err.Error()
		}
		return got.Status.Phase == meshv1alpha1.PhaseSucceeded, fmt.Sprintf("plan %s %+v %v", got.Status.Phase, got.Status.Counts, got.Status.Pods)
	})
	t.Logf("the plan completed %s after it started", time.Since(started).Round(time.Second))

	load := loadResult(t, caller0)
	streams := streamsResult(t, caller0)
	t.Logf("during the hot upgrade of both sides: %d HTTP requests, %d failed; %d streams, %d lines echoed, %d broken %v",
		load.Sent, load.Failed, streams.Streams, streams.Lines, streams.Broken, streams.Failures)
	if load.Failed != 0 || load.OK == 0 {
		t.Errorf("HTTP requests failed during the hot upgrade: %+v", load)
	}
	if streams.Broken != 0 || streams.Streams != 4 || streams.Lines < 1000 {
		t.Errorf("long-lived streams broke during the hot upgrade: %+v", streams)
	}
	// Nothing was cut: no pod got a ConnectionsCut event.
	events := &eventsv1.EventList{}
	if err := k8s.List(ctx, events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range events.Items {
		if e.Reason == controllers.EventReasonConnectionsCut {
			t.Errorf("pod %s: %s", e.Regarding.Name, e.Note)
		}
	}
	for _, name := range []string{"demo", "client"} {
		running, err := runningPods(ctx, ns, name)
		if err != nil {
			t.Fatal(err)
		}
		for _, pod := range running {
			if sidecar.Version(&pod) != to.Name || sidecar.SlotImage(&pod, sidecar.IdleSlot(&pod)) != to.Spec.IdleImage {
				t.Errorf("pod %s: version %s, idle slot runs %s after the plan completed", pod.Name, sidecar.Version(&pod),
					sidecar.SlotImage(&pod, sidecar.IdleSlot(&pod)))
			}
		}
	}
}

// streamsResult reads the summary the streams container printed (the pod has finished).
func streamsResult(t testing.TB, pod *corev1.Pod) streamsSummary {
	t.Helper()
	clientset, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	logs, err := clientset.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: "streams"}).DoRaw(context.Background())
	if err != nil {
		t.Fatalf("reading the streams' summary: %v", err)
	}
	var summary streamsSummary
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(logs))), &summary); err != nil {
		t.Fatalf("the streams printed %q: %v", logs, err)
	}
	return summary
}
