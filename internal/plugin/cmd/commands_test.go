package cmd

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/plugin/view"
	"github.com/meshlift/meshlift/internal/rollout"
)

func newNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := testEnv.Client.Create(t.Context(), ns); err != nil {
		t.Fatalf("namespace: %v", err)
	}
	t.Cleanup(func() { _ = testEnv.Client.Delete(context.Background(), ns) })
	return ns.Name
}

func createPlan(t *testing.T, ns, name string, mutate func(*meshv1alpha1.UpgradePlan)) *meshv1alpha1.UpgradePlan {
	t.Helper()
	p := &meshv1alpha1.UpgradePlan{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"team": "mesh"}},
		Spec:       meshv1alpha1.UpgradePlanSpec{MeshServices: []string{"demo"}, TargetVersion: "proxy-v2"},
	}
	if mutate != nil {
		mutate(p)
	}
	if err := testEnv.Client.Create(t.Context(), p); err != nil {
		t.Fatalf("creating plan: %v", err)
	}
	return p
}

// setStatus writes the status the UpgradePlan controller would (there is no operator here).
func setStatus(t *testing.T, p *meshv1alpha1.UpgradePlan, status meshv1alpha1.UpgradePlanStatus) {
	t.Helper()
	fresh := &meshv1alpha1.UpgradePlan{}
	if err := testEnv.Client.Get(t.Context(), client.ObjectKeyFromObject(p), fresh); err != nil {
		t.Fatal(err)
	}
	status.ObservedGeneration = fresh.Generation
	fresh.Status = status
	if err := testEnv.Client.Status().Update(t.Context(), fresh); err != nil {
		t.Fatalf("writing status: %v", err)
	}
}

func getPlanT(t *testing.T, ns, name string) *meshv1alpha1.UpgradePlan {
	t.Helper()
	p := &meshv1alpha1.UpgradePlan{}
	if err := testEnv.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func stepPauseStatus() meshv1alpha1.UpgradePlanStatus {
	return meshv1alpha1.UpgradePlanStatus{Phase: meshv1alpha1.PhasePaused, CurrentStep: 0,
		Counts: meshv1alpha1.UpgradeCounts{Total: 3, Updated: 1, Ready: 1},
		Conditions: []metav1.Condition{{Type: meshv1alpha1.ConditionPaused, Status: metav1.ConditionTrue, Reason: rollout.ReasonStepPause,
			Message: "step 1/2: 1 of 3 pods run proxy-v2, 0 in flight, 0 failed; paused after step 1 until resumed", LastTransitionTime: metav1.Now()}}}
}

// createPodWithRecord creates a pod whose meshlift.io/upgrade record says plan moved it from
// -> proxy-v2.
func createPodWithRecord(t *testing.T, ns, name, plan, from string) {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	value, err := rollout.EncodeState(&rollout.PodState{Plan: plan, From: from, To: "proxy-v2", Strategy: meshv1alpha1.StrategyHotUpgrade,
		Phase: rollout.PodSucceeded, Slot: 2, FromSlot: 1, FromImage: "meshlift/meshlift-proxy:1.0.0", ToImage: "meshlift/meshlift-proxy:2.0.0",
		IdleImage: "meshlift/meshlift-idle:dev", ToIdleImage: "meshlift/meshlift-idle:dev", StartedAt: now, PhaseSince: now, Attempt: 1})
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{
			meshv1alpha1.AnnotationUpgrade: value, meshv1alpha1.AnnotationVersion: "proxy-v2", meshv1alpha1.AnnotationActiveSlot: "2"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{
				{Name: "meshlift-proxy-1", Image: "meshlift/meshlift-idle:dev", RestartPolicy: &restartAlways},
				{Name: "meshlift-proxy-2", Image: "meshlift/meshlift-proxy:2.0.0", RestartPolicy: &restartAlways}},
			Containers: []corev1.Container{{Name: "app", Image: "meshlift/meshlift-demo:dev"}},
		},
	}
	if err := testEnv.Client.Create(t.Context(), pod); err != nil {
		t.Fatalf("pod: %v", err)
	}
}

var restartAlways = corev1.ContainerRestartPolicyAlways

