package rollout

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
)

// AnnotationResume releases a step pause without a duration (see meshv1alpha1.AnnotationResume).
const AnnotationResume = meshv1alpha1.AnnotationResume

// Defaults of fields the CRD defaults; the planner applies them too, for objects built in code.
const (
	DefaultProgressDeadlineSeconds = 300
	DefaultDrainDuration           = 5 * time.Second
	DefaultDrainTimeout            = 60 * time.Second
	// drainRecheck is how often a drain that waits for EndpointSlices is looked at again (they
	// do not wake the plan).
	drainRecheck         = time.Second
	DefaultMaxPodRecords = 100
	// DefaultMinStable is the least time a new proxy must stay ready before it counts, whatever
	// minReadySeconds says: the kubelet can report a restarted container ready for a moment
	// before its first probe, and retiring the old proxy on that would leave the pod without one.
	DefaultMinStable = 3 * time.Second
)

// ErrVersionNotFound is wrapped when the plan's target SidecarVersion is not among the inputs.
var ErrVersionNotFound = errors.New("SidecarVersion not found")

// Options are the operator's rollout settings.
type Options struct {
	// IdleResources are the resources of an idle slot (sidecar.Options.IdleResources): a retired
	// slot is resized down to them.
	IdleResources corev1.ResourceRequirements
	// FullIdleResources says idle slots keep the version's resources, for clusters without
	// in-place resize: no resize is ever asked for.
	FullIdleResources bool
	// DrainDuration is how long an InPlace upgrade waits after excluding the pod from EDS before
	// it restarts the proxy when Input.Drain is nil (nothing to confirm the drain with).
	DrainDuration time.Duration
	// DrainTimeout bounds the wait for a confirmed drain (Input.Drain), and so does half of the
	// plan's progressDeadlineSeconds: the proxy is restarted anyway after it (it still drains its
	// own connections on SIGTERM). Default 60s.
	DrainTimeout time.Duration
	// MaxPodRecords bounds Result.Pods (status.pods).
	MaxPodRecords int
	// MinStable is the least time a new proxy must stay ready, even with minReadySeconds 0
	// (default DefaultMinStable; negative: none).
	MinStable time.Duration
}

// DefaultOptions are the documented defaults.
func DefaultOptions() Options {
	return Options{
		IdleResources: sidecar.DefaultOptions().IdleResources,
		DrainDuration: DefaultDrainDuration,
		DrainTimeout:  DefaultDrainTimeout,
		MaxPodRecords: DefaultMaxPodRecords,
		MinStable:     DefaultMinStable,
	}
}

// Input is what one decision is made from. Nothing else is remembered between decisions.
type Input struct {
	// Plan is the UpgradePlan: its spec, and from its status CurrentStep and the Paused
	// condition (when the current step's pause began).
	Plan *meshv1alpha1.UpgradePlan
	// Versions are the SidecarVersions by name. The target is required; the versions the pods
	// run tell whether they can hot-upgrade, and a rollback needs the versions it returns to.
	Versions map[string]*meshv1alpha1.SidecarVersion
	// Pods are the pods of the plan's MeshServices, in any order, terminating ones included.
	Pods []corev1.Pod
	// Now is the clock.
	Now time.Time
	// Options are the operator's settings.
	Options Options
	// Drain is what confirms that an InPlace pod excluded from EDS is drained; nil: the upgrade
	// waits Options.DrainDuration instead.
	Drain *DrainInput
}

// DrainInput confirms InPlace drains. A pod is drained when every replica in Replicas wrote its
// acknowledgement on it (meshv1alpha1.EDSAckAnnotation: every proxy connected to that replica
// applied endpoints without the pod) and, when the pod has the proxy-ready readiness gate, no
// EndpointSlice lists it as serving any more.
type DrainInput struct {
	// Replicas are the control-plane replicas that serve proxies (their pod names).
	Replicas []string
	// Serving are the pods an EndpointSlice lists as serving.
	Serving map[types.UID]bool
}

// Reasons of a decision; they double as condition reasons.
const (
	ReasonProgressing           = "Progressing"
	ReasonPaused                = "Paused"
	ReasonStepPause             = "StepPause"
	ReasonTooManyFailures       = "TooManyFailures"
	ReasonRollingBack           = "RollingBack"
	ReasonRolledBack            = "RolledBack"
	ReasonCompleted             = "Completed"
	ReasonCompletedWithFailures = "CompletedWithFailures"
	ReasonWaiting               = "WaitingForPods"
)

