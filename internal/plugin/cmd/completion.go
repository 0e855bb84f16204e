package cmd

import (
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
)

// completePlans completes the first argument with the UpgradePlans of the namespace.
func completePlans(env *Env) cobra.CompletionFunc {
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
		var list meshv1alpha1.UpgradePlanList
		if err := c.List(cmd.Context(), &list, client.InNamespace(ns)); err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		for _, p := range list.Items {
			if strings.HasPrefix(p.Name, toComplete) {
				names = append(names, p.Name+"\t"+p.Spec.TargetVersion+" "+string(p.Status.Phase))
			}
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

// completePods completes the first argument with the meshed pods of the namespace.
func completePods(env *Env) cobra.CompletionFunc {
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
		var list corev1.PodList
		if err := c.List(cmd.Context(), &list, client.InNamespace(ns)); err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		for _, p := range list.Items {
			if v := p.Annotations[meshv1alpha1.AnnotationVersion]; v != "" && strings.HasPrefix(p.Name, toComplete) {
				names = append(names, p.Name+"\t"+v)
			}
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}
