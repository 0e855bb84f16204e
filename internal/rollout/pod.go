package rollout

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/proxyconfig"
	"github.com/meshlift/meshlift/internal/sidecar"
)

// Container waiting reasons that mean the new proxy will not come up by itself: the pod fails at
// once instead of at the deadline.
var fatalWaitingReasons = map[string]bool{
	"CrashLoopBackOff": true, "ErrImagePull": true, "ImagePullBackOff": true,
	"InvalidImageName": true, "CreateContainerConfigError": true, "CreateContainerError": true,
}

// PodStrategy is how one pod moves from one version to another under the plan's strategy type:
// Recreate and InPlace as asked; HotUpgrade only when the pod has both slots and both versions
// speak the same handoff protocol (an unknown from-version cannot be trusted to), else InPlace.
func PodStrategy(planType meshv1alpha1.StrategyType, pod *corev1.Pod, from, to *meshv1alpha1.SidecarVersion) meshv1alpha1.StrategyType {
	switch planType {
	case meshv1alpha1.StrategyRecreate, meshv1alpha1.StrategyInPlace:
		return planType
	}
	if sidecar.HotUpgradeCapable(pod) && from != nil && to != nil && from.HotUpgradeCapable() && to.HotUpgradeCapable() &&
		from.Spec.HotUpgrade.Protocol == to.Spec.HotUpgrade.Protocol && to.Spec.IdleImage != "" {
		return meshv1alpha1.StrategyHotUpgrade
	}
	return meshv1alpha1.StrategyInPlace
}

// start returns the first action of a pod's upgrade to the target, or back to the version it came
// from when rollback is set.
func (p *planner) start(info *podInfo, rollback bool) (*Action, error) {
	pod := info.pod
	fromName := sidecar.Version(pod)
	from := p.in.Versions[fromName]
	to := p.target
	walkBack := rollback
	if info.state != nil && info.state.Plan == p.plan.Name && info.state.Phase == PodSucceeded && info.state.From == p.target.Name {
		walkBack = true // the target was set back to where this pod came from
	}
	if rollback {
		to = p.in.Versions[info.state.From]
		if to == nil {
			return nil, fmt.Errorf("cannot roll back to %s: %w", info.state.From, ErrVersionNotFound)
		}
	}
	attempt := int32(1)
	if s := info.state; s != nil && s.Plan == p.plan.Name && s.To == to.Name && s.Attempt < 1000 {
		attempt = s.Attempt + 1
	}
	state := &PodState{
		Plan: p.plan.Name, From: fromName, To: to.Name, Rollback: walkBack,
		Strategy:  PodStrategy(p.plan.Spec.Strategy.Type, pod, from, to),
		ToImage:   to.Spec.Image,
		StartedAt: p.now, PhaseSince: p.now, Attempt: attempt,
	}
	action := &Action{Pod: key(pod), UID: pod.UID, State: state}
	switch state.Strategy {
	case meshv1alpha1.StrategyHotUpgrade:
		state.FromSlot, state.Slot = sidecar.ActiveSlot(pod), sidecar.IdleSlot(pod)
		state.FromImage, state.IdleImage = sidecar.SlotImage(pod, state.FromSlot), sidecar.SlotImage(pod, state.Slot)
		state.ToIdleImage = to.Spec.IdleImage
		if sameImage(state.IdleImage, to.Spec.Image) {
			// The kubelet would not restart a container whose image does not change, so its
			// readiness could not tell that the target took the listeners over.
			return nil, fmt.Errorf("%w: %s runs image %s, which slot %d already runs; give the version an image of its own",
				errImageNotDistinct, to.Name, to.Spec.Image, state.Slot)
		}
		if p.opts.FullIdleResources {
			return p.swapSlot(pod, state)
		}
		progress, _ := slotResize(pod, state.Slot, to.Spec.Resources)
		if progress == resizeApplied {
			return p.swapSlot(pod, state)
		}
		state.Phase = PodResizingUp
		action.Kind = ActionResizeSlotUp
		if progress == resizeNotAsked {
			// A slot whose spec already has the resources waits for the kubelet instead.
			action.Resize = &Resize{Slot: state.Slot, Container: sidecar.SlotContainerName(state.Slot), Resources: *to.Spec.Resources.DeepCopy()}
		}
		action.Reason = fmt.Sprintf("start %s %s -> %s", state.Strategy, state.From, state.To)
		p.wake(p.now.Add(p.deadline))
		return action, nil
	case meshv1alpha1.StrategyInPlace:
		state.Slot = sidecar.ActiveSlot(pod)
		state.FromImage = sidecar.SlotImage(pod, state.Slot)
		state.Phase = PodDraining
		action.Kind = ActionExclude
		action.Annotations = []AnnotationChange{{Key: meshv1alpha1.AnnotationEDSExcluded, Value: "true"}}
		if sidecar.HasProxyReadinessGate(pod) {
			action.ProxyReadyGate = ptr.To(corev1.ConditionFalse)
		}
		action.Reason = fmt.Sprintf("start %s %s -> %s", state.Strategy, state.From, state.To)
		p.wake(p.now.Add(p.opts.DrainDuration))
		return action, nil
	default:
		state.Phase = PodEvicting
		action.Kind = ActionEvict
		action.Evict = true
		action.Reason = fmt.Sprintf("start %s %s -> %s", state.Strategy, state.From, state.To)
		p.wake(p.now.Add(p.deadline))
		return action, nil
	}
}

