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
	"k8s.io/utils/ptr"

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
	// Retiring are the reports of the old proxies of hot-upgraded pods past their takeover
	// (phases Stabilizing and Retiring), by pod UID: what their /ready says. A pod without a
	// report waits in Retiring until its drain budget ends. nil: nothing can read the proxies, and
	// the old slot retires as soon as the health gate passes.
	Retiring map[types.UID]RetireReport
	// MeshServices are the plan's MeshServices by name; their spec.drain sets the drain budget of
	// their pods (else the target SidecarVersion's).
	MeshServices map[string]*meshv1alpha1.MeshService
}

// RetireReport is what the old proxy of a hot-upgraded pod says about itself.
type RetireReport struct {
	// Idle: the proxy serves no connection any more (it handed its listeners over and every
	// connection it kept closed, or was cut at the drain budget).
	Idle bool
	// Connections is how many connections it still serves (0 when Idle).
	Connections int32
	// Cut is how many connections it cut at the end of its drain budget.
	Cut int32
	// Error says why no report could be read ("" when it was): the pod then waits for the end of
	// its drain budget.
	Error string
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
	// ReasonRetiring: every pod runs the target, and old proxies still serve long-lived
	// connections within their drain budget.
	ReasonRetiring = "WaitingForRetiringProxies"
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
	// workload names the workload that rolls the pod's template out ("" for none);
	// workloadRollingOut is set when it has pods of several revisions.
	workload           string
	workloadRollingOut bool
	// failReason says why the pod fails its health gate now ("" when it does not).
	failReason string
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
	// failed counts the pods whose upgrade to the target failed; past maxFailedPods
	// (tooManyFailures) the plan applies failurePolicy, rollbackMode for Rollback.
	failed          int32
	tooManyFailures bool
	rollbackMode    bool
	// waiting says, by pod name, what an in-flight pod that is not acted on waits for (the
	// reason of its status.pods record; it is not written to the pod).
	waiting map[string]string
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

// run makes the decision in the order its concepts depend on each other: who is in the plan,
// whether failures changed its mode, where the pods in flight go next and where the others
// stand, how many pods may start, what phase that puts the plan in, and the starts themselves.
func (p *planner) run() error {
	members, evicting := p.admit()
	p.res.Counts.Total = int32(len(members))
	p.assessFailures(members)
	fleet := p.advanceAndSort(members)
	fleet.unavailable += evicting
	p.res.Counts.Updated, p.res.Counts.Ready, p.res.Counts.Failed = fleet.updated, fleet.ready, p.failed
	p.res.Counts.Retiring, p.res.Counts.RetiringConnections = fleet.retiring, fleet.retiringConnections
	p.res.InFlight = fleet.inFlight
	budget, err := p.budget(fleet.unavailable)
	if err != nil {
		return err
	}
	starts := p.choose(&fleet, budget)
	p.startPods(starts, &fleet)
	p.finish(members)
	return nil
}

// census is where the plan's members stand, counted while the pods in flight advance.
type census struct {
	// inFlight pods have an upgrade of this plan in flight; unavailable count against
	// maxUnavailable (in flight, not Ready, malformed, another plan's, evicted and terminating).
	inFlight, unavailable int32
	// updated run the target and are not in flight; ready are those with a ready proxy.
	updated, ready int32
	// retiring pods run the target (counted in updated) while their old proxy still serves
	// connections; retiringConnections is how many, as last reported. settling pods run the
	// target while their retired slot shrinks.
	retiring, retiringConnections, settling int32
	// walkedBack pods were walked back to the target (a target set back); rollbackFailed failed
	// their walk back under failurePolicy Rollback.
	walkedBack, rollbackFailed int32
	// candidates may start towards the target; rollbackCandidates may be walked back.
	candidates, rollbackCandidates []*podInfo
	// walkBackPending: the target was set back to where upgraded pods came from.
	walkBackPending bool
}

// admit sorts the pods into those outside the plan (Result.Ignored) and its members, decodes
// their upgrade records and finds the workloads that are rolling out themselves. evicting counts
// the terminating pods this plan evicted, which are unavailable until they are gone.
func (p *planner) admit() (members []podInfo, evicting int32) {
	name := p.plan.Name
	revisions := map[string]string{}
	rollingOut := map[string]bool{}
	members = make([]podInfo, 0, len(p.in.Pods))
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
		info := podInfo{pod: pod, state: state, ready: sidecar.PodReady(pod), malformed: stateErr != nil}
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
		info.workload = key
		members = append(members, info)
	}
	for i := range members {
		members[i].workloadRollingOut = rollingOut[members[i].workload]
	}
	return members, evicting
}

