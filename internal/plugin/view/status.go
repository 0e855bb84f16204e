package view

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
)

// StatusInput is what the status screen is computed from.
type StatusInput struct {
	Plan *meshv1alpha1.UpgradePlan
	// MeshServices the plan governs (for where the pods come from); may be empty.
	MeshServices []meshv1alpha1.MeshService
	// Pods by name, for the slot column of the per-pod table; may be empty.
	Pods map[string]*corev1.Pod
	Now  time.Time
}

// PlanStatus is the status of one UpgradePlan as `kubectl meshlift status -o json|yaml` prints it.
// Its fields are stable: new fields may be added, none is renamed or removed within v1alpha1.
type PlanStatus struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Phase is the plan's status.phase; Pending until the controller has seen the plan.
	Phase string `json:"phase"`
	// Strategy is HotUpgrade, InPlace or Recreate; MaxUnavailable as written in the plan.
	Strategy       string `json:"strategy"`
	MaxUnavailable string `json:"maxUnavailable"`
	FailurePolicy  string `json:"failurePolicy"`
	Target         string `json:"target"`
	// Sources are the versions pods are moving away from, with how many pods still run each.
	Sources []VersionPods `json:"sources,omitempty"`
	// Step is the current step (1-based) of Steps; both 1 for a plan without steps.
	Step  int32 `json:"step"`
	Steps int32 `json:"steps"`
	// Partition of the current step as written (count or percentage); empty without steps.
	Partition string `json:"partition,omitempty"`
	// Pause says why the plan does not start pods, when it does not.
	Pause    *Pause   `json:"pause,omitempty"`
	Progress Progress `json:"progress"`
	// StartTime and CompletionTime are the plan's; ElapsedSeconds runs from StartTime to
	// CompletionTime (or now).
	StartTime      *time.Time `json:"startTime,omitempty"`
	CompletionTime *time.Time `json:"completionTime,omitempty"`
	ElapsedSeconds int64      `json:"elapsedSeconds"`
	// RemainingSeconds estimates the time left from the pace so far (absent before the first
	// pod is updated and once the plan ended).
	RemainingSeconds *int64 `json:"remainingSeconds,omitempty"`
	// Message is the Progressing (or Paused, Complete, RolledBack) condition's message.
	Message string `json:"message,omitempty"`
	// Conditions lists the conditions that are not healthy.
	Conditions []Condition `json:"conditions,omitempty"`
	// Pods are the pods in flight or failed, in the plan's order (bounded by the plan status,
	// at most 100); MorePods counts those the table left out.
	Pods []PodRow `json:"pods,omitempty"`
	// Done is true once the plan ended: Succeeded, Failed or RolledBack.
	Done bool `json:"done"`
}

// VersionPods is a version and how many pods run it.
type VersionPods struct {
	Version string `json:"version"`
	Pods    int32  `json:"pods"`
}

// Pause explains a plan that starts no pods.
type Pause struct {
	// Kind is Manual (spec.paused, or a step pause without duration: released by resume) or
	// Timed (a step pause with a duration).
	Kind string `json:"kind"`
	// Until is when a timed pause ends.
	Until *time.Time `json:"until,omitempty"`
	// ResumeCommand releases a manual pause.
	ResumeCommand string `json:"resumeCommand,omitempty"`
	// Reason is the controller's words.
	Reason string `json:"reason"`
}

// Progress counts the plan's pods.
type Progress struct {
	Total    int32 `json:"total"`
	Updated  int32 `json:"updated"`
	Ready    int32 `json:"ready"`
	Failed   int32 `json:"failed"`
	InFlight int32 `json:"inFlight"`
	// Retiring pods run the target while their old proxy still serves long-lived connections
	// (RetiringConnections of them, as last reported).
	Retiring            int32 `json:"retiring,omitempty"`
	RetiringConnections int32 `json:"retiringConnections,omitempty"`
}

// Condition is a condition that is not healthy.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"`
}

