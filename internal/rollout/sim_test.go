package rollout_test

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/rollout"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
)

// The simulator plays the controller, the kubelet and the workload controllers around the
// planner: it applies the planner's actions to fake pods exactly as the Action contract says,
// restarts containers whose image changed, makes chosen pods fail, advances a fake clock and
// writes a readable log of every decision.

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// failureMode is how a pod's new proxy misbehaves.
type failureMode string

const (
	neverReady failureMode = "never-ready" // runs, never passes its readiness probe
	crashLoop  failureMode = "crash-loop"  // CrashLoopBackOff
	flapping   failureMode = "flapping"    // ready for two seconds, then not ready for six
)

type sim struct {
	t        testing.TB
	plan     *meshv1alpha1.UpgradePlan
	versions map[string]*meshv1alpha1.SidecarVersion
	pods     []corev1.Pod
	now      time.Time
	opts     rollout.Options
	ms       *meshv1alpha1.MeshService
	inject   sidecar.Options

	// startup is how long a restarted container takes to become ready.
	startup time.Duration
	// failures: pod name -> how its proxy fails when it runs failImage.
	failures  map[string]failureMode
	failImage string
	// unready: pod name -> [from, to) during which its application is not ready.
	unready map[string][2]time.Time
	// resizePending: pod name -> the PodResizePending condition the kubelet sets instead of
	// applying a resize of that pod (Deferred or Infeasible).
	resizePending map[string]corev1.PodCondition
	// noStatusResources plays a kubelet that reports no resources in container statuses.
	noStatusResources bool
	// hooks run before the decision of a given second (offset from t0).
	hooks map[int]func(*sim)
	// crashAfter, when >= 0, makes the next decision a crash: only that many actions are
	// applied (and only their patch, not their resize or eviction), and the plan status is not
	// written: the operator restarts with nothing but the cluster.
	crashAfter int

	readyAt    map[string]time.Time
	unreadyAt  map[string]time.Time
	removeAt   map[string]time.Time
	replaced   map[string]int
	verbose    bool
	log        strings.Builder
	last       string
	lastNotes  string
	decisions  int
	maxInFlite int32
	checks     func(*sim, rollout.Result)
	// drain is Input.Drain.
	drain *rollout.DrainInput
	// holds, when set, plays the old proxies of hot-upgraded pods (Input.Retiring): pod name ->
	// how long after the takeover its last long-lived connection closes (0: at once), cut at the
	// pod's drain budget; unreadable pods' /ready cannot be read.
	holds      map[string]time.Duration
	unreadable map[string]bool
}

// heldConnections is how many long-lived connections a holding old proxy reports.
const heldConnections = 12

// retiring is Input.Retiring: what the old proxies of the pods past their takeover report.
func (s *sim) retiring() map[types.UID]rollout.RetireReport {
	if s.holds == nil {
		return nil
	}
	out := map[types.UID]rollout.RetireReport{}
	for i := range s.pods {
		pod := &s.pods[i]
		state := podState(pod)
		if state == nil || state.Strategy != meshv1alpha1.StrategyHotUpgrade || state.ReadySince == nil ||
			(state.Phase != rollout.PodStabilizing && state.Phase != rollout.PodRetiring) {
			continue
		}
		if s.unreadable[pod.Name] {
			out[pod.UID] = rollout.RetireReport{Error: "dial tcp 10.0.0.1:15000: connect: connection refused"}
			continue
		}
		budget := 10 * time.Minute
		if value := pod.Annotations["meshlift.io/drain-max-duration"]; value != "" {
			budget, _ = time.ParseDuration(value)
		}
		held := s.now.Sub(*state.ReadySince)
		switch hold := s.holds[pod.Name]; {
		case held >= hold:
			out[pod.UID] = rollout.RetireReport{Idle: true}
		case held >= budget:
			out[pod.UID] = rollout.RetireReport{Idle: true, Cut: heldConnections}
		default:
			out[pod.UID] = rollout.RetireReport{Connections: heldConnections}
		}
	}
	return out
}

