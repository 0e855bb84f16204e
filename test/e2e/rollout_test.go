//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
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

// TestAHotUpgradeUnderLoadDropsNothing hot-upgrades a 5-replica MeshService from the real proxy
// 1.0.0 to 2.0.0 with an UpgradePlan while a client sends a steady bounded load through its own
// proxy: not one request fails, no application container restarts, and every pod ends on the
// target in its other slot with the idle image in the first.
func TestAHotUpgradeUnderLoadDropsNothing(t *testing.T) {
	ctx := context.Background()
	ns := createNamespace(t, "e2e-hot")
	v1, v2 := releasedVersion(ns+"-v1", "1.0.0"), releasedVersion(ns+"-v2", "2.0.0")
	for _, v := range []*meshv1alpha1.SidecarVersion{v1, v2} {
		if err := k8s.Create(ctx, v); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), v) })
	}
	server := gen.MeshService("demo", gen.PinVersion(v1.Name), gen.MeshServiceMeta(gen.SetNamespace(ns)))
	caller := gen.MeshService("client", gen.PinVersion(v1.Name), gen.MeshServiceMeta(gen.SetNamespace(ns)))
	caller.Spec.Ports = nil
	caller.Spec.Upstreams = []meshv1alpha1.Upstream{{MeshService: "demo", Port: "http", LocalPort: 18080}}
	for _, ms := range []*meshv1alpha1.MeshService{server, caller} {
		if err := k8s.Create(ctx, ms); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, time.Minute, func(ctx context.Context) (bool, string) {
		cm := &corev1.ConfigMap{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: sidecar.CARootConfigMap}, cm); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if err := k8s.Create(ctx, demoDeployment(ns, "demo", 5)); err != nil {
		t.Fatal(err)
	}
	waitForMeshedPods(t, ns, "demo", 5)

	loader := loadPod(ns, "client", "http://127.0.0.1:18080/", 90*time.Second)
	if err := k8s.Create(ctx, loader); err != nil {
		t.Fatal(err)
	}
	waitForMeshedPods(t, ns, "client", 1)
	time.Sleep(3 * time.Second) // traffic flows before the plan starts

	started := time.Now()
	plan := gen.UpgradePlan("to-v2", v2.Name, []string{"demo"}, gen.UpgradePlanMeta(gen.SetNamespace(ns)))
	if err := k8s.Create(ctx, plan); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 4*time.Minute, func(ctx context.Context) (bool, string) {
		got := &meshv1alpha1.UpgradePlan{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(plan), got); err != nil {
			return false, err.Error()
		}
		if got.Status.Phase == meshv1alpha1.PhaseFailed {
			t.Fatalf("the plan failed: %+v", got.Status)
		}
		return got.Status.Phase == meshv1alpha1.PhaseSucceeded, fmt.Sprintf("plan %s %+v", got.Status.Phase, got.Status.Counts)
	})
	t.Logf("5 pods hot-upgraded in %s", time.Since(started).Round(time.Second))

	// The load outlived the upgrade and lost nothing.
	testenv.Eventually(t, 3*time.Minute, func(ctx context.Context) (bool, string) {
		pod := &corev1.Pod{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(loader), pod); err != nil {
			return false, err.Error()
		}
		for _, s := range pod.Status.ContainerStatuses {
			if s.Name == "load" && s.State.Terminated != nil {
				if s.State.Terminated.ExitCode != 0 {
					t.Fatalf("requests failed during the hot upgrade (exit %d): %s", s.State.Terminated.ExitCode, s.State.Terminated.Message)
				}
				if s.State.Terminated.StartedAt.After(started) {
					t.Fatal("the load started after the plan")
				}
				t.Logf("the load (40 new connections per second for 90s) ran through the whole upgrade without a failed request")
				return true, ""
			}
		}
		return false, fmt.Sprintf("the client pod is %s", pod.Status.Phase)
	})

	pods, err := runningPods(ctx, ns, "demo")
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != 5 {
		t.Errorf("%d demo pods run after the upgrade, want the same 5", len(pods))
	}
	for _, pod := range pods {
		active := sidecar.ActiveSlot(&pod)
		if sidecar.Version(&pod) != v2.Name || active != 2 || sidecar.SlotImage(&pod, 2) != v2.Spec.Image || sidecar.SlotImage(&pod, 1) != v2.Spec.IdleImage {
			t.Errorf("pod %s: version %s, active slot %d, slot images %q %q", pod.Name, sidecar.Version(&pod), active,
				sidecar.SlotImage(&pod, 1), sidecar.SlotImage(&pod, 2))
		}
		for _, s := range pod.Status.ContainerStatuses {
			if s.Name == "demo" && s.RestartCount != 0 {
				t.Errorf("pod %s: the application restarted %d times", pod.Name, s.RestartCount)
			}
		}
	}
}
