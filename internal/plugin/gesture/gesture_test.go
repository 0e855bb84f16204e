package gesture

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/rollout"
)

func plan(phase meshv1alpha1.UpgradePhase) *meshv1alpha1.UpgradePlan {
	return &meshv1alpha1.UpgradePlan{
		ObjectMeta: metav1.ObjectMeta{Namespace: "meshlift-demo", Name: "demo-upgrade"},
		Spec:       meshv1alpha1.UpgradePlanSpec{MeshServices: []string{"demo"}, TargetVersion: "proxy-v2"},
		Status:     meshv1alpha1.UpgradePlanStatus{Phase: phase},
	}
}

func stepPaused(duration *metav1.Duration) *meshv1alpha1.UpgradePlan {
	p := plan(meshv1alpha1.PhasePaused)
	p.Spec.Strategy.Steps = []meshv1alpha1.UpgradeStep{
		{Partition: intstr.FromInt32(1)},
		{Partition: intstr.FromInt32(2), Pause: &meshv1alpha1.StepPause{Duration: duration}},
		{Partition: intstr.FromString("100%")},
	}
	p.Status.CurrentStep = 1
	p.Status.Conditions = []metav1.Condition{{Type: meshv1alpha1.ConditionPaused, Status: metav1.ConditionTrue, Reason: rollout.ReasonStepPause,
		LastTransitionTime: metav1.Now()}}
	return p
}

func records(froms ...string) []rollout.PodState {
	var out []rollout.PodState
	for _, f := range froms {
		out = append(out, rollout.PodState{Plan: "demo-upgrade", From: f, To: "proxy-v2", Phase: rollout.PodSucceeded})
	}
	return out
}

func wantRefusal(t *testing.T, err error, contains ...string) {
	t.Helper()
	if !IsRefusal(err) {
		t.Fatalf("want a refusal, got %v", err)
	}
	for _, c := range contains {
		if !strings.Contains(err.Error(), c) {
			t.Errorf("refusal %q does not say %q", err, c)
		}
	}
}

func TestPause(t *testing.T) {
	ch, err := Pause(plan(meshv1alpha1.PhaseProgressing))
	if err != nil || ch.Paused == nil || !*ch.Paused || ch.TargetVersion != "" || ch.Resume != "" || ch.Recreate {
		t.Fatalf("pause of a progressing plan: %+v, %v", ch, err)
	}
	if !strings.Contains(ch.Next, "kubectl meshlift resume demo-upgrade -n meshlift-demo") {
		t.Errorf("pause does not say how to resume: %q", ch.Next)
	}
	if _, err := Pause(plan(meshv1alpha1.PhasePending)); err != nil {
		t.Errorf("a pending plan can be paused: %v", err)
	}
	_, err = Pause(plan(meshv1alpha1.PhaseSucceeded))
	wantRefusal(t, err, "already succeeded", "nothing to pause")
	_, err = Pause(plan(meshv1alpha1.PhaseRolledBack))
	wantRefusal(t, err, "rolled back")
	_, err = Pause(plan(meshv1alpha1.PhaseFailed))
	wantRefusal(t, err, "failed")
	paused := plan(meshv1alpha1.PhasePaused)
	paused.Spec.Paused = true
	_, err = Pause(paused)
	wantRefusal(t, err, "already paused", "kubectl meshlift resume demo-upgrade")
}

func TestResume(t *testing.T) {
	// A manual step pause: the annotation for the target and the current step.
	ch, err := Resume(stepPaused(nil))
	if err != nil || ch.Resume != "proxy-v2/1" || ch.Paused != nil {
		t.Fatalf("resume of a step pause: %+v, %v", ch, err)
	}
	// spec.paused: cleared.
	p := plan(meshv1alpha1.PhasePaused)
	p.Spec.Paused = true
	ch, err = Resume(p)
	if err != nil || ch.Paused == nil || *ch.Paused || ch.Resume != "" {
		t.Fatalf("resume of spec.paused: %+v, %v", ch, err)
	}
	// Both at once.
	both := stepPaused(nil)
	both.Spec.Paused = true
	ch, err = Resume(both)
	if err != nil || ch.Paused == nil || *ch.Paused || ch.Resume != "proxy-v2/1" {
		t.Fatalf("resume of both: %+v, %v", ch, err)
	}
	// A timed pause goes on by itself.
	_, err = Resume(stepPaused(&metav1.Duration{Duration: time.Minute}))
	wantRefusal(t, err, "1m0s", "by itself")
	_, err = Resume(plan(meshv1alpha1.PhaseProgressing))
	wantRefusal(t, err, "not paused", "Progressing")
}