// errImageNotDistinct: a hot upgrade to an image the idle slot already runs cannot be observed.
var errImageNotDistinct = errors.New("the target's image is the idle slot's image")

// swapSlot is the one patch that starts the takeover: the idle slot runs the target and becomes
// the active slot. sidecar.WithSlotRunning says what that looks like.
func (p *planner) swapSlot(pod *corev1.Pod, s *PodState) (*Action, error) {
	images, annotations, err := slotRunning(pod, s.Slot, s.To, s.ToImage)
	if err != nil {
		return nil, err
	}
	// The old proxy reads its drain budget from the pod when it hands over, right after this
	// patch: the budget the MeshService or the target asks for goes with it.
	budget := sidecar.DrainBudget(p.in.MeshServices[pod.Annotations[meshv1alpha1.AnnotationMeshService]], p.in.Versions[s.To])
	if budget != "" && pod.Annotations[proxyconfig.DrainMaxDurationAnnotation] != budget {
		annotations = append(annotations, AnnotationChange{Key: proxyconfig.DrainMaxDurationAnnotation, Value: budget})
	}
	next := p.enter(s, PodWaitingReady)
	p.wake(s.StartedAt.Add(p.deadline))
	return &Action{Pod: key(pod), UID: pod.UID, Kind: ActionSwapSlot, State: next, Images: images, Annotations: annotations,
		Reason: fmt.Sprintf("slot %d takes over from slot %d", s.Slot, s.FromSlot)}, nil
}

