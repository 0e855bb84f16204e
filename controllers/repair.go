package controllers

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/capture"
	"github.com/meshlift/meshlift/internal/podcache"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/versions"
)

// EventReasonNotInjected is the Warning event on a pod that a STRICT MeshService selects but that
// carries no sidecar (and on that MeshService), recorded by the repair controller.
const EventReasonNotInjected = "NotInjected"

// Defaults of RepairOptions.
const (
	// DefaultRepairEvictionsPerSecond bounds the repair controller's evictions, cluster-wide.
	DefaultRepairEvictionsPerSecond = 1
	// DefaultRepairEvictionBurst is how many evictions may go at once before the rate applies.
	DefaultRepairEvictionBurst = 5
	// repairBlockedRetry is when an eviction a PodDisruptionBudget refused is tried again.
	repairBlockedRetry = 10 * time.Second
	// repairOwnerBackoff is how long the repair controller waits before it evicts a replacement
	// that came back without a sidecar too (doubling up to repairOwnerBackoffMax): the injector
	// is not injecting yet (its webhook unreachable from the API server, its certificate not
	// loaded), and evicting again at once would only churn the workload.
	repairOwnerBackoff    = 30 * time.Second
	repairOwnerBackoffMax = 10 * time.Minute
)

// RepairOptions configure the repair controller.
type RepairOptions struct {
	// OperatorNamespace is the operator's own namespace, whose pods are never injected.
	OperatorNamespace string
	// EvictionsPerSecond and EvictionBurst bound the evictions, cluster-wide (zero: the
	// defaults).
	EvictionsPerSecond float32
	EvictionBurst      int
}

// repairAction is what the repair controller does about one pod.
type repairAction string

const (
	// repairNone: the pod is fine as it is (injected, not selected by a STRICT MeshService,
	// opted out, terminating...).
	repairNone repairAction = ""
	// repairReport: the pod should carry a sidecar and does not, but evicting it would not help
	// (no controller recreates it, or the injector would skip it again): a Warning event only.
	repairReport repairAction = "Report"
	// repairEvict: evict the pod, so that its controller recreates it through the injector.
	repairEvict repairAction = "Evict"
)

// repairDecision is decideRepair's answer.
type repairDecision struct {
	Action repairAction
	// MeshService is the STRICT MeshService the pod would have been injected for.
	MeshService *meshv1alpha1.MeshService
	// Message says why, for the events.
	Message string
}

// decideRepair decides what to do about a pod that the injector may have missed (the webhook
// fails open, so a pod created while every operator replica is down is admitted without the
// sidecar). meshServices are those of the pod's namespace. cannotInject, when not empty, says why
// the injector would not inject the pod now either (sidecar.Precheck, an unresolvable version,
// malformed capture annotations): evicting it would only bring it back without the sidecar.
//
// A pod is repaired when it is not injected, not terminating or finished, not opted out, not in
// an excluded namespace, and the MeshService the injector picks for it (the oldest that selects
// it) is STRICT and is older than the pod: a pod that predates its MeshService was not missed by
// the injector, it is waiting for its workload to be restarted into the mesh, and the repair
// controller does not restart whole workloads on its own.
func decideRepair(pod *corev1.Pod, meshServices []meshv1alpha1.MeshService, operatorNamespace, cannotInject string) repairDecision {
	if pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed ||
		sidecar.IsInjected(pod) || pod.Annotations[meshv1alpha1.AnnotationInjectionHash] != "" ||
		sidecar.OptedOut(pod) || pod.Spec.HostNetwork {
		return repairDecision{}
	}
	if reason, _ := sidecar.ExcludedNamespace(pod.Namespace, operatorNamespace); reason != "" {
		return repairDecision{}
	}
	ms, _ := sidecar.SelectMeshService(pod, meshServices)
	if ms == nil || ms.Spec.MTLS.Mode == meshv1alpha1.MTLSPermissive || pod.CreationTimestamp.Before(&ms.CreationTimestamp) {
		return repairDecision{}
	}
	if cannotInject != "" {
		return repairDecision{Action: repairReport, MeshService: ms, Message: fmt.Sprintf(
			"pod has no sidecar though STRICT MeshService %s selects it, and the injector would not inject it if it were recreated: %s", ms.Name, cannotInject)}
	}
	owner := metav1.GetControllerOf(pod)
	if owner == nil {
		return repairDecision{Action: repairReport, MeshService: ms, Message: fmt.Sprintf(
			"pod was created while the injector was unavailable and has no sidecar; STRICT mTLS (MeshService %s) keeps it isolated where meshlift-cni runs; "+
				"it has no controller to recreate it: delete it and create it again to get the sidecar", ms.Name)}
	}
	return repairDecision{Action: repairEvict, MeshService: ms, Message: fmt.Sprintf(
		"pod was created while the injector was unavailable and has no sidecar; STRICT mTLS (MeshService %s) keeps it isolated where meshlift-cni runs; "+
			"deleting it so its controller (%s %s) recreates it with the sidecar", ms.Name, owner.Kind, owner.Name)}
}

