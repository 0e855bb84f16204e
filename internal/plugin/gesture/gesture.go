// Package gesture decides what the rollout gestures of kubectl-meshlift (pause, resume, abort,
// rollback, retry) change on an UpgradePlan, or why a gesture makes no sense in the plan's
// present state. It is pure: the plan and the pods' upgrade records in, a Change or a refusal
// out; internal/plugin/cmd applies the change.
package gesture

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/rollout"
)

// Change is what a gesture does to the plan. Exactly the fields set are changed.
type Change struct {
	// Paused sets spec.paused.
	Paused *bool
	// TargetVersion sets spec.targetVersion.
	TargetVersion string
	// Resume sets the meshlift.io/resume annotation to this value.
	Resume string
	// Recreate deletes the plan and creates it again with the same spec.
	Recreate bool
	// Done says what happened, for the user; Next is the command to type next.
	Done string
	Next string
}

// Refusal is a gesture that makes no sense now; its message says why and what to do instead.
type Refusal struct{ Message string }

func (r *Refusal) Error() string { return r.Message }

// IsRefusal reports whether err is a Refusal.
func IsRefusal(err error) bool {
	var r *Refusal
	return errors.As(err, &r)
}

func refuse(format string, args ...any) error { return &Refusal{Message: fmt.Sprintf(format, args...)} }

func ref(plan *meshv1alpha1.UpgradePlan) string {
	return "UpgradePlan " + plan.Namespace + "/" + plan.Name
}

func phase(plan *meshv1alpha1.UpgradePlan) meshv1alpha1.UpgradePhase {
	return cmp.Or(plan.Status.Phase, meshv1alpha1.PhasePending)
}

// StatusCommand is the command that follows the plan.
func StatusCommand(plan *meshv1alpha1.UpgradePlan) string {
	return fmt.Sprintf("kubectl meshlift status %s -n %s -w", plan.Name, plan.Namespace)
}

// ResumeCommand is the command that releases a manual pause.
func ResumeCommand(plan *meshv1alpha1.UpgradePlan) string {
	return fmt.Sprintf("kubectl meshlift resume %s -n %s", plan.Name, plan.Namespace)
}

// Pause sets spec.paused: pods in flight finish, none starts.
func Pause(plan *meshv1alpha1.UpgradePlan) (Change, error) {
	switch phase(plan) {
	case meshv1alpha1.PhaseSucceeded:
		return Change{}, refuse("%s already succeeded: every pod runs %s and new pods get it from the injector, so there is nothing to pause", ref(plan), plan.Spec.TargetVersion)
	case meshv1alpha1.PhaseRolledBack:
		return Change{}, refuse("%s already rolled back: it starts no pod, so there is nothing to pause", ref(plan))
	case meshv1alpha1.PhaseFailed:
		return Change{}, refuse("%s failed and already stopped starting pods (failurePolicy Pause); abort or retry it instead", ref(plan))
	}
	if plan.Spec.Paused {
		return Change{}, refuse("%s is already paused (spec.paused); resume it with: %s", ref(plan), ResumeCommand(plan))
	}
	paused := true
	return Change{Paused: &paused,
		Done: fmt.Sprintf("%s paused (spec.paused=true): pods in flight finish, no other pod starts", ref(plan)),
		Next: ResumeCommand(plan)}, nil
}

// manualStepPause returns the step index the plan waits at for a resume, or -1. timed reports a
// step pause with a duration instead.
func manualStepPause(plan *meshv1alpha1.UpgradePlan) (step int32, timed *metav1.Duration) {
	c := meta.FindStatusCondition(plan.Status.Conditions, meshv1alpha1.ConditionPaused)
	if phase(plan) != meshv1alpha1.PhasePaused || c == nil || c.Status != metav1.ConditionTrue || c.Reason != rollout.ReasonStepPause {
		return -1, nil
	}
	i := plan.Status.CurrentStep
	steps := plan.Spec.Strategy.Steps
	if i < 0 || int(i) >= len(steps) || steps[i].Pause == nil {
		return -1, nil
	}
	if steps[i].Pause.Duration != nil {
		return -1, steps[i].Pause.Duration
	}
	return i, nil
}

// Resume clears spec.paused and releases the step pause the plan waits at (the
// meshlift.io/resume annotation "<target>/<step>").
func Resume(plan *meshv1alpha1.UpgradePlan) (Change, error) {
	ch := Change{Next: StatusCommand(plan)}
	var did []string
	if plan.Spec.Paused {
		f := false
		ch.Paused = &f
		did = append(did, "spec.paused cleared")
	}
	step, timed := manualStepPause(plan)
	if step >= 0 {
		ch.Resume = fmt.Sprintf("%s/%d", plan.Spec.TargetVersion, step)
		did = append(did, fmt.Sprintf("the pause after step %d released (%s=%s)", step+1, meshv1alpha1.AnnotationResume, ch.Resume))
	}
	if len(did) > 0 {
		ch.Done = fmt.Sprintf("%s resumed: %s", ref(plan), strings.Join(did, ", "))
		return ch, nil
	}
	if timed != nil {
		return Change{}, refuse("%s pauses for %s after step %d and goes on by itself when that time is over; resume releases only pauses without a duration",
			ref(plan), timed.Duration, plan.Status.CurrentStep+1)
	}
	return Change{}, refuse("%s is not paused (phase %s); nothing to resume", ref(plan), phase(plan))
}