// advanceInFlight decides the next step of a pod whose upgrade is in flight. failReason is set
// when the pod failed its health gate; wanted is false when the plan no longer wants where the
// pod is going (target changed, rollback started).
func (p *planner) advanceInFlight(info *podInfo, wanted bool, failReason string) *Action {
	pod, s := info.pod, info.state
	if s.Phase == PodReverting {
		return p.continueRevert(pod, s)
	}
	if failReason != "" {
		return p.revert(pod, s, PodFailed, failReason)
	}
	if !wanted && s.Phase != PodResizingDown && s.Phase != PodRetiring {
		// The new proxy took over already: the old slot retires and shrinks as it would have,
		// and the pod starts again from there if the plan wants it elsewhere.
		return p.revert(pod, s, PodAborted, fmt.Sprintf("the plan no longer moves pods to %s", s.To))
	}
	switch s.Phase {
	case PodResizingUp:
		to := p.in.Versions[s.To]
		if to == nil {
			return p.revert(pod, s, PodAborted, fmt.Sprintf("SidecarVersion %s is gone", s.To))
		}
		switch progress, why := slotResize(pod, s.Slot, to.Spec.Resources); progress {
		case resizeNotAsked:
			p.wake(s.StartedAt.Add(p.deadline))
			return &Action{Pod: key(pod), UID: pod.UID, Kind: ActionResizeSlotUp, Reason: "the pod's spec does not have the resize yet",
				Resize: &Resize{Slot: s.Slot, Container: sidecar.SlotContainerName(s.Slot), Resources: *to.Spec.Resources.DeepCopy()}}
		case resizeWaiting, resizeInfeasible: // failure() fails an infeasible resize
			p.waitFor(pod, why)
			p.wake(s.StartedAt.Add(p.deadline))
			return nil
		}
		action, err := p.swapSlot(pod, s)
		if err != nil {
			return p.revert(pod, s, PodFailed, err.Error())
		}
		return action
	case PodDraining:
		drained, confirmed, reason := p.drained(pod, s)
		if !drained {
			return nil
		}
		next := p.enter(s, PodWaitingReady)
		images, annotations, err := slotRunning(pod, s.Slot, s.To, s.ToImage)
		if err != nil {
			return p.revert(pod, s, PodFailed, err.Error())
		}
		p.wake(s.StartedAt.Add(p.deadline))
		return &Action{Pod: key(pod), UID: pod.UID, Kind: ActionSwapImage, State: next, Images: images, Annotations: annotations,
			Reason: reason + "; restart its proxy on " + s.To, DrainUnconfirmed: !confirmed}
	case PodWaitingReady:
		if !slotReady(pod, s.Slot, s.ToImage) {
			p.wake(s.StartedAt.Add(p.deadline))
			return nil
		}
		next := p.enter(s, PodStabilizing)
		next.ReadySince = ptr.To(p.now)
		if p.minReady == 0 {
			return p.finishReady(pod, next)
		}
		p.wake(p.now.Add(p.minReady))
		return &Action{Pod: key(pod), UID: pod.UID, Kind: ActionRecordReady, State: next,
			Reason: fmt.Sprintf("the new proxy is ready; it must stay ready for %s", p.minReady)}
	case PodStabilizing:
		if !slotReady(pod, s.Slot, s.ToImage) {
			// Not ready any more (failure() already failed crash loops and a passed deadline):
			// wait again. The kubelet can report a restarted container ready for a moment before
			// its probe runs; a flap must not count as stable, nor fail the pod early.
			next := p.enter(s, PodWaitingReady)
			next.ReadySince = nil
			p.wake(s.StartedAt.Add(p.deadline))
			return &Action{Pod: key(pod), UID: pod.UID, Kind: ActionRecordReady, State: next,
				Reason: "the new proxy is not ready any more; waiting for it again"}
		}
		if until := s.ReadySince.Add(p.minReady); p.now.Before(until) {
			p.wake(until)
			return nil
		}
		return p.finishReady(pod, s)
	case PodRetiring:
		return p.retire(pod, s)
	case PodResizingDown:
		return p.shrinkRetiredSlot(pod, s)
	case PodEvicting:
		p.wake(s.StartedAt.Add(p.deadline))
		return &Action{Pod: key(pod), UID: pod.UID, Kind: ActionEvict, Evict: true, Reason: "the pod is not evicted yet"}
	}
	return nil
}

