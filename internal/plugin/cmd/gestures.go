package cmd

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/plugin/gesture"
	"github.com/meshlift/meshlift/internal/rollout"
)

type gestureSpec struct {
	use, short, long string
	// needsRecords: the gesture looks at the pods' upgrade records (abort, rollback).
	needsRecords bool
	// takesTo: the gesture accepts --to VERSION.
	takesTo bool
	decide  func(plan *meshv1alpha1.UpgradePlan, records []rollout.PodState, to string) (gesture.Change, error)
}

var gestures = []gestureSpec{
	{use: "pause", short: "Pause an UpgradePlan: pods in flight finish, none starts (spec.paused)",
		decide: func(p *meshv1alpha1.UpgradePlan, _ []rollout.PodState, _ string) (gesture.Change, error) {
			return gesture.Pause(p)
		}},
	{use: "resume", short: "Resume an UpgradePlan: clear spec.paused and release the step pause it waits at",
		long: "Resume clears spec.paused and, when the plan waits after a step whose pause has no duration,\nsets the meshlift.io/resume annotation to \"<targetVersion>/<step>\", which releases that step.",
		decide: func(p *meshv1alpha1.UpgradePlan, _ []rollout.PodState, _ string) (gesture.Change, error) {
			return gesture.Resume(p)
		}},
	{use: "abort", short: "Abort an UpgradePlan in progress: set the target back to where the pods came from",
		long:         "Abort sets spec.targetVersion back to the version the pods came from: the pods in flight are\naborted and the pods already upgraded walk back (docs/rollout.md). When the pods came from more\nthan one version, --to names the one to return to.",
		needsRecords: true, takesTo: true, decide: gesture.Abort},
	{use: "rollback", short: "Roll back an UpgradePlan that ended: return its pods to the version they came from",
		long:         "Rollback sets spec.targetVersion of a plan that Succeeded or Failed back to the version its pods\ncame from; the plan walks them back one batch at a time. A plan still in progress is aborted\ninstead (kubectl meshlift abort).",
		needsRecords: true, takesTo: true, decide: gesture.Rollback},
	{use: "retry", short: "Retry an UpgradePlan whose pods failed: re-create it with the same spec",
		long: "A plan remembers its failed pods and does not try them again. Retry deletes the plan and creates\nit again with the same spec, labels and annotations (docs/rollout.md: trying a failed target\nagain); the new plan tries the failed pods again.",
		decide: func(p *meshv1alpha1.UpgradePlan, _ []rollout.PodState, _ string) (gesture.Change, error) {
			return gesture.Retry(p)
		}},
}

func newGestureCommands(env *Env) []*cobra.Command {
	out := make([]*cobra.Command, 0, len(gestures))
	for _, g := range gestures {
		var to string
		c := &cobra.Command{
			Use:               g.use + " PLAN",
			Short:             g.short,
			Long:              g.long,
			Example:           fmt.Sprintf("  kubectl meshlift %s demo-upgrade -n meshlift-demo", g.use),
			Args:              exactlyOnePlan,
			ValidArgsFunction: completePlans(env),
			RunE: func(cmd *cobra.Command, args []string) error {
				return runGesture(cmd.Context(), env, g, args[0], to)
			},
		}
		if g.takesTo {
			c.Flags().StringVar(&to, "to", "", "The SidecarVersion to return the pods to (default: the one they came from).")
		}
		out = append(out, c)
	}
	return out
}

func runGesture(ctx context.Context, env *Env, g gestureSpec, name, to string) error {
	c, plan, err := env.plan(ctx, name)
	if err != nil {
		return err
	}
	ns := plan.Namespace
	var records []rollout.PodState
	if g.needsRecords {
		if records, err = podRecords(ctx, c, ns, name); err != nil {
			return err
		}
	}
	change, err := g.decide(plan, records, to)
	if err != nil {
		return err
	}
	if err := apply(ctx, c, plan, change); err != nil {
		return err
	}
	fmt.Fprintln(env.out(), change.Done)
	if change.Next != "" {
		fmt.Fprintf(env.out(), "Follow it with: %s\n", change.Next)
	}
	return nil
}

