package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/plugin/view"
)

// redrawInterval bounds how often `status -w` redraws: at most four times a second, however fast
// the plan changes.
const redrawInterval = 250 * time.Millisecond

type statusOptions struct {
	watch          bool
	timeout        time.Duration
	successOnPause bool
	output         string
}

func newStatusCommand(env *Env) *cobra.Command {
	o := &statusOptions{}
	c := &cobra.Command{
		Use:   "status PLAN",
		Short: "Show one UpgradePlan: phase, progress, pause, pods in flight (-w follows it to the end)",
		Long: `Show one UpgradePlan on one screen: phase, strategy, target and where the pods come from,
the current step and its pause (with the command that releases it), a progress bar, timing
with an estimate of the time left, the conditions that are not healthy, and the pods in
flight or failed.

With -w it follows the plan (a watch on the API server) and exits when the plan ends:
0 on Succeeded, 2 on Failed or RolledBack, 3 when --timeout runs out; with
--success-on-pause it also exits 0 when the plan waits to be resumed. On a terminal the
screen is redrawn in place; otherwise one line is printed per change.`,
		Example: `  kubectl meshlift status demo-upgrade -n meshlift-demo
  kubectl meshlift status demo-upgrade -n meshlift-demo -w --timeout 10m
  kubectl meshlift status demo-upgrade -n meshlift-demo -o json`,
		Args:              exactlyOnePlan,
		ValidArgsFunction: completePlans(env),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runStatus(cmd.Context(), env, args[0], o)
		},
	}
	c.Flags().BoolVarP(&o.watch, "watch", "w", false, "Follow the plan until it ends.")
	c.Flags().DurationVar(&o.timeout, "timeout", 0, "With -w: give up after this long (exit code 3); 0 waits forever.")
	c.Flags().BoolVar(&o.successOnPause, "success-on-pause", false, "With -w: exit 0 when the plan waits to be resumed (a step pause without duration, or spec.paused).")
	addOutputFlag(c, &o.output)
	return c
}

func exactlyOnePlan(_ *cobra.Command, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("name one UpgradePlan (kubectl meshlift get plans lists them), got %d arguments", len(args))
	}
	return nil
}

func addOutputFlag(c *cobra.Command, output *string) {
	c.Flags().StringVarP(output, "output", "o", "", "Output format: json or yaml (stable fields, see docs/kubectl-plugin.md).")
	_ = c.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
}

func checkOutput(output string) error {
	switch output {
	case "", "json", "yaml":
		return nil
	}
	return fmt.Errorf("--output %q is not supported: use json or yaml (or leave it out for a table)", output)
}

// printStructured prints v as JSON or YAML.
func printStructured(env *Env, output string, v any) error {
	switch output {
	case "json":
		data, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding JSON: %w", err)
		}
		_, err = fmt.Fprintf(env.out(), "%s\n", data)
		return err
	case "yaml":
		data, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("encoding YAML: %w", err)
		}
		_, err = env.out().Write(data)
		return err
	}
	return checkOutput(output)
}

// plan reads the UpgradePlan name of the namespace of the command line, with the client.
func (e *Env) plan(ctx context.Context, name string) (client.WithWatch, *meshv1alpha1.UpgradePlan, error) {
	c, err := e.client()
	if err != nil {
		return nil, nil, err
	}
	ns, err := e.namespace()
	if err != nil {
		return nil, nil, err
	}
	plan, err := getPlan(ctx, c, ns, name)
	if err != nil {
		return nil, nil, err
	}
	return c, plan, nil
}

func getPlan(ctx context.Context, c client.Client, namespace, name string) (*meshv1alpha1.UpgradePlan, error) {
	plan := &meshv1alpha1.UpgradePlan{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, plan); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("UpgradePlan %s not found in namespace %s (kubectl meshlift get plans -A lists them)", name, namespace)
		}
		return nil, fmt.Errorf("reading UpgradePlan %s/%s: %w", namespace, name, noCRDHint(err))
	}
	return plan, nil
}

// noCRDHint explains the error of a cluster without the Meshlift CRDs.
func noCRDHint(err error) error {
	if err != nil && (strings.Contains(err.Error(), "no matches for kind") || strings.Contains(err.Error(), "the server could not find the requested resource")) {
		return fmt.Errorf("%w (are the Meshlift CRDs installed? kubectl meshlift check tells)", err)
	}
	return err
}

