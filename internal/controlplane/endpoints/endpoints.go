// Package endpoints decides what EDS says: which pods are endpoints of a MeshService and the
// ClusterLoadAssignment of each cluster (<port-name>.<meshservice>.<namespace>). It is pure: the
// control-plane server lists pods and MeshServices from its cache and calls it.
package endpoints

import (
	"cmp"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/rollout"
	"github.com/meshlift/meshlift/internal/sidecar"
)

// Endpoint metadata: filter_metadata[MetadataNamespace][MetadataIdentity] is the SPIFFE ID the
// client proxy verifies the endpoint's certificate against.
const (
	MetadataNamespace = "meshlift.io"
	MetadataIdentity  = "identity"
)

// ClusterName is the cluster (and TLS SNI) of a MeshService port.
func ClusterName(port, meshService, namespace string) string {
	return port + "." + meshService + "." + namespace
}

// ParseCluster reads a cluster name, <port-name>.<meshservice>.<namespace> (three DNS labels),
// back into the Upstream it names; false when it is not one.
func ParseCluster(name string) (Upstream, bool) {
	labels := strings.Split(name, ".")
	if len(labels) != 3 || len(name) > 253 || slices.ContainsFunc(labels, func(l string) bool { return len(validation.IsDNS1123Label(l)) > 0 }) {
		return Upstream{}, false
	}
	return Upstream{Cluster: name, MeshService: types.NamespacedName{Namespace: labels[2], Name: labels[1]}, Port: labels[0]}, true
}

// Upstream is a cluster a MeshService's proxies call.
type Upstream struct {
	// Cluster is <port-name>.<meshservice>.<namespace>.
	Cluster string
	// MeshService is the upstream MeshService.
	MeshService types.NamespacedName
	// Port is the name of the upstream MeshService's port.
	Port string
}

// Upstreams are the clusters of ms.spec.upstreams, in order; an upstream named "name" is in
// ms's namespace, "name.namespace" in another.
func Upstreams(ms *meshv1alpha1.MeshService) []Upstream {
	upstreams := make([]Upstream, 0, len(ms.Spec.Upstreams))
	for _, u := range ms.Spec.Upstreams {
		name, namespace, qualified := strings.Cut(u.MeshService, ".")
		if !qualified {
			namespace = ms.Namespace
		}
		upstreams = append(upstreams, Upstream{
			Cluster:     ClusterName(u.Port, name, namespace),
			MeshService: types.NamespacedName{Namespace: namespace, Name: name},
			Port:        u.Port,
		})
	}
	return upstreams
}

// IsEndpoint reports whether pod takes mesh traffic for ms: it was injected for ms and still
// matches its selector (relabelling a pod takes it out, as with a Service), it has an IP, it is
// not terminating, finished or excluded by an InPlace rollout (meshlift.io/eds-excluded), and
// it is ready (PodReady, or its active proxy is ready).
func IsEndpoint(pod *corev1.Pod, ms *meshv1alpha1.MeshService, selector labels.Selector) bool {
	switch {
	case pod.Namespace != ms.Namespace,
		pod.Annotations[meshv1alpha1.AnnotationMeshService] != ms.Name,
		pod.Annotations[meshv1alpha1.AnnotationInjectionHash] == "",
		pod.Annotations[meshv1alpha1.AnnotationEDSExcluded] == "true",
		pod.DeletionTimestamp != nil,
		pod.Status.PodIP == "",
		pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed,
		!selector.Matches(labels.Set(pod.Labels)):
		return false
	}
	return sidecar.PodReady(pod) || sidecar.ProxyReady(pod) || handingOver(pod)
}

