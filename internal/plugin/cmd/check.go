package cmd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/plugin/preflight"
	"github.com/meshlift/meshlift/internal/plugin/view"
)

type checkOptions struct {
	operatorNamespace string
	output            string
}

func newCheckCommand(env *Env) *cobra.Command {
	o := &checkOptions{}
	c := &cobra.Command{
		Use:   "check",
		Short: "Pre-flight check of the Meshlift installation",
		Long: `check verifies that Meshlift is installed and working, one line per check:
  CRDs              upgradeplans, meshservices and sidecarversions.mesh.meshlift.io exist,
                    are Established and serve v1alpha1
  Operator          its Deployment has a ready replica
  Webhooks          the webhook configurations exist and their caBundle verifies the serving
                    certificate (from its Secret) for the webhook Service; the certificate is
                    not expired (warning 7 days before)
  Control plane     the Service proxies dial has a ready endpoint
  Trust bundle      the mesh CA is valid (warning 30 days before expiry) and every namespace
                    with a MeshService has the trust bundle ConfigMap meshlift-ca-root
  Sidecar versions  exactly one SidecarVersion is the default

The names come from the operator's Deployment (its flags), so a customized install is checked
as it runs. A check that needs a permission you lack (reading a Secret, say) is a warning.
Warnings tell what to do but exit 0; any error exits 2.`,
		Example: `  kubectl meshlift check
  kubectl meshlift check --operator-namespace mesh-operator
  kubectl meshlift check -o json | jq '.results[] | select(.status != "ok")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCheck(cmd.Context(), env, o)
		},
	}
	c.Flags().StringVar(&o.operatorNamespace, "operator-namespace", preflight.DefaultOperatorNamespace, "Namespace the operator runs in.")
	addOutputFlag(c, &o.output)
	return c
}

func runCheck(ctx context.Context, env *Env, o *checkOptions) error {
	if err := checkOutput(o.output); err != nil {
		return err
	}
	c, err := env.client()
	if err != nil {
		return err
	}
	in, err := readCheckInput(ctx, c, o.operatorNamespace, env.now())
	if err != nil {
		return err
	}
	report := preflight.Run(in)
	if o.output != "" {
		err = printStructured(env, o.output, report)
	} else {
		_, err = fmt.Fprint(env.out(), view.RenderCheck(report, env.viewOptions()))
	}
	if err != nil {
		return err
	}
	if report.Errors > 0 {
		return &ExitCodeError{Code: ExitPlanFailed, Err: fmt.Errorf("%d of %d checks failed", report.Errors, len(report.Results))}
	}
	return nil
}

// readCheckInput reads what the checks look at. Reads that fail are recorded for the checks to
// report (a missing object, a permission the caller lacks); only an API server that cannot be
// reached at all ends the command.
func readCheckInput(ctx context.Context, c client.Client, namespace string, now time.Time) (preflight.Input, error) {
	in := preflight.Input{
		Now:               now,
		OperatorPodLabels: OperatorPodLabels,
		CRDs:              map[string]preflight.Got[apiextensionsv1.CustomResourceDefinition]{},
	}
	for _, name := range preflight.CRDNames {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		err := c.Get(ctx, client.ObjectKey{Name: name}, crd)
		if unreachable(err) {
			return in, fmt.Errorf("cannot reach the API server (reading CustomResourceDefinition %s): %w", name, err)
		}
		in.CRDs[name] = preflight.Found(crd, err)
	}

	deployments := &appsv1.DeploymentList{}
	in.Deployments = preflight.Found(deployments, c.List(ctx, deployments, client.InNamespace(namespace)))
	var operator *appsv1.Deployment
	if in.Deployments.Object != nil {
		operator = preflight.FindOperator(deployments.Items, OperatorPodLabels)
	}
	s := preflight.SettingsFor(namespace, operator)
	in.Settings = s

	if s.MutatingWebhookConfiguration != "" {
		obj := &admissionregistrationv1.MutatingWebhookConfiguration{}
		in.MutatingWebhookConfiguration = preflight.Found(obj, c.Get(ctx, client.ObjectKey{Name: s.MutatingWebhookConfiguration}, obj))
	}
	if s.ValidatingWebhookConfiguration != "" {
		obj := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		in.ValidatingWebhookConfiguration = preflight.Found(obj, c.Get(ctx, client.ObjectKey{Name: s.ValidatingWebhookConfiguration}, obj))
	}
	webhookSecret := &corev1.Secret{}
	in.WebhookSecret = preflight.Found(webhookSecret, c.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.WebhookSecretName}, webhookSecret))

	service := &corev1.Service{}
	in.ControlPlaneService = preflight.Found(service, c.Get(ctx, client.ObjectKey{Namespace: s.ControlPlaneNamespace, Name: s.ControlPlaneService}, service))
	endpointSlices := &discoveryv1.EndpointSliceList{}
	in.ControlPlaneEndpointSlices = preflight.Found(endpointSlices, c.List(ctx, endpointSlices, client.InNamespace(s.ControlPlaneNamespace),
		client.MatchingLabels{preflight.ServiceNameLabel: s.ControlPlaneService}))

	if s.CABackend != preflight.CABackendCertManager {
		caSecret := &corev1.Secret{}
		in.CASecret = preflight.Found(caSecret, c.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.CASecretName}, caSecret))
	}
	// Only the ConfigMaps of that name, in every namespace: not every ConfigMap of the cluster.
	bundles := &corev1.ConfigMapList{}
	in.TrustBundles = preflight.Found(bundles, c.List(ctx, bundles, client.MatchingFields{"metadata.name": preflight.TrustBundleConfigMap}))
	// Which namespaces have a MeshService is all the check needs: metadata only.
	meshServices := &metav1.PartialObjectMetadataList{}
	meshServices.SetGroupVersionKind(meshv1alpha1.GroupVersion.WithKind("MeshServiceList"))
	in.MeshServices = preflight.Found(meshServices, c.List(ctx, meshServices))
	versions := &meshv1alpha1.SidecarVersionList{}
	in.SidecarVersions = preflight.Found(versions, c.List(ctx, versions))
	return in, nil
}

// unreachable tells an API server that did not answer (no route, TLS, credentials...) from one
// that answered with an error status, such as NotFound or Forbidden, which the checks report.
func unreachable(err error) bool {
	if err == nil || meta.IsNoMatchError(err) {
		return false
	}
	var status apierrors.APIStatus
	return !errors.As(err, &status)
}