// podRecords reads the meshlift.io/upgrade records of the namespace's pods that belong to plan.
func podRecords(ctx context.Context, c client.Client, namespace, plan string) ([]rollout.PodState, error) {
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(namespace)); err != nil {
		return nil, fmt.Errorf("listing the pods of namespace %s: %w", namespace, err)
	}
	var out []rollout.PodState
	for i := range pods.Items {
		value := pods.Items[i].Annotations[meshv1alpha1.AnnotationUpgrade]
		if value == "" {
			continue
		}
		if s, err := rollout.DecodeState(value); err == nil && s.Plan == plan {
			out = append(out, *s)
		}
	}
	return out, nil
}

// apply makes the change: a merge patch guarded by the plan's resourceVersion, or for a retry a
// delete and a create.
func apply(ctx context.Context, c client.Client, plan *meshv1alpha1.UpgradePlan, change gesture.Change) error {
	if change.Recreate {
		return recreate(ctx, c, plan)
	}
	modified := plan.DeepCopy()
	if change.Paused != nil {
		modified.Spec.Paused = *change.Paused
	}
	if change.TargetVersion != "" {
		modified.Spec.TargetVersion = change.TargetVersion
	}
	if change.Resume != "" {
		if modified.Annotations == nil {
			modified.Annotations = map[string]string{}
		}
		modified.Annotations[meshv1alpha1.AnnotationResume] = change.Resume
	}
	err := c.Patch(ctx, modified, client.MergeFromWithOptions(plan, client.MergeFromWithOptimisticLock{}), client.FieldOwner(FieldManager))
	if apierrors.IsConflict(err) {
		return fmt.Errorf("UpgradePlan %s/%s changed while this command ran; look at it again (kubectl meshlift status %s -n %s) and repeat the command",
			plan.Namespace, plan.Name, plan.Name, plan.Namespace)
	}
	if err != nil {
		return fmt.Errorf("updating UpgradePlan %s/%s: %w", plan.Namespace, plan.Name, err)
	}
	return nil
}

// recreate deletes the plan (only this very plan: UID precondition), waits until it is gone and
// creates it again with the same spec, labels and annotations (less the resume annotation, which
// belongs to the old plan's steps).
func recreate(ctx context.Context, c client.Client, plan *meshv1alpha1.UpgradePlan) error {
	fresh := &meshv1alpha1.UpgradePlan{
		ObjectMeta: metav1.ObjectMeta{Namespace: plan.Namespace, Name: plan.Name,
			Labels: maps.Clone(plan.Labels), Annotations: maps.Clone(plan.Annotations)},
		Spec: *plan.Spec.DeepCopy(),
	}
	delete(fresh.Annotations, meshv1alpha1.AnnotationResume)
	uid := plan.UID
	if err := c.Delete(ctx, plan, client.Preconditions{UID: &uid, ResourceVersion: &plan.ResourceVersion}); err != nil {
		if apierrors.IsConflict(err) {
			return fmt.Errorf("UpgradePlan %s/%s changed while this command ran; repeat the command", plan.Namespace, plan.Name)
		}
		return fmt.Errorf("deleting UpgradePlan %s/%s: %w", plan.Namespace, plan.Name, err)
	}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(plan), &meshv1alpha1.UpgradePlan{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, client.IgnoreNotFound(err)
	})
	if err != nil {
		return fmt.Errorf("waiting for UpgradePlan %s/%s to be deleted (its spec, to create it again by hand: %s): %w",
			plan.Namespace, plan.Name, specSummary(plan), err)
	}
	if err := c.Create(ctx, fresh, client.FieldOwner(FieldManager)); err != nil {
		return fmt.Errorf("creating UpgradePlan %s/%s again after deleting it (its spec: %s): %w", plan.Namespace, plan.Name, specSummary(plan), err)
	}
	return nil
}

func specSummary(plan *meshv1alpha1.UpgradePlan) string {
	return fmt.Sprintf("targetVersion %s, strategy %s, meshServices %v", plan.Spec.TargetVersion, plan.Spec.Strategy.Type, plan.Spec.MeshServices)
}