func TestAbortAndRollback(t *testing.T) {
	progressing := plan(meshv1alpha1.PhaseProgressing)
	progressing.Status.Pods = []meshv1alpha1.PodUpgradeStatus{{Pod: "a", From: "proxy-v1", To: "proxy-v2", Phase: "WaitingReady"}}
	ch, err := Abort(progressing, nil, "")
	if err != nil || ch.TargetVersion != "proxy-v1" {
		t.Fatalf("abort with a pod in flight from proxy-v1: %+v, %v", ch, err)
	}
	ch, err = Abort(plan(meshv1alpha1.PhasePaused), records("proxy-v1", "proxy-v1"), "")
	if err != nil || ch.TargetVersion != "proxy-v1" {
		t.Fatalf("abort of a paused plan with upgraded pods: %+v, %v", ch, err)
	}
	// Records of other plans, rollbacks and other targets do not count.
	other := []rollout.PodState{
		{Plan: "another", From: "proxy-v0", To: "proxy-v2"},
		{Plan: "demo-upgrade", From: "proxy-v3", To: "proxy-v2", Rollback: true},
		{Plan: "demo-upgrade", From: "proxy-v1", To: "proxy-v3"},
	}
	_, err = Abort(plan(meshv1alpha1.PhaseProgressing), other, "")
	wantRefusal(t, err, "has not moved any pod", "kubectl meshlift pause demo-upgrade")
	_, err = Abort(plan(meshv1alpha1.PhaseProgressing), records("proxy-v0", "proxy-v1"), "")
	wantRefusal(t, err, "more than one version (proxy-v0, proxy-v1)", "--to VERSION")
	ch, err = Abort(plan(meshv1alpha1.PhaseProgressing), records("proxy-v0", "proxy-v1"), "proxy-v0")
	if err != nil || ch.TargetVersion != "proxy-v0" {
		t.Fatalf("abort --to: %+v, %v", ch, err)
	}
	_, err = Abort(plan(meshv1alpha1.PhaseProgressing), records("proxy-v1"), "proxy-v2")
	wantRefusal(t, err, "is the plan's target already")
	_, err = Abort(plan(meshv1alpha1.PhaseSucceeded), records("proxy-v1"), "")
	wantRefusal(t, err, "already succeeded", "kubectl meshlift rollback demo-upgrade")
	_, err = Abort(plan(meshv1alpha1.PhaseRollingBack), records("proxy-v1"), "")
	wantRefusal(t, err, "already rolling back")

	ch, err = Rollback(plan(meshv1alpha1.PhaseSucceeded), records("proxy-v1"), "")
	if err != nil || ch.TargetVersion != "proxy-v1" {
		t.Fatalf("rollback of a succeeded plan: %+v, %v", ch, err)
	}
	if _, err := Rollback(plan(meshv1alpha1.PhaseFailed), records("proxy-v1"), ""); err != nil {
		t.Errorf("a failed plan can be rolled back: %v", err)
	}
	_, err = Rollback(plan(meshv1alpha1.PhaseProgressing), records("proxy-v1"), "")
	wantRefusal(t, err, "still in progress", "kubectl meshlift abort demo-upgrade")
	_, err = Rollback(plan(meshv1alpha1.PhaseRolledBack), records("proxy-v1"), "")
	wantRefusal(t, err, "already rolled back")
	_, err = Rollback(plan(meshv1alpha1.PhasePending), nil, "")
	wantRefusal(t, err, "has not started")
}

func TestRetry(t *testing.T) {
	failed := plan(meshv1alpha1.PhaseFailed)
	failed.Status.Counts.Failed = 1
	ch, err := Retry(failed)
	if err != nil || !ch.Recreate {
		t.Fatalf("retry of a failed plan: %+v, %v", ch, err)
	}
	withFailures := plan(meshv1alpha1.PhaseSucceeded)
	withFailures.Status.Counts.Failed = 2
	if _, err := Retry(withFailures); err != nil {
		t.Errorf("a plan that completed with failures can be retried: %v", err)
	}
	if _, err := Retry(plan(meshv1alpha1.PhaseRolledBack)); err != nil {
		t.Errorf("a rolled back plan can be retried: %v", err)
	}
	_, err = Retry(plan(meshv1alpha1.PhaseProgressing))
	wantRefusal(t, err, "no pod of UpgradePlan meshlift-demo/demo-upgrade failed")
	rolling := plan(meshv1alpha1.PhaseRollingBack)
	rolling.Status.Counts.Failed = 1
	_, err = Retry(rolling)
	wantRefusal(t, err, "wait until it is RolledBack")
}
