package endpoints_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/controlplane/endpoints"
	"github.com/meshlift/meshlift/internal/rollout"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
)

// member is a pod injected for MeshService ms in namespace shop, labelled for its selector,
// running under service account sa, Running and Ready with IP ip.
func member(name, ms, sa, ip string, opts ...gen.PodOption) *corev1.Pod {
	pod := gen.Pod(name,
		gen.PodMeta(gen.SetNamespace("shop"), gen.SetLabels("app", ms), gen.SetAnnotations(meshv1alpha1.AnnotationInjectionHash, "h")),
		gen.Injected(ms, "v1"), gen.SetServiceAccount(sa))
	gen.Ready(pod)(&pod.Status)
	pod.Status.PodIP = ip
	for _, opt := range opts {
		opt(pod)
	}
	return pod
}

func meshService(name string, opts ...gen.MeshServiceOption) *meshv1alpha1.MeshService {
	return gen.MeshService(name, append([]gen.MeshServiceOption{gen.MeshServiceMeta(gen.SetNamespace("shop"))}, opts...)...)
}

func withPorts(names ...string) gen.MeshServiceOption {
	return func(ms *meshv1alpha1.MeshService) {
		ms.Spec.Ports = nil
		for i, name := range names {
			ms.Spec.Ports = append(ms.Spec.Ports, meshv1alpha1.MeshServicePort{Name: name, Port: int32(8080 + i)})
		}
	}
}

func notReady(pod *corev1.Pod) { gen.NotReady(pod)(&pod.Status) }

// handingOver puts the pod in phase of a hot upgrade from slot 1 to slot 2, slot 2 named
// active, with only slot 1's proxy ready (when oldReady) and the pod not ready.
func handingOver(phase rollout.PodPhase, oldReady bool) gen.PodOption {
	return func(p *corev1.Pod) {
		now := time.Now().UTC().Truncate(time.Second)
		state := &rollout.PodState{Plan: "up", From: "v1", To: "v2", Strategy: meshv1alpha1.StrategyHotUpgrade,
			Phase: phase, Slot: 2, FromSlot: 1, FromImage: "proxy:1", IdleImage: "idle:1", ToImage: "proxy:2", ToIdleImage: "idle:2",
			StartedAt: now, PhaseSince: now, Attempt: 1}
		if phase == rollout.PodStabilizing {
			state.ReadySince = &now
		}
		// An annotation EncodeState refuses fails the test: IsEndpoint ignores malformed ones.
		encoded, _ := rollout.EncodeState(state)
		p.Annotations[meshv1alpha1.AnnotationUpgrade] = encoded
		p.Annotations[meshv1alpha1.AnnotationActiveSlot] = "2"
		p.Status.InitContainerStatuses = []corev1.ContainerStatus{
			{Name: sidecar.SlotContainerName(1), Ready: oldReady},
			{Name: sidecar.SlotContainerName(2), Ready: false},
		}
		for i := range p.Status.ContainerStatuses {
			if strings.HasPrefix(p.Status.ContainerStatuses[i].Name, sidecar.ContainerName) {
				p.Status.ContainerStatuses[i].Ready = p.Status.ContainerStatuses[i].Name == sidecar.SlotContainerName(1) && oldReady
			}
		}
	}
}

// summary renders assignments as "cluster: ip:port=identity ..." lines, sorted.
func summary(assignments map[string]*endpointv3.ClusterLoadAssignment) []string {
	var lines []string
	for cluster, cla := range assignments {
		if cla.GetClusterName() != cluster {
			lines = append(lines, fmt.Sprintf("%s: named %q", cluster, cla.GetClusterName()))
			continue
		}
		var eps []string
		for _, locality := range cla.GetEndpoints() {
			for _, lb := range locality.GetLbEndpoints() {
				sock := lb.GetEndpoint().GetAddress().GetSocketAddress()
				id := lb.GetMetadata().GetFilterMetadata()[endpoints.MetadataNamespace].GetFields()[endpoints.MetadataIdentity].GetStringValue()
				eps = append(eps, fmt.Sprintf("%s:%d=%s/%s", sock.GetAddress(), sock.GetPortValue(), id, lb.GetHealthStatus()))
			}
		}
		lines = append(lines, cluster+": "+strings.Join(eps, " "))
	}
	slices.Sort(lines)
	return lines
}