func newSim(t testing.TB, plan *meshv1alpha1.UpgradePlan, pods int, from string) *sim {
	s := &sim{
		t: t, plan: plan, now: t0, opts: rollout.DefaultOptions(), startup: 2 * time.Second,
		versions:      testVersions(),
		ms:            gen.MeshService("web"),
		inject:        sidecar.DefaultOptions(),
		failures:      map[string]failureMode{},
		unready:       map[string][2]time.Time{},
		resizePending: map[string]corev1.PodCondition{},
		hooks:         map[int]func(*sim){},
		readyAt:       map[string]time.Time{},
		unreadyAt:     map[string]time.Time{},
		removeAt:      map[string]time.Time{},
		replaced:      map[string]int{},
		crashAfter:    -1,
	}
	s.failImage = s.versions[plan.Spec.TargetVersion].Spec.Image
	width := len(strconv.Itoa(pods - 1))
	for i := range pods {
		s.addPod(fmt.Sprintf("web-%0*d", width, i), from, true)
	}
	return s
}

func testVersions() map[string]*meshv1alpha1.SidecarVersion {
	withResources := func(cpu, memory string) gen.SidecarVersionOption {
		return func(v *meshv1alpha1.SidecarVersion) {
			v.Spec.Resources = corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(memory)},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
			}
		}
	}
	cold := func(v *meshv1alpha1.SidecarVersion) { v.Spec.HotUpgrade, v.Spec.IdleImage = nil, "" }
	versions := map[string]*meshv1alpha1.SidecarVersion{}
	for _, v := range []*meshv1alpha1.SidecarVersion{
		gen.SidecarVersion("proxy-v1", "1.0.0", withResources("50m", "32Mi")),
		gen.SidecarVersion("proxy-v2", "2.0.0", withResources("100m", "48Mi")),
		gen.SidecarVersion("proxy-v3", "3.0.0", withResources("100m", "48Mi")),
		gen.SidecarVersion("proxy-legacy", "0.9.0", withResources("50m", "32Mi"), cold),
	} {
		versions[v.Name] = v
	}
	return versions
}

// addPod creates an injected pod running version, as the webhook would inject it.
func (s *sim) addPod(name, version string, ready bool) *corev1.Pod {
	pod := gen.Pod(name, gen.PodMeta(gen.SetLabels("app", "web")))
	result := sidecar.Inject(pod, s.ms, s.versions[version], s.inject)
	out := result.Pod
	out.UID = types.UID("uid-" + name)
	s.pods = append(s.pods, *out)
	added := &s.pods[len(s.pods)-1]
	s.kubeletPod(added, ready)
	return added
}

// addPlainPod creates a pod the webhook did not inject (it existed before its MeshService).
func (s *sim) addPlainPod(name string) *corev1.Pod {
	pod := gen.Pod(name, gen.PodMeta(gen.SetLabels("app", "web")))
	pod.UID = types.UID("uid-" + name)
	s.pods = append(s.pods, *pod)
	added := &s.pods[len(s.pods)-1]
	s.kubeletPod(added, true)
	return added
}

func (s *sim) pod(name string) *corev1.Pod {
	for i := range s.pods {
		if s.pods[i].Name == name {
			return &s.pods[i]
		}
	}
	return nil
}

// run decides until the plan is done and stable, at most maxSeconds.
func (s *sim) run(maxSeconds int) rollout.Result {
	s.t.Helper()
	var res rollout.Result
	for second := 0; second <= maxSeconds; second++ {
		if hook := s.hooks[second]; hook != nil {
			hook(s)
		}
		res = s.decide()
		done := res.InFlight == 0 && len(res.Actions) == 0 && (res.Phase == meshv1alpha1.PhaseSucceeded ||
			res.Phase == meshv1alpha1.PhaseRolledBack || res.Phase == meshv1alpha1.PhaseFailed)
		if done && !s.hooksAfter(second) {
			s.summary(res)
			return res
		}
		s.now = s.now.Add(time.Second)
		s.kubelet()
	}
	lines := strings.Split(s.log.String(), "\n")
	s.t.Fatalf("the plan did not finish within %ds; last decision: %s %s\nlast log lines:\n%s", maxSeconds, res.Phase, res.Message,
		strings.Join(lines[max(0, len(lines)-40):], "\n"))
	return res
}