// shrinkRetiredSlot waits a little for the retired slot to shrink to the idle resources, then
// records that the pod runs the target. The new proxy is active and healthy by then, so the
// shrink never fails the pod nor holds the plan's budget for long: once the kubelet says it
// cannot apply the resize now (Infeasible, Deferred, or an error it retries, such as a memory
// limit it may not lower while it cannot read the container's usage), or after shrinkGrace, the
// upgrade ends with the slot's resources as they are, the record says why, and the kubelet goes
// on with the resize it was asked for (the pod's spec has it) by itself.
func (p *planner) shrinkRetiredSlot(pod *corev1.Pod, s *PodState) *Action {
	// The reasons stay well under the record's 512 bytes: the kubelet's part is cut to 256.
	finish := func(reason string) *Action {
		next := p.enter(s, PodSucceeded)
		next.Reason = reason
		return &Action{Pod: key(pod), UID: pod.UID, Kind: ActionFinish, State: next, Reason: cmp.Or(reason, "the pod runs "+s.To)}
	}
	progress, why := slotResize(pod, s.FromSlot, p.opts.IdleResources)
	switch {
	case progress == resizeNotAsked:
		return &Action{Pod: key(pod), UID: pod.UID, Kind: ActionResizeSlotDown, Reason: "the pod's spec does not have the resize yet",
			Resize: &Resize{Slot: s.FromSlot, Container: sidecar.SlotContainerName(s.FromSlot), Resources: *p.opts.IdleResources.DeepCopy()}}
	case progress == resizeInfeasible:
		return finish(fmt.Sprintf("slot %d keeps its resources: %s", s.FromSlot, why))
	case progress == resizeWaiting && kubeletHoldsResize(pod):
		return finish(fmt.Sprintf("slot %d keeps its resources for now: %s", s.FromSlot, why))
	case progress == resizeWaiting:
		grace := min(p.deadline, shrinkGrace)
		if until := s.PhaseSince.Add(grace); p.now.Before(until) {
			p.waitFor(pod, why)
			p.wake(until)
			return nil
		}
		return finish(fmt.Sprintf("slot %d was not shrunk within %s: %s", s.FromSlot, grace, why))
	}
	return finish("")
}

// shrinkGrace is how long the shrink of a retired slot may hold a pod's upgrade: the kubelet
// applies a resize it can apply within seconds.
const shrinkGrace = 30 * time.Second

// kubeletHoldsResize reports whether the kubelet says it will not apply the pod's resize now: it
// deferred it, or applying it failed and it retries later.
func kubeletHoldsResize(pod *corev1.Pod) bool {
	if c := podCondition(pod, corev1.PodResizePending); c != nil && c.Reason == corev1.PodReasonDeferred {
		return true
	}
	c := podCondition(pod, corev1.PodResizeInProgress)
	return c != nil && c.Reason == corev1.PodReasonError
}

// drained says whether an InPlace pod excluded from EDS may have its proxy restarted, whether
// that is confirmed (Input.Drain) rather than assumed (a fixed wait, a timeout), and why; when
// not, it schedules the next look.
func (p *planner) drained(pod *corev1.Pod, s *PodState) (drained, confirmed bool, reason string) {
	if p.in.Drain == nil {
		if until := s.PhaseSince.Add(p.opts.DrainDuration); p.now.Before(until) {
			p.wake(until)
			return false, false, ""
		}
		return true, true, fmt.Sprintf("the pod is out of the endpoints for %s", p.opts.DrainDuration)
	}
	var waiting []string
	for _, replica := range p.in.Drain.Replicas {
		if pod.Annotations[meshv1alpha1.EDSAckAnnotation(replica)] == "" {
			waiting = append(waiting, "control-plane replica "+replica)
		}
	}
	serving := sidecar.HasProxyReadinessGate(pod) && p.in.Drain.Serving[pod.UID]
	if serving {
		waiting = append(waiting, "its Services' EndpointSlices")
	}
	if len(waiting) == 0 {
		return true, true, "every client proxy applied endpoints without the pod"
	}
	// At most half the progress deadline, so that the restart has the other half.
	limit := min(p.opts.DrainTimeout, p.deadline/2)
	if timeout := s.PhaseSince.Add(limit); p.now.Before(timeout) {
		p.wake(timeout)
		if serving {
			p.wake(p.now.Add(drainRecheck))
		}
		return false, false, ""
	}
	return true, false, fmt.Sprintf("the drain was not confirmed within %s (waiting for %s)", limit, strings.Join(waiting, ", "))
}