func TestAssignments(t *testing.T) {
	const apiID = "spiffe://example.org/ns/shop/sa/api"
	deleting := metav1.Now()
	for _, tc := range []struct {
		name         string
		meshServices []*meshv1alpha1.MeshService
		pods         []*corev1.Pod
		want         []string
	}{
		{
			name:         "lists the ready injected pods on the proxy's inbound port with their identity",
			meshServices: []*meshv1alpha1.MeshService{meshService("api")},
			pods:         []*corev1.Pod{member("api-2", "api", "api", "10.0.0.2"), member("api-1", "api", "api", "10.0.0.1")},
			want:         []string{"http.api.shop: 10.0.0.1:15006=" + apiID + "/HEALTHY 10.0.0.2:15006=" + apiID + "/HEALTHY"},
		},
		{
			name:         "gives every port of a MeshService the same endpoints",
			meshServices: []*meshv1alpha1.MeshService{meshService("api", withPorts("http", "grpc"))},
			pods:         []*corev1.Pod{member("api-1", "api", "api", "10.0.0.1")},
			want:         []string{"grpc.api.shop: 10.0.0.1:15006=" + apiID + "/HEALTHY", "http.api.shop: 10.0.0.1:15006=" + apiID + "/HEALTHY"},
		},
		{
			name:         "uses the default service account's identity when the pod names none",
			meshServices: []*meshv1alpha1.MeshService{meshService("api")},
			pods:         []*corev1.Pod{member("api-1", "api", "", "10.0.0.1")},
			want:         []string{"http.api.shop: 10.0.0.1:15006=spiffe://example.org/ns/shop/sa/default/HEALTHY"},
		},
		{
			name:         "leaves out a pod that is not ready",
			meshServices: []*meshv1alpha1.MeshService{meshService("api")},
			pods:         []*corev1.Pod{member("api-1", "api", "api", "10.0.0.1", notReady)},
			want:         []string{"http.api.shop: "},
		},
		{
			name:         "keeps a pod whose proxy is ready although the pod is not (readiness gate pending)",
			meshServices: []*meshv1alpha1.MeshService{meshService("api")},
			pods: []*corev1.Pod{member("api-1", "api", "api", "10.0.0.1", notReady, func(p *corev1.Pod) {
				for i := range p.Status.ContainerStatuses {
					p.Status.ContainerStatuses[i].Ready = p.Status.ContainerStatuses[i].Name == "meshlift-proxy-1"
				}
			})},
			want: []string{"http.api.shop: 10.0.0.1:15006=" + apiID + "/HEALTHY"},
		},
		{
			name:         "keeps a pod whose old proxy serves while the new one, already the active slot, waits to take over",
			meshServices: []*meshv1alpha1.MeshService{meshService("api")},
			pods:         []*corev1.Pod{member("api-1", "api", "api", "10.0.0.1", notReady, handingOver(rollout.PodWaitingReady, true))},
			want:         []string{"http.api.shop: 10.0.0.1:15006=" + apiID + "/HEALTHY"},
		},
		{
			name:         "keeps a pod right after the handoff whose new proxy's readiness drops for a moment",
			meshServices: []*meshv1alpha1.MeshService{meshService("api")},
			pods:         []*corev1.Pod{member("api-1", "api", "api", "10.0.0.1", notReady, handingOver(rollout.PodStabilizing, true))},
			want:         []string{"http.api.shop: 10.0.0.1:15006=" + apiID + "/HEALTHY"},
		},
		{
			name:         "leaves out a pod whose upgrade ended and whose active proxy is not ready, though the other slot is",
			meshServices: []*meshv1alpha1.MeshService{meshService("api")},
			pods:         []*corev1.Pod{member("api-1", "api", "api", "10.0.0.1", notReady, handingOver(rollout.PodSucceeded, true))},
			want:         []string{"http.api.shop: "},
		},
		{
			name:         "leaves out a pod in the handoff when neither proxy is ready",
			meshServices: []*meshv1alpha1.MeshService{meshService("api")},
			pods:         []*corev1.Pod{member("api-1", "api", "api", "10.0.0.1", notReady, handingOver(rollout.PodWaitingReady, false))},
			want:         []string{"http.api.shop: "},
		},
		{
			name:         "leaves out a pod being upgraded cold",
			meshServices: []*meshv1alpha1.MeshService{meshService("api")},
			pods: []*corev1.Pod{member("api-1", "api", "api", "10.0.0.1", gen.PodMeta(gen.SetAnnotations(meshv1alpha1.AnnotationEDSExcluded, "true"))),
				member("api-2", "api", "api", "10.0.0.2")},
			want: []string{"http.api.shop: 10.0.0.2:15006=" + apiID + "/HEALTHY"},
		},
		{
			name:         "leaves out a terminating pod",
			meshServices: []*meshv1alpha1.MeshService{meshService("api")},
			pods:         []*corev1.Pod{member("api-1", "api", "api", "10.0.0.1", func(p *corev1.Pod) { p.DeletionTimestamp = &deleting })},
			want:         []string{"http.api.shop: "},
		},
		{
			name:         "leaves out a pod without an IP yet",
			meshServices: []*meshv1alpha1.MeshService{meshService("api")},
			pods:         []*corev1.Pod{member("api-1", "api", "api", "")},
			want:         []string{"http.api.shop: "},
		},
		{
			name:         "leaves out a pod that has finished",
			meshServices: []*meshv1alpha1.MeshService{meshService("api")},
			pods:         []*corev1.Pod{member("api-1", "api", "api", "10.0.0.1", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })},
			want:         []string{"http.api.shop: "},
		},
		{
			name:         "leaves out a pod that was not injected",
			meshServices: []*meshv1alpha1.MeshService{meshService("api")},
			pods: []*corev1.Pod{member("api-1", "api", "api", "10.0.0.1", func(p *corev1.Pod) {
				delete(p.Annotations, meshv1alpha1.AnnotationInjectionHash)
			})},
			want: []string{"http.api.shop: "},
		},
		{
			name:         "leaves out a pod injected for another MeshService that the selector also matches",
			meshServices: []*meshv1alpha1.MeshService{meshService("api")},
			pods:         []*corev1.Pod{member("api-1", "api-canary", "api", "10.0.0.1", gen.PodMeta(gen.SetLabels("app", "api")))},
			want:         []string{"http.api.shop: "},
		},
		{
			name:         "leaves out a pod relabelled out of the selector",
			meshServices: []*meshv1alpha1.MeshService{meshService("api")},
			pods:         []*corev1.Pod{member("api-1", "api", "api", "10.0.0.1", gen.PodMeta(gen.SetLabels("app", "debug")))},
			want:         []string{"http.api.shop: "},
		},
		{
			name:         "leaves out a pod of the same name in another namespace",
			meshServices: []*meshv1alpha1.MeshService{meshService("api")},
			pods:         []*corev1.Pod{member("api-1", "api", "api", "10.0.0.1", gen.PodMeta(gen.SetNamespace("bank")))},
			want:         []string{"http.api.shop: "},
		},
		{
			name:         "selects nothing with an empty selector",
			meshServices: []*meshv1alpha1.MeshService{meshService("api", func(ms *meshv1alpha1.MeshService) { ms.Spec.Selector = metav1.LabelSelector{} })},
			pods:         []*corev1.Pod{member("api-1", "api", "api", "10.0.0.1")},
			want:         []string{"http.api.shop: "},
		},
		{
			name:         "keeps the endpoints of each MeshService apart",
			meshServices: []*meshv1alpha1.MeshService{meshService("api"), meshService("web")},
			pods:         []*corev1.Pod{member("api-1", "api", "api", "10.0.0.1"), member("web-1", "web", "web", "10.0.0.9")},
			want: []string{"http.api.shop: 10.0.0.1:15006=" + apiID + "/HEALTHY",
				"http.web.shop: 10.0.0.9:15006=spiffe://example.org/ns/shop/sa/web/HEALTHY"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := summary(endpoints.Assignments(tc.meshServices, tc.pods, "example.org"))
			if !slices.Equal(got, tc.want) {
				t.Fatalf("assignments:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestUpstreams(t *testing.T) {
	ms := meshService("web", func(ms *meshv1alpha1.MeshService) {
		ms.Spec.Upstreams = []meshv1alpha1.Upstream{
			{MeshService: "api", Port: "http", LocalPort: 7001},
			{MeshService: "ledger.bank", Port: "grpc", LocalPort: 7002},
		}
	})
	got := endpoints.Upstreams(ms)
	want := []endpoints.Upstream{
		{Cluster: "http.api.shop", MeshService: types.NamespacedName{Namespace: "shop", Name: "api"}, Port: "http"},
		{Cluster: "grpc.ledger.bank", MeshService: types.NamespacedName{Namespace: "bank", Name: "ledger"}, Port: "grpc"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Upstreams() = %+v, want %+v (an unqualified upstream is in the caller's namespace)", got, want)
	}
}