// PodRow is one pod in flight or failed.
type PodRow struct {
	Pod  string `json:"pod"`
	From string `json:"from"`
	To   string `json:"to"`
	// Slot is the pod's active slot (1 or 2; 0 for a single proxy; absent when unknown).
	Slot *int `json:"slot,omitempty"`
	// Phase of the pod's upgrade (ResizingUp, WaitingReady, Stabilizing, ..., Failed).
	Phase string `json:"phase"`
	// Since is when the pod entered Phase.
	Since  *time.Time `json:"since,omitempty"`
	Reason string     `json:"reason,omitempty"`
	// Connections is how many connections the old proxy of a Retiring pod still serves.
	Connections *int32 `json:"connections,omitempty"`
}

// Pause kinds.
const (
	PauseManual = "Manual"
	PauseTimed  = "Timed"
)

// Ended reports whether a phase ends `status -w`.
func Ended(phase meshv1alpha1.UpgradePhase) bool {
	return phase == meshv1alpha1.PhaseSucceeded || phase == meshv1alpha1.PhaseFailed || phase == meshv1alpha1.PhaseRolledBack
}

// ResumeCommand is the command that releases a manual pause of the plan.
func ResumeCommand(namespace, name string) string {
	return fmt.Sprintf("kubectl meshlift resume %s -n %s", name, namespace)
}

// BuildStatus computes the status of in.Plan.
func BuildStatus(in StatusInput) PlanStatus {
	plan := in.Plan
	s := PlanStatus{
		Namespace:      plan.Namespace,
		Name:           plan.Name,
		Phase:          string(plan.Status.Phase),
		Strategy:       string(cmp.Or(plan.Spec.Strategy.Type, meshv1alpha1.StrategyHotUpgrade)),
		MaxUnavailable: "1",
		FailurePolicy:  string(cmp.Or(plan.Spec.FailurePolicy, meshv1alpha1.FailurePolicyPause)),
		Target:         plan.Spec.TargetVersion,
		Steps:          max(int32(len(plan.Spec.Strategy.Steps)), 1),
		Step:           plan.Status.CurrentStep + 1,
		Progress: Progress{
			Total:               plan.Status.Counts.Total,
			Updated:             plan.Status.Counts.Updated,
			Ready:               plan.Status.Counts.Ready,
			Failed:              plan.Status.Counts.Failed,
			Retiring:            plan.Status.Counts.Retiring,
			RetiringConnections: plan.Status.Counts.RetiringConnections,
		},
	}
	// A status older than the spec (the target was just changed, say) describes the previous
	// spec: until the operator has seen the change, the plan is Pending, not Succeeded.
	stale := plan.Status.ObservedGeneration < plan.Generation
	if s.Phase == "" || stale {
		s.Phase = string(meshv1alpha1.PhasePending)
	}
	if mu := plan.Spec.Strategy.MaxUnavailable; mu != nil {
		s.MaxUnavailable = mu.String()
	}
	if steps := plan.Spec.Strategy.Steps; len(steps) > 0 {
		i := min(max(int(plan.Status.CurrentStep), 0), len(steps)-1)
		s.Step = int32(i + 1)
		s.Partition = steps[i].Partition.String()
	}
	s.Done = !stale && Ended(plan.Status.Phase)

	// Where the pods come from: every version other than the target that pods of the governed
	// MeshServices run.
	sources := map[string]int32{}
	for _, ms := range in.MeshServices {
		for _, v := range ms.Status.Pods.ByVersion {
			if v.Version != plan.Spec.TargetVersion && v.Pods > 0 {
				sources[v.Version] += v.Pods
			}
		}
	}
	for v, n := range sources {
		s.Sources = append(s.Sources, VersionPods{Version: v, Pods: n})
	}
	slices.SortFunc(s.Sources, func(a, b VersionPods) int {
		return cmp.Or(cmp.Compare(b.Pods, a.Pods), cmp.Compare(a.Version, b.Version))
	})

	if stale {
		// Counts, pods and times of an older spec would mislead: show the new spec only.
		s.Progress = Progress{}
		s.Step = 1
		s.Message = "waiting for the operator to pick the plan up"
		if plan.Status.ObservedGeneration > 0 {
			s.Message = fmt.Sprintf("waiting for the operator to see the change (generation %d; the status is of generation %d)",
				plan.Generation, plan.Status.ObservedGeneration)
		}
		if plan.Spec.Paused {
			s.Pause = pauseOf(plan, in.Now)
		}
		return s
	}

	for _, p := range plan.Status.Pods {
		row := PodRow{Pod: p.Pod, From: p.From, To: p.To, Phase: p.Phase, Reason: p.Reason, Connections: p.Connections}
		if p.LastTransitionTime != nil {
			t := p.LastTransitionTime.UTC()
			row.Since = &t
		}
		if pod := in.Pods[p.Pod]; pod != nil {
			slot := sidecar.ActiveSlot(pod)
			row.Slot = &slot
		}
		// Pods past their takeover (the old slot retires or shrinks) are updated, not in flight.
		if p.Phase != "Failed" && p.Phase != "Aborted" && p.Phase != "Retiring" && p.Phase != "ResizingDown" {
			s.Progress.InFlight++
		}
		s.Pods = append(s.Pods, row)
	}

	if t := plan.Status.StartTime; t != nil {
		start := t.UTC()
		s.StartTime = &start
		end := in.Now
		if c := plan.Status.CompletionTime; c != nil && plan.Status.Phase == meshv1alpha1.PhaseSucceeded {
			done := c.UTC()
			s.CompletionTime = &done
			end = done
		} else if s.Done {
			// Failed and RolledBack plans have no completion time: stop the clock at the last
			// transition of the condition that ended them.
			for _, ct := range []string{meshv1alpha1.ConditionFailed, meshv1alpha1.ConditionRolledBack, meshv1alpha1.ConditionPaused} {
				if c := meta.FindStatusCondition(plan.Status.Conditions, ct); c != nil && c.Status == metav1.ConditionTrue {
					end = c.LastTransitionTime.UTC()
					break
				}
			}
		}
		s.ElapsedSeconds = int64(max(end.Sub(start), 0).Round(time.Second) / time.Second)
		// The pace so far: elapsed time per updated pod, applied to the pods left. Pods that
		// already ran the target when the plan started make it optimistic; it is an estimate.
		left := s.Progress.Total - s.Progress.Updated
		if !s.Done && s.Progress.Updated > 0 && left > 0 && s.ElapsedSeconds > 0 {
			remaining := s.ElapsedSeconds * int64(left) / int64(s.Progress.Updated)
			s.RemainingSeconds = &remaining
		}
	}

	s.Pause = pauseOf(plan, in.Now)
	s.Message = conditionMessage(plan)
	for _, c := range plan.Status.Conditions {
		if unhealthy(c) {
			s.Conditions = append(s.Conditions, Condition{Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: c.Message})
		}
	}
	return s
}

