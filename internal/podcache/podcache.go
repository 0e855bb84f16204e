// Package podcache keeps the operator's cache small: pods are most of what the operator holds in
// a large cluster, and it reads a small part of each (ARCHITECTURE.md §9: under 150 MB with
// 10,000 pods). Slim drops the rest before a pod enters the cache, FilterTransport drops it from
// the API server's responses before a pod is even decoded, and SlimEndpointSlice keeps of
// EndpointSlices what InPlace drains read. SlimService keeps of Services what the control plane's
// outbound routes read.
//
// What is kept of a pod is what the controllers, the control plane and the rollout planner read:
//   - the metadata, but managed fields and the annotations outside the meshlift.io domain;
//   - of the spec, the proxy containers (name, image, resources, restart policy), the service
//     account, node, readiness gates, host network and restart policy;
//   - of the status, the phase, the pod IP, the observed generation, the Ready, proxy readiness
//     and resize conditions, and of the proxy containers' statuses their name, image, readiness,
//     restart count, started flag, state (without messages) and enacted resources.
//
// Code that writes pods does so with patches computed between two versions of a cached pod, so
// what is dropped never appears in a write: a strategic merge patch leaves the containers and
// conditions it does not name as they are, a merge patch the annotations (the tests apply such
// patches to full pods). Reading a dropped field from a cached pod gets its zero value: read
// such a pod with the API reader instead, or keep the field here and in the filter (the tests
// list what is kept).
//
// What pods share (proxy resources, label sets, names and images) is held once: cached objects
// are never modified in place (the cache hands out deep copies, and code that reads without
// copying only reads), so sharing them is safe.
package podcache

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
)

// CacheOptions are the manager's cache options: pods slimmed by Slim, EndpointSlices by
// SlimEndpointSlice and Services by SlimService, managed fields dropped from every other object.
// EndpointSlices and Services are only ever read, so the cache hands out its own copies of them
// rather than deep copies.
func CacheOptions() cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:                {Transform: Transform},
			&discoveryv1.EndpointSlice{}: {Transform: Transform, UnsafeDisableDeepCopy: new(true)},
			&corev1.Service{}:            {Transform: Transform, UnsafeDisableDeepCopy: new(true)},
		},
	}
}

// CacheOptionsFor are CacheOptions with an HTTP client of the cache's own for cfg, which drops
// what Slim would from the pods it lists and watches before they are decoded (FilterTransport).
// Other clients of the manager (its API reader, its writes) are left alone.
func CacheOptionsFor(cfg *rest.Config) (cache.Options, error) {
	opts := CacheOptions()
	filtered := rest.CopyConfig(cfg)
	filtered.Wrap(FilterTransport)
	httpClient, err := rest.HTTPClientFor(filtered)
	if err != nil {
		return cache.Options{}, fmt.Errorf("failed to create the cache's HTTP client: %w", err)
	}
	opts.HTTPClient = httpClient
	return opts, nil
}

// Transform is Slim, SlimEndpointSlice and SlimService as a cache transform; other objects pass
// unchanged.
func Transform(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		Slim(o)
	case *discoveryv1.EndpointSlice:
		SlimEndpointSlice(o)
	case *corev1.Service:
		SlimService(o)
	}
	return obj, nil
}

