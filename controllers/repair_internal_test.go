package controllers

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/testutil/gen"
)

var repairT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func repairPod(opts ...gen.PodOption) *corev1.Pod {
	pod := gen.Pod("web-1", append([]gen.PodOption{gen.PodMeta(gen.SetNamespace("shop"), gen.SetLabels("app", "web"), gen.SetCreated(repairT0)),
		func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d9f", UID: "rs-uid", Controller: ptr.To(true)}}
		}}, opts...)...)
	return pod
}

func repairMeshService(name string, mode meshv1alpha1.MTLSMode, created time.Time) meshv1alpha1.MeshService {
	return *gen.MeshService(name, gen.MeshServiceMeta(gen.SetNamespace("shop"), gen.SetCreated(created)), func(ms *meshv1alpha1.MeshService) {
		ms.Spec.Selector.MatchLabels = map[string]string{"app": "web"}
		ms.Spec.MTLS.Mode = mode
	})
}

func TestDecideRepair(t *testing.T) {
	before := repairT0.Add(-time.Hour)
	strict := []meshv1alpha1.MeshService{repairMeshService("web", meshv1alpha1.MTLSStrict, before)}
	tests := []struct {
		name         string
		pod          *corev1.Pod
		meshServices []meshv1alpha1.MeshService
		cannot       string
		want         repairAction
		wantMessage  string
	}{
		{name: "evicts a pod of a controller that a STRICT MeshService selects and that has no sidecar", pod: repairPod(), meshServices: strict,
			want: repairEvict, wantMessage: "(ReplicaSet web-7d9f) recreates it with the sidecar"},
		{name: "reads an empty mode as STRICT, the CRD's default", pod: repairPod(),
			meshServices: []meshv1alpha1.MeshService{repairMeshService("web", "", before)}, want: repairEvict},
		{name: "only reports a pod without a controller", pod: repairPod(func(p *corev1.Pod) { p.OwnerReferences[0].Controller = nil }),
			meshServices: strict, want: repairReport, wantMessage: "no controller"},
		{name: "only reports a pod the injector would skip again", pod: repairPod(), meshServices: strict, cannot: "a container of the pod declares port 15000",
			want: repairReport, wantMessage: "would not inject it"},
		{name: "leaves a pod that a PERMISSIVE MeshService selects alone", pod: repairPod(),
			meshServices: []meshv1alpha1.MeshService{repairMeshService("web", meshv1alpha1.MTLSPermissive, before)}},
		{name: "follows the oldest of overlapping MeshServices, as the injector does", pod: repairPod(),
			meshServices: []meshv1alpha1.MeshService{strict[0], repairMeshService("older", meshv1alpha1.MTLSPermissive, before.Add(-time.Hour))}},
		{name: "leaves a pod that no MeshService selects alone", pod: repairPod(gen.PodMeta(gen.SetLabels("app", "batch"))), meshServices: strict},
		{name: "leaves an injected pod alone", pod: repairPod(gen.Injected("web", "v1")), meshServices: strict},
		{name: "leaves a pod that opted out alone", pod: repairPod(gen.PodMeta(gen.SetAnnotations(meshv1alpha1.AnnotationInject, "false"))), meshServices: strict},
		{name: "leaves a terminating pod alone", pod: repairPod(func(p *corev1.Pod) { p.DeletionTimestamp = ptr.To(metav1.NewTime(repairT0)) }), meshServices: strict},
		{name: "leaves a finished pod alone", pod: repairPod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), meshServices: strict},
		{name: "leaves a host-network pod alone", pod: repairPod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), meshServices: strict},
		{name: "leaves a pod of the operator's namespace alone", pod: repairPod(gen.PodMeta(gen.SetNamespace("meshlift-system"))),
			meshServices: []meshv1alpha1.MeshService{func() meshv1alpha1.MeshService {
				ms := strict[0]
				ms.Namespace = "meshlift-system"
				return ms
			}()}},
		{name: "leaves a pod that predates its MeshService alone", pod: repairPod(),
			meshServices: []meshv1alpha1.MeshService{repairMeshService("web", meshv1alpha1.MTLSStrict, repairT0.Add(time.Second))}},
		{name: "repairs a pod created in the same second as its MeshService", pod: repairPod(),
			meshServices: []meshv1alpha1.MeshService{repairMeshService("web", meshv1alpha1.MTLSStrict, repairT0)}, want: repairEvict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decideRepair(tt.pod, tt.meshServices, "meshlift-system", tt.cannot)
			if got.Action != tt.want {
				t.Fatalf("action %q, want %q (%s)", got.Action, tt.want, got.Message)
			}
			if !strings.Contains(got.Message, tt.wantMessage) {
				t.Errorf("message %q does not contain %q", got.Message, tt.wantMessage)
			}
			if tt.want != repairNone && (got.MeshService == nil || got.MeshService.Name != "web") {
				t.Errorf("MeshService %+v, want web", got.MeshService)
			}
		})
	}
}

func TestRepairBacksOffPerOwnerWhenReplacementsComeBackWithoutASidecar(t *testing.T) {
	clk := clocktesting.NewFakeClock(repairT0.Add(10 * time.Minute))
	r := &RepairReconciler{Clock: clk, owners: map[types.UID]ownerEvictions{}}
	original := repairPod()
	sibling := repairPod(func(p *corev1.Pod) { p.Name = "web-2" })
	if wait := r.ownerBackoff(original); wait != 0 {
		t.Fatalf("first eviction of an owner waits %v", wait)
	}
	r.evicted(original)
	if wait := r.ownerBackoff(sibling); wait != 0 {
		t.Errorf("a sibling created before the eviction waits %v; the pods missed together are evicted together", wait)
	}
	replacement := repairPod(gen.PodMeta(gen.SetCreated(clk.Now().Add(2 * time.Second))))
	clk.Step(2 * time.Second)
	if wait := r.ownerBackoff(replacement); wait != repairOwnerBackoff-2*time.Second {
		t.Errorf("a replacement back without its sidecar waits %v, want %v", wait, repairOwnerBackoff-2*time.Second)
	}
	clk.Step(repairOwnerBackoff)
	if wait := r.ownerBackoff(replacement); wait > 0 {
		t.Errorf("after the backoff the replacement still waits %v", wait)
	}
	r.evicted(replacement)
	second := repairPod(gen.PodMeta(gen.SetCreated(clk.Now())))
	if wait := r.ownerBackoff(second); wait != 2*repairOwnerBackoff {
		t.Errorf("the next replacement waits %v, want the doubled %v", wait, 2*repairOwnerBackoff)
	}
	for range 10 {
		r.evicted(second)
	}
	if got := r.owners["rs-uid"].backoff; got != repairOwnerBackoffMax {
		t.Errorf("backoff %v, want at most %v", got, repairOwnerBackoffMax)
	}
}