// TestGesturesChangeExactlyWhatTheyShould runs each gesture against the API server and compares
// the plan before and after: only the field the gesture owns changes; a refusal changes nothing.
func TestGesturesChangeExactlyWhatTheyShould(t *testing.T) {
	ns := newNamespace(t, "gestures")
	env, out := newTestEnv(t, ns)
	plan := createPlan(t, ns, "demo-upgrade", func(p *meshv1alpha1.UpgradePlan) {
		p.Spec.Strategy.Steps = []meshv1alpha1.UpgradeStep{{Partition: intstr.FromInt32(1), Pause: &meshv1alpha1.StepPause{}}, {Partition: intstr.FromString("100%")}}
	})
	setStatus(t, plan, meshv1alpha1.UpgradePlanStatus{Phase: meshv1alpha1.PhaseProgressing, Counts: meshv1alpha1.UpgradeCounts{Total: 3}})

	// expect runs a gesture and checks that the plan changed exactly as change says.
	expect := func(args []string, change func(*meshv1alpha1.UpgradePlan), says string) {
		t.Helper()
		before := getPlanT(t, ns, "demo-upgrade")
		out.Reset()
		if err := run(t, env, args...); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		after := getPlanT(t, ns, "demo-upgrade")
		want := before.DeepCopy()
		change(want)
		if !apiequality.Semantic.DeepEqual(want.Spec, after.Spec) || !apiequality.Semantic.DeepEqual(want.Annotations, after.Annotations) ||
			!apiequality.Semantic.DeepEqual(want.Labels, after.Labels) {
			t.Errorf("%v changed the plan to spec %+v annotations %v, want spec %+v annotations %v", args, after.Spec, after.Annotations, want.Spec, want.Annotations)
		}
		if !strings.Contains(out.String(), says) {
			t.Errorf("%v printed %q, want it to say %q", args, out.String(), says)
		}
	}
	refused := func(args []string, says string) {
		t.Helper()
		before := getPlanT(t, ns, "demo-upgrade")
		out.Reset()
		err := run(t, env, args...)
		if err == nil || ExitCode(err) != ExitError || !strings.Contains(err.Error(), says) {
			t.Errorf("%v: got %v (exit %d), want a refusal saying %q", args, err, ExitCode(err), says)
		}
		if after := getPlanT(t, ns, "demo-upgrade"); after.ResourceVersion != before.ResourceVersion {
			t.Errorf("%v was refused but changed the plan", args)
		}
	}

	expect([]string{"pause", "demo-upgrade"}, func(p *meshv1alpha1.UpgradePlan) { p.Spec.Paused = true }, "paused (spec.paused=true)")
	refused([]string{"pause", "demo-upgrade"}, "already paused")
	expect([]string{"resume", "demo-upgrade"}, func(p *meshv1alpha1.UpgradePlan) { p.Spec.Paused = false }, "spec.paused cleared")
	refused([]string{"resume", "demo-upgrade"}, "is not paused")

	// The plan waits after step 1: resume releases that step for this target.
	setStatus(t, plan, stepPauseStatus())
	expect([]string{"upgrade", "resume", "demo-upgrade"}, func(p *meshv1alpha1.UpgradePlan) {
		p.Annotations = map[string]string{meshv1alpha1.AnnotationResume: "proxy-v2/0"}
	}, "meshlift.io/resume=proxy-v2/0")

	// Rollback of a plan in progress is refused; abort sets the target back to where the pods
	// came from (their records).
	refused([]string{"rollback", "demo-upgrade"}, "still in progress")
	refused([]string{"abort", "demo-upgrade"}, "has not moved any pod to proxy-v2 yet")
	createPodWithRecord(t, ns, "demo-a", "demo-upgrade", "proxy-v1")
	createPodWithRecord(t, ns, "other-plan", "another-plan", "proxy-v0")
	expect([]string{"abort", "demo-upgrade"}, func(p *meshv1alpha1.UpgradePlan) { p.Spec.TargetVersion = "proxy-v1" }, "set back from proxy-v2 to proxy-v1")

	// A plan that succeeded: rollback with --to.
	createPlan(t, ns, "done", nil)
	done := getPlanT(t, ns, "done")
	setStatus(t, done, meshv1alpha1.UpgradePlanStatus{Phase: meshv1alpha1.PhaseSucceeded, Counts: meshv1alpha1.UpgradeCounts{Total: 1, Updated: 1, Ready: 1}})
	out.Reset()
	if err := run(t, env, "rollback", "done", "--to", "proxy-v0"); err != nil {
		t.Fatal(err)
	}
	if got := getPlanT(t, ns, "done").Spec.TargetVersion; got != "proxy-v0" {
		t.Errorf("rollback --to proxy-v0 set the target to %s", got)
	}

	// Retry: the plan is created again (new UID) with the same spec and labels, without the
	// resume annotation of the old plan's steps.
	old := getPlanT(t, ns, "demo-upgrade")
	setStatus(t, old, meshv1alpha1.UpgradePlanStatus{Phase: meshv1alpha1.PhaseFailed, Counts: meshv1alpha1.UpgradeCounts{Total: 3, Failed: 1}})
	out.Reset()
	if err := run(t, env, "retry", "demo-upgrade"); err != nil {
		t.Fatal(err)
	}
	again := getPlanT(t, ns, "demo-upgrade")
	if again.UID == old.UID || !apiequality.Semantic.DeepEqual(again.Spec, old.Spec) || again.Labels["team"] != "mesh" || again.Annotations[meshv1alpha1.AnnotationResume] != "" {
		t.Errorf("retry: uid %s (was %s), spec %+v (was %+v), labels %v, annotations %v", again.UID, old.UID, again.Spec, old.Spec, again.Labels, again.Annotations)
	}
	if !strings.Contains(out.String(), "re-created with the same spec") || !strings.Contains(out.String(), "kubectl meshlift status demo-upgrade -n "+ns+" -w") {
		t.Errorf("retry printed %q", out.String())
	}
	refused([]string{"retry", "demo-upgrade"}, "no pod of UpgradePlan")

	// A plan that does not exist.
	if err := run(t, env, "pause", "nope"); err == nil || !strings.Contains(err.Error(), "UpgradePlan nope not found in namespace "+ns) {
		t.Errorf("pause of a missing plan: %v", err)
	}
}