// handingOver reports whether the pod is in a hot upgrade (or its revert) and one of its two
// proxies is ready. Its listeners always have an owner that accepts: the old proxy until the
// takeover, the new one after it (or the old one again, resumed, when the new one dies). But
// the readiness the kubelet reports lags and flickers around the handoff: the active-slot
// annotation names the new proxy before it takes over (it takes over only once named), while
// its container restarted with the new image and is not ready yet, nor is the pod; and right
// after the takeover the new container's readiness was seen to drop for a probe period (the
// rollout goes from Stabilizing back to WaitingReady). Dropping the pod from EDS then would
// leave the clients of a MeshService with one replica without endpoints for a second or two,
// though nothing stopped serving (e2e: 503s through a one-replica server's hot upgrade).
func handingOver(pod *corev1.Pod) bool {
	value := pod.Annotations[meshv1alpha1.AnnotationUpgrade]
	if value == "" {
		return false
	}
	state, err := rollout.DecodeState(value)
	if err != nil || state.Strategy != meshv1alpha1.StrategyHotUpgrade || state.Phase.Terminal() {
		return false
	}
	return sidecar.SlotReady(pod, 1) || sidecar.SlotReady(pod, 2)
}

// LbEndpoints are the endpoints of ms among pods, ordered by address: the pod IP and the
// proxy's inbound port, HEALTHY, with the SPIFFE ID of the pod's service account.
func LbEndpoints(ms *meshv1alpha1.MeshService, pods []*corev1.Pod, trustDomain string) []*endpointv3.LbEndpoint {
	return LbEndpointsOf(Members(ms, pods), trustDomain)
}

// Members are the pods among pods that are endpoints of ms (IsEndpoint), ordered by address.
func Members(ms *meshv1alpha1.MeshService, pods []*corev1.Pod) []*corev1.Pod {
	selector, err := metav1.LabelSelectorAsSelector(&ms.Spec.Selector)
	if err != nil || selector.Empty() {
		// The API refuses both; a MeshService that still has one selects nothing.
		return nil
	}
	var members []*corev1.Pod
	for _, pod := range pods {
		if IsEndpoint(pod, ms, selector) {
			members = append(members, pod)
		}
	}
	slices.SortFunc(members, func(a, b *corev1.Pod) int {
		return cmp.Or(cmp.Compare(a.Status.PodIP, b.Status.PodIP), cmp.Compare(a.Name, b.Name))
	})
	return members
}

// LbEndpointsOf are the endpoints of members (from Members), in their order.
func LbEndpointsOf(members []*corev1.Pod, trustDomain string) []*endpointv3.LbEndpoint {
	out := make([]*endpointv3.LbEndpoint, 0, len(members))
	for _, pod := range members {
		out = append(out, lbEndpoint(pod.Status.PodIP, identity.SPIFFEID(trustDomain, pod.Namespace, pod.Spec.ServiceAccountName)))
	}
	return out
}

func lbEndpoint(ip, spiffeID string) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Protocol:      corev3.SocketAddress_TCP,
				Address:       ip,
				PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: sidecar.InboundPort},
			}}},
		}},
		HealthStatus: corev3.HealthStatus_HEALTHY,
		Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			MetadataNamespace: {Fields: map[string]*structpb.Value{MetadataIdentity: structpb.NewStringValue(spiffeID)}},
		}},
	}
}

// Assignment is the ClusterLoadAssignment of cluster with endpoints (none: the cluster exists
// but nothing serves it now).
func Assignment(cluster string, endpoints []*endpointv3.LbEndpoint) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	if len(endpoints) > 0 {
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: endpoints}}
	}
	return cla
}

// Assignments computes the ClusterLoadAssignment of every port of every MeshService from the
// pods, keyed by cluster name.
func Assignments(meshServices []*meshv1alpha1.MeshService, pods []*corev1.Pod, trustDomain string) map[string]*endpointv3.ClusterLoadAssignment {
	byNamespace := map[string][]*corev1.Pod{}
	for _, pod := range pods {
		byNamespace[pod.Namespace] = append(byNamespace[pod.Namespace], pod)
	}
	out := map[string]*endpointv3.ClusterLoadAssignment{}
	for _, ms := range meshServices {
		endpoints := LbEndpoints(ms, byNamespace[ms.Namespace], trustDomain)
		for _, port := range ms.Spec.Ports {
			cluster := ClusterName(port.Name, ms.Name, ms.Namespace)
			out[cluster] = Assignment(cluster, endpoints)
		}
	}
	return out
}

// HasPort reports whether ms has a port named port.
func HasPort(ms *meshv1alpha1.MeshService, port string) bool {
	return slices.ContainsFunc(ms.Spec.Ports, func(p meshv1alpha1.MeshServicePort) bool { return p.Name == port })
}
