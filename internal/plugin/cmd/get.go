package cmd

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/plugin/view"
	"github.com/meshlift/meshlift/internal/rollout"
)

type listOptions struct {
	allNamespaces bool
	output        string
}

func newGetCommand(env *Env) *cobra.Command {
	o := &listOptions{}
	c := &cobra.Command{
		Use:   "get plans|versions|meshservices",
		Short: "List UpgradePlans, SidecarVersions (with where their pods run) or MeshServices (pods by version)",
		Long: `get prints tables that say more than kubectl get:
  plans          target, strategy, phase, progress (updated/total), failed pods, step
  versions       every SidecarVersion, how many pods run it, and in which MeshServices
                 (* marks drift: pods of a MeshService whose current version is another)
  meshservices   current version, pods by version, ready pods, mTLS mode`,
		Example: `  kubectl meshlift get plans -A
  kubectl meshlift get versions
  kubectl meshlift get meshservices -n meshlift-demo -o yaml`,
		ValidArgs: []string{"plans", "versions", "meshservices"},
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("name what to list: plans, versions or meshservices")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runGet(cmd.Context(), env, args[0], o)
		},
	}
	c.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "List across all namespaces.")
	addOutputFlag(c, &o.output)
	return c
}

func runGet(ctx context.Context, env *Env, what string, o *listOptions) error {
	if err := checkOutput(o.output); err != nil {
		return err
	}
	c, err := env.client()
	if err != nil {
		return err
	}
	var opts []client.ListOption
	if !o.allNamespaces {
		ns, err := env.namespace()
		if err != nil {
			return err
		}
		opts = append(opts, client.InNamespace(ns))
	}
	now, vo := env.now(), env.viewOptions()
	switch strings.ToLower(what) {
	case "plans", "plan", "upgradeplans", "upgradeplan", "up":
		var list meshv1alpha1.UpgradePlanList
		if err := c.List(ctx, &list, opts...); err != nil {
			return fmt.Errorf("listing UpgradePlans: %w", noCRDHint(err))
		}
		rows := view.Plans(list.Items)
		if o.output != "" {
			return printStructured(env, o.output, rows)
		}
		if len(rows) == 0 && !o.allNamespaces {
			return noneIn(env, "UpgradePlans")
		}
		_, err = fmt.Fprint(env.out(), view.RenderPlans(rows, o.allNamespaces, now, vo))
	case "versions", "version", "sidecarversions", "sidecarversion", "sv":
		var versions meshv1alpha1.SidecarVersionList
		if err := c.List(ctx, &versions); err != nil {
			return fmt.Errorf("listing SidecarVersions: %w", noCRDHint(err))
		}
		// SidecarVersions are cluster-scoped, and so is the question "where do pods run this
		// version": WHERE covers the MeshServices of every namespace.
		var services meshv1alpha1.MeshServiceList
		if err := c.List(ctx, &services); err != nil {
			return fmt.Errorf("listing MeshServices: %w", noCRDHint(err))
		}
		rows := view.Versions(versions.Items, services.Items)
		if o.output != "" {
			return printStructured(env, o.output, rows)
		}
		_, err = fmt.Fprint(env.out(), view.RenderVersions(rows, vo))
	case "meshservices", "meshservice", "ms":
		var list meshv1alpha1.MeshServiceList
		if err := c.List(ctx, &list, opts...); err != nil {
			return fmt.Errorf("listing MeshServices: %w", noCRDHint(err))
		}
		rows := view.MeshServices(list.Items)
		if o.output != "" {
			return printStructured(env, o.output, rows)
		}
		if len(rows) == 0 && !o.allNamespaces {
			return noneIn(env, "MeshServices")
		}
		_, err = fmt.Fprint(env.out(), view.RenderMeshServices(rows, o.allNamespaces, now, vo))
	default:
		return fmt.Errorf("kubectl meshlift get %s: unknown kind; use plans, versions or meshservices", what)
	}
	return err
}

type proxyStatusOptions struct {
	listOptions
	selector string
}