// Slim drops, in place, what the operator never reads from a pod (see the package doc). It may
// run more than once on the same pod.
func Slim(pod *corev1.Pod) {
	meta := &pod.ObjectMeta
	meta.ManagedFields = nil
	meta.Namespace, meta.GenerateName = intern(meta.Namespace), intern(meta.GenerateName)
	meta.Labels = internLabels(meta.Labels)
	meta.Annotations = operatorAnnotations(meta.Annotations)
	meta.OwnerReferences = internOwners(meta.OwnerReferences)
	spec := &pod.Spec
	*spec = corev1.PodSpec{
		Containers:         slimContainers(spec.Containers),
		InitContainers:     slimContainers(spec.InitContainers),
		ServiceAccountName: intern(spec.ServiceAccountName),
		NodeName:           intern(spec.NodeName),
		ReadinessGates:     slices.Clip(spec.ReadinessGates),
		HostNetwork:        spec.HostNetwork,
		RestartPolicy:      spec.RestartPolicy,
	}
	status := &pod.Status
	*status = corev1.PodStatus{
		ObservedGeneration:    status.ObservedGeneration,
		Phase:                 corev1.PodPhase(intern(string(status.Phase))),
		Conditions:            slimConditions(status.Conditions),
		PodIP:                 status.PodIP,
		InitContainerStatuses: slimStatuses(status.InitContainerStatuses),
		ContainerStatuses:     slimStatuses(status.ContainerStatuses),
	}
}

// keptConditions are the pod conditions the operator reads: readiness (the MeshService status,
// the endpoints, the rollout's availability), its own proxy readiness gate, and the kubelet's
// account of an in-place resize (the rollout's resizes).
var keptConditions = map[corev1.PodConditionType]bool{
	corev1.PodReady: true, meshv1alpha1.ReadinessGateProxyReady: true,
	corev1.PodResizePending: true, corev1.PodResizeInProgress: true,
}

func slimConditions(conditions []corev1.PodCondition) []corev1.PodCondition {
	kept := 0
	for i := range conditions {
		if keptConditions[conditions[i].Type] {
			kept++
		}
	}
	if kept == 0 {
		return nil
	}
	out := make([]corev1.PodCondition, 0, kept)
	for _, c := range conditions {
		if keptConditions[c.Type] {
			c.Type, c.Status, c.Reason = corev1.PodConditionType(intern(string(c.Type))), corev1.ConditionStatus(intern(string(c.Status))), intern(c.Reason)
			out = append(out, c)
		}
	}
	return out
}

// isProxy reports whether a container is one of the injected proxy containers.
func isProxy(name string) bool {
	return name == sidecar.ContainerName || name == sidecar.SlotContainerName(1) || name == sidecar.SlotContainerName(2)
}

// slimContainers keeps the proxy containers: their name, image, resources and restart policy.
func slimContainers(containers []corev1.Container) []corev1.Container {
	var out []corev1.Container
	for i := range containers {
		if c := &containers[i]; isProxy(c.Name) {
			if out == nil {
				out = make([]corev1.Container, 0, countProxies(containers, func(c *corev1.Container) string { return c.Name }))
			}
			out = append(out, corev1.Container{Name: intern(c.Name), Image: intern(c.Image), Resources: internResources(c.Resources), RestartPolicy: c.RestartPolicy})
		}
	}
	return internContainers(out)
}

// countProxies counts the proxy containers (or their statuses) among items.
func countProxies[T any](items []T, name func(*T) string) int {
	n := 0
	for i := range items {
		if isProxy(name(&items[i])) {
			n++
		}
	}
	return n
}

// slimStatuses keeps the statuses of the proxy containers: their name, image, readiness,
// restart count, started flag, state (without messages) and the resources the kubelet enacted.
func slimStatuses(statuses []corev1.ContainerStatus) []corev1.ContainerStatus {
	var out []corev1.ContainerStatus
	for i := range statuses {
		s := &statuses[i]
		if !isProxy(s.Name) {
			continue
		}
		if out == nil {
			out = make([]corev1.ContainerStatus, 0, countProxies(statuses, func(s *corev1.ContainerStatus) string { return s.Name }))
		}
		slim := corev1.ContainerStatus{
			Name: intern(s.Name), Image: intern(s.Image), Ready: s.Ready, RestartCount: s.RestartCount, Started: s.Started,
			State: slimState(s.State),
		}
		if s.Resources != nil {
			slim.Resources = internEnacted(*s.Resources)
		}
		out = append(out, slim)
	}
	return out
}