// cannotInject says why the injector would not inject the whole pod (read from the API server:
// the cache keeps only its proxy containers) for ms, or "" when it would.
func cannotInject(pod *corev1.Pod, ms *meshv1alpha1.MeshService, plans []meshv1alpha1.UpgradePlan, sidecarVersions []meshv1alpha1.SidecarVersion) string {
	if reason, message := sidecar.Precheck(pod); reason != "" {
		return message
	}
	if _, err := versions.Resolve(ms, plans, sidecarVersions); err != nil {
		return "no sidecar version resolves: " + err.Error()
	}
	if _, err := capture.ParseAnnotations(pod.Annotations); err != nil {
		return "its capture annotations are malformed: " + err.Error()
	}
	return ""
}

// RepairReconciler finds pods that a STRICT MeshService selects but that carry no sidecar,
// because they were created while the injector was unavailable, records a NotInjected event and
// evicts those that a controller recreates (through the injector this time). It evicts through
// the Eviction API, so PodDisruptionBudgets hold, at most EvictionsPerSecond cluster-wide, and it
// backs off per owner when a replacement comes back without a sidecar too. It runs on the leader.
type RepairReconciler struct {
	// Client reads pods (the slim cache: enough to pick candidates) and MeshServices, and evicts.
	Client client.Client
	// Pods reads the pods a MeshService selects (podcache.Pods): the manager's cache.
	Pods client.Reader
	// APIReader reads a candidate whole, to tell whether the injector could inject it.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Options   RepairOptions
	Clock     clock.Clock

	limiter flowcontrol.RateLimiter

	mu sync.Mutex
	// reported are the pods whose NotInjected events were recorded (the UID of the pod of that
	// name), so that each pod gets them once; a pod leaves when it is gone.
	reported map[types.NamespacedName]types.UID
	// owners are the controllers (by UID) whose pods were evicted: when, and the backoff that
	// applies to a replacement that comes back without a sidecar too.
	owners map[types.UID]ownerEvictions
}

