package rollout

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
)

// PodPhase is the step of one pod's upgrade: what the pod is waiting for after the last action.
type PodPhase string

// Pod phases. A phase is written together with (or right before) the action that leads into it,
// so the annotation always says what to check next.
const (
	// PodResizingUp waits for the idle slot to carry the target's resources (HotUpgrade).
	PodResizingUp PodPhase = "ResizingUp"
	// PodDraining waits for client proxies to stop sending to a pod excluded from EDS (InPlace).
	PodDraining PodPhase = "Draining"
	// PodWaitingReady waits for the container that runs the target to become ready: for a hot
	// upgrade that is the takeover of the listeners.
	PodWaitingReady PodPhase = "WaitingReady"
	// PodStabilizing waits until the new proxy has been ready for minReadySeconds.
	PodStabilizing PodPhase = "Stabilizing"
	// PodRetiring: the new proxy took over and passed the health gate (the pod counts as
	// updated and no longer holds the availability budget), while the old proxy still serves the
	// connections that could not move without loss (HotUpgrade). The old slot keeps its image
	// and resources until its last connection closed or its drain budget ended.
	PodRetiring PodPhase = "Retiring"
	// PodResizingDown waits for the retired slot to shrink to the idle resources (HotUpgrade).
	PodResizingDown PodPhase = "ResizingDown"
	// PodEvicting waits for the evicted pod to terminate (Recreate).
	PodEvicting PodPhase = "Evicting"
	// PodReverting waits for the pod to be back on its old version; Outcome says why.
	PodReverting PodPhase = "Reverting"

	// PodSucceeded, PodFailed and PodAborted are terminal: the pod is no longer in flight. The
	// record stays on the pod, so that a rollback knows where the pod came from and failures are
	// still counted after an operator restart.
	PodSucceeded PodPhase = "Succeeded"
	PodFailed    PodPhase = "Failed"
	PodAborted   PodPhase = "Aborted"
)

// Terminal reports whether the phase ends the pod's upgrade.
func (p PodPhase) Terminal() bool {
	return p == PodSucceeded || p == PodFailed || p == PodAborted
}

var knownPhases = map[PodPhase]bool{
	PodResizingUp: true, PodDraining: true, PodWaitingReady: true, PodStabilizing: true, PodRetiring: true, PodResizingDown: true,
	PodEvicting: true, PodReverting: true, PodSucceeded: true, PodFailed: true, PodAborted: true,
}

// PodState is the in-flight upgrade state of one pod, stored as JSON in the pod's
// meshlift.io/upgrade annotation. The controller writes it before (or in the same patch as) the
// action that leads into Phase, so a restarted operator resumes from the pod alone. It holds
// everything needed to finish or revert the upgrade without looking anything else up.
type PodState struct {
	// Plan is the UpgradePlan that owns this upgrade.
	Plan string `json:"plan"`
	// From and To are the SidecarVersion names the pod moves between.
	From string `json:"from"`
	To   string `json:"to"`
	// Rollback is set when the pod walks back to the version it came from.
	Rollback bool `json:"rollback,omitempty"`
	// Strategy is how this pod is moved: HotUpgrade, InPlace or Recreate.
	Strategy meshv1alpha1.StrategyType `json:"strategy"`
	// Phase is what the pod waits for now.
	Phase PodPhase `json:"phase"`
	// Outcome is PodFailed or PodAborted while Phase is PodReverting.
	Outcome PodPhase `json:"outcome,omitempty"`

	// Slot is the slot that runs To: the formerly idle slot for HotUpgrade, the proxy's own slot
	// (0 for the single container) for InPlace.
	Slot int `json:"slot"`
	// FromSlot is the slot that ran From and owned the listeners (HotUpgrade).
	FromSlot int `json:"fromSlot,omitempty"`
	// FromImage is the image the proxy ran before; a revert puts it back.
	FromImage string `json:"fromImage,omitempty"`
	// IdleImage is the image Slot ran before it took over (HotUpgrade); a revert puts it back.
	IdleImage string `json:"idleImage,omitempty"`
	// ToImage is the target's proxy image and ToIdleImage its placeholder, which the retired
	// slot gets (HotUpgrade).
	ToImage     string `json:"toImage,omitempty"`
	ToIdleImage string `json:"toIdleImage,omitempty"`

	// StartedAt is when this upgrade started; progressDeadlineSeconds counts from it.
	StartedAt time.Time `json:"startedAt"`
	// PhaseSince is when Phase was entered.
	PhaseSince time.Time `json:"phaseSince"`
	// ReadySince is when the new proxy was first seen ready (minReadySeconds counts from it).
	ReadySince *time.Time `json:"readySince,omitempty"`
	// RetireBy is when a Retiring pod's old slot retires whatever its proxy reports: its drain
	// budget plus a grace period, counted from the end of the health gate.
	RetireBy *time.Time `json:"retireBy,omitempty"`
	// Attempt counts the upgrades of this pod to To by this plan (1 for the first).
	Attempt int32 `json:"attempt"`
	// Reason says why the pod failed or was aborted, or what did not go as planned in an upgrade
	// that succeeded (a retired slot the kubelet did not shrink).
	Reason string `json:"reason,omitempty"`
}