// assessFailures finds the pods that fail their health gate now and counts the failures to the
// target, which decide the plan's mode before any pod in flight is touched: past maxFailedPods,
// failurePolicy Pause stops starting pods and Rollback walks the upgraded ones back.
func (p *planner) assessFailures(members []podInfo) {
	for i := range members {
		info := &members[i]
		s := info.state
		if s == nil || s.Plan != p.plan.Name {
			continue
		}
		if s.Active() && s.Phase != PodReverting {
			info.failReason = p.failure(info)
		}
		if p.forward(s) && (s.Phase == PodFailed || s.Phase == PodReverting && s.Outcome == PodFailed || info.failReason != "") {
			p.failed++
		}
	}
	spec := p.plan.Spec
	p.tooManyFailures = p.failed > spec.MaxFailedPods
	p.rollbackMode = p.tooManyFailures && spec.FailurePolicy == meshv1alpha1.FailurePolicyRollback
}

// forward reports whether s is this plan's upgrade towards the target (not a walk back).
func (p *planner) forward(s *PodState) bool {
	return s.Plan == p.plan.Name && s.To == p.target.Name && !s.Rollback
}

// wanted reports whether the plan still wants where an in-flight pod is going.
func (p *planner) wanted(s *PodState) bool {
	if p.rollbackMode {
		return s.Rollback && s.From == p.target.Name
	}
	return s.To == p.target.Name
}

// advanceAndSort moves the pods in flight on (their actions), counts where the others stand
// and sorts those that may start into candidates, holding the ones that cannot start now.
func (p *planner) advanceAndSort(members []podInfo) census {
	name, target := p.plan.Name, p.target.Name
	var fleet census
	for i := range members {
		info := &members[i]
		pod, s := info.pod, info.state
		switch {
		case info.malformed:
			fleet.unavailable++
			continue
		case s != nil && s.Active() && s.Plan != name:
			fleet.unavailable++
			p.hold(pod, PodOwnedByOtherPlan, fmt.Sprintf("UpgradePlan %s is upgrading this pod", s.Plan))
			continue
		case s != nil && s.Active() && (s.Phase == PodRetiring || s.Phase == PodResizingDown) && info.failReason == "":
			// The new proxy took over and passed the health gate: the pod is upgraded and holds
			// no budget while its old proxy retires and its old slot shrinks, unless it is not
			// Ready for another reason.
			if s.Phase == PodRetiring {
				fleet.retiring++
				fleet.retiringConnections += p.in.Retiring[pod.UID].Connections
			} else {
				fleet.settling++
			}
			if !info.ready {
				fleet.unavailable++
			}
			if sidecar.Version(pod) == target {
				fleet.updated++
				if sidecar.ProxyReady(pod) {
					fleet.ready++
				}
			}
			p.act(p.advanceInFlight(info, p.wanted(s), ""))
			continue
		case s != nil && s.Active():
			fleet.inFlight++
			fleet.unavailable++
			if s.Rollback {
				fleet.walkBackPending = true
			}
			p.act(p.advanceInFlight(info, p.wanted(s), info.failReason))
			continue
		}
		if !info.ready {
			fleet.unavailable++
		}
		if s != nil && s.Plan == name && s.Rollback && s.Phase == PodFailed && s.From == target {
			fleet.rollbackFailed++
		}
		if sidecar.Version(pod) == target {
			fleet.updated++
			if sidecar.ProxyReady(pod) {
				fleet.ready++
			}
			if s != nil && s.Plan == name && s.Phase == PodSucceeded && s.Rollback && s.To == target {
				fleet.walkedBack++
			}
			if p.rollbackMode && s != nil && p.forward(s) && s.Phase == PodSucceeded {
				switch {
				case !info.ready:
					p.hold(pod, PodNotReady, "the pod is not Ready; it is rolled back once it is")
				case info.workloadRollingOut:
					p.hold(pod, PodWorkloadRolling, "its workload is rolling out; it is rolled back once that finished")
				default:
					fleet.rollbackCandidates = append(fleet.rollbackCandidates, info)
				}
			}
			continue
		}
		if p.rollbackMode || (s != nil && p.forward(s) && s.Phase == PodFailed) {
			continue // failed pods stay where they are; a rollback only walks upgraded pods back
		}
		switch {
		case !info.ready:
			p.hold(pod, PodNotReady, "the pod is not Ready; it is upgraded once it is")
		case info.workloadRollingOut:
			p.hold(pod, PodWorkloadRolling, fmt.Sprintf("%s is rolling out (pods of several revisions); its new pods get %s from the injector", info.workload, target))
		default:
			if s != nil && s.Plan == name && s.Phase == PodSucceeded && s.From == target && s.To == sidecar.Version(pod) {
				fleet.walkBackPending = true
			}
			fleet.candidates = append(fleet.candidates, info)
		}
	}
	return fleet
}

