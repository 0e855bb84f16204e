package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/rollout"
	"github.com/meshlift/meshlift/internal/versions"
)

// Event reasons and the Conflict condition of UpgradePlans.
const (
	EventReasonPodsStarted      = "UpgradeStarted"
	EventReasonPodUpgraded      = "PodUpgraded"
	EventReasonPodFailed        = "PodUpgradeFailed"
	EventReasonPhaseChanged     = "PhaseChanged"
	EventReasonTargetNotFound   = "TargetVersionNotFound"
	EventReasonEvictionBlocked  = "EvictionBlocked"
	EventReasonActionFailed     = "ActionFailed"
	EventReasonDrainUnconfirmed = "DrainNotConfirmed"
	ConditionConflict           = "Conflict"
	ReasonConflictOlderPlanWins = "GovernedByOlderPlan"
	ReasonNoConflict            = "NoConflict"
)

// UpgradePlanReconciler drives UpgradePlans (ARCHITECTURE.md section 7). It is thin around the
// pure planner (internal/rollout): it gathers the plan, the SidecarVersions and the pods of the
// MeshServices the plan governs, asks the planner for one decision, carries out its actions in
// the order the planner documents (the pod's meshlift.io/upgrade state is always written in the
// same patch as, or before, the step it describes), and writes the status. Everything it needs to
// continue lives in pod annotations and the plan's status, so a restarted or newly elected
// operator continues exactly where the last one stopped.
type UpgradePlanReconciler struct {
	client.Client
	Recorder events.EventRecorder
	Options  rollout.Options
	Clock    clock.PassiveClock
	// ControlPlane, when set, confirms InPlace drains with the control-plane replicas'
	// acknowledgements; nil: an InPlace upgrade waits Options.DrainDuration instead.
	ControlPlane *ControlPlaneReplicas
	// Prober reads how many connections the old proxies of hot-upgraded pods still serve, so that
	// their slots retire once those end (spec.drain.maxDuration); nil: old slots retire as soon as
	// the health gate passes.
	Prober RetireProber

	// expectations are this process's writes to pods that the cache may not show yet.
	expectations podExpectations
}

// NewUpgradePlanReconciler returns a reconciler with the real clock.
func NewUpgradePlanReconciler(c client.Client, recorder events.EventRecorder, opts rollout.Options) *UpgradePlanReconciler {
	return &UpgradePlanReconciler{Client: c, Recorder: recorder, Options: opts, Clock: clock.RealClock{}, Prober: HTTPRetireProber{}}
}

// expectationTimeout is how long an expectation of a pod that no plan lists any more is kept:
// a pod that was deleted, or left the plan, never shows a newer version to the plan that wrote
// it. Long enough for any cache to catch up.
const expectationTimeout = 5 * time.Minute

// podExpectations are controller expectations for this process's own writes (OpenKruise
// UpdateExpectations): per pod UID, the resourceVersions its writes replaced. While the cache
// shows one of them it has not seen the last write, and deciding on it would repeat an action. A
// pod's expectation belongs to the pod, not to the plan that wrote it: it is cleared only when a
// decision sees the pod newer, or after expectationTimeout. Safe for concurrent reconciles.
type podExpectations struct {
	mu   sync.Mutex
	pods map[types.UID]*podExpectation
}

type podExpectation struct {
	// stale are the resourceVersions the pod had before each of this process's writes.
	stale []string
	// wrote is when the last write happened.
	wrote time.Time
}

// wrote records a write that took the pod from resourceVersion before to after; a write that
// changed nothing (after == before) has nothing for the cache to catch up with.
func (e *podExpectations) wrote(uid types.UID, before, after string, now time.Time) {
	if before == after || before == "" {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pods == nil {
		e.pods = map[types.UID]*podExpectation{}
	}
	exp := e.pods[uid]
	if exp == nil {
		exp = &podExpectation{}
		e.pods[uid] = exp
	}
	if !slices.Contains(exp.stale, before) {
		exp.stale = append(exp.stale, before)
	}
	exp.wrote = now
}

// behind reports whether the cache shows one of pods at a version this process already wrote
// over. It forgets the expectations of the pods it sees newer, and those older than
// expectationTimeout; the expectations of pods not among pods (another plan's) stay.
func (e *podExpectations) behind(pods []corev1.Pod, now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	behind := false
	for i := range pods {
		exp, ok := e.pods[pods[i].UID]
		if !ok {
			continue
		}
		if slices.Contains(exp.stale, pods[i].ResourceVersion) {
			behind = true
		} else {
			delete(e.pods, pods[i].UID)
		}
	}
	for uid, exp := range e.pods {
		if now.Sub(exp.wrote) > expectationTimeout {
			delete(e.pods, uid)
		}
	}
	return behind
}

// pending is how many pods have expectations (for tests).
func (e *podExpectations) pending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.pods)
}