func newProxyStatusCommand(env *Env) *cobra.Command {
	o := &proxyStatusOptions{}
	c := &cobra.Command{
		Use:   "proxy-status [POD]",
		Short: "Show each meshed pod's proxy: version, active slot, readiness, certificate expiry, EDS",
		Long: `proxy-status shows, per meshed pod: the SidecarVersion of the active proxy, the active slot
and the image of the idle one, whether the active proxy is ready, when the certificate the
control plane last issued to it expires, whether the pod is excluded from the endpoints (EDS)
client proxies get, and the phase of an upgrade in flight. It reads only what the pods carry
(annotations and container status), so it costs one list of pods whatever the fleet's size.`,
		Example: `  kubectl meshlift proxy-status -n meshlift-demo
  kubectl meshlift proxy-status -n meshlift-demo -l app=demo
  kubectl meshlift proxy-status demo-7d9c6b5f4-x2x8q -n meshlift-demo -o json`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completePods(env),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runProxyStatus(cmd.Context(), env, args, o)
		},
	}
	c.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "List across all namespaces.")
	c.Flags().StringVarP(&o.selector, "selector", "l", "", "Only pods with these labels (e.g. app=demo).")
	addOutputFlag(c, &o.output)
	return c
}

func runProxyStatus(ctx context.Context, env *Env, args []string, o *proxyStatusOptions) error {
	if err := checkOutput(o.output); err != nil {
		return err
	}
	if len(args) == 1 && o.selector != "" {
		return fmt.Errorf("name a pod or give -l, not both")
	}
	c, err := env.client()
	if err != nil {
		return err
	}
	var pods []corev1.Pod
	ns := ""
	if !o.allNamespaces || len(args) == 1 {
		if ns, err = env.namespace(); err != nil {
			return err
		}
	}
	if len(args) == 1 {
		pod := &corev1.Pod{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: args[0]}, pod); err != nil {
			return fmt.Errorf("reading pod %s/%s: %w", ns, args[0], err)
		}
		if pod.Annotations[meshv1alpha1.AnnotationVersion] == "" {
			return fmt.Errorf("pod %s/%s has no Meshlift sidecar (no %s annotation)", ns, args[0], meshv1alpha1.AnnotationVersion)
		}
		pods = []corev1.Pod{*pod}
	} else {
		opts := []client.ListOption{}
		if ns != "" {
			opts = append(opts, client.InNamespace(ns))
		}
		if o.selector != "" {
			sel, err := labels.Parse(o.selector)
			if err != nil {
				return fmt.Errorf("-l %q: %w", o.selector, err)
			}
			opts = append(opts, client.MatchingLabelsSelector{Selector: sel})
		}
		var list corev1.PodList
		if err := c.List(ctx, &list, opts...); err != nil {
			return fmt.Errorf("listing pods: %w", err)
		}
		pods = list.Items
	}
	rows := view.ProxyRows(pods, upgradePhase)
	if o.output != "" {
		return printStructured(env, o.output, rows)
	}
	if len(rows) == 0 && ns != "" {
		return noneIn(env, "meshed pods")
	}
	_, err = fmt.Fprint(env.out(), view.RenderProxies(rows, o.allNamespaces && len(args) == 0, env.now(), env.viewOptions()))
	return err
}

// upgradePhase is the phase of an upgrade in flight on the pod, from its meshlift.io/upgrade
// record ("" when none is in flight).
func upgradePhase(pod *corev1.Pod) string {
	value := pod.Annotations[meshv1alpha1.AnnotationUpgrade]
	if value == "" {
		return ""
	}
	s, err := rollout.DecodeState(value)
	if err != nil {
		return "unreadable record"
	}
	if !s.Active() {
		return ""
	}
	return fmt.Sprintf("%s (%s->%s)", s.Phase, s.From, s.To)
}

// noneIn says that the namespace has none of what was listed, and how to look everywhere.
func noneIn(env *Env, what string) error {
	ns, err := env.namespace()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(env.out(), "No %s found in namespace %s (-A lists every namespace).\n", what, ns)
	return err
}
