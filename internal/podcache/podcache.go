// Package podcache keeps the operator's cache of pods small: pods are most of what the operator
// holds in a large cluster, and it reads only a small part of each (ARCHITECTURE.md §9: under
// 150 MB with 10,000 pods). Slim drops the rest before a pod enters the cache.
//
// What is kept is what the controllers, the control plane and the rollout planner read: all of
// the metadata but managed fields; of the spec the containers' and init containers' names,
// images, resources and restart policies, the service account, node, readiness gates, host
// network and restart policy; the whole status but ephemeral container and resource claim
// statuses. Code that writes pods does so with patches computed between two versions of a
// cached pod, so the dropped fields never appear in a write. Reading a dropped field from a
// cached pod gets its zero value: read such a pod with the API reader instead.
package podcache

import (
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CacheOptions are the manager's cache options: pods slimmed by Slim, managed fields dropped
// from every other object.
func CacheOptions() cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject:         map[client.Object]cache.ByObject{&corev1.Pod{}: {Transform: Transform}},
	}
}

// Transform is Slim as a cache transform; objects other than pods pass unchanged.
func Transform(obj any) (any, error) {
	if pod, ok := obj.(*corev1.Pod); ok {
		Slim(pod)
	}
	return obj, nil
}

// Slim drops, in place, what the operator never reads from a pod.
func Slim(pod *corev1.Pod) {
	pod.ManagedFields = nil
	spec := &pod.Spec
	*spec = corev1.PodSpec{
		Containers:         slimContainers(spec.Containers),
		InitContainers:     slimContainers(spec.InitContainers),
		ServiceAccountName: spec.ServiceAccountName,
		NodeName:           spec.NodeName,
		ReadinessGates:     spec.ReadinessGates,
		HostNetwork:        spec.HostNetwork,
		RestartPolicy:      spec.RestartPolicy,
	}
	pod.Status.EphemeralContainerStatuses = nil
	pod.Status.ResourceClaimStatuses = nil
}

func slimContainers(containers []corev1.Container) []corev1.Container {
	if containers == nil {
		return nil
	}
	out := make([]corev1.Container, len(containers))
	for i, c := range containers {
		out[i] = corev1.Container{Name: c.Name, Image: c.Image, Resources: c.Resources, RestartPolicy: c.RestartPolicy}
	}
	return out
}
