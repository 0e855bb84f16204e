package cmd

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/buildinfo"
	"github.com/meshlift/meshlift/internal/sidecar"
)

// OperatorPodLabels select the operator's pods (config/manager).
var OperatorPodLabels = client.MatchingLabels{"control-plane": "controller-manager", "app.kubernetes.io/name": "meshlift"}

// VersionInfo is what `version -o json|yaml` prints.
type VersionInfo struct {
	Plugin string `json:"plugin"`
	// Operator lists each operator replica with the version it runs (from its
	// meshlift.io/operator-version annotation).
	Operator []OperatorReplica `json:"operator"`
}

// OperatorReplica is one operator pod.
type OperatorReplica struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Version   string `json:"version"`
	Image     string `json:"image"`
	Ready     bool   `json:"ready"`
}

func newVersionCommand(env *Env) *cobra.Command {
	var output string
	var clientOnly bool
	c := &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version and the version of the operator in the cluster",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			info := VersionInfo{Plugin: buildinfo.Version}
			var findErr error
			if !clientOnly {
				info.Operator, findErr = operatorReplicas(cmd.Context(), env)
			}
			if output != "" {
				if err := printStructured(env, output, info); err != nil {
					return err
				}
				return findErr
			}
			fmt.Fprintf(env.out(), "kubectl-meshlift: %s\n", info.Plugin)
			if clientOnly {
				return nil
			}
			if findErr != nil {
				fmt.Fprintf(env.out(), "operator:         unknown (%v)\n", findErr)
				return findErr
			}
			if len(info.Operator) == 0 {
				fmt.Fprintln(env.out(), "operator:         not found (no pod with labels control-plane=controller-manager, app.kubernetes.io/name=meshlift)")
				return nil
			}
			for _, r := range info.Operator {
				ready := "ready"
				if !r.Ready {
					ready = "not ready"
				}
				fmt.Fprintf(env.out(), "operator:         %s (pod %s/%s, %s, image %s)\n", cmp.Or(r.Version, "unknown"), r.Namespace, r.Pod, ready, r.Image)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&clientOnly, "client", false, "Print the plugin's version only (no cluster needed).")
	addOutputFlag(c, &output)
	return c
}

// operatorReplicas finds the operator's pods in every namespace.
func operatorReplicas(ctx context.Context, env *Env) ([]OperatorReplica, error) {
	c, err := env.client()
	if err != nil {
		return nil, err
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, OperatorPodLabels); err != nil {
		return nil, fmt.Errorf("listing the operator's pods: %w", err)
	}
	out := make([]OperatorReplica, 0, len(pods.Items))
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		r := OperatorReplica{Namespace: p.Namespace, Pod: p.Name, Version: p.Annotations[meshv1alpha1.AnnotationOperatorVersion], Ready: sidecar.PodReady(&p)}
		for _, ctr := range p.Spec.Containers {
			if ctr.Name == "manager" || r.Image == "" {
				r.Image = ctr.Image
			}
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b OperatorReplica) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Pod, b.Pod))
	})
	return out, nil
}