// pauseOf says why a plan starts no pods, or nil.
func pauseOf(plan *meshv1alpha1.UpgradePlan, now time.Time) *Pause {
	if plan.Spec.Paused {
		return &Pause{Kind: PauseManual, Reason: "spec.paused is set: pods in flight finish, none starts",
			ResumeCommand: ResumeCommand(plan.Namespace, plan.Name)}
	}
	c := meta.FindStatusCondition(plan.Status.Conditions, meshv1alpha1.ConditionPaused)
	if plan.Status.Phase != meshv1alpha1.PhasePaused || c == nil || c.Status != metav1.ConditionTrue {
		return nil
	}
	p := &Pause{Kind: PauseManual, Reason: pauseReason(c.Message)}
	steps := plan.Spec.Strategy.Steps
	if i := int(plan.Status.CurrentStep); i >= 0 && i < len(steps) && steps[i].Pause != nil && steps[i].Pause.Duration != nil {
		p.Kind = PauseTimed
		until := c.LastTransitionTime.UTC().Add(steps[i].Pause.Duration.Duration)
		p.Until = &until
		return p
	}
	p.ResumeCommand = ResumeCommand(plan.Namespace, plan.Name)
	return p
}

// pauseReason keeps the part of the Paused message after the progress counts: "paused after
// step 1 until resumed (...)".
func pauseReason(message string) string {
	if _, after, ok := strings.Cut(message, "; "); ok {
		return after
	}
	return message
}