// statusInput fetches what the screen shows besides the plan: the MeshServices it governs and
// the pods of its table (bounded: the plan records at most 100).
func statusInput(ctx context.Context, c client.Client, plan *meshv1alpha1.UpgradePlan, maxPods int, now time.Time) view.StatusInput {
	in := view.StatusInput{Plan: plan, Now: now, Pods: map[string]*corev1.Pod{}}
	var services meshv1alpha1.MeshServiceList
	if err := c.List(ctx, &services, client.InNamespace(plan.Namespace)); err == nil {
		var selector labels.Selector
		if plan.Spec.Selector != nil {
			selector, _ = metav1.LabelSelectorAsSelector(plan.Spec.Selector)
		}
		for _, ms := range services.Items {
			if slices.Contains(plan.Spec.MeshServices, ms.Name) || (selector != nil && selector.Matches(labels.Set(ms.Labels))) {
				in.MeshServices = append(in.MeshServices, ms)
			}
		}
	}
	for _, p := range plan.Status.Pods[:min(len(plan.Status.Pods), maxPods)] {
		pod := &corev1.Pod{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: plan.Namespace, Name: p.Pod}, pod); err == nil {
			in.Pods[p.Pod] = pod
		}
	}
	return in
}

func runStatus(ctx context.Context, env *Env, name string, o *statusOptions) error {
	if err := checkOutput(o.output); err != nil {
		return err
	}
	c, plan, err := env.plan(ctx, name)
	if err != nil {
		return err
	}
	vo := env.viewOptions()
	if !o.watch {
		// The screen shows MaxRows pods; -o json|yaml every pod the status records.
		rows := vo.MaxRows()
		if o.output != "" {
			rows = len(plan.Status.Pods)
		}
		s := view.BuildStatus(statusInput(ctx, c, plan, rows, env.now()))
		if o.output != "" {
			return printStructured(env, o.output, s)
		}
		_, err := fmt.Fprint(env.out(), view.RenderStatus(s, env.now(), vo))
		return err
	}
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	w := &statusWatcher{env: env, client: c, opts: o, view: vo, live: env.terminal().IsTerminal && o.output == ""}
	return w.run(ctx, plan)
}

// statusWatcher follows one plan with a watch and draws it.
type statusWatcher struct {
	env    *Env
	client client.WithWatch
	opts   *statusOptions
	view   view.Options
	// live redraws the screen in place (a terminal); otherwise one line per change.
	live bool

	drawnLines int
	lastLine   string
	input      view.StatusInput
}

func (w *statusWatcher) run(ctx context.Context, plan *meshv1alpha1.UpgradePlan) error {
	w.refresh(ctx, plan)
	if done, err := w.draw(true); done {
		return err
	}
	ticker := time.NewTicker(time.Second) // the clock on screen (elapsed, time in phase)
	defer ticker.Stop()
	var pending *meshv1alpha1.UpgradePlan
	var redraw <-chan time.Time
	lastDraw := time.Now()
	for {
		watcher, err := w.client.Watch(ctx, &meshv1alpha1.UpgradePlanList{}, client.InNamespace(plan.Namespace),
			client.MatchingFields{"metadata.name": plan.Name}, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: plan.ResourceVersion, AllowWatchBookmarks: true}})
		if err != nil {
			if ctx.Err() != nil {
				return w.timedOut(ctx)
			}
			return fmt.Errorf("watching UpgradePlan %s/%s: %w", plan.Namespace, plan.Name, err)
		}
		restart := false
		for !restart {
			select {
			case <-ctx.Done():
				watcher.Stop()
				return w.timedOut(ctx)
			case ev, ok := <-watcher.ResultChan():
				if !ok {
					restart = true
					break
				}
				switch ev.Type {
				case watch.Deleted:
					watcher.Stop()
					return fmt.Errorf("UpgradePlan %s/%s was deleted", plan.Namespace, plan.Name)
				case watch.Error:
					// An expired resourceVersion: read the plan again and watch from there.
					watcher.Stop()
					fresh, err := getPlan(ctx, w.client, plan.Namespace, plan.Name)
					if err != nil {
						return err
					}
					plan, pending, restart = fresh, fresh, true
				case watch.Bookmark:
					if p, ok := ev.Object.(*meshv1alpha1.UpgradePlan); ok {
						plan.ResourceVersion = p.ResourceVersion
					}
				case watch.Added, watch.Modified:
					if p, ok := ev.Object.(*meshv1alpha1.UpgradePlan); ok {
						plan, pending = p, p
					}
				}
			case <-ticker.C:
				if w.live && pending == nil {
					w.draw(false) //nolint:errcheck // a clock tick never ends the watch
				}
				continue
			case <-redraw:
				redraw = nil
			}
			if pending == nil || redraw != nil {
				continue
			}
			// A terminal is redrawn at most every redrawInterval (changes in between are folded
			// into the next screen); a log gets one line per change.
			if wait := redrawInterval - time.Since(lastDraw); w.live && wait > 0 {
				redraw = time.After(wait)
				continue
			}
			w.refresh(ctx, pending)
			pending, lastDraw = nil, time.Now()
			if done, err := w.draw(true); done {
				watcher.Stop()
				return err
			}
		}
	}
}