func (s *sim) hooksAfter(second int) bool {
	for at := range s.hooks {
		if at > second {
			return true
		}
	}
	return false
}

func (s *sim) decide() rollout.Result {
	s.t.Helper()
	res, err := rollout.Plan(rollout.Input{Plan: s.plan, Versions: s.versions, Pods: s.pods, Now: s.now, Options: s.opts, Drain: s.drain,
		Retiring: s.retiring(), MeshServices: map[string]*meshv1alpha1.MeshService{s.ms.Name: s.ms}})
	if err != nil {
		s.t.Fatalf("Plan: %v", err)
	}
	s.decisions++
	s.checkBudget(res)
	s.logDecision(res)
	crashed := s.crashAfter >= 0 && len(res.Actions) > 0 // a crash waits for a decision that acts
	s.apply(res.Actions)
	s.checkSlots()
	if s.checks != nil {
		s.checks(s, res)
	}
	if !crashed {
		s.plan.Status.Phase = res.Phase
		s.plan.Status.CurrentStep = res.CurrentStep
		s.plan.Status.Counts = res.Counts
		s.plan.Status.Pods = res.Pods
		s.plan.Status.Conditions = res.Conditions
	}
	return res
}

// apply plays the controller: for each action, one patch (state, annotations, images), then the
// resize, then the eviction.
func (s *sim) apply(actions []rollout.Action) {
	s.t.Helper()
	limit := len(actions)
	patchOnly := false
	if s.crashAfter >= 0 && len(actions) > 0 {
		limit, patchOnly = min(s.crashAfter, len(actions)), true
		fmt.Fprintf(&s.log, "  !! operator crashed after %d of %d actions (their resize/eviction lost, status not written); it restarts with no memory\n", limit, len(actions))
		s.crashAfter = -1
	}
	for i := range actions[:limit] {
		action := &actions[i]
		pod := s.pod(action.Pod.Name)
		if pod == nil || pod.UID != action.UID {
			s.t.Fatalf("action %s for a pod that does not exist", action)
		}
		patched, err := action.ApplyPatch(pod)
		if err != nil {
			s.t.Fatalf("apply %s: %v", action, err)
		}
		if patchOnly {
			*pod = *patched
			continue
		}
		resized, err := action.ApplyResize(patched)
		if err != nil {
			s.t.Fatalf("resize %s: %v", action, err)
		}
		*pod = *resized
		if action.Evict {
			s.evict(pod)
		}
	}
}

// evict terminates the pod; its ReplicaSet creates a replacement at once, which the webhook
// injects with the plan's target.
func (s *sim) evict(pod *corev1.Pod) {
	if pod.DeletionTimestamp != nil {
		return
	}
	pod.DeletionTimestamp = &metav1.Time{Time: s.now}
	s.removeAt[pod.Name] = s.now.Add(3 * time.Second)
	base, _, _ := strings.Cut(pod.Name, "-r")
	s.replaced[base]++
	name := fmt.Sprintf("%s-r%d", base, s.replaced[base])
	s.addPod(name, s.plan.Spec.TargetVersion, false)
}

// kubelet restarts containers whose image changed, makes them ready after startup (unless the
// pod is set to fail) and removes terminated pods.
func (s *sim) kubelet() {
	kept := s.pods[:0]
	for i := range s.pods {
		if at, ok := s.removeAt[s.pods[i].Name]; ok && !s.now.Before(at) {
			continue
		}
		kept = append(kept, s.pods[i])
	}
	s.pods = kept
	for i := range s.pods {
		if s.pods[i].DeletionTimestamp == nil {
			s.kubeletPod(&s.pods[i], false)
		}
	}
}

