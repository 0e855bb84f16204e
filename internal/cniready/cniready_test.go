package cniready_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshlift/meshlift/internal/cniready"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

func TestInstalledNeedsOneReadyPluginPod(t *testing.T) {
	for _, tc := range []struct {
		state cniready.State
		want  bool
	}{
		{cniready.State{}, false},
		{cniready.State{Found: true, Desired: 3}, false},
		{cniready.State{Found: true, Desired: 3, Ready: 1}, true}, // rolling out, or a node joining
		{cniready.State{Found: true, Desired: 1, Ready: 1}, true},
	} {
		if got := cniready.Installed(tc.state); got != tc.want {
			t.Errorf("Installed(%+v) = %v, want %v", tc.state, got, tc.want)
		}
	}
}

// TestTheWatcherFollowsTheDaemonSet runs the watcher against a real API server: not installed
// (and not ready for readyz) before its first read, then not installed while the DaemonSet is
// missing or has no ready pod, installed once one is ready, and not installed when it is deleted.
func TestTheWatcherFollowsTheDaemonSet(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ns := env.Namespace(t, "cniready")
	w := &cniready.Watcher{Reader: env.Client, Key: types.NamespacedName{Namespace: ns, Name: cniready.DefaultDaemonSet},
		Interval: 50 * time.Millisecond, Log: testr.New(t)}
	if w.Ready() || w.Checked(nil) == nil {
		t.Fatal("the watcher is ready or installed before its first read")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = w.Start(ctx) }()
	testenv.Eventually(t, 10*time.Second, func(context.Context) (bool, string) {
		return w.Checked(nil) == nil, "the watcher did not read the DaemonSet"
	})
	if w.Ready() {
		t.Fatal("installed without a DaemonSet")
	}

	labels := map[string]string{"app": "meshlift-cni"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: cniready.DefaultDaemonSet, Namespace: ns},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "install", Image: "meshlift/meshlift-cni:dev"}}},
			},
		},
	}
	if err := env.Client.Create(ctx, ds); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if w.Ready() {
		t.Fatal("installed while the DaemonSet has no ready pod")
	}
	ds.Status = appsv1.DaemonSetStatus{DesiredNumberScheduled: 2, CurrentNumberScheduled: 2, NumberReady: 1}
	if err := env.Client.Status().Update(ctx, ds); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func(context.Context) (bool, string) {
		return w.Ready(), "not installed with a ready plugin pod"
	})
	if err := env.Client.Delete(ctx, ds); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func(context.Context) (bool, string) {
		return !w.Ready(), "still installed after the DaemonSet was deleted"
	})
}
