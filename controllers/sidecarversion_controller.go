package controllers

import (
	"cmp"
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/podcache"
	"github.com/meshlift/meshlift/internal/status"
	"github.com/meshlift/meshlift/internal/versions"
)

// SidecarVersionReconciler keeps a SidecarVersion's status: how many pods run it, whether their
// proxies are ready, and whether it conflicts with another default.
type SidecarVersionReconciler struct {
	client.Client
	// Pods reads the pods that run a version (podcache.Pods): the manager's cache, whose objects
	// are read in place; nil reads them through Client.
	Pods client.Reader
}

// +kubebuilder:rbac:groups=mesh.meshlift.io,resources=sidecarversions,verbs=get;list;watch
// +kubebuilder:rbac:groups=mesh.meshlift.io,resources=sidecarversions/status,verbs=update
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch

// Reconcile computes the status of one SidecarVersion.
func (r *SidecarVersionReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	sv := &meshv1alpha1.SidecarVersion{}
	if err := r.Get(ctx, req.NamespacedName, sv); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	// Read only (status.SidecarVersion counts them): no copy of any pod per reconcile.
	pods, err := podcache.Pods(ctx, cmp.Or[client.Reader](r.Pods, r.Client), metav1.NamespaceAll, func(pod *corev1.Pod) bool {
		return pod.Annotations[meshv1alpha1.AnnotationVersion] == sv.Name
	})
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("failed to list pods running SidecarVersion %s: %w", sv.Name, err)
	}
	all := &meshv1alpha1.SidecarVersionList{}
	if err := r.List(ctx, all); err != nil {
		return ctrl.Result{}, fmt.Errorf("failed to list SidecarVersions: %w", err)
	}

	next := status.SidecarVersion(sv.Status, status.SidecarVersionInput{
		Pods:          pods,
		DefaultClaims: versions.DefaultClaims(all.Items),
		Default:       sv.Spec.Default && sv.DeletionTimestamp == nil,
		Generation:    sv.Generation,
	})
	if apiequality.Semantic.DeepEqual(sv.Status, next) {
		return ctrl.Result{}, nil
	}
	// The whole status is written (not a merge patch) so unchanged zero counts are sent too.
	sv.Status = next
	if err := r.Status().Update(ctx, sv); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return ctrl.Result{}, nil
		case apierrors.IsConflict(err):
			ctrl.LoggerFrom(ctx).V(1).Info("Status write conflicted; retrying with a fresh read")
			return ctrl.Result{RequeueAfter: conflictRequeue}, nil
		}
		return ctrl.Result{}, fmt.Errorf("failed to update status of SidecarVersion %s: %w", sv.Name, err)
	}
	ctrl.LoggerFrom(ctx).V(1).Info("Updated SidecarVersion status", "pods", next.Pods, "readyPods", next.ReadyPods)
	return ctrl.Result{}, nil
}

// SetupWithManager watches SidecarVersions and the pods that run them.
func (r *SidecarVersionReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&meshv1alpha1.SidecarVersion{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// A change of one version's spec.default changes the DefaultConflict condition of every
		// default version.
		Watches(&meshv1alpha1.SidecarVersion{},
			handler.EnqueueRequestsFromMapFunc(r.defaultVersions),
			builder.WithPredicates(defaultChanged())).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podToSidecarVersion)).
		Named("sidecarversion").
		Complete(r)
}

func (r *SidecarVersionReconciler) defaultVersions(ctx context.Context, _ client.Object) []reconcile.Request {
	all := &meshv1alpha1.SidecarVersionList{}
	if err := r.List(ctx, all); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list SidecarVersions to re-check default conflicts")
		return nil
	}
	var reqs []reconcile.Request
	for _, name := range versions.DefaultClaims(all.Items) {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: name}})
	}
	return reqs
}

func podToSidecarVersion(_ context.Context, obj client.Object) []reconcile.Request {
	if version := obj.GetAnnotations()[meshv1alpha1.AnnotationVersion]; version != "" {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: version}}}
	}
	return nil
}

// defaultChanged passes SidecarVersion events that can change which versions claim the default.
func defaultChanged() predicate.Funcs {
	isDefault := func(obj client.Object) bool {
		sv, ok := obj.(*meshv1alpha1.SidecarVersion)
		return ok && sv.Spec.Default
	}
	return predicate.Funcs{
		CreateFunc:  func(e event.CreateEvent) bool { return isDefault(e.Object) },
		DeleteFunc:  func(e event.DeleteEvent) bool { return isDefault(e.Object) },
		UpdateFunc:  func(e event.UpdateEvent) bool { return isDefault(e.ObjectOld) != isDefault(e.ObjectNew) },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}