// finishReady ends the health gate: the old slot retires (HotUpgrade) once its proxy serves no
// connection any more, or the pod returns to the endpoints (InPlace).
func (p *planner) finishReady(pod *corev1.Pod, s *PodState) *Action {
	if s.Strategy == meshv1alpha1.StrategyInPlace {
		return p.restore(pod, p.enter(s, PodSucceeded), ActionRestore, "the new proxy passed the health gate")
	}
	if report, ok := p.in.Retiring[pod.UID]; p.in.Retiring != nil && (!ok || !report.Idle) {
		budget := proxyconfig.DefaultDrainMaxDuration
		if d, ok, _ := proxyconfig.DrainMaxDuration(pod.Annotations); ok {
			budget = d
		}
		next := p.enter(s, PodRetiring)
		next.RetireBy = ptr.To(p.now.Add(budget + RetireGrace))
		p.wake(p.now.Add(RetirePoll))
		reason := "the new proxy passed the health gate; the old proxy still serves connections that cannot move without loss"
		if !ok || report.Error != "" {
			reason = "the new proxy passed the health gate; the old proxy's connections are not known yet"
		}
		return &Action{Pod: key(pod), UID: pod.UID, Kind: ActionStartRetiring, State: next,
			Reason: fmt.Sprintf("%s; its slot retires when they end or after its drain budget (%s)", reason, budget)}
	}
	return p.retireSlot(pod, s, "the new proxy passed the health gate", 0)
}

// RetirePoll is how often the old proxy of a Retiring pod is asked how many connections it
// still serves; RetireGrace is how long past its drain budget its slot waits for the proxy to
// say it cut them (the budget counts from the takeover, which is earlier than the health gate's
// end, so the proxy's own deadline comes first).
const (
	RetirePoll  = 5 * time.Second
	RetireGrace = 30 * time.Second
)

// retire decides about a Retiring pod: its old slot retires once the old proxy serves no
// connection, or has stopped running, or the drain budget and its grace passed.
func (p *planner) retire(pod *corev1.Pod, s *PodState) *Action {
	report, ok := p.in.Retiring[pod.UID]
	switch {
	case p.in.Retiring == nil:
		return p.retireSlot(pod, s, "the old proxy's connections cannot be read", 0)
	case !slotRunningImage(pod, s.FromSlot, s.FromImage):
		return p.retireSlot(pod, s, "the old proxy is not running any more", 0)
	case ok && report.Idle && report.Cut > 0:
		return p.retireSlot(pod, s, fmt.Sprintf("the old proxy cut %d connections at the end of its drain budget", report.Cut), report.Cut)
	case ok && report.Idle:
		return p.retireSlot(pod, s, "the old proxy's last connection closed", 0)
	case !p.now.Before(*s.RetireBy):
		why := fmt.Sprintf("the old proxy still served %d connections when its drain budget and %s of grace ended", report.Connections, RetireGrace)
		if !ok || report.Error != "" {
			why = fmt.Sprintf("the old proxy's connections could not be read (%s) until its drain budget and %s of grace ended", cmp.Or(report.Error, "no report"), RetireGrace)
		}
		action := p.retireSlot(pod, s, why, 0)
		action.ConnectionsCut = true
		return action
	}
	if ok && report.Error != "" {
		p.waitFor(pod, "cannot read the old proxy's /ready: "+report.Error)
	}
	p.wake(p.now.Add(RetirePoll))
	p.wake(*s.RetireBy)
	return nil
}

// retireSlot gives the old slot the idle image and resources: its proxy stops. cut is how many
// connections the proxy reported cut at its drain budget.
func (p *planner) retireSlot(pod *corev1.Pod, s *PodState, reason string, cut int32) *Action {
	action := &Action{Pod: key(pod), UID: pod.UID, Kind: ActionRetireSlot, Reason: reason, ConnectionsCut: cut > 0,
		Images: []ImageChange{{Slot: s.FromSlot, Container: sidecar.SlotContainerName(s.FromSlot), Image: s.ToIdleImage}}}
	if p.opts.FullIdleResources {
		action.State = p.enter(s, PodSucceeded)
		return action
	}
	action.State = p.enter(s, PodResizingDown)
	action.Resize = &Resize{Slot: s.FromSlot, Container: sidecar.SlotContainerName(s.FromSlot), Resources: *p.opts.IdleResources.DeepCopy()}
	return action
}