func (s *sim) kubeletPod(pod *corev1.Pod, startReady bool) {
	pendingResize, isPending := s.resizePending[pod.Name]
	resizing := false
	sync := func(containers []corev1.Container, statuses []corev1.ContainerStatus) []corev1.ContainerStatus {
		for _, c := range containers {
			id := pod.Name + "/" + c.Name
			idx := slices.IndexFunc(statuses, func(st corev1.ContainerStatus) bool { return st.Name == c.Name })
			if idx < 0 {
				statuses = append(statuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image, Ready: startReady,
					State:     corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(s.now)}},
					Resources: c.Resources.DeepCopy()})
				idx = len(statuses) - 1
				if !startReady {
					s.readyAt[id] = s.now.Add(2 * s.startup)
				}
				continue
			}
			st := &statuses[idx]
			// A resize is applied at once, unless the pod is set to have it pending.
			if st.Resources == nil || !sameResources(*st.Resources, c.Resources) {
				if isPending {
					resizing = true
				} else {
					st.Resources = c.Resources.DeepCopy()
				}
			}
			if st.Image != c.Image {
				st.Image, st.Ready, st.RestartCount = c.Image, false, st.RestartCount+1
				st.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(s.now)}}
				delete(s.unreadyAt, id)
				switch mode := s.failures[pod.Name]; {
				case c.Image == s.failImage && mode == crashLoop:
					st.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
					delete(s.readyAt, id)
				case c.Image == s.failImage && mode == neverReady:
					delete(s.readyAt, id)
				default:
					s.readyAt[id] = s.now.Add(s.startup)
					if c.Image == s.failImage && mode == flapping {
						s.unreadyAt[id] = s.now.Add(s.startup + 2*time.Second)
					}
				}
			}
			if at, ok := s.readyAt[id]; ok && !s.now.Before(at) {
				st.Ready = true
				delete(s.readyAt, id)
			}
			if at, ok := s.unreadyAt[id]; ok && !s.now.Before(at) {
				st.Ready = false // for six seconds: long enough to fail minReadySeconds
				delete(s.unreadyAt, id)
				s.readyAt[id] = s.now.Add(6 * time.Second)
			}
		}
		return statuses
	}
	pod.Status.Phase = corev1.PodRunning
	pod.Status.InitContainerStatuses = sync(pod.Spec.InitContainers, pod.Status.InitContainerStatuses)
	pod.Status.ContainerStatuses = sync(pod.Spec.Containers, pod.Status.ContainerStatuses)

	ready := sidecar.ProxyReady(pod)
	for _, st := range pod.Status.ContainerStatuses {
		ready = ready && st.Ready
	}
	if window, ok := s.unready[pod.Name]; ok && !s.now.Before(window[0]) && s.now.Before(window[1]) {
		ready = false
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	if resizing {
		pod.Status.Conditions = append(pod.Status.Conditions, pendingResize)
	}
	if s.noStatusResources {
		for _, statuses := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
			for i := range statuses {
				statuses[i].Resources = nil
			}
		}
	}
}

// checkBudget: never more pods in flight than maxUnavailable, and a decision that starts pods
// never brings in-flight plus otherwise unavailable pods above it. Counted here from the pods,
// not from the planner's own numbers.
func (s *sim) checkBudget(res rollout.Result) {
	s.t.Helper()
	var inFlight, unavailable, starts int32
	for i := range s.pods {
		pod := &s.pods[i]
		state := podState(pod)
		active := state != nil && state.Plan == s.plan.Name && state.Active()
		if pod.DeletionTimestamp != nil {
			if active && state.Phase == rollout.PodEvicting {
				unavailable++
			}
			continue
		}
		if !sidecar.IsInjected(pod) {
			continue
		}
		// A pod past its takeover (its old slot retires or shrinks) runs the target and holds no
		// budget.
		holds := active && state.Phase != rollout.PodRetiring && state.Phase != rollout.PodResizingDown
		if holds {
			inFlight++
		}
		if holds || !sidecar.PodReady(pod) {
			unavailable++
		}
	}
	for _, action := range res.Actions {
		state := podState(s.pod(action.Pod.Name))
		if action.State != nil && action.State.Active() && (state == nil || state.Plan != s.plan.Name || !state.Active()) {
			starts++
		}
	}
	if inFlight > res.MaxUnavailable {
		s.t.Fatalf("%s: %d pods in flight, more than maxUnavailable %d", s.now.Format(time.TimeOnly), inFlight, res.MaxUnavailable)
	}
	if starts > 0 && unavailable+starts > res.MaxUnavailable {
		s.t.Fatalf("%s: started %d pods while %d were unavailable, maxUnavailable %d", s.now.Format(time.TimeOnly), starts, unavailable, res.MaxUnavailable)
	}
	s.maxInFlite = max(s.maxInFlite, inFlight+starts)
}

