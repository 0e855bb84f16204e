package controllers

import (
	"cmp"
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/podcache"
	"github.com/meshlift/meshlift/internal/status"
	"github.com/meshlift/meshlift/internal/versions"
)

// Event reasons of the MeshService reconciler.
const (
	EventReasonVersionResolved   = "VersionResolved"
	EventReasonVersionUnresolved = "VersionUnresolved"
	EventReasonInvalidSelector   = "InvalidSelector"
)

// MeshServiceReconciler keeps a MeshService's status: the version new pods get, the pods it
// selects counted by state and version, and its Ready and VersionDrift conditions.
type MeshServiceReconciler struct {
	client.Client
	Recorder events.EventRecorder
	// TrustDomain of the SPIFFE IDs in status.identity.
	TrustDomain string
	// Pods reads the pods a MeshService selects (podcache.Pods): the manager's cache, whose
	// objects are read in place; nil reads them through Client.
	Pods client.Reader
}

// +kubebuilder:rbac:groups=mesh.meshlift.io,resources=meshservices,verbs=get;list;watch
// +kubebuilder:rbac:groups=mesh.meshlift.io,resources=meshservices/status,verbs=update
// +kubebuilder:rbac:groups=mesh.meshlift.io,resources=upgradeplans,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile computes the status of one MeshService.
func (r *MeshServiceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ms := &meshv1alpha1.MeshService{}
	if err := r.Get(ctx, req.NamespacedName, ms); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	selector, err := metav1.LabelSelectorAsSelector(&ms.Spec.Selector)
	if err != nil {
		// CEL rejects most bad selectors; this catches what it cannot express. Retrying does not
		// help until the spec changes, which triggers a new reconcile.
		return r.reportInvalidSelector(ctx, ms, err)
	}
	// Read only (status.MeshService counts them): no copy of any pod per reconcile.
	pods, err := podcache.Pods(ctx, cmp.Or[client.Reader](r.Pods, r.Client), ms.Namespace, func(pod *corev1.Pod) bool {
		return selector.Matches(labels.Set(pod.Labels))
	})
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("failed to list pods of MeshService %s: %w", req, err)
	}
	plans := &meshv1alpha1.UpgradePlanList{}
	if err := r.List(ctx, plans, client.InNamespace(ms.Namespace)); err != nil {
		return ctrl.Result{}, fmt.Errorf("failed to list UpgradePlans in namespace %s: %w", ms.Namespace, err)
	}
	sidecarVersions := &meshv1alpha1.SidecarVersionList{}
	if err := r.List(ctx, sidecarVersions); err != nil {
		return ctrl.Result{}, fmt.Errorf("failed to list SidecarVersions: %w", err)
	}

	resolution, resolveErr := versions.Resolve(ms, plans.Items, sidecarVersions.Items)
	next := status.MeshService(ms.Status, status.MeshServiceInput{
		Pods:        pods,
		Resolution:  resolution,
		ResolveErr:  resolveErr,
		TrustDomain: r.TrustDomain,
		Namespace:   ms.Namespace,
		Generation:  ms.Generation,
	})
	if apiequality.Semantic.DeepEqual(ms.Status, next) {
		return ctrl.Result{}, nil
	}
	r.recordVersionChange(ms, next, resolution, resolveErr)
	return r.writeStatus(ctx, ms, next)
}

// recordVersionChange emits an event when the version new pods get changes or stops resolving.
func (r *MeshServiceReconciler) recordVersionChange(ms *meshv1alpha1.MeshService, next meshv1alpha1.MeshServiceStatus, res versions.Resolution, resolveErr error) {
	if resolveErr != nil {
		oldReady := meta.FindStatusCondition(ms.Status.Conditions, meshv1alpha1.ConditionReady)
		newReady := meta.FindStatusCondition(next.Conditions, meshv1alpha1.ConditionReady)
		if oldReady == nil || oldReady.Message != newReady.Message {
			r.Recorder.Eventf(ms, nil, corev1.EventTypeWarning, EventReasonVersionUnresolved, "ResolveVersion", "%s", newReady.Message)
		}
		return
	}
	if next.CurrentVersion != ms.Status.CurrentVersion {
		r.Recorder.Eventf(ms, nil, corev1.EventTypeNormal, EventReasonVersionResolved, "ResolveVersion",
			"New pods get SidecarVersion %s (from the %s)", next.CurrentVersion, describeSource(res))
	}
}