// Active reports whether the upgrade is in flight.
func (s *PodState) Active() bool { return !s.Phase.Terminal() }

// ErrMalformedState is wrapped by every error of DecodeState: the annotation could not be
// trusted, and the planner leaves the pod alone.
var ErrMalformedState = errors.New("malformed " + meshv1alpha1.AnnotationUpgrade + " annotation")

// MaxStateSize bounds the annotation; the controller never writes more than a few hundred bytes.
const MaxStateSize = 4096

var (
	farFuture    = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	minValidTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
)

// EncodeState returns the annotation value for s. It refuses a state that DecodeState would
// reject, so the controller can never write something it cannot read back.
func EncodeState(s *PodState) (string, error) {
	if s == nil {
		return "", fmt.Errorf("%w: no state", ErrMalformedState)
	}
	if err := s.validate(); err != nil {
		return "", err
	}
	data, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("failed to encode the upgrade state: %w", err)
	}
	if len(data) > MaxStateSize {
		return "", fmt.Errorf("%w: %d bytes, more than %d", ErrMalformedState, len(data), MaxStateSize)
	}
	return string(data), nil
}

// DecodeState parses the annotation value. The annotation is untrusted input (anyone who may
// patch the pod may write it): unknown fields, trailing data, oversized values and values that
// contradict each other are rejected with an error wrapping ErrMalformedState.
func DecodeState(value string) (*PodState, error) {
	if len(value) > MaxStateSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformedState, len(value), MaxStateSize)
	}
	s, err := parseState(value)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedState, err)
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *PodState) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrMalformedState, fmt.Sprintf(format, args...))
	}
	for _, f := range [...]struct{ field, name string }{{"plan", s.Plan}, {"from", s.From}, {"to", s.To}} {
		if !objectName(f.name) {
			return bad("%s %q is not an object name", f.field, truncate(f.name))
		}
	}
	if s.From == s.To {
		return bad("from and to are both %q", s.From)
	}
	if !knownPhases[s.Phase] {
		return bad("unknown phase %q", truncate(string(s.Phase)))
	}
	switch {
	case s.Phase == PodReverting && s.Outcome != PodFailed && s.Outcome != PodAborted:
		return bad("a reverting pod needs outcome Failed or Aborted, not %q", truncate(string(s.Outcome)))
	case s.Phase != PodReverting && s.Outcome != "":
		return bad("outcome %q outside phase Reverting", truncate(string(s.Outcome)))
	}
	switch s.Strategy {
	case meshv1alpha1.StrategyHotUpgrade:
		if s.Slot < 1 || s.Slot > 2 || s.FromSlot < 1 || s.FromSlot > 2 || s.Slot == s.FromSlot {
			return bad("a hot upgrade moves between slots 1 and 2, not from slot %d to slot %d", s.FromSlot, s.Slot)
		}
		if s.Phase == PodDraining || s.Phase == PodEvicting {
			return bad("phase %s is not a hot-upgrade phase", s.Phase)
		}
	case meshv1alpha1.StrategyInPlace:
		if s.Slot < 0 || s.Slot > 2 || s.FromSlot != 0 {
			return bad("an in-place upgrade keeps its slot, got slot %d and fromSlot %d", s.Slot, s.FromSlot)
		}
		if s.Phase == PodResizingUp || s.Phase == PodResizingDown || s.Phase == PodEvicting {
			return bad("phase %s is not an in-place phase", s.Phase)
		}
	case meshv1alpha1.StrategyRecreate:
		if s.Slot != 0 || s.FromSlot != 0 {
			return bad("a recreated pod names no slot")
		}
		if s.Phase != PodEvicting && !s.Phase.Terminal() {
			return bad("phase %s is not a recreate phase", s.Phase)
		}
	default:
		return bad("unknown strategy %q", truncate(string(s.Strategy)))
	}
	for _, f := range [...]struct{ field, image string }{{"fromImage", s.FromImage}, {"idleImage", s.IdleImage}, {"toImage", s.ToImage}, {"toIdleImage", s.ToIdleImage}} {
		if len(f.image) > 512 || strings.ContainsFunc(f.image, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return bad("%s is not an image reference", f.field)
		}
	}
	if s.Strategy != meshv1alpha1.StrategyRecreate && (s.FromImage == "" || s.ToImage == "") {
		return bad("fromImage and toImage are required for %s", s.Strategy)
	}
	if s.Strategy == meshv1alpha1.StrategyHotUpgrade && (s.IdleImage == "" || s.ToIdleImage == "") {
		return bad("idleImage and toIdleImage are required for HotUpgrade")
	}
	if !validTime(s.StartedAt) || !validTime(s.PhaseSince) || s.PhaseSince.Before(s.StartedAt) {
		return bad("startedAt and phaseSince must be times after 2000 with phaseSince not before startedAt")
	}
	if s.ReadySince != nil && (!validTime(*s.ReadySince) || s.ReadySince.Before(s.StartedAt)) {
		return bad("readySince must not be before startedAt")
	}
	if s.Phase == PodStabilizing && s.ReadySince == nil {
		return bad("phase Stabilizing needs readySince")
	}
	switch {
	case s.Phase == PodRetiring && s.Strategy != meshv1alpha1.StrategyHotUpgrade:
		return bad("phase Retiring is a hot-upgrade phase")
	case s.Phase == PodRetiring && (s.RetireBy == nil || !validTime(*s.RetireBy) || s.RetireBy.Before(s.PhaseSince)):
		return bad("phase Retiring needs retireBy, not before phaseSince")
	case s.Phase != PodRetiring && s.RetireBy != nil:
		return bad("retireBy outside phase Retiring")
	}
	if s.Attempt < 1 || s.Attempt > 1000 {
		return bad("attempt %d out of 1..1000", s.Attempt)
	}
	if len(s.Reason) > 512 {
		return bad("reason longer than 512 bytes")
	}
	return nil
}

// objectName reports whether name is a DNS subdomain, as Kubernetes object names are.
func objectName(name string) bool {
	if len(name) == 0 || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return true
}

func validTime(t time.Time) bool {
	return !t.Before(minValidTime) && t.Before(farFuture)
}

// truncate keeps error messages short when the input is hostile.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// PlanTimes returns the plan's status.startTime and status.completionTime after a decision that
// moves it from phase from to phase to at now. A plan starts when it first moves pods
// (Progressing or RollingBack); one that had ended (Succeeded or RolledBack) and moves pods
// again, because its target was changed, starts again, so its times describe the current target.
// It completes when it Succeeds.
func PlanTimes(from, to meshv1alpha1.UpgradePhase, start, completion *time.Time, now time.Time) (*time.Time, *time.Time) {
	moving := to == meshv1alpha1.PhaseProgressing || to == meshv1alpha1.PhaseRollingBack
	ended := from == meshv1alpha1.PhaseSucceeded || from == meshv1alpha1.PhaseRolledBack
	switch {
	case moving && (start == nil || ended):
		return &now, nil
	case to == meshv1alpha1.PhaseSucceeded && completion == nil:
		return start, &now
	}
	return start, completion
}