// +kubebuilder:rbac:groups=mesh.meshlift.io,resources=upgradeplans,verbs=get;list;watch
// +kubebuilder:rbac:groups=mesh.meshlift.io,resources=upgradeplans/status,verbs=update
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=pods/resize,verbs=patch
// +kubebuilder:rbac:groups="",resources=pods/eviction,verbs=create
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile makes one decision for the plan and carries it out.
func (r *UpgradePlanReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	plan := &meshv1alpha1.UpgradePlan{}
	if err := r.Get(ctx, req.NamespacedName, plan); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if plan.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}

	services, conflicts, err := r.meshServices(ctx, plan)
	if err != nil {
		return ctrl.Result{}, err
	}
	pods, err := r.pods(ctx, plan.Namespace, slices.Sorted(maps.Keys(services)))
	if err != nil {
		return ctrl.Result{}, err
	}
	if r.cacheIsBehind(pods) {
		log.V(1).Info("Waiting for the cache to see the last patch")
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	versionList := &meshv1alpha1.SidecarVersionList{}
	if err := r.List(ctx, versionList, client.UnsafeDisableDeepCopy); err != nil { // read only: the planner never modifies its input
		return ctrl.Result{}, fmt.Errorf("failed to list SidecarVersions: %w", err)
	}
	byName := make(map[string]*meshv1alpha1.SidecarVersion, len(versionList.Items))
	for i := range versionList.Items {
		if versionList.Items[i].DeletionTimestamp == nil {
			byName[versionList.Items[i].Name] = &versionList.Items[i]
		}
	}

	drain, err := r.drainInput(ctx, pods)
	if err != nil {
		return ctrl.Result{}, err
	}
	res, err := rollout.Plan(rollout.Input{Plan: plan, Versions: byName, Pods: pods, Now: r.Clock.Now(), Options: r.Options, Drain: drain,
		Retiring: r.retireReports(ctx, plan, pods), MeshServices: services})
	if errors.Is(err, rollout.ErrVersionNotFound) {
		return ctrl.Result{}, r.reportTargetNotFound(ctx, plan, conflicts, err)
	}
	if err != nil {
		return ctrl.Result{}, err
	}

	acted, actErr := r.act(ctx, plan, pods, res.Actions)
	if err := r.writeStatus(ctx, plan, res, conflicts); err != nil {
		return ctrl.Result{}, errors.Join(actErr, err)
	}
	if actErr != nil {
		return ctrl.Result{}, actErr
	}
	if acted {
		// The pods changed: decide again once the cache has seen it (pod events requeue too).
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	return ctrl.Result{RequeueAfter: res.RequeueAfter}, nil
}

// meshServices returns the MeshServices the plan governs by name (the cache's objects: read
// only), and a message for each one an older plan governs instead (those are left out).
func (r *UpgradePlanReconciler) meshServices(ctx context.Context, plan *meshv1alpha1.UpgradePlan) (map[string]*meshv1alpha1.MeshService, []string, error) {
	// Both lists are only read: no deep copies.
	services := &meshv1alpha1.MeshServiceList{}
	if err := r.List(ctx, services, client.InNamespace(plan.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, nil, fmt.Errorf("failed to list MeshServices: %w", err)
	}
	plans := &meshv1alpha1.UpgradePlanList{}
	if err := r.List(ctx, plans, client.InNamespace(plan.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, nil, fmt.Errorf("failed to list UpgradePlans: %w", err)
	}
	var conflicts []string
	governed := map[string]*meshv1alpha1.MeshService{}
	for i := range services.Items {
		ms := &services.Items[i]
		if !versions.PlanSelects(plan, ms) {
			continue
		}
		owner := versions.GoverningPlans(ms, plans.Items)
		if len(owner) > 0 && owner[0].Name != plan.Name {
			conflicts = append(conflicts, fmt.Sprintf("MeshService %s is governed by the older UpgradePlan %s", ms.Name, owner[0].Name))
			continue
		}
		governed[ms.Name] = ms
	}
	return governed, conflicts, nil
}

// pods lists the pods injected for the governed MeshServices. They are the cache's own objects
// (shallow copies that share maps and slices with it), not deep copies: a plan governs up to
// thousands of pods and reads every one of them on each reconcile, but writes only a few.
// Nothing may modify them: a pod is written through a copy (rollout.Action.ApplyPatch).
func (r *UpgradePlanReconciler) pods(ctx context.Context, namespace string, meshServices []string) ([]corev1.Pod, error) {
	var pods []corev1.Pod
	for _, name := range meshServices {
		list := &corev1.PodList{}
		if err := r.List(ctx, list, client.InNamespace(namespace), client.MatchingFields{IndexPodMeshService: name},
			client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("failed to list the pods of MeshService %s: %w", name, err)
		}
		if pods == nil {
			pods = list.Items
		} else {
			pods = append(pods, list.Items...)
		}
	}
	return pods, nil
}

// cacheIsBehind reports whether the cache shows one of the plan's pods from before a write of
// this process (podExpectations).
func (r *UpgradePlanReconciler) cacheIsBehind(pods []corev1.Pod) bool {
	return r.expectations.behind(pods, r.Clock.Now())
}

// act carries out the actions; it reports whether it changed anything. An action that fails is
// reported as an event and the others still run: the next decision repeats what did not happen.
func (r *UpgradePlanReconciler) act(ctx context.Context, plan *meshv1alpha1.UpgradePlan, pods []corev1.Pod, actions []rollout.Action) (bool, error) {
	log := ctrl.LoggerFrom(ctx)
	byKey := make(map[types.NamespacedName]*corev1.Pod, len(pods))
	for i := range pods {
		byKey[client.ObjectKeyFromObject(&pods[i])] = &pods[i]
	}
	var errs []error
	var started, finished []string
	acted := false
	for i := range actions {
		action := &actions[i]
		pod := byKey[action.Pod]
		if pod == nil || pod.UID != action.UID {
			continue
		}
		log.Info("Taking a rollout action", "pod", action.Pod.Name, "action", action.Kind, "reason", action.Reason)
		changed, err := r.apply(ctx, pod, action)
		acted = acted || changed
		if err != nil {
			errs = append(errs, err)
			r.Recorder.Eventf(plan, pod, corev1.EventTypeWarning, EventReasonActionFailed, string(action.Kind), "%s: %v", action.Pod.Name, err)
			continue
		}
		switch action.Kind {
		case rollout.ActionResizeSlotUp, rollout.ActionSwapSlot, rollout.ActionExclude, rollout.ActionEvict:
			if isFirstStep(action) {
				started = append(started, action.Pod.Name)
			}
		case rollout.ActionRevert, rollout.ActionMarkFailed:
			r.Recorder.Eventf(plan, pod, corev1.EventTypeWarning, EventReasonPodFailed, string(action.Kind), "pod %s: %s", action.Pod.Name, action.Reason)
		case rollout.ActionFinish:
			finished = append(finished, action.Pod.Name)
		}
		if action.ConnectionsCut {
			r.Recorder.Eventf(pod, plan, corev1.EventTypeWarning, EventReasonConnectionsCut, string(action.Kind),
				"hot upgrade to %s: %s", plan.Spec.TargetVersion, action.Reason)
		}
		if action.DrainUnconfirmed {
			r.Recorder.Eventf(plan, pod, corev1.EventTypeWarning, EventReasonDrainUnconfirmed, string(action.Kind), "pod %s: %s", action.Pod.Name, action.Reason)
		}
	}
	if len(started) > 0 {
		r.Recorder.Eventf(plan, nil, corev1.EventTypeNormal, EventReasonPodsStarted, "Upgrade",
			"upgrading %d pod(s) to %s: %s", len(started), plan.Spec.TargetVersion, summarize(started))
	}
	if len(finished) > 0 {
		r.Recorder.Eventf(plan, nil, corev1.EventTypeNormal, EventReasonPodUpgraded, "Upgrade",
			"%d pod(s) now run %s: %s", len(finished), plan.Spec.TargetVersion, summarize(finished))
	}
	return acted, errors.Join(errs...)
}

// isFirstStep reports whether the action starts a pod's upgrade (its state begins here).
func isFirstStep(action *rollout.Action) bool {
	return action.State != nil && action.State.StartedAt.Equal(action.State.PhaseSince)
}

// apply turns one action into API calls: the pod patch (state, annotations, images), then the
// resize, then the eviction.
func (r *UpgradePlanReconciler) apply(ctx context.Context, pod *corev1.Pod, action *rollout.Action) (bool, error) {
	changed := false
	if action.State != nil || len(action.Annotations) > 0 || len(action.Images) > 0 {
		modified, err := action.ApplyPatch(pod)
		if err != nil {
			return false, err
		}
		patch := client.StrategicMergeFrom(pod, client.MergeFromWithOptimisticLock{})
		if err := r.Patch(ctx, modified, patch); err != nil {
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				return false, nil // the next decision sees the newer pod
			}
			return false, fmt.Errorf("failed to patch pod %s for %s: %w", action.Pod, action.Kind, err)
		}
		r.expectations.wrote(pod.UID, pod.ResourceVersion, modified.ResourceVersion, r.Clock.Now())
		pod = modified
		changed = true
	}
	if action.Resize != nil {
		modified, err := action.ApplyResize(pod)
		if err != nil {
			return changed, err
		}
		if err := r.SubResource("resize").Patch(ctx, modified, client.StrategicMergeFrom(pod)); err != nil && !apierrors.IsNotFound(err) {
			return changed, fmt.Errorf("failed to resize container %s of pod %s: %w", action.Resize.Container, action.Pod, err)
		}
		// A cache that shows the patch but not the resize would ask for the resize again.
		r.expectations.wrote(pod.UID, pod.ResourceVersion, modified.ResourceVersion, r.Clock.Now())
		changed = true
	}
	if action.Evict {
		eviction := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace}}
		err := r.SubResource("eviction").Create(ctx, pod, eviction)
		switch {
		case apierrors.IsTooManyRequests(err):
			// A PodDisruptionBudget says not now; the next decision asks again.
			r.Recorder.Eventf(pod, nil, corev1.EventTypeNormal, EventReasonEvictionBlocked, "Evict", "eviction blocked for now: %v", err)
		case err != nil && !apierrors.IsNotFound(err):
			return changed, fmt.Errorf("failed to evict pod %s: %w", action.Pod, err)
		default:
			changed = true
		}
	}
	return changed, nil
}

