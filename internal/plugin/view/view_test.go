package view

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden screens in testdata")

var now = time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC)

func ago(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(-d)); return &t }

func cond(t, status, reason, message string, since time.Duration) metav1.Condition {
	return metav1.Condition{Type: t, Status: metav1.ConditionStatus(status), Reason: reason, Message: message, LastTransitionTime: *ago(since)}
}

// golden compares got with testdata/<name>.golden (rewritten with -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/plugin/view -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (go test ./internal/plugin/view -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func basePlan() *meshv1alpha1.UpgradePlan {
	mu := intstr.FromInt32(1)
	return &meshv1alpha1.UpgradePlan{
		ObjectMeta: metav1.ObjectMeta{Namespace: "meshlift-demo", Name: "demo-upgrade", Generation: 1, CreationTimestamp: *ago(3 * time.Minute)},
		Spec: meshv1alpha1.UpgradePlanSpec{MeshServices: []string{"demo"}, TargetVersion: "proxy-v2",
			Strategy:      meshv1alpha1.UpgradeStrategy{Type: meshv1alpha1.StrategyHotUpgrade, MaxUnavailable: &mu},
			FailurePolicy: meshv1alpha1.FailurePolicyRollback},
	}
}

func demoServices(v1, v2 int32) []meshv1alpha1.MeshService {
	return []meshv1alpha1.MeshService{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "meshlift-demo", Name: "demo"},
		Status: meshv1alpha1.MeshServiceStatus{Pods: meshv1alpha1.MeshServicePods{ByVersion: []meshv1alpha1.VersionCount{
			{Version: "proxy-v1", Pods: v1}, {Version: "proxy-v2", Pods: v2}}}},
	}}
}

func slotPod(name, slot string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{meshv1alpha1.AnnotationActiveSlot: slot}}}
}