// Reasons a pod is left out of the plan (Result.Ignored) or kept in it without being started
// (Result.Held).
const (
	// Ignored: not part of the plan, not in the counts.
	PodNotInjected       = "NotInjected"
	PodTerminating       = "Terminating"
	PodFinished          = "Finished"
	PodDeletedMidUpgrade = "DeletedMidUpgrade"
	PodEvicted           = "Evicted"
	// Held: counted in total, waiting for something before it can start.
	PodNotReady         = "NotReady"
	PodWorkloadRolling  = "WorkloadRollingOut"
	PodMalformedState   = "MalformedState"
	PodOwnedByOtherPlan = "OtherPlan"
	PodVersionNotFound  = "VersionNotFound"
	PodImageNotDistinct = "TargetImageIsIdling"
)

// PodNote says why a pod is ignored or held.
type PodNote struct {
	Pod     types.NamespacedName
	Reason  string
	Message string
}

// Result is one decision: the actions to take now and the status to write.
type Result struct {
	Phase meshv1alpha1.UpgradePhase
	// CurrentStep is the step in progress, or the step whose pause holds the plan.
	CurrentStep int32
	// Counts: total pods in the plan, updated (on the target and not in flight), ready (updated
	// with a ready proxy), failed (pods whose upgrade to the target failed).
	Counts meshv1alpha1.UpgradeCounts
	// InFlight is the number of pods with an upgrade in flight (reverts included).
	InFlight int32
	// Unavailable is what counts against MaxUnavailable after this decision's starts: pods in
	// flight plus pods that are not Ready for other reasons.
	Unavailable    int32
	MaxUnavailable int32
	// Reason (CamelCase) and Message (for humans) explain the decision.
	Reason  string
	Message string
	// Actions are the next steps, sorted by pod name; at most one per pod.
	Actions []Action
	// Pods are the status.pods records: pods in flight first, then failed ones (bounded).
	Pods []meshv1alpha1.PodUpgradeStatus
	// Ignored pods are not part of the plan; Held pods are, but cannot start now.
	Ignored []PodNote
	Held    []PodNote
	// Conditions are the plan's new conditions; transition times are kept when neither status
	// nor reason changes. Conditions the planner does not own (Conflict) are kept as they are.
	Conditions []metav1.Condition
	// RequeueAfter is when the clock alone changes the decision (a deadline, a pause, a drain,
	// minReadySeconds); 0 when only a change of the pods does.
	RequeueAfter time.Duration
}

// podInfo is one pod of the plan.
type podInfo struct {
	pod   *corev1.Pod
	state *PodState
	ready bool
	// malformed pods have an annotation the planner cannot read; they are never acted on.
	malformed bool
}

type planner struct {
	in       Input
	plan     *meshv1alpha1.UpgradePlan
	target   *meshv1alpha1.SidecarVersion
	now      time.Time
	deadline time.Duration
	minReady time.Duration
	opts     Options
	res      Result
	requeue  time.Duration
}

// Plan makes one decision for the plan. It is pure and deterministic: the same input gives the
// same result, and it keeps no memory, so a restarted operator decides exactly as before.
func Plan(in Input) (Result, error) {
	if in.Plan == nil {
		return Result{}, errors.New("no UpgradePlan to plan")
	}
	target := in.Versions[in.Plan.Spec.TargetVersion]
	if target == nil {
		return Result{}, fmt.Errorf("UpgradePlan %s targets %q: %w", in.Plan.Name, in.Plan.Spec.TargetVersion, ErrVersionNotFound)
	}
	p := &planner{
		in:       in,
		plan:     in.Plan,
		target:   target,
		now:      in.Now.UTC().Truncate(time.Second),
		deadline: time.Duration(cmp.Or(in.Plan.Spec.Health.ProgressDeadlineSeconds, DefaultProgressDeadlineSeconds)) * time.Second,
		minReady: time.Duration(in.Plan.Spec.Health.MinReadySeconds) * time.Second,
		opts:     in.Options,
	}
	if p.opts.DrainDuration == 0 {
		p.opts.DrainDuration = DefaultDrainDuration
	}
	if p.opts.DrainTimeout == 0 {
		p.opts.DrainTimeout = DefaultDrainTimeout
	}
	if p.opts.MaxPodRecords == 0 {
		p.opts.MaxPodRecords = DefaultMaxPodRecords
	}
	if p.opts.MinStable == 0 {
		p.opts.MinStable = DefaultMinStable
	}
	p.minReady = max(p.minReady, p.opts.MinStable)
	if err := p.run(); err != nil {
		return Result{}, err
	}
	return p.res, nil
}