// budget is how many more pods may become unavailable: maxUnavailable (a count or a percentage
// of the total, rounded up, at least 1) minus the pods unavailable already.
func (p *planner) budget(unavailable int32) (int32, error) {
	maxUnavailable, err := scaled(p.plan.Spec.Strategy.MaxUnavailable, 1, p.res.Counts.Total)
	if err != nil {
		return 0, fmt.Errorf("invalid spec.strategy.maxUnavailable of UpgradePlan %s: %w", p.plan.Name, err)
	}
	maxUnavailable = max(maxUnavailable, 1)
	p.res.MaxUnavailable = maxUnavailable
	return max(maxUnavailable-unavailable, 0), nil
}

// choose sets the plan's phase, reason, message and current step, and returns the candidates
// that start now (at most budget of them), not yet sorted.
func (p *planner) choose(fleet *census, budget int32) []*podInfo {
	steps := p.plan.Spec.Strategy.Steps
	p.res.CurrentStep = min(max(p.plan.Status.CurrentStep, 0), int32(max(len(steps)-1, 0)))
	switch {
	case p.rollbackMode:
		return p.chooseRollback(fleet, budget)
	case p.tooManyFailures:
		p.res.Phase, p.res.Reason = meshv1alpha1.PhaseFailed, ReasonTooManyFailures
		p.res.Message = fmt.Sprintf("%d pods failed, more than maxFailedPods %d: failurePolicy Pause stops the plan (%d pods in flight finish); raise maxFailedPods or change the target to go on",
			p.failed, p.plan.Spec.MaxFailedPods, fleet.inFlight)
		return nil
	default:
		return p.chooseForward(fleet, budget)
	}
}

// chooseRollback is the decision under failurePolicy Rollback: walk the upgraded pods back.
func (p *planner) chooseRollback(fleet *census, budget int32) []*podInfo {
	spec := p.plan.Spec
	var starts []*podInfo
	p.res.Phase, p.res.Reason = meshv1alpha1.PhaseRollingBack, ReasonRollingBack
	if !spec.Paused {
		starts = fleet.rollbackCandidates[:min(int(budget), len(fleet.rollbackCandidates))]
	}
	// Pods that passed the health gate and still retire or shrink their old slot walk back
	// once that ends.
	left := int32(len(fleet.rollbackCandidates)) + fleet.inFlight + fleet.retiring + fleet.settling
	p.res.Message = fmt.Sprintf("%d pods failed, more than maxFailedPods %d: failurePolicy Rollback walks the upgraded pods back; %d to go, %d in flight",
		p.failed, spec.MaxFailedPods, left-fleet.inFlight-int32(len(starts)), fleet.inFlight+int32(len(starts)))
	if spec.Paused {
		p.res.Message += "; spec.paused holds new walk-backs"
	}
	if left == 0 && len(p.res.Held) == 0 {
		p.res.Phase, p.res.Reason = meshv1alpha1.PhaseRolledBack, ReasonRolledBack
		p.res.Message = fmt.Sprintf("%d pods failed, more than maxFailedPods %d: every pod the plan upgraded is back on its old version", p.failed, spec.MaxFailedPods)
		if fleet.rollbackFailed > 0 {
			p.res.Message += fmt.Sprintf(" except %d whose rollback failed", fleet.rollbackFailed)
		}
	}
	return starts
}