// writeStatus writes the decision into the plan's status, with the Conflict condition, and
// records an event when the phase changes.
func (r *UpgradePlanReconciler) writeStatus(ctx context.Context, plan *meshv1alpha1.UpgradePlan, res rollout.Result, conflicts []string) error {
	base := plan.DeepCopy()
	status := &plan.Status
	if status.Phase != res.Phase {
		r.Recorder.Eventf(plan, nil, corev1.EventTypeNormal, EventReasonPhaseChanged, "Plan", "%s: %s", res.Phase, res.Message)
	}
	start, completion := rollout.PlanTimes(status.Phase, res.Phase, timeOf(status.StartTime), timeOf(status.CompletionTime), r.Clock.Now())
	status.StartTime, status.CompletionTime = metaTime(start), metaTime(completion)
	status.Phase = res.Phase
	status.ObservedGeneration = plan.Generation
	status.Counts = res.Counts
	status.CurrentStep = res.CurrentStep
	status.Pods = res.Pods
	conditions := res.Conditions
	status.Conditions = nil
	for _, c := range conditions {
		if c.Type != ConditionConflict {
			meta.SetStatusCondition(&status.Conditions, c)
		}
	}
	for _, c := range base.Status.Conditions {
		if cond := meta.FindStatusCondition(status.Conditions, c.Type); cond != nil && cond.Status == c.Status && cond.Reason == c.Reason {
			cond.LastTransitionTime = c.LastTransitionTime
		}
	}
	setConflict(&status.Conditions, base.Status.Conditions, plan.Generation, conflicts)
	for i := range status.Conditions {
		status.Conditions[i].ObservedGeneration = plan.Generation
	}
	return r.updateStatus(ctx, plan, base)
}