// conditionMessage is the message of the condition that describes the phase.
func conditionMessage(plan *meshv1alpha1.UpgradePlan) string {
	for _, t := range []string{meshv1alpha1.ConditionProgressing, meshv1alpha1.ConditionPaused, meshv1alpha1.ConditionComplete, meshv1alpha1.ConditionRolledBack} {
		if c := meta.FindStatusCondition(plan.Status.Conditions, t); c != nil && c.Status == metav1.ConditionTrue {
			return c.Message
		}
	}
	if c := meta.FindStatusCondition(plan.Status.Conditions, meshv1alpha1.ConditionProgressing); c != nil {
		return c.Message
	}
	return ""
}

// unhealthy reports the conditions worth a line of their own: failures, conflicts, and a plan
// that stopped progressing for a reason other than finishing.
func unhealthy(c metav1.Condition) bool {
	switch c.Type {
	case meshv1alpha1.ConditionFailed, meshv1alpha1.ConditionRolledBack, meshv1alpha1.ConditionConflict:
		return c.Status == metav1.ConditionTrue
	case meshv1alpha1.ConditionProgressing:
		return c.Status == metav1.ConditionFalse && c.Reason != "Completed" && c.Reason != "CompletedWithFailures" &&
			c.Reason != "Paused" && c.Reason != "StepPause" && c.Reason != "RolledBack" && c.Reason != "TooManyFailures"
	}
	return false
}

func phaseTone(phase string) tone {
	switch meshv1alpha1.UpgradePhase(phase) {
	case meshv1alpha1.PhaseSucceeded:
		return toneGood
	case meshv1alpha1.PhaseProgressing, meshv1alpha1.PhaseRollingBack:
		return toneBusy
	case meshv1alpha1.PhasePaused, meshv1alpha1.PhasePending:
		return toneWait
	case meshv1alpha1.PhaseFailed, meshv1alpha1.PhaseRolledBack:
		return toneBad
	}
	return toneNeutral
}

func podTone(phase string) tone {
	switch phase {
	case "Failed", "Aborted", "Reverting":
		return toneBad
	case "Succeeded":
		return toneGood
	}
	return toneBusy
}