func (p *planner) run() error {
	name, target := p.plan.Name, p.target.Name
	var (
		members        []podInfo
		evicting       int32 // terminating pods this plan evicted: unavailable until gone
		revisions      = map[string]string{}
		rollingOut     = map[string]bool{}
		workloadOfPods = make([]string, 0, len(p.in.Pods))
	)

	// Pass 1: who is in the plan at all.
	for i := range p.in.Pods {
		pod := &p.in.Pods[i]
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			p.ignore(pod, PodFinished, "the pod has finished")
			continue
		}
		var state *PodState
		var stateErr error
		if value, ok := pod.Annotations[meshv1alpha1.AnnotationUpgrade]; ok {
			state, stateErr = DecodeState(value)
		}
		if state != nil && state.Plan == name && !state.Active() && state.StartedAt.Before(p.plan.CreationTimestamp.Time) {
			// The record of an earlier plan of this name (deleted and created again, which is
			// how a failed target is tried again): this plan starts from scratch.
			state = nil
		}
		if pod.DeletionTimestamp != nil {
			switch {
			case state != nil && state.Plan == name && state.Active() && state.Phase == PodEvicting:
				evicting++
				p.ignore(pod, PodEvicted, "evicted by the plan; counts against maxUnavailable until it is gone")
			case state != nil && state.Plan == name && state.Active():
				p.ignore(pod, PodDeletedMidUpgrade, fmt.Sprintf("deleted during its upgrade (%s); its replacement gets %s", state.Phase, state.To))
			default:
				p.ignore(pod, PodTerminating, "the pod is terminating")
			}
			continue
		}
		if !sidecar.IsInjected(pod) {
			p.ignore(pod, PodNotInjected, "the pod has no sidecar; it gets one when it is recreated")
			continue
		}
		info := podInfo{pod: pod, state: state, ready: podReady(pod), malformed: stateErr != nil}
		if stateErr != nil {
			p.hold(pod, PodMalformedState, stateErr.Error())
		}
		key, revision := workloadOf(pod)
		if key != "" {
			if seen, ok := revisions[key]; !ok {
				revisions[key] = revision
			} else if seen != revision {
				rollingOut[key] = true
			}
		}
		workloadOfPods = append(workloadOfPods, key)
		members = append(members, info)
	}
	total := int32(len(members))
	p.res.Counts.Total = total

	// Failures so far decide the mode before any in-flight pod is touched.
	forward := func(s *PodState) bool { return s.Plan == name && s.To == target && !s.Rollback }
	var failed int32
	failing := make(map[int]string)
	for i := range members {
		s := members[i].state
		if s == nil || s.Plan != name {
			continue
		}
		if s.Active() && s.Phase != PodReverting {
			failing[i] = p.failure(&members[i])
		}
		if forward(s) && (s.Phase == PodFailed || s.Phase == PodReverting && s.Outcome == PodFailed || failing[i] != "") {
			failed++
		}
	}
	spec := p.plan.Spec
	tooManyFailures := failed > spec.MaxFailedPods
	rollbackMode := tooManyFailures && spec.FailurePolicy == meshv1alpha1.FailurePolicyRollback
	wanted := func(s *PodState) bool {
		if rollbackMode {
			return s.Rollback && s.From == target
		}
		return s.To == target
	}

	// Pass 2: in-flight pods advance; the others are counted and sorted into candidates.
	var (
		inFlight, unavailable, updated, ready, walkedBack, rollbackFailed int32
		candidates, rollbackCandidates                                    []*podInfo
		walkBackPending                                                   bool
	)
	for i := range members {
		info := &members[i]
		pod, s := info.pod, info.state
		switch {
		case info.malformed:
			unavailable++
			continue
		case s != nil && s.Active() && s.Plan != name:
			unavailable++
			p.hold(pod, PodOwnedByOtherPlan, fmt.Sprintf("UpgradePlan %s is upgrading this pod", s.Plan))
			continue
		case s != nil && s.Active():
			inFlight++
			unavailable++
			if s.Rollback {
				walkBackPending = true
			}
			p.act(p.advanceInFlight(info, wanted(s), failing[i]))
			continue
		}
		if !info.ready {
			unavailable++
		}
		onTarget := sidecar.Version(pod) == target
		if s != nil && s.Plan == name && s.Rollback && s.Phase == PodFailed && s.From == target {
			rollbackFailed++
		}
		if onTarget {
			updated++
			if sidecar.ProxyReady(pod) {
				ready++
			}
			if s != nil && s.Plan == name && s.Phase == PodSucceeded && s.Rollback && s.To == target {
				walkedBack++
			}
			if rollbackMode && s != nil && forward(s) && s.Phase == PodSucceeded {
				switch {
				case !info.ready:
					p.hold(pod, PodNotReady, "the pod is not Ready; it is rolled back once it is")
				case rollingOut[workloadOfPods[i]]:
					p.hold(pod, PodWorkloadRolling, "its workload is rolling out; it is rolled back once that finished")
				default:
					rollbackCandidates = append(rollbackCandidates, info)
				}
			}
			continue
		}
		if rollbackMode || (s != nil && forward(s) && s.Phase == PodFailed) {
			continue // failed pods stay where they are; a rollback only walks upgraded pods back
		}
		switch {
		case !info.ready:
			p.hold(pod, PodNotReady, "the pod is not Ready; it is upgraded once it is")
		case rollingOut[workloadOfPods[i]]:
			p.hold(pod, PodWorkloadRolling, fmt.Sprintf("%s is rolling out (pods of several revisions); its new pods get %s from the injector", workloadOfPods[i], target))
		default:
			if s != nil && s.Plan == name && s.Phase == PodSucceeded && s.From == target && s.To == sidecar.Version(pod) {
				walkBackPending = true
			}
			candidates = append(candidates, info)
		}
	}
	p.res.Counts.Updated, p.res.Counts.Ready, p.res.Counts.Failed = updated, ready, failed
	p.res.InFlight = inFlight

	maxUnavailable, err := scaled(spec.Strategy.MaxUnavailable, 1, total)
	if err != nil {
		return fmt.Errorf("invalid spec.strategy.maxUnavailable of UpgradePlan %s: %w", name, err)
	}
	maxUnavailable = max(maxUnavailable, 1)
	unavailable += evicting
	budget := max(maxUnavailable-unavailable, 0)
	p.res.MaxUnavailable = maxUnavailable

	steps := spec.Strategy.Steps
	p.res.CurrentStep = min(max(p.plan.Status.CurrentStep, 0), int32(max(len(steps)-1, 0)))
	var starts []*podInfo
	held := len(p.res.Held) > 0
	switch {
	case rollbackMode:
		p.res.Phase, p.res.Reason = meshv1alpha1.PhaseRollingBack, ReasonRollingBack
		if !spec.Paused {
			starts = rollbackCandidates[:min(int(budget), len(rollbackCandidates))]
		}
		left := int32(len(rollbackCandidates)) + inFlight
		p.res.Message = fmt.Sprintf("%d pods failed, more than maxFailedPods %d: failurePolicy Rollback walks the upgraded pods back; %d to go, %d in flight",
			failed, spec.MaxFailedPods, left-inFlight-int32(len(starts)), inFlight+int32(len(starts)))
		if spec.Paused {
			p.res.Message += "; spec.paused holds new walk-backs"
		}
		if left == 0 && !held {
			p.res.Phase, p.res.Reason = meshv1alpha1.PhaseRolledBack, ReasonRolledBack
			p.res.Message = fmt.Sprintf("%d pods failed, more than maxFailedPods %d: every pod the plan upgraded is back on its old version", failed, spec.MaxFailedPods)
			if rollbackFailed > 0 {
				p.res.Message += fmt.Sprintf(" except %d whose rollback failed", rollbackFailed)
			}
		}
	case tooManyFailures:
		p.res.Phase, p.res.Reason = meshv1alpha1.PhaseFailed, ReasonTooManyFailures
		p.res.Message = fmt.Sprintf("%d pods failed, more than maxFailedPods %d: failurePolicy Pause stops the plan (%d pods in flight finish); raise maxFailedPods or change the target to go on",
			failed, spec.MaxFailedPods, inFlight)
	default:
		step, need, pause := p.steps(updated, failed, total, inFlight)
		if walkBackPending {
			// A target set back to where pods came from is a rollback: one stage, no step pauses.
			need, pause = total, ""
		}
		p.res.CurrentStep = step
		stepText := ""
		if len(steps) > 0 {
			stepText = fmt.Sprintf("step %d/%d: ", step+1, len(steps))
		}
		if !spec.Paused && pause == "" {
			starts = candidates[:min(int(budget), int(need), len(candidates))]
		}
		progress := fmt.Sprintf("%d of %d pods run %s, %d in flight, %d failed", updated, total, target, inFlight+int32(len(starts)), failed)
		switch {
		case spec.Paused:
			p.res.Phase, p.res.Reason = meshv1alpha1.PhasePaused, ReasonPaused
			p.res.Message = stepText + progress + "; spec.paused is set: pods in flight finish, none starts"
		case pause != "":
			p.res.Phase, p.res.Reason = meshv1alpha1.PhasePaused, ReasonStepPause
			p.res.Message = stepText + progress + "; " + pause
		default:
			p.res.Phase, p.res.Reason = meshv1alpha1.PhaseProgressing, ReasonProgressing
			if walkBackPending {
				p.res.Phase, p.res.Reason = meshv1alpha1.PhaseRollingBack, ReasonRollingBack
			}
			p.res.Message = stepText + progress
			if len(starts) == 0 && (len(candidates) > 0 || held) && inFlight == 0 {
				p.res.Reason = ReasonWaiting
			}
		}
		if len(candidates) == 0 && inFlight == 0 && !held {
			p.res.Phase, p.res.Reason = meshv1alpha1.PhaseSucceeded, ReasonCompleted
			p.res.CurrentStep = int32(max(len(steps)-1, 0))
			p.res.Message = fmt.Sprintf("all %d pods run %s", total, target)
			if walkedBack > 0 {
				p.res.Phase, p.res.Reason = meshv1alpha1.PhaseRolledBack, ReasonRolledBack
				p.res.Message = fmt.Sprintf("the target was set back: all %d pods run %s again", total, target)
			}
			if failed > 0 {
				p.res.Reason = ReasonCompletedWithFailures
				p.res.Message = fmt.Sprintf("%d of %d pods run %s; %d failed and stay on their old version", updated, total, target, failed)
			}
		}
	}

	// Sort candidates only for what is started: by name, deterministic.
	if len(starts) > 0 {
		pool := candidates
		if rollbackMode {
			pool = rollbackCandidates
		}
		slices.SortFunc(pool, func(a, b *podInfo) int {
			return cmp.Or(cmp.Compare(a.pod.Namespace, b.pod.Namespace), cmp.Compare(a.pod.Name, b.pod.Name))
		})
		starts = pool[:len(starts)]
	}
	for _, info := range starts {
		action, err := p.start(info, rollbackMode)
		if err != nil {
			reason := PodVersionNotFound
			if errors.Is(err, errImageNotDistinct) {
				reason = PodImageNotDistinct
			}
			p.hold(info.pod, reason, err.Error())
			continue
		}
		p.act(action)
		if action.State != nil && action.State.Active() {
			inFlight++
			unavailable++ // candidates are Ready, so not counted yet
		}
	}
	p.res.InFlight = inFlight
	p.res.Unavailable = unavailable
	if len(p.res.Held) > 0 {
		p.res.Message += "; " + summarize(p.res.Held) + " held"
	}

	slices.SortFunc(p.res.Actions, func(a, b Action) int {
		return cmp.Or(cmp.Compare(a.Pod.Namespace, b.Pod.Namespace), cmp.Compare(a.Pod.Name, b.Pod.Name))
	})
	p.records(members)
	p.res.Conditions = p.conditions(tooManyFailures)
	p.res.RequeueAfter = p.requeue
	return nil
}