// updateStatus writes the whole status (a merge patch would leave out the counts that did not
// change, which the schema requires) unless nothing changed. A conflict is not an error: the
// newer plan comes back through the watch.
func (r *UpgradePlanReconciler) updateStatus(ctx context.Context, plan, base *meshv1alpha1.UpgradePlan) error {
	if equality.Semantic.DeepEqual(plan.Status, base.Status) {
		return nil
	}
	if err := r.Status().Update(ctx, plan); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("failed to update the status of UpgradePlan %s/%s: %w", plan.Namespace, plan.Name, err)
	}
	return nil
}

func setConflict(conditions *[]metav1.Condition, previous []metav1.Condition, generation int64, conflicts []string) {
	c := metav1.Condition{Type: ConditionConflict, Status: metav1.ConditionFalse, Reason: ReasonNoConflict,
		Message: "no older UpgradePlan governs this plan's MeshServices", ObservedGeneration: generation}
	if len(conflicts) > 0 {
		c.Status, c.Reason = metav1.ConditionTrue, ReasonConflictOlderPlanWins
		c.Message = strings.Join(conflicts, "; ") + ": the older plan wins; delete one of them or narrow its selector"
	}
	if old := meta.FindStatusCondition(previous, ConditionConflict); old != nil && old.Status == c.Status && old.Reason == c.Reason {
		c.LastTransitionTime = old.LastTransitionTime
	}
	meta.SetStatusCondition(conditions, c)
}