// checkSlots: every injected pod always has an active proxy, and it runs the version its
// annotation names: the active slot never runs an idle placeholder.
func (s *sim) checkSlots() {
	s.t.Helper()
	for i := range s.pods {
		pod := &s.pods[i]
		if !sidecar.IsInjected(pod) {
			continue
		}
		version := s.versions[sidecar.Version(pod)]
		if version == nil {
			s.t.Fatalf("pod %s runs unknown version %q", pod.Name, sidecar.Version(pod))
		}
		slot := sidecar.ActiveSlot(pod)
		if sidecar.Container(pod, 1) != nil && slot == 0 {
			s.t.Fatalf("pod %s has two slots and no active slot", pod.Name)
		}
		if image := sidecar.SlotImage(pod, slot); image != version.Spec.Image {
			s.t.Fatalf("pod %s: active slot %d runs %q, not %s's image %q", pod.Name, slot, image, version.Name, version.Spec.Image)
		}
	}
}

// sameResources compares requests and limits by quantity.
func sameResources(a, b corev1.ResourceRequirements) bool {
	same := func(x, y corev1.ResourceList) bool {
		if len(x) != len(y) {
			return false
		}
		for name, qx := range x {
			if qy, ok := y[name]; !ok || qx.Cmp(qy) != 0 {
				return false
			}
		}
		return true
	}
	return same(a.Requests, b.Requests) && same(a.Limits, b.Limits)
}

func podState(pod *corev1.Pod) *rollout.PodState {
	if pod == nil {
		return nil
	}
	value, ok := pod.Annotations[meshv1alpha1.AnnotationUpgrade]
	if !ok {
		return nil
	}
	state, err := rollout.DecodeState(value)
	if err != nil {
		return nil
	}
	return state
}

// logDecision writes one block per decision that acts or changes the plan's state; quiet
// decisions (waiting) are left out, the clock shows the gaps.
func (s *sim) logDecision(res rollout.Result) {
	headline := fmt.Sprintf("%s step=%d reason=%s", res.Phase, res.CurrentStep, res.Reason)
	if len(res.Actions) == 0 && headline == s.last {
		return
	}
	fmt.Fprintf(&s.log, "t=%-5s %-11s step=%d total=%d updated=%d ready=%d inflight=%d failed=%d unavailable=%d/%d held=%d ignored=%d\n",
		fmt.Sprintf("%ds", int(s.now.Sub(t0).Seconds())), res.Phase, res.CurrentStep, res.Counts.Total, res.Counts.Updated, res.Counts.Ready,
		res.InFlight, res.Counts.Failed, res.Unavailable, res.MaxUnavailable, len(res.Held), len(res.Ignored))
	if res.Counts.Retiring > 0 {
		fmt.Fprintf(&s.log, "        retiring=%d connections=%d\n", res.Counts.Retiring, res.Counts.RetiringConnections)
	}
	if headline != s.last {
		fmt.Fprintf(&s.log, "        %s: %s\n", res.Reason, res.Message)
		s.last = headline
	}
	if s.verbose {
		notes := ""
		for _, n := range append(slices.Clone(res.Ignored), res.Held...) {
			notes += fmt.Sprintf("        note %s %s: %s\n", n.Pod.Name, n.Reason, n.Message)
		}
		if notes != s.lastNotes {
			s.log.WriteString(notes)
			s.lastNotes = notes
		}
		for i := range res.Actions {
			fmt.Fprintf(&s.log, "        %s\n", res.Actions[i].String())
		}
		return
	}
	// Group by kind and the phase it leads to; failures and reverts are always listed one by one.
	groups := map[string][]string{}
	for i := range res.Actions {
		action := &res.Actions[i]
		switch action.Kind {
		case rollout.ActionRevert, rollout.ActionMarkFailed, rollout.ActionMarkAborted:
			fmt.Fprintf(&s.log, "        %s\n", action.String())
			continue
		}
		label := string(action.Kind)
		if action.State != nil {
			label += " -> " + string(action.State.Phase)
		}
		groups[label] = append(groups[label], action.Pod.Name)
	}
	for _, label := range slices.Sorted(maps.Keys(groups)) {
		fmt.Fprintf(&s.log, "        %-32s x%-4d %s\n", label, len(groups[label]), ranges(groups[label]))
	}
}