// steps returns the step in progress, how many more pods it may start, and why it is paused
// ("" when it is not). Progress is derived from the pods; the status only says which pauses
// were already released (CurrentStep past them) and since when the current one holds.
func (p *planner) steps(updated, failed, total, inFlight int32) (step int32, need int32, pause string) {
	steps := p.plan.Spec.Strategy.Steps
	eligible := total - failed
	partitions := make([]int32, 0, max(len(steps), 1))
	for i := range steps {
		partition, err := scaled(&steps[i].Partition, total, total)
		if err != nil {
			partition = total // CEL validates; a bad value must not stop the plan half way
		}
		partitions = append(partitions, min(partition, eligible))
	}
	if len(partitions) == 0 {
		partitions = append(partitions, eligible)
	}
	partitions[len(partitions)-1] = eligible // the last step always means every pod

	reached := int32(len(partitions)) // first step whose partition is not reached yet
	for i, partition := range partitions {
		if updated < partition {
			reached = int32(i)
			break
		}
	}
	statusStep := p.plan.Status.CurrentStep
	for j := int32(0); j < min(reached, int32(len(partitions))-1); j++ {
		if steps[j].Pause == nil || statusStep > j {
			continue
		}
		if steps[j].Pause.Duration == nil {
			if p.resumed(j) {
				continue
			}
			return j, 0, fmt.Sprintf("paused after step %d until resumed (kubectl meshlift upgrade resume, annotation %s=%s/%d)",
				j+1, AnnotationResume, p.target.Name, j)
		}
		since := p.now
		if cond := findCondition(p.plan.Status.Conditions, meshv1alpha1.ConditionPaused); cond != nil &&
			cond.Status == metav1.ConditionTrue && cond.Reason == ReasonStepPause && statusStep == j {
			since = cond.LastTransitionTime.UTC()
		}
		until := since.Add(steps[j].Pause.Duration.Duration)
		if p.now.Before(until) {
			p.wake(until)
			return j, 0, fmt.Sprintf("paused after step %d for %s, until %s", j+1, steps[j].Pause.Duration.Duration, until.Format(time.RFC3339))
		}
	}
	if reached >= int32(len(partitions)) {
		return int32(len(partitions)) - 1, 0, ""
	}
	// Pods in flight towards the target count as progress, so a step never overshoots.
	return min(reached, int32(max(len(steps)-1, 0))), max(partitions[reached]-updated-inFlight, 0), ""
}