// chooseForward is the decision while the plan moves pods to its target: steps, pauses and
// completion.
func (p *planner) chooseForward(fleet *census, budget int32) []*podInfo {
	spec, target, total := p.plan.Spec, p.target.Name, p.res.Counts.Total
	held := len(p.res.Held) > 0
	var starts []*podInfo
	step, need, pause := p.steps(fleet.updated, p.failed, total, fleet.inFlight)
	if fleet.walkBackPending {
		// A target set back to where pods came from is a rollback: one stage, no step pauses.
		need, pause = total, ""
	}
	p.res.CurrentStep = step
	stepText := ""
	if len(spec.Strategy.Steps) > 0 {
		stepText = fmt.Sprintf("step %d/%d: ", step+1, len(spec.Strategy.Steps))
	}
	if !spec.Paused && pause == "" {
		starts = fleet.candidates[:min(int(budget), int(need), len(fleet.candidates))]
	}
	progress := fmt.Sprintf("%d of %d pods run %s, %d in flight, %d failed", fleet.updated, total, target, fleet.inFlight+int32(len(starts)), p.failed)
	if fleet.retiring > 0 {
		progress += fmt.Sprintf("; %d old proxies retire with %d connections", fleet.retiring, fleet.retiringConnections)
	}
	switch {
	case spec.Paused:
		p.res.Phase, p.res.Reason = meshv1alpha1.PhasePaused, ReasonPaused
		p.res.Message = stepText + progress + "; spec.paused is set: pods in flight finish, none starts"
	case pause != "":
		p.res.Phase, p.res.Reason = meshv1alpha1.PhasePaused, ReasonStepPause
		p.res.Message = stepText + progress + "; " + pause
	default:
		p.res.Phase, p.res.Reason = meshv1alpha1.PhaseProgressing, ReasonProgressing
		if fleet.walkBackPending {
			p.res.Phase, p.res.Reason = meshv1alpha1.PhaseRollingBack, ReasonRollingBack
		}
		p.res.Message = stepText + progress
		switch {
		case len(starts) == 0 && (len(fleet.candidates) > 0 || held) && fleet.inFlight == 0:
			p.res.Reason = ReasonWaiting
		case len(fleet.candidates) == 0 && fleet.inFlight == 0 && !held && fleet.retiring > 0:
			p.res.Reason = ReasonRetiring
		}
	}
	if len(fleet.candidates) == 0 && fleet.inFlight == 0 && fleet.retiring == 0 && fleet.settling == 0 && !held {
		p.complete(fleet)
	}
	return starts
}

// complete is the decision of a plan with nothing left to do.
func (p *planner) complete(fleet *census) {
	total, target := p.res.Counts.Total, p.target.Name
	p.res.Phase, p.res.Reason = meshv1alpha1.PhaseSucceeded, ReasonCompleted
	p.res.CurrentStep = int32(max(len(p.plan.Spec.Strategy.Steps)-1, 0))
	p.res.Message = fmt.Sprintf("all %d pods run %s", total, target)
	if fleet.walkedBack > 0 {
		p.res.Phase, p.res.Reason = meshv1alpha1.PhaseRolledBack, ReasonRolledBack
		p.res.Message = fmt.Sprintf("the target was set back: all %d pods run %s again", total, target)
	}
	if p.failed > 0 {
		p.res.Reason = ReasonCompletedWithFailures
		p.res.Message = fmt.Sprintf("%d of %d pods run %s; %d failed and stay on their old version", fleet.updated, total, target, p.failed)
	}
}

// startPods starts the upgrades of starts, which choose took from the front of the candidates:
// the candidates are sorted by namespace and name first (only when some start), so that which
// pod is next is deterministic. A pod that cannot start is held.
func (p *planner) startPods(starts []*podInfo, fleet *census) {
	if len(starts) > 0 {
		pool := fleet.candidates
		if p.rollbackMode {
			pool = fleet.rollbackCandidates
		}
		slices.SortFunc(pool, func(a, b *podInfo) int {
			return cmp.Or(cmp.Compare(a.pod.Namespace, b.pod.Namespace), cmp.Compare(a.pod.Name, b.pod.Name))
		})
		starts = pool[:len(starts)]
	}
	for _, info := range starts {
		action, err := p.start(info, p.rollbackMode)
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
			fleet.inFlight++
			fleet.unavailable++ // candidates are Ready, so not counted yet
		}
	}
	p.res.InFlight = fleet.inFlight
	p.res.Unavailable = fleet.unavailable
}

// finish completes the result: the held pods in the message, the actions in pod order, the
// status.pods records, the conditions and when to decide again.
func (p *planner) finish(members []podInfo) {
	if len(p.res.Held) > 0 {
		p.res.Message += "; " + summarize(p.res.Held) + " held"
	}
	slices.SortFunc(p.res.Actions, func(a, b Action) int {
		return cmp.Or(cmp.Compare(a.Pod.Namespace, b.Pod.Namespace), cmp.Compare(a.Pod.Name, b.Pod.Name))
	})
	p.records(members)
	p.res.Conditions = p.conditions(p.tooManyFailures)
	p.res.RequeueAfter = p.requeue
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

// waitFor records what an in-flight pod waits for, for its status.pods record.
func (p *planner) waitFor(pod *corev1.Pod, why string) {
	if why == "" {
		return
	}
	if p.waiting == nil {
		p.waiting = map[string]string{}
	}
	p.waiting[pod.Name] = why
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
		if report, ok := p.in.Retiring[members[i].pod.UID]; ok && s.Phase == PodRetiring && report.Error == "" {
			record.Connections = ptr.To(report.Connections)
		}
		switch {
		case s.Active():
			if why := p.waiting[members[i].pod.Name]; why != "" && next[members[i].pod.Name] == nil {
				record.Reason = why
			}
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