// restore puts the pod back into the endpoints (InPlace) with state next.
func (p *planner) restore(pod *corev1.Pod, next *PodState, kind ActionKind, reason string) *Action {
	action := &Action{Pod: key(pod), UID: pod.UID, Kind: kind, State: next, Reason: reason,
		Annotations: []AnnotationChange{{Key: meshv1alpha1.AnnotationEDSExcluded, Remove: true}}}
	// The drain acknowledgements go with the exclusion they acknowledged.
	for _, k := range slices.Sorted(maps.Keys(pod.Annotations)) {
		if strings.HasPrefix(k, meshv1alpha1.AnnotationPrefixEDSAck) {
			action.Annotations = append(action.Annotations, AnnotationChange{Key: k, Remove: true})
		}
	}
	if sidecar.HasProxyReadinessGate(pod) {
		action.ProxyReadyGate = ptr.To(corev1.ConditionTrue)
	}
	return action
}

// failure says why an in-flight pod failed its health gate, or "".
func (p *planner) failure(info *podInfo) string {
	pod, s := info.pod, info.state
	switch s.Phase {
	case PodResizingUp, PodDraining, PodWaitingReady, PodEvicting:
		var resizeWait string
		if to := p.in.Versions[s.To]; s.Phase == PodResizingUp && to != nil {
			progress, why := slotResize(pod, s.Slot, to.Spec.Resources)
			if progress == resizeInfeasible {
				return why
			}
			resizeWait = why
		}
		if s.Phase == PodWaitingReady {
			if reason := fatalContainerReason(pod, s.Slot); reason != "" {
				return fmt.Sprintf("container %s is %s", sidecar.SlotContainerName(s.Slot), reason)
			}
		}
		if !p.now.Before(s.StartedAt.Add(p.deadline)) {
			if s.Phase == PodEvicting {
				return fmt.Sprintf("not evicted within progressDeadlineSeconds (%s); a PodDisruptionBudget may block it", p.deadline)
			}
			if resizeWait != "" {
				return fmt.Sprintf("the idle slot was not resized within progressDeadlineSeconds (%s): %s", p.deadline, resizeWait)
			}
			return fmt.Sprintf("the new proxy was not ready within progressDeadlineSeconds (%s, phase %s)", p.deadline, s.Phase)
		}
	case PodRetiring:
		// The pod passed its health gate: only a new proxy that cannot run any more fails it
		// (the old one resumed serving), not one that is not ready for a moment.
		if reason := fatalContainerReason(pod, s.Slot); reason != "" {
			return fmt.Sprintf("container %s is %s while the old proxy retired", sidecar.SlotContainerName(s.Slot), reason)
		}
	case PodStabilizing:
		if reason := fatalContainerReason(pod, s.Slot); reason != "" {
			return fmt.Sprintf("container %s is %s after it became ready", sidecar.SlotContainerName(s.Slot), reason)
		}
		if !slotReady(pod, s.Slot, s.ToImage) && !p.now.Before(s.StartedAt.Add(p.deadline)) {
			return fmt.Sprintf("the new proxy stopped being ready %s after it became ready and progressDeadlineSeconds (%s) passed",
				p.now.Sub(*s.ReadySince), p.deadline)
		}
	}
	return ""
}

// revert starts putting the pod back on s.From; outcome is PodFailed or PodAborted.
func (p *planner) revert(pod *corev1.Pod, s *PodState, outcome PodPhase, reason string) *Action {
	end := func(kind ActionKind) *Action {
		next := p.enter(s, outcome)
		next.Reason = reason
		return &Action{Pod: key(pod), UID: pod.UID, Kind: kind, State: next, Reason: reason}
	}
	mark := ActionMarkFailed
	if outcome == PodAborted {
		mark = ActionMarkAborted
	}
	reverting := p.enter(s, PodReverting)
	reverting.Outcome, reverting.Reason = outcome, reason

	switch s.Strategy {
	case meshv1alpha1.StrategyHotUpgrade:
		swapped := s.Phase == PodWaitingReady || s.Phase == PodStabilizing || s.Phase == PodRetiring
		action := p.revertSlots(pod, s, swapped)
		action.Reason = reason
		if action.Resize != nil {
			action.State = reverting
			return action
		}
		// The patch alone (or nothing at all) undoes the upgrade: record the outcome with it.
		action.State = end(mark).State
		if !swapped {
			action.Kind = mark
		}
		return action
	case meshv1alpha1.StrategyInPlace:
		if s.Phase == PodDraining {
			next := p.enter(s, outcome)
			next.Reason = reason
			return p.restore(pod, next, ActionRevert, reason)
		}
		images, annotations, err := slotRunning(pod, s.Slot, s.From, s.FromImage)
		if err != nil {
			return end(mark) // nothing we can patch: leave the pod as it is, recorded
		}
		p.wake(p.now.Add(p.deadline))
		return &Action{Pod: key(pod), UID: pod.UID, Kind: ActionRevert, State: reverting, Images: images, Annotations: annotations, Reason: reason}
	default:
		return end(mark)
	}
}