func (p *planner) resumed(step int32) bool {
	value, ok := p.plan.Annotations[AnnotationResume]
	if !ok {
		return false
	}
	version, stepText, ok := strings.Cut(value, "/")
	if !ok || version != p.target.Name {
		return false
	}
	resumed, err := strconv.Atoi(stepText)
	return err == nil && int32(resumed) >= step
}

func (p *planner) act(action *Action) {
	if action != nil {
		p.res.Actions = append(p.res.Actions, *action)
	}
}

func (p *planner) ignore(pod *corev1.Pod, reason, message string) {
	p.res.Ignored = append(p.res.Ignored, PodNote{Pod: types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}, Reason: reason, Message: message})
}

func (p *planner) hold(pod *corev1.Pod, reason, message string) {
	p.res.Held = append(p.res.Held, PodNote{Pod: types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}, Reason: reason, Message: message})
}

// wake asks for a decision at t at the latest.
func (p *planner) wake(t time.Time) {
	d := t.Sub(p.now)
	if d <= 0 {
		d = time.Second
	}
	if p.requeue == 0 || d < p.requeue {
		p.requeue = d
	}
}

// records are the status.pods entries: in flight first, then failed, each sorted by name.
func (p *planner) records(members []podInfo) {
	next := make(map[string]*PodState, len(p.res.Actions))
	for i := range p.res.Actions {
		if s := p.res.Actions[i].State; s != nil {
			next[p.res.Actions[i].Pod.Name] = s
		}
	}
	var active, failed []meshv1alpha1.PodUpgradeStatus
	for i := range members {
		s := members[i].state
		if n := next[members[i].pod.Name]; n != nil {
			s = n
		}
		if s == nil || s.Plan != p.plan.Name {
			continue
		}
		record := meshv1alpha1.PodUpgradeStatus{Pod: members[i].pod.Name, From: s.From, To: s.To, Phase: string(s.Phase),
			Reason: s.Reason, LastTransitionTime: &metav1.Time{Time: s.PhaseSince}}
		switch {
		case s.Active():
			active = append(active, record)
		case s.Phase == PodFailed && s.To == p.target.Name:
			failed = append(failed, record)
		}
	}
	byName := func(a, b meshv1alpha1.PodUpgradeStatus) int { return cmp.Compare(a.Pod, b.Pod) }
	slices.SortFunc(active, byName)
	slices.SortFunc(failed, byName)
	all := append(active, failed...)
	p.res.Pods = all[:min(len(all), p.opts.MaxPodRecords)]
}