// Sources returns the versions the plan moved pods away from, for its current target: the
// From of every pod record of this plan that moved a pod towards the target (in flight,
// succeeded or failed), and of the pods in the plan's status.
func Sources(plan *meshv1alpha1.UpgradePlan, records []rollout.PodState) []string {
	set := map[string]bool{}
	for _, r := range records {
		if r.Plan == plan.Name && r.To == plan.Spec.TargetVersion && !r.Rollback && r.From != "" {
			set[r.From] = true
		}
	}
	for _, p := range plan.Status.Pods {
		if p.To == plan.Spec.TargetVersion && p.From != "" && p.From != plan.Spec.TargetVersion {
			set[p.From] = true
		}
	}
	out := make([]string, 0, len(set))
	for v := range set {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// setBack picks the version to set the target back to.
func setBack(plan *meshv1alpha1.UpgradePlan, records []rollout.PodState, to, gesture string) (string, error) {
	if to != "" {
		if to == plan.Spec.TargetVersion {
			return "", refuse("--to %s is the plan's target already; name the version the pods should return to", to)
		}
		return to, nil
	}
	sources := Sources(plan, records)
	switch len(sources) {
	case 0:
		return "", refuse("%s has not moved any pod to %s yet, so there is no version to go back to; pause it (kubectl meshlift pause %s -n %s) or delete it",
			ref(plan), plan.Spec.TargetVersion, plan.Name, plan.Namespace)
	case 1:
		return sources[0], nil
	}
	return "", refuse("the pods of %s came from more than one version (%s); say which one with: kubectl meshlift %s %s -n %s --to VERSION",
		ref(plan), strings.Join(sources, ", "), gesture, plan.Name, plan.Namespace)
}

// Abort stops a plan in progress: it sets the target back to where the pods came from, which
// aborts the pods in flight and walks the upgraded ones back (docs/rollout.md).
func Abort(plan *meshv1alpha1.UpgradePlan, records []rollout.PodState, to string) (Change, error) {
	switch phase(plan) {
	case meshv1alpha1.PhaseSucceeded:
		return Change{}, refuse("%s already succeeded, there is nothing in progress to abort; to return its pods to the version they came from, use: kubectl meshlift rollback %s -n %s",
			ref(plan), plan.Name, plan.Namespace)
	case meshv1alpha1.PhaseRollingBack:
		return Change{}, refuse("%s is already rolling back; follow it with: %s", ref(plan), StatusCommand(plan))
	case meshv1alpha1.PhaseRolledBack:
		return Change{}, refuse("%s already rolled back; nothing to abort", ref(plan))
	}
	from, err := setBack(plan, records, to, "abort")
	if err != nil {
		return Change{}, err
	}
	return Change{TargetVersion: from, Next: StatusCommand(plan),
		Done: fmt.Sprintf("%s aborted: spec.targetVersion set back from %s to %s; pods in flight are aborted and the pods already on %s walk back to %s",
			ref(plan), plan.Spec.TargetVersion, from, plan.Spec.TargetVersion, from)}, nil
}

// Rollback returns the pods of a plan that ended (Succeeded or Failed) to the version they came
// from, by setting the target back.
func Rollback(plan *meshv1alpha1.UpgradePlan, records []rollout.PodState, to string) (Change, error) {
	switch phase(plan) {
	case meshv1alpha1.PhasePending:
		return Change{}, refuse("%s has not started (phase Pending), so there is nothing to roll back", ref(plan))
	case meshv1alpha1.PhaseProgressing, meshv1alpha1.PhasePaused:
		return Change{}, refuse("%s is still in progress (phase %s); stop it and walk its pods back with: kubectl meshlift abort %s -n %s",
			ref(plan), phase(plan), plan.Name, plan.Namespace)
	case meshv1alpha1.PhaseRollingBack:
		return Change{}, refuse("%s is already rolling back; follow it with: %s", ref(plan), StatusCommand(plan))
	case meshv1alpha1.PhaseRolledBack:
		return Change{}, refuse("%s already rolled back: its pods run the versions they came from", ref(plan))
	}
	from, err := setBack(plan, records, to, "rollback")
	if err != nil {
		return Change{}, err
	}
	return Change{TargetVersion: from, Next: StatusCommand(plan),
		Done: fmt.Sprintf("%s rolling back: spec.targetVersion set from %s to %s; the pods walk back one batch at a time", ref(plan), plan.Spec.TargetVersion, from)}, nil
}

// Retry re-creates a plan whose pods failed, so that it tries them again (a plan remembers its
// failed pods; a new plan does not count records older than itself: docs/rollout.md).
func Retry(plan *meshv1alpha1.UpgradePlan) (Change, error) {
	p := phase(plan)
	if plan.Status.Counts.Failed == 0 && p != meshv1alpha1.PhaseFailed && p != meshv1alpha1.PhaseRolledBack {
		return Change{}, refuse("no pod of %s failed (phase %s), so there is nothing to retry", ref(plan), p)
	}
	if p == meshv1alpha1.PhaseRollingBack {
		return Change{}, refuse("%s is rolling back; wait until it is RolledBack, then retry", ref(plan))
	}
	return Change{Recreate: true, Next: StatusCommand(plan),
		Done: fmt.Sprintf("%s re-created with the same spec: it tries the %d failed pods (and the others not on %s) again",
			ref(plan), plan.Status.Counts.Failed, plan.Spec.TargetVersion)}, nil
}