func (r *MeshServiceReconciler) reportInvalidSelector(ctx context.Context, ms *meshv1alpha1.MeshService, selectorErr error) (ctrl.Result, error) {
	next := *ms.Status.DeepCopy()
	next.ObservedGeneration = ms.Generation
	msg := fmt.Sprintf("spec.selector is invalid: %v", selectorErr)
	changed := meta.SetStatusCondition(&next.Conditions, metav1.Condition{Type: meshv1alpha1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: EventReasonInvalidSelector, Message: msg, ObservedGeneration: ms.Generation})
	if changed {
		r.Recorder.Eventf(ms, nil, corev1.EventTypeWarning, EventReasonInvalidSelector, "SelectPods", "%s", msg)
	}
	if result, err := r.writeStatus(ctx, ms, next); err != nil || result.RequeueAfter > 0 {
		return result, err
	}
	return ctrl.Result{}, reconcile.TerminalError(selectorErr)
}

// conflictRequeue is how soon a status write that lost a conflict is retried. The object changed
// since the cache was read (often by our own previous write, which the generation predicate does
// not pass on), so nothing else would bring it back.
const conflictRequeue = 200 * time.Millisecond

// writeStatus replaces the whole status, so fields that are zero in both the old and the new
// status are still sent (a merge patch would omit them, and the API server requires them).
func (r *MeshServiceReconciler) writeStatus(ctx context.Context, ms *meshv1alpha1.MeshService, next meshv1alpha1.MeshServiceStatus) (ctrl.Result, error) {
	ms.Status = next
	if err := r.Status().Update(ctx, ms); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return ctrl.Result{}, nil
		case apierrors.IsConflict(err):
			ctrl.LoggerFrom(ctx).V(1).Info("Status write conflicted; retrying with a fresh read")
			return ctrl.Result{RequeueAfter: conflictRequeue}, nil
		}
		return ctrl.Result{}, fmt.Errorf("failed to update status of MeshService %s: %w", client.ObjectKeyFromObject(ms), err)
	}
	ctrl.LoggerFrom(ctx).V(1).Info("Updated MeshService status", "currentVersion", next.CurrentVersion,
		"matched", next.Pods.Matched, "injected", next.Pods.Injected, "ready", next.Pods.Ready)
	return ctrl.Result{}, nil
}

func describeSource(res versions.Resolution) string {
	switch res.Source {
	case meshv1alpha1.VersionSourceUpgradePlan:
		return "UpgradePlan " + res.Plan
	case meshv1alpha1.VersionSourceMeshService:
		return "MeshService's spec.sidecar.version"
	default:
		return "default SidecarVersion"
	}
}

// SetupWithManager watches MeshServices and everything their status depends on: their pods, the
// UpgradePlans that may govern them and the SidecarVersions they may resolve to.
func (r *MeshServiceReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&meshv1alpha1.MeshService{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.podToMeshServices)).
		Watches(&meshv1alpha1.UpgradePlan{}, handler.EnqueueRequestsFromMapFunc(r.planToMeshServices),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&meshv1alpha1.SidecarVersion{}, handler.EnqueueRequestsFromMapFunc(r.allMeshServices),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Named("meshservice").
		Complete(r)
}

// podToMeshServices maps a pod to the MeshServices of its namespace whose selector matches it.
// It reads only that namespace's MeshServices from the cache; pods are never relisted.
func (r *MeshServiceReconciler) podToMeshServices(ctx context.Context, obj client.Object) []reconcile.Request {
	return r.meshServicesIn(ctx, obj.GetNamespace(), func(ms *meshv1alpha1.MeshService) bool {
		if obj.GetAnnotations()[meshv1alpha1.AnnotationMeshService] == ms.Name {
			return true
		}
		selector, err := metav1.LabelSelectorAsSelector(&ms.Spec.Selector)
		return err == nil && selector.Matches(labels.Set(obj.GetLabels()))
	})
}

func (r *MeshServiceReconciler) planToMeshServices(ctx context.Context, obj client.Object) []reconcile.Request {
	plan, ok := obj.(*meshv1alpha1.UpgradePlan)
	if !ok {
		return nil
	}
	// A deleted plan no longer selects anything; map it as if it were live so the MeshServices
	// it governed fall back to their next version source.
	live := plan.DeepCopy()
	live.DeletionTimestamp = nil
	return r.meshServicesIn(ctx, plan.Namespace, func(ms *meshv1alpha1.MeshService) bool {
		return versions.PlanSelects(live, ms)
	})
}

func (r *MeshServiceReconciler) allMeshServices(ctx context.Context, _ client.Object) []reconcile.Request {
	return r.meshServicesIn(ctx, metav1.NamespaceAll, func(*meshv1alpha1.MeshService) bool { return true })
}

func (r *MeshServiceReconciler) meshServicesIn(ctx context.Context, namespace string, keep func(*meshv1alpha1.MeshService) bool) []reconcile.Request {
	list := &meshv1alpha1.MeshServiceList{}
	// Read only (keep and the requests only read them): called for every pod event.
	if err := r.List(ctx, list, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list MeshServices to map an event", "namespace", namespace)
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if keep(&list.Items[i]) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return reqs
}