type ownerEvictions struct {
	last    time.Time
	backoff time.Duration
}

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods/eviction,verbs=create
// +kubebuilder:rbac:groups=mesh.meshlift.io,resources=meshservices;upgradeplans;sidecarversions,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile repairs one pod.
func (r *RepairReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pod := &corev1.Pod{}
	if err := r.Client.Get(ctx, req.NamespacedName, pod); err != nil {
		if apierrors.IsNotFound(err) {
			r.forgetPod(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	meshServices := &meshv1alpha1.MeshServiceList{}
	if err := r.Client.List(ctx, meshServices, client.InNamespace(pod.Namespace)); err != nil {
		return ctrl.Result{}, fmt.Errorf("failed to list MeshServices in namespace %s: %w", pod.Namespace, err)
	}
	// The cached pod is enough to rule out nearly every pod; a candidate is read whole.
	if decideRepair(pod, meshServices.Items, r.Options.OperatorNamespace, "").Action == repairNone {
		return ctrl.Result{}, nil
	}
	if err := r.APIReader.Get(ctx, req.NamespacedName, pod); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	candidate := decideRepair(pod, meshServices.Items, r.Options.OperatorNamespace, "")
	if candidate.Action == repairNone {
		return ctrl.Result{}, nil
	}
	plans := &meshv1alpha1.UpgradePlanList{}
	if err := r.Client.List(ctx, plans, client.InNamespace(pod.Namespace)); err != nil {
		return ctrl.Result{}, fmt.Errorf("failed to list UpgradePlans in namespace %s: %w", pod.Namespace, err)
	}
	sidecarVersions := &meshv1alpha1.SidecarVersionList{}
	if err := r.Client.List(ctx, sidecarVersions); err != nil {
		return ctrl.Result{}, fmt.Errorf("failed to list SidecarVersions: %w", err)
	}
	decision := decideRepair(pod, meshServices.Items, r.Options.OperatorNamespace,
		cannotInject(pod, candidate.MeshService, plans.Items, sidecarVersions.Items))

	log := ctrl.LoggerFrom(ctx).WithValues("meshService", decision.MeshService.Name, "action", decision.Action)
	r.report(pod, decision)
	if decision.Action != repairEvict {
		return ctrl.Result{}, nil
	}
	if wait := r.ownerBackoff(pod); wait > 0 {
		log.Info("Waiting before evicting a replacement pod that came back without a sidecar too", "after", wait)
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	if !r.limiter.TryAccept() {
		return ctrl.Result{RequeueAfter: r.limiterDelay()}, nil
	}
	log.Info("Evicting a pod created without its sidecar")
	eviction := &policyv1.Eviction{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		// Never a pod of the same name created since (a StatefulSet's).
		DeleteOptions: &metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(pod.UID))},
	}
	err := r.Client.SubResource("eviction").Create(ctx, pod, eviction)
	switch {
	case apierrors.IsTooManyRequests(err):
		// A PodDisruptionBudget says not now.
		log.Info("Eviction blocked for now, probably by a PodDisruptionBudget", "retryAfter", repairBlockedRetry, "reason", err.Error())
		return ctrl.Result{RequeueAfter: repairBlockedRetry}, nil
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		// Gone, or replaced by a pod of the same name: nothing to evict.
		return ctrl.Result{}, nil
	case err != nil:
		return ctrl.Result{}, fmt.Errorf("failed to evict pod %s: %w", klog.KObj(pod), err)
	}
	r.evicted(pod)
	return ctrl.Result{}, nil
}

// report records the NotInjected events of a pod, once per pod: on the pod and on its MeshService.
func (r *RepairReconciler) report(pod *corev1.Pod, decision repairDecision) {
	key := client.ObjectKeyFromObject(pod)
	r.mu.Lock()
	done := r.reported[key] == pod.UID
	r.reported[key] = pod.UID
	r.mu.Unlock()
	if done || r.Recorder == nil {
		return
	}
	action := "Report"
	if decision.Action == repairEvict {
		action = "Evict"
	}
	r.Recorder.Eventf(pod, decision.MeshService, corev1.EventTypeWarning, EventReasonNotInjected, action, "%s", decision.Message)
	r.Recorder.Eventf(decision.MeshService, pod, corev1.EventTypeWarning, EventReasonNotInjected, action,
		"Pod %s has no sidecar: %s", pod.Name, decision.Message)
}

// forgetPod drops what the controller remembers of a pod that is gone.
func (r *RepairReconciler) forgetPod(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.reported, key)
}

// ownerBackoff is how long to wait before evicting pod: non-zero when a pod of the same
// controller was evicted since pod was created (pod is its replacement, back without a sidecar:
// the injector still does not inject) and the backoff since that eviction has not passed.
func (r *RepairReconciler) ownerBackoff(pod *corev1.Pod) time.Duration {
	owner := metav1.GetControllerOf(pod)
	r.mu.Lock()
	defer r.mu.Unlock()
	state, ok := r.owners[owner.UID]
	// Creation times have whole seconds: a pod created in the second of the eviction counts as
	// a replacement.
	if !ok || pod.CreationTimestamp.Time.Before(state.last.Truncate(time.Second)) {
		return 0
	}
	return state.last.Add(state.backoff).Sub(r.Clock.Now())
}

// evicted remembers the eviction of pod for its owner's backoff: repairOwnerBackoff after the
// owner's first eviction, doubled each time a replacement that came back without a sidecar is
// evicted.
func (r *RepairReconciler) evicted(pod *corev1.Pod) {
	owner := metav1.GetControllerOf(pod)
	r.mu.Lock()
	defer r.mu.Unlock()
	state, ok := r.owners[owner.UID]
	switch {
	case ok && !pod.CreationTimestamp.Time.Before(state.last.Truncate(time.Second)):
		state.backoff = min(2*state.backoff, repairOwnerBackoffMax)
	case !ok || state.backoff == 0:
		state.backoff = repairOwnerBackoff
	}
	state.last = r.Clock.Now()
	r.owners[owner.UID] = state
	for uid, other := range r.owners {
		if state.last.Sub(other.last) > 2*repairOwnerBackoffMax {
			delete(r.owners, uid)
		}
	}
}

func (r *RepairReconciler) limiterDelay() time.Duration {
	qps := r.Options.EvictionsPerSecond
	if qps <= 0 {
		qps = DefaultRepairEvictionsPerSecond
	}
	return time.Duration(float64(time.Second) / float64(qps))
}

// SetupWithManager watches the pods that may need repair (not injected, not terminating, not on
// the host network) and the MeshServices, which map to the uninjected pods they select (a
// MeshService switched to STRICT, or created, while such pods run).
func (r *RepairReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	qps, burst := r.Options.EvictionsPerSecond, r.Options.EvictionBurst
	if qps <= 0 {
		qps = DefaultRepairEvictionsPerSecond
	}
	if burst <= 0 {
		burst = DefaultRepairEvictionBurst
	}
	r.limiter = flowcontrol.NewTokenBucketRateLimiterWithClock(qps, burst, r.Clock)
	r.reported = map[types.NamespacedName]types.UID{}
	r.owners = map[types.UID]ownerEvictions{}
	return ctrl.NewControllerManagedBy(mgr).
		For(&corev1.Pod{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(obj client.Object) bool {
			pod, ok := obj.(*corev1.Pod)
			return ok && mayNeedRepair(pod)
		}))).
		Watches(&meshv1alpha1.MeshService{}, handler.EnqueueRequestsFromMapFunc(r.uninjectedPodsOf),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Named("repair").
		Complete(r)
}

// mayNeedRepair is the cheap part of decideRepair, on a pod alone.
func mayNeedRepair(pod *corev1.Pod) bool {
	return pod.DeletionTimestamp == nil && !sidecar.IsInjected(pod) && !sidecar.OptedOut(pod) && !pod.Spec.HostNetwork &&
		pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

// uninjectedPodsOf maps a STRICT MeshService to the pods it selects that may need repair, read
// from the cache's own objects (podcache.Pods): no pod is copied.
func (r *RepairReconciler) uninjectedPodsOf(ctx context.Context, obj client.Object) []reconcile.Request {
	ms, ok := obj.(*meshv1alpha1.MeshService)
	if !ok || ms.Spec.MTLS.Mode == meshv1alpha1.MTLSPermissive || ms.DeletionTimestamp != nil {
		return nil
	}
	selector, err := metav1.LabelSelectorAsSelector(&ms.Spec.Selector)
	if err != nil || selector.Empty() {
		return nil
	}
	pods, err := podcache.Pods(ctx, cmp.Or[client.Reader](r.Pods, r.Client), ms.Namespace, func(pod *corev1.Pod) bool {
		return mayNeedRepair(pod) && selector.Matches(labels.Set(pod.Labels))
	})
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list pods to map a MeshService event", "namespace", ms.Namespace)
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(pods))
	for _, pod := range pods {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(pod)})
	}
	return reqs
}