// RenderStatus draws the status screen.
func RenderStatus(s PlanStatus, now time.Time, o Options) string {
	var b strings.Builder
	width := o.width()
	field := func(label, value string) {
		fmt.Fprintf(&b, "%-11s %s\n", label+":", value)
	}
	b.WriteString(o.paint(ansiBold, fmt.Sprintf("UpgradePlan %s/%s", s.Namespace, s.Name)) + "\n")
	field("Phase", o.badge(phaseTone(s.Phase), s.Phase))
	field("Strategy", fmt.Sprintf("%s, maxUnavailable %s, failurePolicy %s", s.Strategy, s.MaxUnavailable, s.FailurePolicy))
	target := o.paint(ansiBold, s.Target)
	if len(s.Sources) > 0 {
		from := make([]string, 0, len(s.Sources))
		for _, v := range s.Sources {
			from = append(from, fmt.Sprintf("%s (%d %s)", v.Version, v.Pods, plural(v.Pods, "pod", "pods")))
		}
		target += "   from " + strings.Join(from, ", ")
	}
	field("Target", target)
	step := fmt.Sprintf("%d/%d", s.Step, s.Steps)
	if s.Partition != "" {
		step += fmt.Sprintf(" (partition %s)", s.Partition)
	}
	field("Step", step)
	if s.Pause != nil {
		switch {
		case s.Pause.Kind == PauseTimed && s.Pause.Until != nil:
			field("Paused", o.paint(ansiYellow, fmt.Sprintf("after step %d until %s (%s left)", s.Step, s.Pause.Until.Format("15:04:05"), Duration(s.Pause.Until.Sub(now)))))
		case s.Steps > 1 && !strings.HasPrefix(s.Pause.Reason, "spec.paused"):
			field("Paused", o.paint(ansiYellow, fmt.Sprintf("after step %d of %d, until resumed", s.Step, s.Steps)))
			field("Resume", o.paint(ansiBold, s.Pause.ResumeCommand))
		default:
			field("Paused", o.paint(ansiYellow, "spec.paused: pods in flight finish, none starts"))
			field("Resume", o.paint(ansiBold, s.Pause.ResumeCommand))
		}
	}
	barWidth := 20
	if width >= 120 {
		barWidth = 40
	}
	percent := 0
	if s.Progress.Total > 0 {
		percent = int(int64(s.Progress.Updated) * 100 / int64(s.Progress.Total))
	}
	field("Progress", fmt.Sprintf("%s  %d/%d updated (%d%%)", o.bar(s.Progress, barWidth), s.Progress.Updated, s.Progress.Total, percent))
	failed := fmt.Sprintf("%d failed", s.Progress.Failed)
	if s.Progress.Failed > 0 {
		failed = o.paint(ansiRed, failed)
	}
	pods := fmt.Sprintf("%d ready, %s, %d in flight", s.Progress.Ready, failed, s.Progress.InFlight)
	if s.Progress.Retiring > 0 {
		pods += fmt.Sprintf(", %d retiring (%d %s)", s.Progress.Retiring, s.Progress.RetiringConnections,
			plural(s.Progress.RetiringConnections, "connection", "connections"))
	}
	field("Pods", wrap(pods, width, 12, strings.Repeat(" ", 12)))
	if s.StartTime != nil {
		timing := fmt.Sprintf("%s, %s ago", s.StartTime.Format("15:04:05"), Duration(time.Duration(s.ElapsedSeconds)*time.Second))
		if s.Done {
			timing = fmt.Sprintf("%s, took %s", s.StartTime.Format("15:04:05"), Duration(time.Duration(s.ElapsedSeconds)*time.Second))
		}
		if s.RemainingSeconds != nil {
			timing += fmt.Sprintf(", about %s left", Duration(time.Duration(*s.RemainingSeconds)*time.Second))
		}
		field("Started", timing)
	} else {
		field("Started", "not yet")
	}
	if s.Message != "" {
		field("Message", wrap(s.Message, width, 12, strings.Repeat(" ", 12)))
	}
	for _, c := range s.Conditions {
		line := fmt.Sprintf("%s=%s %s", c.Type, c.Status, c.Reason)
		if c.Message != "" {
			line += ": " + c.Message
		}
		b.WriteString(o.paint(ansiRed, wrap(o.pick(toneBad.symbol()+" ", "")+line, width, 0, "  ")))
		b.WriteString("\n")
	}
	if len(s.Pods) > 0 {
		b.WriteString("\n")
		// On a narrow terminal the reasons go under the table, wrapped, instead of a column cut
		// to a few characters.
		wide := width >= 120
		header := []string{"POD", o.pick("FROM → TO", "FROM -> TO"), "SLOT", "PHASE", "FOR"}
		if wide {
			header = append(header, "REASON")
		}
		t := newTable(false, header...)
		arrow := o.pick(" → ", " -> ")
		shown := s.Pods[:min(len(s.Pods), o.MaxRows())]
		var reasons []string
		for _, p := range shown {
			slot := "-"
			if p.Slot != nil {
				slot = fmt.Sprint(*p.Slot)
			}
			since := "-"
			if p.Since != nil {
				since = Duration(now.Sub(*p.Since))
			}
			cells := []string{p.Pod, p.From + arrow + p.To, slot, p.Phase, since}
			reason := p.Reason
			if p.Connections != nil && reason == "" {
				reason = fmt.Sprintf("the old proxy holds %d %s", *p.Connections, plural(*p.Connections, "connection", "connections"))
			}
			if wide {
				cells = append(cells, reason)
			} else if reason != "" {
				reasons = append(reasons, wrap(p.Pod+": "+reason, width, 0, "  "))
			}
			t.row("", []string{"", "", "", podTone(p.Phase).color()}, cells...)
		}
		b.WriteString(t.String(o, width))
		for _, r := range reasons {
			b.WriteString(r + "\n")
		}
		if more := len(s.Pods) - len(shown); more > 0 {
			fmt.Fprintf(&b, "... and %d more %s in flight or failed (-o yaml lists them all)\n", more, plural(int32(more), "pod", "pods"))
		}
		if int32(len(s.Pods)) < s.Progress.InFlight+s.Progress.Failed && len(s.Pods) >= 100 {
			fmt.Fprintf(&b, "(the plan's status records the first 100 of them)\n")
		}
	}
	return b.String()
}

