package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/meshlift/meshlift/internal/sidecar"
)

// ProxyReadinessReconciler sets the meshlift.io/proxy-ready condition of pods that carry that
// readiness gate (a MeshService opts in with spec.injection.proxyReadinessGate). Such pods
// cannot become Ready while the operator is down: nothing else sets the condition.
type ProxyReadinessReconciler struct {
	client.Client
}

// +kubebuilder:rbac:groups="",resources=pods/status,verbs=patch

// Reconcile writes the condition when it differs from what the active proxy's readiness says.
func (r *ProxyReadinessReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pod := &corev1.Pod{}
	if err := r.Get(ctx, req.NamespacedName, pod); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !sidecar.HasProxyReadinessGate(pod) || pod.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	want := sidecar.ProxyReadyCondition(pod)
	for _, c := range pod.Status.Conditions {
		if c.Type == want.Type && c.Status == want.Status {
			return ctrl.Result{}, nil
		}
	}
	ctrl.LoggerFrom(ctx).V(1).Info("Setting proxy readiness condition", "status", want.Status)
	patch := client.StrategicMergeFrom(pod.DeepCopy())
	want.LastTransitionTime = metav1.Now()
	replaced := false
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == want.Type {
			pod.Status.Conditions[i], replaced = want, true
		}
	}
	if !replaced {
		pod.Status.Conditions = append(pod.Status.Conditions, want)
	}
	if err := r.Status().Patch(ctx, pod, patch); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("failed to set the proxy readiness condition of pod %s: %w", req, err)
	}
	return ctrl.Result{}, nil
}

// SetupWithManager watches the pods that carry the gate.
func (r *ProxyReadinessReconciler) SetupWithManager(mgr ctrl.Manager) error {
	hasGate := predicate.NewPredicateFuncs(func(obj client.Object) bool {
		pod, ok := obj.(*corev1.Pod)
		return ok && sidecar.HasProxyReadinessGate(pod)
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&corev1.Pod{}, builder.WithPredicates(hasGate)).
		Named("proxyreadiness").
		Complete(r)
}