// slimState is a container state without its messages and container ID: a terminated
// container's message may be the last 4 KB of its log.
func slimState(state corev1.ContainerState) corev1.ContainerState {
	if w := state.Waiting; w != nil && w.Message != "" {
		state.Waiting = &corev1.ContainerStateWaiting{Reason: w.Reason}
	}
	if t := state.Terminated; t != nil && (t.Message != "" || t.ContainerID != "") {
		slim := *t
		slim.Message, slim.ContainerID = "", ""
		state.Terminated = &slim
	}
	return state
}

// SlimEndpointSlice drops, in place, what the operator never reads from an EndpointSlice: of its
// metadata the managed fields, annotations and owners; its ports; and of its endpoints all but
// those of pods, and of those all but the target's kind, name and UID and the conditions.
func SlimEndpointSlice(slice *discoveryv1.EndpointSlice) {
	slice.ManagedFields, slice.Annotations, slice.OwnerReferences = nil, nil, nil
	slice.Ports = nil
	podEndpoint := func(e *discoveryv1.Endpoint) bool { return e.TargetRef != nil && e.TargetRef.Kind == "Pod" }
	n := 0
	for i := range slice.Endpoints {
		if podEndpoint(&slice.Endpoints[i]) {
			n++
		}
	}
	endpoints := make([]discoveryv1.Endpoint, 0, n)
	for i := range slice.Endpoints {
		e := &slice.Endpoints[i]
		if !podEndpoint(e) {
			continue
		}
		endpoints = append(endpoints, discoveryv1.Endpoint{
			Conditions: e.Conditions,
			TargetRef:  &corev1.ObjectReference{Kind: intern(e.TargetRef.Kind), Name: e.TargetRef.Name, UID: e.TargetRef.UID},
		})
	}
	slice.Endpoints = endpoints
}

// SlimService drops, in place, what the operator never reads from a Service: of its metadata
// all but the name, namespace, UID, resource version and meshlift.io annotations; of its spec
// all but its type, ClusterIPs and ports (name, protocol, port, targetPort); its status.
func SlimService(svc *corev1.Service) {
	svc.ObjectMeta = metav1.ObjectMeta{
		Name: svc.Name, Namespace: intern(svc.Namespace), UID: svc.UID, ResourceVersion: svc.ResourceVersion,
		Generation: svc.Generation, DeletionTimestamp: svc.DeletionTimestamp,
		Annotations: operatorAnnotations(svc.Annotations),
	}
	ports := make([]corev1.ServicePort, len(svc.Spec.Ports))
	for i, p := range svc.Spec.Ports {
		ports[i] = corev1.ServicePort{Name: intern(p.Name), Protocol: p.Protocol, Port: p.Port, TargetPort: p.TargetPort}
	}
	svc.Spec = corev1.ServiceSpec{Type: svc.Spec.Type, ClusterIP: svc.Spec.ClusterIP, ClusterIPs: svc.Spec.ClusterIPs, Ports: ports}
	svc.Status = corev1.ServiceStatus{}
}

// operatorAnnotations are the annotations of the operator's own domain, meshlift.io and its
// subdomains (eds-ack.meshlift.io), interned: no other is read. Others can be large (kubectl's
// last applied configuration, tools' configuration).
func operatorAnnotations(annotations map[string]string) map[string]string {
	n := 0
	for k := range annotations {
		if isOperatorAnnotation(k) {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	out := make(map[string]string, n)
	for k, v := range annotations {
		if isOperatorAnnotation(k) {
			out[intern(k)] = intern(v)
		}
	}
	return out
}

func isOperatorAnnotation(key string) bool {
	domain, _, found := strings.Cut(key, "/")
	return found && (domain == operatorDomain || strings.HasSuffix(domain, "."+operatorDomain))
}

// operatorDomain is the domain of the operator's annotations (meshv1alpha1.Annotation*).
const operatorDomain = "meshlift.io"