// scenarios are plans in every phase the screen distinguishes.
func scenarios() map[string]StatusInput {
	out := map[string]StatusInput{}

	pending := basePlan()
	out["pending"] = StatusInput{Plan: pending, MeshServices: demoServices(3, 0)}

	progressing := basePlan()
	progressing.Status = meshv1alpha1.UpgradePlanStatus{Phase: meshv1alpha1.PhaseProgressing, ObservedGeneration: 1,
		Counts: meshv1alpha1.UpgradeCounts{Total: 3, Updated: 1, Ready: 1}, StartTime: ago(40 * time.Second),
		Pods: []meshv1alpha1.PodUpgradeStatus{{Pod: "demo-7d9c6b5f4-x2x8q", From: "proxy-v1", To: "proxy-v2", Phase: "Stabilizing", LastTransitionTime: ago(2 * time.Second)}},
		Conditions: []metav1.Condition{
			cond("Progressing", "True", "Progressing", "1 of 3 pods run proxy-v2, 1 in flight, 0 failed", 40*time.Second),
			cond("Paused", "False", "Progressing", "1 of 3 pods run proxy-v2, 1 in flight, 0 failed", 40*time.Second),
			cond("Complete", "False", "Progressing", "", 40*time.Second),
			cond("Failed", "False", "FailuresWithinBudget", "0 pods failed; maxFailedPods is 0", 40*time.Second),
			cond("Conflict", "False", "NoConflict", "", 40*time.Second),
		}}
	out["progressing"] = StatusInput{Plan: progressing, MeshServices: demoServices(2, 1),
		Pods: map[string]*corev1.Pod{"demo-7d9c6b5f4-x2x8q": slotPod("demo-7d9c6b5f4-x2x8q", "2")}}

	retiring := basePlan()
	retiring.Status = meshv1alpha1.UpgradePlanStatus{Phase: meshv1alpha1.PhaseProgressing, ObservedGeneration: 1,
		Counts: meshv1alpha1.UpgradeCounts{Total: 3, Updated: 3, Ready: 3, Retiring: 2, RetiringConnections: 5}, StartTime: ago(90 * time.Second),
		Pods: []meshv1alpha1.PodUpgradeStatus{
			{Pod: "demo-7d9c6b5f4-k4m2z", From: "proxy-v1", To: "proxy-v2", Phase: "Retiring", Connections: ptr.To[int32](4), LastTransitionTime: ago(70 * time.Second)},
			{Pod: "demo-7d9c6b5f4-x2x8q", From: "proxy-v1", To: "proxy-v2", Phase: "Retiring", Connections: ptr.To[int32](1), LastTransitionTime: ago(20 * time.Second)},
		},
		Conditions: []metav1.Condition{
			cond("Progressing", "True", "WaitingForRetiringProxies", "3 of 3 pods run proxy-v2, 0 in flight, 0 failed; 2 old proxies retire with 5 connections", 20*time.Second),
			cond("Complete", "False", "WaitingForRetiringProxies", "", 20*time.Second),
		}}
	out["retiring"] = StatusInput{Plan: retiring, MeshServices: demoServices(0, 3), Pods: map[string]*corev1.Pod{
		"demo-7d9c6b5f4-k4m2z": slotPod("demo-7d9c6b5f4-k4m2z", "2"), "demo-7d9c6b5f4-x2x8q": slotPod("demo-7d9c6b5f4-x2x8q", "1")}}

	stepPause := basePlan()
	stepPause.Spec.Strategy.Steps = []meshv1alpha1.UpgradeStep{{Partition: intstr.FromString("34%"), Pause: &meshv1alpha1.StepPause{}}, {Partition: intstr.FromString("100%")}}
	stepPause.Status = meshv1alpha1.UpgradePlanStatus{Phase: meshv1alpha1.PhasePaused, ObservedGeneration: 1,
		Counts: meshv1alpha1.UpgradeCounts{Total: 3, Updated: 1, Ready: 1}, StartTime: ago(70 * time.Second),
		Conditions: []metav1.Condition{
			cond("Progressing", "False", "StepPause", "step 1/2: 1 of 3 pods run proxy-v2, 0 in flight, 0 failed; paused after step 1 until resumed (kubectl meshlift resume, annotation meshlift.io/resume=proxy-v2/0)", 30*time.Second),
			cond("Paused", "True", "StepPause", "step 1/2: 1 of 3 pods run proxy-v2, 0 in flight, 0 failed; paused after step 1 until resumed (kubectl meshlift resume, annotation meshlift.io/resume=proxy-v2/0)", 30*time.Second),
		}}
	out["step-pause"] = StatusInput{Plan: stepPause, MeshServices: demoServices(2, 1)}

	timed := stepPause.DeepCopy()
	timed.Spec.Strategy.Steps[0].Pause.Duration = &metav1.Duration{Duration: time.Minute}
	out["timed-pause"] = StatusInput{Plan: timed, MeshServices: demoServices(2, 1)}

	specPaused := progressing.DeepCopy()
	specPaused.Spec.Paused = true
	specPaused.Status.Phase = meshv1alpha1.PhasePaused
	out["spec-paused"] = StatusInput{Plan: specPaused, MeshServices: demoServices(2, 1)}

	succeeded := basePlan()
	succeeded.Status = meshv1alpha1.UpgradePlanStatus{Phase: meshv1alpha1.PhaseSucceeded, ObservedGeneration: 1,
		Counts: meshv1alpha1.UpgradeCounts{Total: 3, Updated: 3, Ready: 3}, StartTime: ago(95 * time.Second), CompletionTime: ago(10 * time.Second),
		Conditions: []metav1.Condition{
			cond("Progressing", "False", "Completed", "every pod runs proxy-v2", 10*time.Second),
			cond("Complete", "True", "Completed", "every pod runs proxy-v2", 10*time.Second),
		}}
	out["succeeded"] = StatusInput{Plan: succeeded, MeshServices: demoServices(0, 3)}

	failed := basePlan()
	failed.Spec.FailurePolicy = meshv1alpha1.FailurePolicyPause
	failed.Status = meshv1alpha1.UpgradePlanStatus{Phase: meshv1alpha1.PhaseFailed, ObservedGeneration: 1,
		Counts: meshv1alpha1.UpgradeCounts{Total: 3, Updated: 1, Ready: 1, Failed: 1}, StartTime: ago(6 * time.Minute),
		Pods: []meshv1alpha1.PodUpgradeStatus{{Pod: "demo-7d9c6b5f4-k4m2z", From: "proxy-v1", To: "proxy-v2", Phase: "Failed",
			Reason: "the new proxy was not ready within progressDeadlineSeconds (120s): container meshlift-proxy-1 is waiting: ImagePullBackOff (Back-off pulling image \"meshlift/meshlift-proxy:2.0.1\")", LastTransitionTime: ago(3 * time.Minute)}},
		Conditions: []metav1.Condition{
			cond("Progressing", "False", "TooManyFailures", "1 pods failed, more than maxFailedPods 0: failurePolicy Pause stops the plan (0 pods in flight finish); raise maxFailedPods or change the target to go on", 3*time.Minute),
			cond("Failed", "True", "TooManyFailures", "1 pods failed; maxFailedPods is 0", 3*time.Minute),
		}}
	out["failed"] = StatusInput{Plan: failed, MeshServices: demoServices(2, 1), Pods: map[string]*corev1.Pod{"demo-7d9c6b5f4-k4m2z": slotPod("demo-7d9c6b5f4-k4m2z", "1")}}

	rollingBack := basePlan()
	rollingBack.Status = meshv1alpha1.UpgradePlanStatus{Phase: meshv1alpha1.PhaseRollingBack, ObservedGeneration: 1,
		Counts: meshv1alpha1.UpgradeCounts{Total: 3, Updated: 1, Ready: 1, Failed: 1}, StartTime: ago(2 * time.Minute),
		Pods: []meshv1alpha1.PodUpgradeStatus{
			{Pod: "demo-7d9c6b5f4-x2x8q", From: "proxy-v2", To: "proxy-v1", Phase: "WaitingReady", LastTransitionTime: ago(1 * time.Second)},
			{Pod: "demo-7d9c6b5f4-k4m2z", From: "proxy-v1", To: "proxy-v2", Phase: "Failed", Reason: "the new proxy crashed: exit code 1", LastTransitionTime: ago(20 * time.Second)}},
		Conditions: []metav1.Condition{
			cond("Progressing", "True", "RollingBack", "rolling back: 1 of 3 pods run proxy-v2", 20*time.Second),
			cond("Failed", "True", "TooManyFailures", "1 pods failed; maxFailedPods is 0", 20*time.Second),
		}}
	out["rolling-back"] = StatusInput{Plan: rollingBack, MeshServices: demoServices(2, 1)}

	rolledBack := basePlan()
	rolledBack.Status = meshv1alpha1.UpgradePlanStatus{Phase: meshv1alpha1.PhaseRolledBack, ObservedGeneration: 1,
		Counts: meshv1alpha1.UpgradeCounts{Total: 3, Updated: 0, Ready: 0, Failed: 1}, StartTime: ago(3 * time.Minute),
		Pods: []meshv1alpha1.PodUpgradeStatus{{Pod: "demo-7d9c6b5f4-k4m2z", From: "proxy-v1", To: "proxy-v2", Phase: "Failed", Reason: "the new proxy crashed: exit code 1", LastTransitionTime: ago(2 * time.Minute)}},
		Conditions: []metav1.Condition{
			cond("Progressing", "False", "RolledBack", "every pod the plan upgraded is back on the version it came from", time.Minute),
			cond("Failed", "True", "TooManyFailures", "1 pods failed; maxFailedPods is 0", 2*time.Minute),
			cond("RolledBack", "True", "RolledBack", "every pod the plan upgraded is back on the version it came from", time.Minute),
		}}
	out["rolled-back"] = StatusInput{Plan: rolledBack, MeshServices: demoServices(3, 0)}

	conflict := basePlan()
	conflict.Status = meshv1alpha1.UpgradePlanStatus{Phase: meshv1alpha1.PhasePending, ObservedGeneration: 1,
		Conditions: []metav1.Condition{
			cond("Progressing", "False", "TargetVersionNotFound", "SidecarVersion proxy-v3 does not exist", time.Minute),
			cond("Conflict", "True", "GovernedByOlderPlan", "MeshService demo is governed by the older UpgradePlan demo-to-v2", time.Minute),
		}}
	conflict.Spec.TargetVersion = "proxy-v3"
	out["conflict"] = StatusInput{Plan: conflict, MeshServices: demoServices(3, 0)}

	// 1,000 pods, maxUnavailable 10%: the status records 100 pods; the table shows 10.
	big := basePlan()
	ten := intstr.FromString("10%")
	big.Spec.Strategy.MaxUnavailable = &ten
	big.Status = meshv1alpha1.UpgradePlanStatus{Phase: meshv1alpha1.PhaseProgressing, ObservedGeneration: 1,
		Counts: meshv1alpha1.UpgradeCounts{Total: 1000, Updated: 400, Ready: 395, Failed: 2}, StartTime: ago(10 * time.Minute),
		Conditions: []metav1.Condition{cond("Progressing", "True", "Progressing", "400 of 1000 pods run proxy-v2, 100 in flight, 2 failed", 10*time.Minute)}}
	pods := map[string]*corev1.Pod{}
	for i := range 100 {
		name := fmt.Sprintf("fleet-%04d", i)
		phase, reason := "WaitingReady", ""
		if i >= 98 {
			phase, reason = "Failed", "the new proxy was not ready within progressDeadlineSeconds (300s)"
		}
		big.Status.Pods = append(big.Status.Pods, meshv1alpha1.PodUpgradeStatus{Pod: name, From: "proxy-v1", To: "proxy-v2", Phase: phase, Reason: reason, LastTransitionTime: ago(time.Duration(i) * time.Second)})
		if i < 10 {
			pods[name] = slotPod(name, "1")
		}
	}
	out["fleet-1000"] = StatusInput{Plan: big, MeshServices: []meshv1alpha1.MeshService{{
		Status: meshv1alpha1.MeshServiceStatus{Pods: meshv1alpha1.MeshServicePods{ByVersion: []meshv1alpha1.VersionCount{
			{Version: "proxy-v1", Pods: 560}, {Version: "proxy-v0", Pods: 40}, {Version: "proxy-v2", Pods: 400}}}}}}, Pods: pods}
	return out
}

