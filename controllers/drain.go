package controllers

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/rollout"
	"github.com/meshlift/meshlift/internal/sidecar"
)

// ControlPlaneReplicas says which control-plane replicas must acknowledge an InPlace drain: the
// pods behind the control-plane Service's ready endpoints, or this replica alone when the Service
// has none (the operator runs outside the cluster, or no replica is ready yet).
type ControlPlaneReplicas struct {
	// Namespace and Service name the control-plane Service.
	Namespace, Service string
	// Self is this replica's name (its pod name), the name its control plane acknowledges with.
	Self string
}

// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch

// drainInput is what confirms the drains of the plan's excluded pods; nil when nothing does
// (no control plane to acknowledge) or no pod is excluded.
func (r *UpgradePlanReconciler) drainInput(ctx context.Context, pods []corev1.Pod) (*rollout.DrainInput, error) {
	if r.ControlPlane == nil {
		return nil, nil
	}
	in := &rollout.DrainInput{Serving: map[types.UID]bool{}}
	gated := map[string]map[types.UID]bool{} // by namespace: excluded pods with the readiness gate
	excluded := false
	for i := range pods {
		pod := &pods[i]
		if pod.Annotations[meshv1alpha1.AnnotationEDSExcluded] != "true" {
			continue
		}
		excluded = true
		if sidecar.HasProxyReadinessGate(pod) {
			if gated[pod.Namespace] == nil {
				gated[pod.Namespace] = map[types.UID]bool{}
			}
			gated[pod.Namespace][pod.UID] = true
		}
	}
	if !excluded {
		return in, nil
	}
	replicas, err := r.controlPlaneReplicas(ctx)
	if err != nil {
		return nil, err
	}
	in.Replicas = replicas
	for ns, uids := range gated {
		list := &discoveryv1.EndpointSliceList{}
		if err := r.List(ctx, list, client.InNamespace(ns)); err != nil {
			return nil, fmt.Errorf("failed to list the EndpointSlices of namespace %s: %w", ns, err)
		}
		for i := range list.Items {
			for _, ep := range list.Items[i].Endpoints {
				if ep.TargetRef != nil && uids[ep.TargetRef.UID] && serving(ep.Conditions) {
					in.Serving[ep.TargetRef.UID] = true
				}
			}
		}
	}
	return in, nil
}

// controlPlaneReplicas are the pods behind the control-plane Service's ready endpoints, sorted,
// or Self when there are none.
func (r *UpgradePlanReconciler) controlPlaneReplicas(ctx context.Context) ([]string, error) {
	cp := r.ControlPlane
	list := &discoveryv1.EndpointSliceList{}
	if err := r.List(ctx, list, client.InNamespace(cp.Namespace), client.MatchingLabels{discoveryv1.LabelServiceName: cp.Service}); err != nil {
		return nil, fmt.Errorf("failed to list the EndpointSlices of Service %s/%s: %w", cp.Namespace, cp.Service, err)
	}
	var names []string
	for i := range list.Items {
		for _, ep := range list.Items[i].Endpoints {
			if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" && (ep.Conditions.Ready == nil || *ep.Conditions.Ready) {
				names = append(names, ep.TargetRef.Name)
			}
		}
	}
	if len(names) == 0 {
		return []string{cp.Self}, nil
	}
	return sortedUnique(names), nil
}

// serving: an endpoint that takes traffic (serving, or ready when serving is not reported).
func serving(c discoveryv1.EndpointConditions) bool {
	if c.Serving != nil {
		return *c.Serving
	}
	return c.Ready == nil || *c.Ready
}

func sortedUnique(names []string) []string {
	slices.Sort(names)
	return slices.Compact(names)
}