func (s *sim) summary(res rollout.Result) {
	byVersion := map[string]int{}
	for i := range s.pods {
		byVersion[cmp.Or(sidecar.Version(&s.pods[i]), "(no sidecar)")]++
	}
	var parts []string
	for _, v := range slices.Sorted(maps.Keys(byVersion)) {
		parts = append(parts, fmt.Sprintf("%s=%d", v, byVersion[v]))
	}
	fmt.Fprintf(&s.log, "END t=%ds decisions=%d phase=%s reason=%s pods: %s; most in flight at once: %d\n",
		int(s.now.Sub(t0).Seconds()), s.decisions, res.Phase, res.Reason, strings.Join(parts, " "), s.maxInFlite)
	fmt.Fprintf(&s.log, "    %s\n", res.Message)
	for _, record := range res.Pods {
		fmt.Fprintf(&s.log, "    pod %s %s %s->%s: %s\n", record.Pod, record.Phase, record.From, record.To, record.Reason)
	}
}

// endState is what two runs of the same rollout must agree on.
func (s *sim) endState() string {
	var lines []string
	for i := range s.pods {
		pod := &s.pods[i]
		line := pod.Name + " " + sidecar.Version(pod) + " slot=" + pod.Annotations[meshv1alpha1.AnnotationActiveSlot]
		if state := podState(pod); state != nil {
			line += " " + string(state.Phase)
		}
		lines = append(lines, line)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// ranges compresses sorted pod names: web-0001..web-0099, web-0150.
func ranges(names []string) string {
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(a, b) })
	split := func(name string) (string, int, bool) {
		i := strings.LastIndexByte(name, '-')
		n, err := strconv.Atoi(name[i+1:])
		return name[:i+1], n, err == nil && i >= 0
	}
	var out []string
	for i := 0; i < len(names); {
		prefix, first, ok := split(names[i])
		j := i + 1
		for ok && j < len(names) {
			p, n, okj := split(names[j])
			if !okj || p != prefix || n != first+(j-i) || len(names[j]) != len(names[i]) {
				break
			}
			j++
		}
		if j-i > 2 {
			out = append(out, names[i]+".."+names[j-1])
		} else {
			out = append(out, names[i:j]...)
		}
		i = j
	}
	if len(out) > 12 {
		return strings.Join(out[:12], ", ") + fmt.Sprintf(", ... (%d more)", len(out)-12)
	}
	return strings.Join(out, ", ")
}

// testPlan is an UpgradePlan of the MeshService web to proxy-v2.
func testPlan(mutate ...func(*meshv1alpha1.UpgradePlan)) *meshv1alpha1.UpgradePlan {
	plan := gen.UpgradePlan("web-v2", "proxy-v2", []string{"web"})
	plan.Generation = 1
	plan.Spec.Health = meshv1alpha1.HealthSpec{ProgressDeadlineSeconds: 30, MinReadySeconds: 5}
	plan.Spec.FailurePolicy = meshv1alpha1.FailurePolicyPause
	for _, m := range mutate {
		m(plan)
	}
	return plan
}

func maxUnavailable(v intstr.IntOrString) func(*meshv1alpha1.UpgradePlan) {
	return func(p *meshv1alpha1.UpgradePlan) { p.Spec.Strategy.MaxUnavailable = ptr.To(v) }
}

func step(partition intstr.IntOrString, pause *meshv1alpha1.StepPause) meshv1alpha1.UpgradeStep {
	return meshv1alpha1.UpgradeStep{Partition: partition, Pause: pause}
}

func pauseFor(d time.Duration) *meshv1alpha1.StepPause {
	return &meshv1alpha1.StepPause{Duration: &metav1.Duration{Duration: d}}
}