// TestStatusScreens draws every scenario plain and in colour, on 80 and 140 columns, and its
// one-line form, against golden files.
func TestStatusScreens(t *testing.T) {
	for name, in := range scenarios() {
		in.Now = now
		s := BuildStatus(in)
		for _, width := range []int{80, 140} {
			for _, color := range []bool{false, true} {
				variant := fmt.Sprintf("%s-%d", name, width)
				if color {
					variant += "-color"
				}
				t.Run(variant, func(t *testing.T) {
					screen := RenderStatus(s, now, Options{Color: color, Width: width})
					golden(t, "status/"+variant, screen)
					if !color && strings.Contains(screen, "\x1b") {
						t.Errorf("plain screen has escape codes:\n%q", screen)
					}
					if !color && strings.ContainsAny(screen, "✔✖◐॥█░→…") {
						t.Errorf("plain screen has Unicode symbols:\n%s", screen)
					}
					for i, line := range strings.Split(strings.TrimSuffix(screen, "\n"), "\n") {
						if w := DisplayWidth(line); w > width && !strings.HasPrefix(line, "Target:") && !strings.HasPrefix(line, "Resume:") {
							t.Errorf("line %d is %d columns wide, more than %d: %q", i+1, w, width, line)
						}
					}
				})
			}
		}
		t.Run(name+"-line", func(t *testing.T) { golden(t, "status/"+name+"-line", StatusLine(s)+"\n") })
	}
}

