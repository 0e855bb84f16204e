package cmd

import (
	"context"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
)

// completeFirst completes the first argument with the names (and a description after a tab)
// that list returns for the namespace.
func completeFirst(env *Env, list func(ctx context.Context, c client.Client, ns string) ([]string, error)) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := env.client()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ns, err := env.namespace()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		candidates, err := list(cmd.Context(), c, ns)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, candidate := range candidates {
			if strings.HasPrefix(candidate, toComplete) {
				out = append(out, candidate)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completePlans completes the UpgradePlans of the namespace.
func completePlans(env *Env) cobra.CompletionFunc {
	return completeFirst(env, func(ctx context.Context, c client.Client, ns string) ([]string, error) {
		var list meshv1alpha1.UpgradePlanList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return nil, err
		}
		names := make([]string, 0, len(list.Items))
		for _, p := range list.Items {
			names = append(names, p.Name+"\t"+p.Spec.TargetVersion+" "+string(p.Status.Phase))
		}
		return names, nil
	})
}

// completePods completes the meshed pods of the namespace.
func completePods(env *Env) cobra.CompletionFunc {
	return completeFirst(env, func(ctx context.Context, c client.Client, ns string) ([]string, error) {
		var list corev1.PodList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return nil, err
		}
		var names []string
		for _, p := range list.Items {
			if v := p.Annotations[meshv1alpha1.AnnotationVersion]; v != "" {
				names = append(names, p.Name+"\t"+v)
			}
		}
		return names, nil
	})
}
