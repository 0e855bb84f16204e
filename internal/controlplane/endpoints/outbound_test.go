package endpoints_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/controlplane/endpoints"
	"github.com/meshlift/meshlift/internal/outbound"
)

// service is a Service of namespace shop with ClusterIPs ips ("None": headless) and ports
// "port>target" (a number or a port name) or "port" (targetPort unset).
func service(name string, ips []string, annotations map[string]string, ports ...string) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Annotations: annotations}}
	svc.Spec.ClusterIPs = ips
	if len(ips) > 0 {
		svc.Spec.ClusterIP = ips[0]
	}
	for _, p := range ports {
		port, target, _ := strings.Cut(p, ">")
		var number int32
		fmt.Sscan(port, &number)
		sp := corev1.ServicePort{Port: number, Protocol: corev1.ProtocolTCP}
		if target != "" {
			sp.TargetPort = intstr.Parse(target)
		}
		svc.Spec.Ports = append(svc.Spec.Ports, sp)
	}
	return svc
}

func udp(svc *corev1.Service) *corev1.Service {
	for i := range svc.Spec.Ports {
		svc.Spec.Ports[i].Protocol = corev1.ProtocolUDP
	}
	return svc
}

// render shows chains as "cluster/protocol port: addr addr" lines.
func render(chains []outbound.Chain) []string {
	var lines []string
	for _, c := range chains {
		var addrs []string
		for _, a := range c.Addrs {
			addrs = append(addrs, a.String())
		}
		lines = append(lines, fmt.Sprintf("%s/%s %d: %s", c.Cluster, c.Protocol, c.Port, strings.Join(addrs, " ")))
	}
	return lines
}

func TestOutboundChains(t *testing.T) {
	twoPorts := meshService("api", func(ms *meshv1alpha1.MeshService) {
		ms.Spec.Ports = []meshv1alpha1.MeshServicePort{
			{Name: "http", Port: 8080, Protocol: meshv1alpha1.ProtocolHTTP},
			{Name: "grpc", Port: 9090, Protocol: meshv1alpha1.ProtocolGRPC},
			{Name: "raw", Port: 7000},
		}
	})
	pods := []*corev1.Pod{member("api-2", "api", "api", "10.0.0.2"), member("api-1", "api", "api", "10.0.0.1")}
	for _, tc := range []struct {
		name     string
		ms       *meshv1alpha1.MeshService
		pods     []*corev1.Pod
		services []*corev1.Service
		want     []string
	}{
		{
			name: "routes the pods on each port's number, without a Service",
			ms:   twoPorts, pods: pods,
			want: []string{
				"grpc.api.shop/GRPC 9090: 10.0.0.1 10.0.0.2",
				"http.api.shop/HTTP 8080: 10.0.0.1 10.0.0.2",
				"raw.api.shop/TCP 7000: 10.0.0.1 10.0.0.2",
			},
		},
		{
			name:     "routes the same-named Service's ClusterIPs by targetPort number, name, or its port when unset",
			ms:       twoPorts,
			services: []*corev1.Service{service("api", []string{"10.96.0.10", "fd00::10"}, nil, "80>8080", "90>grpc", "7000", "443>8443")},
			want: []string{
				"grpc.api.shop/GRPC 90: 10.96.0.10 fd00::10",
				"http.api.shop/HTTP 80: 10.96.0.10 fd00::10",
				"raw.api.shop/TCP 7000: 10.96.0.10 fd00::10",
			},
		},
		{
			name: "routes a Service annotated for the MeshService, and not a same-named one annotated for another",
			ms:   meshService("api"),
			services: []*corev1.Service{
				service("api-public", []string{"10.96.0.11"}, map[string]string{meshv1alpha1.AnnotationMeshService: "api"}, "80>8080"),
				service("api", []string{"10.96.0.12"}, map[string]string{meshv1alpha1.AnnotationMeshService: "web"}, "80>8080"),
				service("web", []string{"10.96.0.13"}, nil, "80>8080"),
			},
			want: []string{"http.api.shop/HTTP 80: 10.96.0.11"},
		},
		{
			name:     "adds nothing for a headless Service, whose clients dial the pods",
			ms:       meshService("api"),
			pods:     pods,
			services: []*corev1.Service{service("api", []string{"None"}, nil, "80>8080")},
			want:     []string{"http.api.shop/HTTP 8080: 10.0.0.1 10.0.0.2"},
		},
		{
			name:     "leaves UDP ports and Services of other namespaces out",
			ms:       meshService("api"),
			services: []*corev1.Service{udp(service("api", []string{"10.96.0.10"}, nil, "80>8080")), otherNamespace(service("api", []string{"10.96.0.14"}, nil, "80>8080"))},
		},
		{
			name: "merges two Services on the same port into one chain",
			ms:   meshService("api"),
			services: []*corev1.Service{
				service("api", []string{"10.96.0.10"}, nil, "80>8080"),
				service("api-v2", []string{"10.96.0.9"}, map[string]string{meshv1alpha1.AnnotationMeshService: "api"}, "80>http"),
			},
			want: []string{"http.api.shop/HTTP 80: 10.96.0.9 10.96.0.10"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			members := endpoints.Members(tc.ms, tc.pods)
			got := render(endpoints.OutboundChains(tc.ms, members, tc.services))
			if !slices.Equal(got, tc.want) {
				t.Fatalf("chains:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func otherNamespace(svc *corev1.Service) *corev1.Service {
	svc.Namespace = "elsewhere"
	return svc
}