// refresh takes the new plan. The screen and -o json|yaml also show the MeshServices and the
// pods' slots, read again for each change (at most four times a second on a terminal); the
// one-line form needs the plan only.
func (w *statusWatcher) refresh(ctx context.Context, plan *meshv1alpha1.UpgradePlan) {
	switch {
	case w.opts.output != "":
		w.input = statusInput(ctx, w.client, plan, len(plan.Status.Pods), w.env.now())
	case w.live:
		w.input = statusInput(ctx, w.client, plan, w.view.MaxRows(), w.env.now())
	default:
		w.input = view.StatusInput{Plan: plan, Now: w.env.now()}
	}
}

// draw prints the current state and reports whether the watch ends, with the command's result.
func (w *statusWatcher) draw(changed bool) (bool, error) {
	now := w.env.now()
	w.input.Now = now
	s := view.BuildStatus(w.input)
	switch {
	case w.opts.output != "":
		if changed {
			w.printDocument(s)
		}
	case w.live:
		screen := view.RenderStatus(s, now, w.view)
		if w.drawnLines > 0 {
			fmt.Fprintf(w.env.out(), "\x1b[%dA\x1b[J", w.drawnLines)
		}
		fmt.Fprint(w.env.out(), screen)
		w.drawnLines = screenLines(screen, w.view.Width)
	default:
		if line := view.StatusLine(s); line != w.lastLine {
			fmt.Fprintf(w.env.out(), "%s %s\n", now.UTC().Format(time.RFC3339), line)
			w.lastLine = line
		}
	}
	phase := meshv1alpha1.UpgradePhase(s.Phase)
	switch {
	case phase == meshv1alpha1.PhaseSucceeded:
		return true, nil
	case view.Ended(phase):
		return true, &ExitCodeError{Code: ExitPlanFailed, Err: fmt.Errorf("UpgradePlan %s/%s ended %s", s.Namespace, s.Name, s.Phase)}
	case w.opts.successOnPause && s.Pause != nil && s.Pause.Kind == view.PauseManual:
		return true, nil
	}
	return false, nil
}

func (w *statusWatcher) printDocument(s view.PlanStatus) {
	switch w.opts.output {
	case "json":
		data, _ := json.Marshal(s)
		fmt.Fprintf(w.env.out(), "%s\n", data)
	case "yaml":
		data, _ := yaml.Marshal(s)
		fmt.Fprintf(w.env.out(), "---\n%s", data)
	}
}

func (w *statusWatcher) timedOut(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &ExitCodeError{Code: ExitTimeout, Err: fmt.Errorf("timed out after %s: UpgradePlan %s/%s is still %s",
			w.opts.timeout, w.input.Plan.Namespace, w.input.Plan.Name, cmpPhase(w.input.Plan))}
	}
	return ctx.Err()
}

func cmpPhase(plan *meshv1alpha1.UpgradePlan) string {
	if plan.Status.Phase == "" {
		return string(meshv1alpha1.PhasePending)
	}
	return string(plan.Status.Phase)
}

// screenLines counts the terminal lines text takes at width (long lines wrap).
func screenLines(text string, width int) int {
	if width <= 0 {
		width = view.DefaultWidth
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		n += max(1, (view.DisplayWidth(line)+width-1)/width)
	}
	return n
}