func TestTheFleetTableIsBoundedAndSaysHowManyMore(t *testing.T) {
	in := scenarios()["fleet-1000"]
	in.Now = now
	screen := RenderStatus(BuildStatus(in), now, Options{Width: 80})
	if n := strings.Count(screen, "fleet-"); n != 10 {
		t.Errorf("the table shows %d pods, want 10", n)
	}
	if !strings.Contains(screen, "... and 90 more pods in flight or failed") {
		t.Errorf("the screen does not say how many more pods there are:\n%s", screen)
	}
}

func TestStatusFields(t *testing.T) {
	sc := scenarios()
	in := sc["progressing"]
	in.Now = now
	s := BuildStatus(in)
	if s.Progress.InFlight != 1 || s.Pods[0].Slot == nil || *s.Pods[0].Slot != 2 {
		t.Errorf("in flight %d, slot %v: want 1 in flight on slot 2", s.Progress.InFlight, s.Pods[0].Slot)
	}
	// 1 pod in 40s, 2 left: about 80s.
	if s.RemainingSeconds == nil || *s.RemainingSeconds != 80 || s.ElapsedSeconds != 40 {
		t.Errorf("elapsed %d, remaining %v: want 40 and 80", s.ElapsedSeconds, s.RemainingSeconds)
	}
	if len(s.Sources) != 1 || s.Sources[0] != (VersionPods{Version: "proxy-v1", Pods: 2}) {
		t.Errorf("sources %v, want proxy-v1 with 2 pods", s.Sources)
	}
	if len(s.Conditions) != 0 {
		t.Errorf("a healthy plan shows conditions %v", s.Conditions)
	}

	in = sc["step-pause"]
	s = BuildStatus(in)
	if s.Pause == nil || s.Pause.Kind != PauseManual || s.Pause.ResumeCommand != "kubectl meshlift resume demo-upgrade -n meshlift-demo" {
		t.Errorf("step pause: %+v", s.Pause)
	}
	in = sc["timed-pause"]
	s = BuildStatus(in)
	if s.Pause == nil || s.Pause.Kind != PauseTimed || s.Pause.Until == nil || !s.Pause.Until.Equal(now.Add(30*time.Second)) {
		t.Errorf("timed pause: %+v", s.Pause)
	}
	in = sc["succeeded"]
	s = BuildStatus(in)
	if !s.Done || s.ElapsedSeconds != 85 || s.RemainingSeconds != nil {
		t.Errorf("succeeded: done %v elapsed %d remaining %v; want done, 85s, no estimate", s.Done, s.ElapsedSeconds, s.RemainingSeconds)
	}
	// The target was just changed: the Succeeded status is of the old spec, so the plan has not
	// ended (status -w must not exit on it).
	in = sc["succeeded"]
	in.Plan = in.Plan.DeepCopy()
	in.Plan.Generation = 2
	s = BuildStatus(in)
	if s.Done || s.Phase != "Pending" || s.Progress != (Progress{}) || !strings.Contains(s.Message, "generation 2; the status is of generation 1") {
		t.Errorf("a status older than the spec: %+v", s)
	}
	in = sc["conflict"]
	s = BuildStatus(in)
	if len(s.Conditions) != 2 {
		t.Errorf("conflict shows %v, want the Conflict and the TargetVersionNotFound conditions", s.Conditions)
	}
}

