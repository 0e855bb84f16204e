package endpoints

import (
	"cmp"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/outbound"
)

// MeshServiceOfService is the MeshService whose ports a Service's ports lead to (in the Service's
// namespace): the one its meshlift.io/meshservice annotation names, else the one of the same name.
func MeshServiceOfService(svc *corev1.Service) string {
	if name := svc.Annotations[meshv1alpha1.AnnotationMeshService]; name != "" {
		return name
	}
	return svc.Name
}

// OutboundChains are the destinations of ms's ports that captured connections may be sent to:
// for each port, the IPs of members (ready endpoints, from Members) on the port's number, and the
// ClusterIPs of the services that lead to ms (MeshServiceOfService; others are ignored) on each
// TCP Service port whose targetPort is that port (by number, or by name for a named targetPort).
// A headless Service adds nothing: its clients dial the pod IPs. Chains are ordered by cluster,
// then destination port.
func OutboundChains(ms *meshv1alpha1.MeshService, members []*corev1.Pod, services []*corev1.Service) []outbound.Chain {
	var podAddrs []netip.Addr
	for _, pod := range members {
		if addr, err := netip.ParseAddr(pod.Status.PodIP); err == nil {
			podAddrs = append(podAddrs, addr.Unmap())
		}
	}
	type key struct {
		cluster string
		port    uint16
	}
	byKey := map[key]*outbound.Chain{}
	add := func(port meshv1alpha1.MeshServicePort, dstPort int32, addrs []netip.Addr) {
		if dstPort <= 0 || dstPort > 65535 || len(addrs) == 0 {
			return
		}
		route := outbound.Route{Cluster: ClusterName(port.Name, ms.Name, ms.Namespace), Protocol: cmp.Or(string(port.Protocol), string(meshv1alpha1.ProtocolTCP))}
		k := key{route.Cluster, uint16(dstPort)}
		chain := byKey[k]
		if chain == nil {
			chain = &outbound.Chain{Route: route, Port: k.port}
			byKey[k] = chain
		}
		for _, addr := range addrs {
			if !slices.Contains(chain.Addrs, addr) {
				chain.Addrs = append(chain.Addrs, addr)
			}
		}
	}
	for _, port := range ms.Spec.Ports {
		add(port, port.Port, podAddrs)
	}
	for _, svc := range services {
		if svc.Namespace != ms.Namespace || MeshServiceOfService(svc) != ms.Name {
			continue
		}
		clusterIPs := clusterIPsOf(svc)
		for _, svcPort := range svc.Spec.Ports {
			if svcPort.Protocol != "" && svcPort.Protocol != corev1.ProtocolTCP {
				continue
			}
			if port, ok := targetOf(ms, svcPort); ok {
				add(port, svcPort.Port, clusterIPs)
			}
		}
	}
	chains := make([]outbound.Chain, 0, len(byKey))
	for _, chain := range byKey {
		slices.SortFunc(chain.Addrs, func(a, b netip.Addr) int { return a.Compare(b) })
		chains = append(chains, *chain)
	}
	outbound.SortChains(chains)
	return chains
}

// clusterIPsOf are the Service's ClusterIPs, none for a headless (or ExternalName) Service.
func clusterIPsOf(svc *corev1.Service) []netip.Addr {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, ip := range ips {
		if addr, err := netip.ParseAddr(ip); err == nil { // "None" does not parse
			out = append(out, addr.Unmap())
		}
	}
	return out
}

// targetOf is the port of ms a Service port leads to: the one whose number is its targetPort (its
// port when unset), or whose name is its named targetPort.
func targetOf(ms *meshv1alpha1.MeshService, svcPort corev1.ServicePort) (meshv1alpha1.MeshServicePort, bool) {
	target := svcPort.TargetPort
	if target.Type == intstr.Int && target.IntVal == 0 {
		target = intstr.FromInt32(svcPort.Port)
	}
	for _, port := range ms.Spec.Ports {
		if (target.Type == intstr.Int && port.Port == target.IntVal) || (target.Type == intstr.String && port.Name == target.StrVal) {
			return port, true
		}
	}
	return meshv1alpha1.MeshServicePort{}, false
}