// reportTargetNotFound keeps the plan waiting, with a condition and an event that say what to fix.
func (r *UpgradePlanReconciler) reportTargetNotFound(ctx context.Context, plan *meshv1alpha1.UpgradePlan, conflicts []string, cause error) error {
	base := plan.DeepCopy()
	msg := fmt.Sprintf("SidecarVersion %q does not exist: create it or fix spec.targetVersion (no pod is touched until then)", plan.Spec.TargetVersion)
	if !meta.IsStatusConditionPresentAndEqual(plan.Status.Conditions, "Progressing", metav1.ConditionFalse) ||
		meta.FindStatusCondition(plan.Status.Conditions, "Progressing").Reason != EventReasonTargetNotFound {
		r.Recorder.Eventf(plan, nil, corev1.EventTypeWarning, EventReasonTargetNotFound, "Plan", "%s", msg)
	}
	if plan.Status.Phase == "" {
		plan.Status.Phase = meshv1alpha1.PhasePending
	}
	plan.Status.ObservedGeneration = plan.Generation
	meta.SetStatusCondition(&plan.Status.Conditions, metav1.Condition{Type: "Progressing", Status: metav1.ConditionFalse,
		Reason: EventReasonTargetNotFound, Message: msg, ObservedGeneration: plan.Generation})
	setConflict(&plan.Status.Conditions, base.Status.Conditions, plan.Generation, conflicts)
	if err := r.updateStatus(ctx, plan, base); err != nil {
		return errors.Join(err, cause)
	}
	return nil
}

func summarize(names []string) string {
	slices.Sort(names)
	if len(names) > 10 {
		return strings.Join(names[:10], ", ") + fmt.Sprintf(" and %d more", len(names)-10)
	}
	return strings.Join(names, ", ")
}

// SetupWithManager watches plans, and the pods, MeshServices and SidecarVersions they depend on.
func (r *UpgradePlanReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	plansInNamespace := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		return r.plansIn(ctx, obj.GetNamespace())
	})
	allPlans := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		return r.plansIn(ctx, "")
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&meshv1alpha1.UpgradePlan{}).
		Watches(&corev1.Pod{}, plansInNamespace, builder.WithPredicates(predicate.NewPredicateFuncs(func(obj client.Object) bool {
			return obj.GetAnnotations()[meshv1alpha1.AnnotationMeshService] != ""
		}))).
		Watches(&meshv1alpha1.MeshService{}, plansInNamespace).
		Watches(&meshv1alpha1.SidecarVersion{}, allPlans).
		Named("upgradeplan").
		Complete(r)
}

func (r *UpgradePlanReconciler) plansIn(ctx context.Context, namespace string) []reconcile.Request {
	plans := &meshv1alpha1.UpgradePlanList{}
	opts := []client.ListOption{client.UnsafeDisableDeepCopy} // only the names are read, on every pod event
	if namespace != "" {
		opts = append(opts, client.InNamespace(namespace))
	}
	if err := r.List(ctx, plans, opts...); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list UpgradePlans")
		return nil
	}
	requests := make([]reconcile.Request, 0, len(plans.Items))
	for i := range plans.Items {
		requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&plans.Items[i])})
	}
	return requests
}

func timeOf(t *metav1.Time) *time.Time {
	if t == nil {
		return nil
	}
	return &t.Time
}

func metaTime(t *time.Time) *metav1.Time {
	if t == nil {
		return nil
	}
	mt := metav1.NewTime(*t)
	return &mt
}