func TestTables(t *testing.T) {
	created := metav1.NewTime(now.Add(-2 * time.Hour))
	sc := scenarios()
	var plans []meshv1alpha1.UpgradePlan
	for _, name := range []string{"progressing", "step-pause", "failed", "succeeded"} {
		p := sc[name].Plan.DeepCopy()
		p.Name = name
		p.CreationTimestamp = created
		plans = append(plans, *p)
	}
	plans[3].Namespace = "payments"
	versions := []meshv1alpha1.SidecarVersion{
		{ObjectMeta: metav1.ObjectMeta{Name: "proxy-v1"}, Spec: meshv1alpha1.SidecarVersionSpec{Version: "1.0.0", Image: "meshlift/meshlift-proxy:1.0.0", Default: true,
			HotUpgrade: &meshv1alpha1.HotUpgradeSpec{Protocol: "meshlift.io/handoff/v1"}}, Status: meshv1alpha1.SidecarVersionStatus{Pods: 5, ReadyPods: 5}},
		{ObjectMeta: metav1.ObjectMeta{Name: "proxy-v2"}, Spec: meshv1alpha1.SidecarVersionSpec{Version: "2.0.0", Image: "meshlift/meshlift-proxy:2.0.0",
			HotUpgrade: &meshv1alpha1.HotUpgradeSpec{Protocol: "meshlift.io/handoff/v1"}}, Status: meshv1alpha1.SidecarVersionStatus{Pods: 4, ReadyPods: 3}},
		{ObjectMeta: metav1.ObjectMeta{Name: "proxy-v3"}, Spec: meshv1alpha1.SidecarVersionSpec{Version: "3.0.0", Image: "meshlift/meshlift-proxy:3.0.0"}},
	}
	services := []meshv1alpha1.MeshService{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "meshlift-demo", Name: "demo", CreationTimestamp: created},
			Spec: meshv1alpha1.MeshServiceSpec{MTLS: meshv1alpha1.MTLSSpec{Mode: "STRICT"}},
			Status: meshv1alpha1.MeshServiceStatus{CurrentVersion: "proxy-v2", VersionSource: "UpgradePlan",
				Pods:       meshv1alpha1.MeshServicePods{Matched: 3, Injected: 3, Ready: 3, ByVersion: []meshv1alpha1.VersionCount{{Version: "proxy-v1", Pods: 1}, {Version: "proxy-v2", Pods: 2}}},
				Conditions: []metav1.Condition{cond("Ready", "True", "AllPodsReady", "", time.Hour)}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "payments", Name: "ledger", CreationTimestamp: created},
			Spec: meshv1alpha1.MeshServiceSpec{MTLS: meshv1alpha1.MTLSSpec{Mode: "PERMISSIVE"}},
			Status: meshv1alpha1.MeshServiceStatus{CurrentVersion: "proxy-v1", VersionSource: "Default",
				Pods:       meshv1alpha1.MeshServicePods{Matched: 5, Injected: 4, Ready: 3, ByVersion: []meshv1alpha1.VersionCount{{Version: "proxy-v1", Pods: 2}, {Version: "proxy-v2", Pods: 2}}},
				Conditions: []metav1.Condition{cond("Ready", "False", "PodsNotInjected", "", time.Hour)}}},
	}
	notAfter := now.Add(20 * time.Hour).Format(time.RFC3339)
	soon := now.Add(30 * time.Minute).Format(time.RFC3339)
	pods := []corev1.Pod{
		proxyPod("demo-7d9c6b5f4-x2x8q", "proxy-v2", "2", true, notAfter, false),
		proxyPod("demo-7d9c6b5f4-k4m2z", "proxy-v1", "1", false, soon, true),
		proxyPod("demo-7d9c6b5f4-p9w1c", "proxy-v1", "1", true, "", false),
		{ObjectMeta: metav1.ObjectMeta{Namespace: "meshlift-demo", Name: "not-meshed"}},
	}
	finished := proxyPod("load-done", "proxy-v1", "1", false, "", false)
	finished.Status.Phase = corev1.PodSucceeded
	pods = append(pods, finished)
	for _, width := range []int{80, 140} {
		for _, color := range []bool{false, true} {
			o := Options{Color: color, Width: width}
			suffix := fmt.Sprintf("-%d", width)
			if color {
				suffix += "-color"
			}
			golden(t, "tables/plans-all"+suffix, RenderPlans(Plans(plans), true, now, o))
			golden(t, "tables/plans"+suffix, RenderPlans(Plans(plans[:3]), false, now, o))
			golden(t, "tables/versions"+suffix, RenderVersions(Versions(versions, services), o))
			golden(t, "tables/meshservices-all"+suffix, RenderMeshServices(MeshServices(services), true, now, o))
			golden(t, "tables/proxies"+suffix, RenderProxies(ProxyRows(pods, func(p *corev1.Pod) string {
				if p.Name == "demo-7d9c6b5f4-k4m2z" {
					return "Draining (proxy-v1->proxy-v2)"
				}
				return ""
			}), false, now, o))
		}
	}
	golden(t, "tables/empty", RenderPlans(nil, false, now, Options{})+RenderVersions(nil, Options{})+
		RenderMeshServices(nil, false, now, Options{})+RenderProxies(nil, false, now, Options{}))

	rows := Versions(versions, services)
	if len(rows[1].Where) != 2 || !rows[1].Where[1].Drift || rows[1].Where[0].Drift {
		t.Errorf("proxy-v2 placements %+v: want meshlift-demo/demo (current) and payments/ledger (drift)", rows[1].Where)
	}
	proxies := ProxyRows(pods, nil)
	if len(proxies) != 3 || proxies[0].IdleImage != "meshlift/meshlift-idle:dev" || proxies[0].Image != "meshlift/meshlift-proxy:1.0.0" {
		t.Errorf("proxy rows %+v", proxies)
	}
}