// bar draws updated/total: "[██████░░░░░░]" on a terminal, "[######------]" elsewhere; failed
// pods are a red part on a terminal and "x" elsewhere.
func (o Options) bar(p Progress, width int) string {
	if p.Total <= 0 {
		return "[" + strings.Repeat(o.pick("░", "-"), width) + "]"
	}
	done := int(int64(p.Updated) * int64(width) / int64(p.Total))
	failed := int(int64(p.Failed) * int64(width) / int64(p.Total))
	if p.Failed > 0 && failed == 0 {
		failed = 1
	}
	failed = min(failed, width-done)
	rest := width - done - failed
	return "[" + o.paint(ansiGreen, strings.Repeat(o.pick("█", "#"), done)) +
		o.paint(ansiRed, strings.Repeat(o.pick("█", "x"), failed)) +
		o.paint(ansiDim, strings.Repeat(o.pick("░", "-"), rest)) + "]"
}

func (o Options) pick(unicode, ascii string) string {
	if o.Color {
		return unicode
	}
	return ascii
}

func plural(n int32, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// StatusLine is the one-line form of the status, printed when the output is not a terminal:
// `status -w` prints it again only when it changes, so a CI log gets one line per change.
func StatusLine(s PlanStatus) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d/%d updated, %d ready, %d failed, %d in flight", s.Name, s.Phase,
		s.Progress.Updated, s.Progress.Total, s.Progress.Ready, s.Progress.Failed, s.Progress.InFlight)
	if s.Progress.Retiring > 0 {
		fmt.Fprintf(&b, ", %d retiring", s.Progress.Retiring) // not their connections: the line changes only with the phase
	}
	if s.Steps > 1 {
		fmt.Fprintf(&b, "; step %d/%d", s.Step, s.Steps)
	}
	if s.Pause != nil {
		if s.Pause.Kind == PauseTimed && s.Pause.Until != nil {
			fmt.Fprintf(&b, "; paused until %s", s.Pause.Until.Format(time.RFC3339))
		} else {
			fmt.Fprintf(&b, "; paused, resume with: %s", s.Pause.ResumeCommand)
		}
	}
	pods := make([]string, 0, len(s.Pods))
	for _, p := range s.Pods[:min(len(s.Pods), 5)] {
		pods = append(pods, p.Pod+" "+p.Phase)
	}
	if len(pods) > 0 {
		b.WriteString("; " + strings.Join(pods, ", "))
		if len(s.Pods) > 5 {
			fmt.Fprintf(&b, " and %d more", len(s.Pods)-5)
		}
	}
	for _, c := range s.Conditions {
		fmt.Fprintf(&b, "; %s=%s %s", c.Type, c.Status, c.Reason)
	}
	return b.String()
}

// wrap breaks text into lines of at most width columns at spaces. The first line starts at
// column first (after a label the caller printed); the others start with indent. A word longer
// than a line stays whole.
func wrap(text string, width, first int, indent string) string {
	width = max(width, DisplayWidth(indent)+20, first+20)
	var b strings.Builder
	col := first
	for i, word := range strings.Fields(text) {
		n := DisplayWidth(word)
		switch {
		case i > 0 && col+1+n > width:
			b.WriteString("\n" + indent)
			col = DisplayWidth(indent)
		case i > 0:
			b.WriteString(" ")
			col++
		}
		b.WriteString(word)
		col += n
	}
	return b.String()
}