// revertSlots is the patch (and resize) that undoes a hot upgrade: the old slot, which still runs
// the old proxy, is active again and the new slot gets its idle image and resources back.
func (p *planner) revertSlots(pod *corev1.Pod, s *PodState, swapped bool) *Action {
	action := &Action{Pod: key(pod), UID: pod.UID, Kind: ActionRevert}
	if swapped {
		images, annotations, err := slotRunning(pod, s.FromSlot, s.From, s.FromImage)
		if err == nil {
			action.Images = append([]ImageChange{{Slot: s.Slot, Container: sidecar.SlotContainerName(s.Slot), Image: s.IdleImage}}, images...)
			action.Annotations = annotations
		}
	}
	if !p.opts.FullIdleResources && !resourcesEqual(sidecar.Container(pod, s.Slot).Resources, p.opts.IdleResources) {
		action.Resize = &Resize{Slot: s.Slot, Container: sidecar.SlotContainerName(s.Slot), Resources: *p.opts.IdleResources.DeepCopy()}
	}
	return action
}

// continueRevert waits for a revert to take effect and then records its outcome.
func (p *planner) continueRevert(pod *corev1.Pod, s *PodState) *Action {
	next := p.enter(s, s.Outcome)
	next.Outcome = ""
	mark := ActionMarkFailed
	if s.Outcome == PodAborted {
		mark = ActionMarkAborted
	}
	switch s.Strategy {
	case meshv1alpha1.StrategyHotUpgrade:
		swappedBack := sidecar.ActiveSlot(pod) == s.FromSlot && sidecar.Version(pod) == s.From && sidecar.SlotImage(pod, s.Slot) == s.IdleImage
		action := p.revertSlots(pod, s, !swappedBack)
		if swappedBack && action.Resize == nil {
			return &Action{Pod: key(pod), UID: pod.UID, Kind: mark, State: next, Reason: s.Reason}
		}
		action.Reason = "the revert is not applied yet"
		return action
	case meshv1alpha1.StrategyInPlace:
		if until := s.PhaseSince.Add(p.deadline); !slotReady(pod, s.Slot, s.FromImage) && p.now.Before(until) {
			p.wake(until)
			return nil
		}
		return p.restore(pod, next, mark, s.Reason)
	default:
		return &Action{Pod: key(pod), UID: pod.UID, Kind: mark, State: next, Reason: s.Reason}
	}
}

// enter returns a copy of s in phase.
func (p *planner) enter(s *PodState, phase PodPhase) *PodState {
	next := *s
	next.Phase, next.PhaseSince = phase, p.now
	if next.PhaseSince.Before(next.StartedAt) {
		next.PhaseSince = next.StartedAt // a clock that went back must not make the state invalid
	}
	if phase != PodReverting {
		next.Outcome = ""
	}
	if phase != PodRetiring {
		next.RetireBy = nil
	}
	return &next
}