func proxyPod(name, version, slot string, ready bool, notAfter string, excluded bool) corev1.Pod {
	ann := map[string]string{meshv1alpha1.AnnotationVersion: version, meshv1alpha1.AnnotationActiveSlot: slot}
	if notAfter != "" {
		ann[meshv1alpha1.AnnotationCertificateNotAfter] = notAfter
	}
	if excluded {
		ann[meshv1alpha1.AnnotationEDSExcluded] = "true"
	}
	image := "meshlift/meshlift-proxy:" + strings.TrimPrefix(version, "proxy-v") + ".0.0"
	other := "1"
	if slot == "1" {
		other = "2"
	}
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "meshlift-demo", Name: name, Annotations: ann},
		Spec: corev1.PodSpec{InitContainers: []corev1.Container{
			{Name: "meshlift-proxy-" + slot, Image: image},
			{Name: "meshlift-proxy-" + other, Image: "meshlift/meshlift-idle:dev"},
		}, Containers: []corev1.Container{{Name: "app", Image: "meshlift/meshlift-demo:dev"}}},
		Status: corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{{Name: "meshlift-proxy-" + slot, Ready: ready}}},
	}
}

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second: "0s", 0: "0s", 45 * time.Second: "45s", 3*time.Minute + 12*time.Second: "3m12s", 5 * time.Minute: "5m",
		25 * time.Minute: "25m", 2*time.Hour + 5*time.Minute: "2h5m", 3 * time.Hour: "3h", 76 * time.Hour: "3d4h", 96 * time.Hour: "4d",
	} {
		if got := Duration(d); got != want {
			t.Errorf("Duration(%s) = %q, want %q", d, got, want)
		}
	}
}