// conditions sets the conditions the planner owns and keeps the others.
func (p *planner) conditions(tooManyFailures bool) []metav1.Condition {
	out := slices.Clone(p.plan.Status.Conditions)
	phase := p.res.Phase
	set := func(conditionType string, status bool, reason, message string) {
		c := metav1.Condition{Type: conditionType, Status: metav1.ConditionFalse, Reason: reason, Message: message,
			ObservedGeneration: p.plan.Generation, LastTransitionTime: metav1.NewTime(p.now)}
		if status {
			c.Status = metav1.ConditionTrue
		}
		for i := range out {
			if out[i].Type != conditionType {
				continue
			}
			if out[i].Status == c.Status && out[i].Reason == c.Reason {
				c.LastTransitionTime = out[i].LastTransitionTime
			}
			out[i] = c
			return
		}
		out = append(out, c)
	}
	progressing := phase == meshv1alpha1.PhaseProgressing || phase == meshv1alpha1.PhaseRollingBack
	set(meshv1alpha1.ConditionProgressing, progressing, p.res.Reason, p.res.Message)
	set(meshv1alpha1.ConditionPaused, phase == meshv1alpha1.PhasePaused, p.res.Reason, p.res.Message)
	set(meshv1alpha1.ConditionComplete, phase == meshv1alpha1.PhaseSucceeded, p.res.Reason, p.res.Message)
	failedReason := "FailuresWithinBudget"
	if tooManyFailures {
		failedReason = ReasonTooManyFailures
	}
	set(meshv1alpha1.ConditionFailed, tooManyFailures, failedReason, fmt.Sprintf("%d pods failed; maxFailedPods is %d", p.res.Counts.Failed, p.plan.Spec.MaxFailedPods))
	set(meshv1alpha1.ConditionRolledBack, phase == meshv1alpha1.PhaseRolledBack, p.res.Reason, p.res.Message)
	return out
}