// slotRunning is the change that makes slot run version (image) and, for a two-slot pod, own
// the listeners: what sidecar.WithSlotRunning renders, as image and annotation changes. The
// single proxy container (slot 0) only changes its image and the version annotation.
func slotRunning(pod *corev1.Pod, slot int, version, image string) ([]ImageChange, []AnnotationChange, error) {
	if slot == 0 {
		if sidecar.Container(pod, 0) == nil {
			return nil, nil, fmt.Errorf("pod %s has no proxy container", key(pod))
		}
		return []ImageChange{{Slot: 0, Container: sidecar.ContainerName, Image: image}},
			[]AnnotationChange{{Key: meshv1alpha1.AnnotationVersion, Value: version}}, nil
	}
	v := &meshv1alpha1.SidecarVersion{}
	v.Name, v.Spec.Image = version, image
	out, err := sidecar.WithSlotRunning(slotsOnly(pod), slot, v)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to render slot %d running %s: %w", slot, version, err)
	}
	return []ImageChange{{Slot: slot, Container: sidecar.SlotContainerName(slot), Image: sidecar.SlotImage(out, slot)}},
		[]AnnotationChange{
			{Key: meshv1alpha1.AnnotationActiveSlot, Value: out.Annotations[meshv1alpha1.AnnotationActiveSlot]},
			{Key: meshv1alpha1.AnnotationVersion, Value: out.Annotations[meshv1alpha1.AnnotationVersion]},
		}, nil
}

// slotsOnly is the part of pod that sidecar.WithSlotRunning reads and writes: annotations and the
// slot containers' names and images. It saves a deep copy of the whole pod per action.
func slotsOnly(pod *corev1.Pod) *corev1.Pod {
	slim := &corev1.Pod{}
	slim.Name, slim.Namespace, slim.Annotations = pod.Name, pod.Namespace, pod.Annotations
	for _, slot := range []int{1, 2} {
		if c := sidecar.Container(pod, slot); c != nil {
			slim.Spec.Containers = append(slim.Spec.Containers, corev1.Container{Name: c.Name, Image: c.Image})
		}
	}
	return slim
}

// slotReady reports whether the slot's container is ready and runs image: a status that still
// shows the previous image (the kubelet has not restarted the container yet) does not count.
func slotReady(pod *corev1.Pod, slot int, image string) bool {
	status := containerStatus(pod, sidecar.SlotContainerName(slot))
	return status != nil && status.Ready && status.State.Running != nil && sameImage(status.Image, image)
}

// slotRunningImage reports whether slot's container runs image (ready or not).
func slotRunningImage(pod *corev1.Pod, slot int, image string) bool {
	status := containerStatus(pod, sidecar.SlotContainerName(slot))
	return status != nil && status.State.Running != nil && sameImage(status.Image, image)
}

func fatalContainerReason(pod *corev1.Pod, slot int) string {
	status := containerStatus(pod, sidecar.SlotContainerName(slot))
	if status == nil || status.State.Waiting == nil || !fatalWaitingReasons[status.State.Waiting.Reason] {
		return ""
	}
	return status.State.Waiting.Reason
}

func containerStatus(pod *corev1.Pod, name string) *corev1.ContainerStatus {
	for _, statuses := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses} {
		for i := range statuses {
			if statuses[i].Name == name {
				return &statuses[i]
			}
		}
	}
	return nil
}

// sameImage compares image references as the kubelet reports them: containerd reports
// "docker.io/library/x:latest" for "x".
func sameImage(reported, wanted string) bool {
	return reported == wanted || normalizeImage(reported) == normalizeImage(wanted)
}

func normalizeImage(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		return image // digests are compared as written
	}
	name, tag := image, "latest"
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		name, tag = image[:i], image[i+1:]
	}
	first, _, found := strings.Cut(name, "/")
	if !found || (!strings.ContainsAny(first, ".:") && first != "localhost") {
		name = "docker.io/" + name
	}
	if strings.HasPrefix(name, "docker.io/") && strings.Count(name, "/") == 1 {
		name = "docker.io/library/" + strings.TrimPrefix(name, "docker.io/")
	}
	return name + ":" + tag
}

// resourcesEqual compares requests and limits by quantity, ignoring how they are written.
func resourcesEqual(a, b corev1.ResourceRequirements) bool {
	return listEqual(a.Requests, b.Requests) && listEqual(a.Limits, b.Limits)
}

func listEqual(a, b corev1.ResourceList) bool {
	if len(a) != len(b) {
		return false
	}
	for name, qa := range a {
		qb, ok := b[name]
		if !ok || qa.Cmp(qb) != 0 {
			return false
		}
	}
	return true
}

func key(pod *corev1.Pod) types.NamespacedName {
	return types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}
}