// watchStatus runs `status -w` in the background and returns a function that waits for its
// result.
func watchStatus(t *testing.T, env *Env, args ...string) func() error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- run(t, env, append([]string{"status", "-w"}, args...)...) }()
	return func() error {
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("status -w did not return within 30s")
			return nil
		}
	}
}

// TestStatusWatchFollowsThePlanAndExitsWithIt: exit 0 on Succeeded, 2 on RolledBack, 3 on
// timeout, 0 on a manual pause with --success-on-pause; not a terminal, so one line per change.
func TestStatusWatchFollowsThePlanAndExitsWithIt(t *testing.T) {
	ns := newNamespace(t, "status")
	env, out := newTestEnv(t, ns)
	env.Now = time.Now
	plan := createPlan(t, ns, "demo-upgrade", nil)
	wait := watchStatus(t, env, "demo-upgrade")
	steps := []meshv1alpha1.UpgradePlanStatus{
		{Phase: meshv1alpha1.PhaseProgressing, Counts: meshv1alpha1.UpgradeCounts{Total: 2}, StartTime: &metav1.Time{Time: time.Now()},
			Pods: []meshv1alpha1.PodUpgradeStatus{{Pod: "demo-a", From: "proxy-v1", To: "proxy-v2", Phase: "WaitingReady"}}},
		{Phase: meshv1alpha1.PhaseProgressing, Counts: meshv1alpha1.UpgradeCounts{Total: 2, Updated: 1, Ready: 1}, StartTime: &metav1.Time{Time: time.Now()},
			Pods: []meshv1alpha1.PodUpgradeStatus{{Pod: "demo-b", From: "proxy-v1", To: "proxy-v2", Phase: "Stabilizing"}}},
		{Phase: meshv1alpha1.PhaseSucceeded, Counts: meshv1alpha1.UpgradeCounts{Total: 2, Updated: 2, Ready: 2}, StartTime: &metav1.Time{Time: time.Now()}},
	}
	for _, s := range steps {
		time.Sleep(400 * time.Millisecond) // longer than the redraw interval: every state is drawn
		setStatus(t, plan, s)
	}
	if err := wait(); err != nil {
		t.Fatalf("status -w of a plan that succeeded: %v", err)
	}
	text := out.String()
	for _, want := range []string{"demo-upgrade Pending: 0/0 updated", "demo-upgrade Progressing: 0/2 updated, 0 ready, 0 failed, 1 in flight; demo-a WaitingReady",
		"1/2 updated, 1 ready, 0 failed, 1 in flight; demo-b Stabilizing", "demo-upgrade Succeeded: 2/2 updated"} {
		if !strings.Contains(text, want) {
			t.Errorf("the watch output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "\x1b") {
		t.Errorf("not a terminal, yet escape codes:\n%q", text)
	}
	if n := strings.Count(text, "\n"); n != 4 {
		t.Errorf("%d lines for 4 states:\n%s", n, text)
	}

	rolledBack := createPlan(t, ns, "rolled-back", nil)
	out.Reset()
	wait = watchStatus(t, env, "rolled-back")
	time.Sleep(300 * time.Millisecond)
	setStatus(t, rolledBack, meshv1alpha1.UpgradePlanStatus{Phase: meshv1alpha1.PhaseRolledBack, Counts: meshv1alpha1.UpgradeCounts{Total: 2, Failed: 1}})
	if err := wait(); ExitCode(err) != ExitPlanFailed || !strings.Contains(err.Error(), "ended RolledBack") {
		t.Errorf("status -w of a plan that rolled back: %v (exit %d), want exit %d", err, ExitCode(err), ExitPlanFailed)
	}

	slow := createPlan(t, ns, "slow", nil)
	setStatus(t, slow, meshv1alpha1.UpgradePlanStatus{Phase: meshv1alpha1.PhaseProgressing, Counts: meshv1alpha1.UpgradeCounts{Total: 2}})
	if err := watchStatus(t, env, "slow", "--timeout", "1s")(); ExitCode(err) != ExitTimeout || !strings.Contains(err.Error(), "timed out after 1s") {
		t.Errorf("status -w --timeout 1s: %v (exit %d), want exit %d", err, ExitCode(err), ExitTimeout)
	}

	paused := createPlan(t, ns, "paused", func(p *meshv1alpha1.UpgradePlan) {
		p.Spec.Strategy.Steps = []meshv1alpha1.UpgradeStep{{Partition: intstr.FromInt32(1), Pause: &meshv1alpha1.StepPause{}}, {Partition: intstr.FromString("100%")}}
	})
	setStatus(t, paused, stepPauseStatus())
	out.Reset()
	if err := watchStatus(t, env, "paused", "--success-on-pause")(); err != nil {
		t.Errorf("status -w --success-on-pause of a plan waiting to be resumed: %v", err)
	}
	if !strings.Contains(out.String(), "resume with: kubectl meshlift resume paused -n "+ns) {
		t.Errorf("the paused line does not say how to resume: %s", out.String())
	}
}

// TestStatusOnATerminalRedrawsInPlace: a terminal gets the screen, then for each change the
// cursor goes back up over it and it is drawn again.
func TestStatusOnATerminalRedrawsInPlace(t *testing.T) {
	ns := newNamespace(t, "terminal")
	env, out := newTestEnv(t, ns)
	env.Terminal = &Terminal{IsTerminal: true, Width: 100}
	t.Setenv("TERM", "xterm-256color")
	t.Setenv("NO_COLOR", "")
	plan := createPlan(t, ns, "demo-upgrade", nil)
	wait := watchStatus(t, env, "demo-upgrade")
	time.Sleep(400 * time.Millisecond)
	setStatus(t, plan, meshv1alpha1.UpgradePlanStatus{Phase: meshv1alpha1.PhaseSucceeded, Counts: meshv1alpha1.UpgradeCounts{Total: 1, Updated: 1, Ready: 1}})
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if !regexp.MustCompile(`\x1b\[\d+A\x1b\[J`).MatchString(text) || !strings.Contains(text, "✔ Succeeded") {
		t.Errorf("a terminal did not get the screen redrawn in place:\n%q", text)
	}
}

func TestGetAndProxyStatus(t *testing.T) {
	ns := newNamespace(t, "get")
	env, out := newTestEnv(t, ns)
	plan := createPlan(t, ns, "demo-upgrade", nil)
	setStatus(t, plan, meshv1alpha1.UpgradePlanStatus{Phase: meshv1alpha1.PhaseProgressing, Counts: meshv1alpha1.UpgradeCounts{Total: 3, Updated: 1, Ready: 1}})
	ms := &meshv1alpha1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "demo"},
		Spec: meshv1alpha1.MeshServiceSpec{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "demo"}}}}
	if err := testEnv.Client.Create(t.Context(), ms); err != nil {
		t.Fatal(err)
	}
	ms.Status = meshv1alpha1.MeshServiceStatus{CurrentVersion: "proxy-v2", Pods: meshv1alpha1.MeshServicePods{Matched: 3, Injected: 3, Ready: 3,
		ByVersion: []meshv1alpha1.VersionCount{{Version: "proxy-v1", Pods: 2}, {Version: "proxy-v2", Pods: 1}}}}
	meta.SetStatusCondition(&ms.Status.Conditions, metav1.Condition{Type: meshv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "AllPodsReady"})
	if err := testEnv.Client.Status().Update(t.Context(), ms); err != nil {
		t.Fatal(err)
	}
	createPodWithRecord(t, ns, "demo-a", "demo-upgrade", "proxy-v1")
	notAfter := testNow.Add(20 * time.Hour).Format(time.RFC3339)
	pod := &corev1.Pod{}
	if err := testEnv.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "demo-a"}, pod); err != nil {
		t.Fatal(err)
	}
	pod.Annotations[meshv1alpha1.AnnotationCertificateNotAfter] = notAfter
	if err := testEnv.Client.Update(t.Context(), pod); err != nil {
		t.Fatal(err)
	}

	if err := run(t, env, "get", "plans"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "demo-upgrade   proxy-v2   HotUpgrade   Progressing   1/3") {
		t.Errorf("get plans:\n%s", out.String())
	}
	out.Reset()
	if err := run(t, env, "get", "meshservices", "-o", "json"); err != nil {
		t.Fatal(err)
	}
	var services []view.MeshServiceRow
	if err := json.Unmarshal(out.Bytes(), &services); err != nil || len(services) != 1 || len(services[0].ByVersion) != 2 || services[0].Status != "AllPodsReady" {
		t.Errorf("get meshservices -o json: %v %+v\n%s", err, services, out.String())
	}
	out.Reset()
	if err := run(t, env, "proxy-status", "-o", "json"); err != nil {
		t.Fatal(err)
	}
	var proxies []view.ProxyRow
	if err := json.Unmarshal(out.Bytes(), &proxies); err != nil || len(proxies) != 1 {
		t.Fatalf("proxy-status -o json: %v\n%s", err, out.String())
	}
	p := proxies[0]
	if p.Pod != "demo-a" || p.Version != "proxy-v2" || p.ActiveSlot != 2 || p.Image != "meshlift/meshlift-proxy:2.0.0" ||
		p.IdleImage != "meshlift/meshlift-idle:dev" || p.CertificateNotAfter == nil || p.CertificateNotAfter.Format(time.RFC3339) != notAfter {
		t.Errorf("proxy-status row %+v", p)
	}
	out.Reset()
	if err := run(t, env, "proxy-status", "demo-a"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "in 20h") {
		t.Errorf("proxy-status demo-a:\n%s", out.String())
	}
	out.Reset()
	if err := run(t, env, "status", "demo-upgrade", "-o", "yaml"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"phase: Progressing", "target: proxy-v2", "updated: 1", "- pods: 2\n  version: proxy-v1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status -o yaml lacks %q:\n%s", want, out.String())
		}
	}
	if err := run(t, env, "get", "widgets"); err == nil || !strings.Contains(err.Error(), "use plans, versions or meshservices") {
		t.Errorf("get widgets: %v", err)
	}
	if err := run(t, env, "status", "demo-upgrade", "-o", "wide"); err == nil || !strings.Contains(err.Error(), "use json or yaml") {
		t.Errorf("status -o wide: %v", err)
	}
}
