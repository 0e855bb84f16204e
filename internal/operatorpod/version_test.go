package operatorpod_test

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/operatorpod"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

const timeout = 30 * time.Second

// quickBackoff retries every 10ms.
var quickBackoff = wait.Backoff{Duration: 10 * time.Millisecond, Factor: 1, Steps: 1}

func TestVersionIsRecordedOnTheReplicasPod(t *testing.T) {
	ns := env.Namespace(t, "operator")
	pod := createOperatorPod(t, ns)

	writer := operatorWriter(t, ns)
	runToEnd(t, newPublisher(t, writer, pod, "v1.2.3"))

	current := get(t, pod)
	if got := current.Annotations[meshv1alpha1.AnnotationOperatorVersion]; got != "v1.2.3" {
		t.Fatalf("the pod's %s is %q, want v1.2.3", meshv1alpha1.AnnotationOperatorVersion, got)
	}
	want := maps.Clone(pod.Annotations)
	want[meshv1alpha1.AnnotationOperatorVersion] = "v1.2.3"
	if !maps.Equal(current.Annotations, want) || !maps.Equal(current.Labels, pod.Labels) {
		t.Errorf("the pod has labels %v and annotations %v, want %v and %v", current.Labels, current.Annotations, pod.Labels, want)
	}

	// A new version replaces the old one.
	runToEnd(t, newPublisher(t, writer, pod, "v1.3.0"))
	if got := get(t, pod).Annotations[meshv1alpha1.AnnotationOperatorVersion]; got != "v1.3.0" {
		t.Fatalf("after an upgrade the pod's %s is %q, want v1.3.0", meshv1alpha1.AnnotationOperatorVersion, got)
	}
}

func TestVersionIsRetriedUntilThePatchSucceeds(t *testing.T) {
	ns := env.Namespace(t, "operator")
	pod := createOperatorPod(t, ns)
	writer := &flakyWriter{Writer: operatorWriter(t, ns), failures: 2}

	runToEnd(t, newPublisher(t, writer, pod, "v1.2.3"))

	if got := get(t, pod).Annotations[meshv1alpha1.AnnotationOperatorVersion]; got != "v1.2.3" {
		t.Fatalf("the pod's %s is %q after two failed attempts, want v1.2.3", meshv1alpha1.AnnotationOperatorVersion, got)
	}
	if got := writer.count(); got != 3 {
		t.Errorf("%d attempts, want 3 (two failures, then the patch)", got)
	}
}

func TestVersionIsNotRecordedOutsideAPod(t *testing.T) {
	ns := env.Namespace(t, "operator")
	writer := &flakyWriter{Writer: operatorWriter(t, ns)}
	missing := &corev1.Pod{}
	missing.Namespace, missing.Name = ns, "not-a-pod"

	runToEnd(t, newPublisher(t, writer, missing, "v1.2.3"))

	if got := writer.count(); got != 1 {
		t.Errorf("%d attempts on a pod that does not exist, want 1", got)
	}
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(missing), &corev1.Pod{}); !apierrors.IsNotFound(err) {
		t.Errorf("the pod exists after the publisher ran (%v); a patch must not create it", err)
	}
}

func TestVersionStopsRetryingWhenTheManagerStops(t *testing.T) {
	ns := env.Namespace(t, "operator")
	pod := createOperatorPod(t, ns)
	writer := &flakyWriter{Writer: operatorWriter(t, ns), failures: 1 << 30}
	publisher := newPublisher(t, writer, pod, "v1.2.3")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- publisher.Start(ctx) }()
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		return writer.count() >= 3, "the publisher has not retried yet"
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Start returned %v; it must never fail the manager", err)
		}
	case <-time.After(timeout):
		t.Fatal("the publisher kept retrying after the manager stopped")
	}
}

func TestVersionPublisherRunsOnEveryReplica(t *testing.T) {
	if (&operatorpod.VersionPublisher{}).NeedLeaderElection() {
		t.Fatal("the publisher waits for the leader election; every replica must annotate its own Pod")
	}
}

// createOperatorPod creates a pod like an operator replica's.
func createOperatorPod(t *testing.T, ns string) *corev1.Pod {
	t.Helper()
	pod := gen.Pod("meshlift-controller-manager-7d9f8-abcde", gen.PodMeta(
		gen.SetNamespace(ns),
		gen.SetLabels("app.kubernetes.io/name", "meshlift", "control-plane", "controller-manager"),
		gen.SetAnnotations("kubectl.kubernetes.io/default-container", "manager"),
	))
	if err := env.Client.Create(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

// operatorWriter is a client with the operator's own permissions (config/rbac/role.yaml).
func operatorWriter(t *testing.T, ns string) client.Client {
	t.Helper()
	const operator = "meshlift-operator"
	clusterRules, namespacedRules := testenv.GeneratedRules(t)
	env.Grant(t, "manager", operator, ns, clusterRules, namespacedRules)
	c, err := client.New(env.As(operator), client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newPublisher(t *testing.T, writer client.Writer, pod *corev1.Pod, version string) *operatorpod.VersionPublisher {
	t.Helper()
	return &operatorpod.VersionPublisher{
		Writer:  writer,
		Pod:     types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name},
		Version: version,
		Log:     ctrl.Log.WithName(t.Name()),
		Backoff: quickBackoff,
	}
}

// runToEnd runs the publisher until it returns, which it must do without error.
func runToEnd(t *testing.T, publisher *operatorpod.VersionPublisher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := publisher.Start(ctx); err != nil {
		t.Fatalf("Start returned %v; it must never fail the manager", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the publisher was still at it after %s", timeout)
	}
}

func get(t *testing.T, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	current := &corev1.Pod{}
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(pod), current); err != nil {
		t.Fatal(err)
	}
	return current
}

// flakyWriter fails its first failures patches as an API server that is not reachable yet
// would, then patches through the API server; it counts the attempts.
type flakyWriter struct {
	client.Writer
	failures int

	mu       sync.Mutex
	attempts int
}

func (w *flakyWriter) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	w.mu.Lock()
	w.attempts++
	fail := w.attempts <= w.failures
	w.mu.Unlock()
	if fail {
		return apierrors.NewServiceUnavailable("the API server is not reachable yet")
	}
	return w.Writer.Patch(ctx, obj, patch, opts...)
}

func (w *flakyWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.attempts
}