func findCondition(conditions []metav1.Condition, conditionType string) *metav1.Condition {
	for i := range conditions {
		if conditions[i].Type == conditionType {
			return &conditions[i]
		}
	}
	return nil
}

// scaled resolves a count or percentage of total, rounded up; def applies when value is nil.
func scaled(value *intstr.IntOrString, def, total int32) (int32, error) {
	if value == nil {
		return def, nil
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(value, int(total), true)
	if err != nil {
		return 0, fmt.Errorf("failed to resolve %q: %w", value.String(), err)
	}
	if n < 0 {
		return 0, fmt.Errorf("%q is negative", value.String())
	}
	return int32(min(n, 1<<30)), nil
}

// summarize counts notes by reason: "3 NotReady, 2 WorkloadRollingOut".
func summarize(notes []PodNote) string {
	counts := map[string]int{}
	for _, n := range notes {
		counts[n.Reason]++
	}
	reasons := make([]string, 0, len(counts))
	for reason := range counts {
		reasons = append(reasons, reason)
	}
	slices.Sort(reasons)
	parts := make([]string, 0, len(reasons))
	for _, reason := range reasons {
		parts = append(parts, fmt.Sprintf("%d %s", counts[reason], reason))
	}
	return strings.Join(parts, ", ")
}

// podReady reports whether the pod's Ready condition is True.
func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// workloadOf names the workload that rolls the pod's template out and the revision the pod
// belongs to: Deployment (through its ReplicaSet and pod-template-hash), StatefulSet and
// DaemonSet (controller-revision-hash). Other pods have none.
func workloadOf(pod *corev1.Pod) (key, revision string) {
	owner := metav1.GetControllerOf(pod)
	if owner == nil {
		return "", ""
	}
	switch owner.Kind {
	case "ReplicaSet":
		if hash := pod.Labels["pod-template-hash"]; hash != "" && strings.HasSuffix(owner.Name, "-"+hash) {
			return pod.Namespace + "/Deployment/" + strings.TrimSuffix(owner.Name, "-"+hash), hash
		}
	case "StatefulSet", "DaemonSet":
		return pod.Namespace + "/" + owner.Kind + "/" + owner.Name, pod.Labels["controller-revision-hash"]
	}
	return "", ""
}
