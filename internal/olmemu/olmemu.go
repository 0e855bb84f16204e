// Package olmemu installs a registry+v1 bundle the way OLM (the Operator Lifecycle Manager)
// does, without OLM: given the bundle's ClusterServiceVersion and its other manifests, the
// namespace of an AllNamespaces OperatorGroup and a webhook CA, Install returns the objects OLM
// would create, in the order it creates them. It is pure (objects out); Apply writes them with
// server-side apply and Uninstall removes them again.
//
// Every step names the OLM source it mirrors (github.com/operator-framework/operator-lifecycle-manager,
// read at commit 992bb097749e5994eedc5e4882583df952d8a70e), so a reviewer can compare them line
// by line:
//
//   - pkg/controller/registry/resolver/steps.go, NewStepResourceFromBundle: the InstallPlan's
//     steps, i.e. the bundle's manifests other than the CSV, then the RBAC of
//     NewServiceAccountStepResources (rbac.go here);
//   - pkg/controller/install/certresources.go, installCertRequirements and
//     installCertRequirementsForDeployment: the webhook Service, the serving-certificate
//     Secret, its Role and RoleBinding, the auth-delegator ClusterRoleBinding, the auth-reader
//     RoleBinding, the certificate volumes and the olmcahash annotation (certs.go here);
//   - pkg/controller/install/deployment.go, deploymentForSpec: the Deployment (deployment.go here);
//   - pkg/controller/install/webhook.go, createOrUpdateMutatingWebhook and
//     createOrUpdateValidatingWebhook, with WebhookDescription.GetMutatingWebhook and
//     GetValidatingWebhook of github.com/operator-framework/api (webhook.go here);
//   - pkg/controller/operators/olm/operatorgroup.go, setOperatorGroupAnnotations: the
//     OperatorGroup annotations OLM puts on the CSV, which deploymentForSpec copies into the pod
//     template.
//
// What it does not do, because there is no OLM and no ClusterServiceVersion object in the
// cluster: owner references to the CSV (the objects carry OLM's olm.owner labels instead), the
// CSV's status and phases, OperatorConditions, the olm.properties annotation (it comes from the
// catalog), certificate rotation, CSV-to-CSV upgrades, and install modes other than AllNamespaces.
//
// AdaptForLocalCluster is separate on purpose: it changes what OLM would create so that the
// objects work on the repository's local cluster (no DNS, no registry). It is not OLM's
// behaviour.
package olmemu

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	operatorsv1 "github.com/operator-framework/api/pkg/operators/v1"
	"github.com/operator-framework/api/pkg/operators/v1alpha1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/meshlift/meshlift/internal/webhookcert/pki"
)

// Labels and annotations OLM writes (the names of OLM's constants in brackets).
const (
	// OwnerLabel, OwnerNamespaceLabel, OwnerKindLabel: pkg/lib/ownerutil/util.go (OwnerKey,
	// OwnerNamespaceKey, OwnerKind).
	OwnerLabel          = "olm.owner"
	OwnerNamespaceLabel = "olm.owner.namespace"
	OwnerKindLabel      = "olm.owner.kind"
	// ManagedLabel: certresources.go (OLMManagedLabelKey, OLMManagedLabelValue "true").
	ManagedLabel = "olm.managed"
	// CAHashAnnotation: certresources.go (OLMCAHashAnnotationKey).
	CAHashAnnotation = "olmcahash"
	// CAKey is the Secret key of the CA certificate: certresources.go (OLMCAPEMKey).
	CAKey = "olmCAKey"
	// PermissionsHashLabel: pkg/controller/registry/resolver/rbac.go (ContentHashLabelKey).
	PermissionsHashLabel = "olm.permissions.hash"
	// DeploymentSpecHashLabel: deployment.go (DeploymentSpecHashLabelKey).
	DeploymentSpecHashLabel = "olm.deployment-spec-hash"
	// WebhookDescLabel, WebhookHashLabel: webhook.go (WebhookDescKey, WebhookHashKey).
	WebhookDescLabel = "olm.webhook-description-generate-name"
	WebhookHashLabel = "olm.webhook-description-hash"
	// WebhookCertMountPath and APIServiceCertMountPath: certresources.go
	// (AddDefaultCertVolumeAndVolumeMounts).
	WebhookCertMountPath    = "/tmp/k8s-webhook-server/serving-certs"
	APIServiceCertMountPath = "/apiserver.local.config/certificates"

	csvKind = v1alpha1.ClusterServiceVersionKind
)

// Bundle is a registry+v1 bundle's manifests directory: the CSV and every other manifest.
type Bundle struct {
	CSV *v1alpha1.ClusterServiceVersion
	// Objects are the other manifests (CRDs, Services, ClusterRoles...), in file-name order.
	Objects []*unstructured.Unstructured
}

// LoadBundle reads a bundle's manifests directory (bundle/manifests): one object per file, YAML
// or JSON.
func LoadBundle(dir string) (*Bundle, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := []string{}
	for _, e := range entries {
		if !e.IsDir() && (strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml") || strings.HasSuffix(e.Name(), ".json")) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	b := &Bundle{}
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &u.Object); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if u.GetKind() == csvKind {
			if b.CSV != nil {
				return nil, fmt.Errorf("%s: a second ClusterServiceVersion", name)
			}
			b.CSV = &v1alpha1.ClusterServiceVersion{}
			if err := yaml.Unmarshal(data, b.CSV); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			continue
		}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("%s: no apiVersion or kind", name)
		}
		b.Objects = append(b.Objects, u)
	}
	if b.CSV == nil {
		return nil, fmt.Errorf("%s: no ClusterServiceVersion", dir)
	}
	return b, nil
}

// Options say where and how the bundle is installed.
type Options struct {
	// Namespace is the OperatorGroup's namespace, where OLM installs the operator.
	Namespace string
	// OperatorGroup is the namespace's OperatorGroup; nil means an AllNamespaces group named
	// DefaultOperatorGroup (spec {}, status.namespaces [""], as OLM's operatorgroup sync sets it).
	OperatorGroup *operatorsv1.OperatorGroup
	// Certificates are the webhook serving certificates, by Deployment name: one for every
	// Deployment a webhookdefinition names (IssueCertificates issues them).
	Certificates map[string]pki.Bundle
}

// DefaultOperatorGroup is the name of the OperatorGroup Options default to (docs/olm.md's).
const DefaultOperatorGroup = "meshlift"

func (o Options) operatorGroup() *operatorsv1.OperatorGroup {
	if o.OperatorGroup != nil {
		return o.OperatorGroup
	}
	og := &operatorsv1.OperatorGroup{}
	og.Name, og.Namespace = DefaultOperatorGroup, o.Namespace
	og.Status.Namespaces = []string{""} // metav1.NamespaceAll: AllNamespaces
	return og
}

// Install returns the objects OLM creates for the bundle in opts.Namespace, in the order it
// creates them:
//
//  1. the InstallPlan's steps (catalog operator, resolver/steps.go NewStepResourceFromBundle):
//     the bundle's manifests other than the CSV, in the namespace when namespaced, then the
//     ServiceAccounts, Roles, RoleBindings, ClusterRoles and ClusterRoleBindings of the CSV's
//     permissions and clusterPermissions (resolver/rbac.go RBACForClusterServiceVersion);
//  2. the install strategy (olm operator, install/deployment.go Install): for each Deployment
//     with webhooks, the cert resources (install/certresources.go
//     installCertRequirementsForDeployment); then each Deployment (deploymentForSpec) followed by
//     the webhook configurations (createOrUpdateCertResourcesForDeployment).
//
// The CSV itself is not among them (there is no ClusterServiceVersion API without OLM).
func Install(b *Bundle, opts Options) ([]client.Object, error) {
	if opts.Namespace == "" {
		return nil, fmt.Errorf("no namespace")
	}
	og := opts.operatorGroup()
	if len(og.Spec.TargetNamespaces) != 0 || og.Spec.Selector != nil || len(og.Status.Namespaces) != 1 || og.Status.Namespaces[0] != "" {
		return nil, fmt.Errorf("OperatorGroup %s is not AllNamespaces: only AllNamespaces installs are emulated", og.Name)
	}
	if !supportsAllNamespaces(b.CSV) {
		return nil, fmt.Errorf("CSV %s does not support the AllNamespaces install mode", b.CSV.Name)
	}
	// The CSV as OLM holds it in the namespace: namespaced (steps.go) and annotated with its
	// OperatorGroup (operatorgroup.go setOperatorGroupAnnotations, addTargets true).
	csv := b.CSV.DeepCopy()
	csv.Namespace = opts.Namespace
	annotations := csv.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[operatorsv1.OperatorGroupNamespaceAnnotationKey] = og.Namespace
	annotations[operatorsv1.OperatorGroupAnnotationKey] = og.Name
	annotations[operatorsv1.OperatorGroupTargetsAnnotationKey] = og.BuildTargetNamespaces()
	csv.SetAnnotations(annotations)
	if csv.Spec.InstallStrategy.StrategyName != v1alpha1.InstallStrategyNameDeployment {
		return nil, fmt.Errorf("install strategy %q: only %q is supported", csv.Spec.InstallStrategy.StrategyName, v1alpha1.InstallStrategyNameDeployment)
	}
	if len(csv.Spec.APIServiceDefinitions.Owned) != 0 {
		return nil, fmt.Errorf("owned APIServices are not emulated")
	}

	var out []client.Object
	// Step 1: the InstallPlan (steps.go NewStepResourceFromBundle: bundle.Object in order, the
	// CSV skipped, then NewServiceAccountStepResources).
	for _, obj := range b.Objects {
		u := obj.DeepCopy()
		if namespaced(u) {
			u.SetNamespace(opts.Namespace)
		}
		out = append(out, u)
	}
	rbac, err := rbacForClusterServiceVersion(csv)
	if err != nil {
		return nil, err
	}
	out = append(out, rbac...)

	// Step 2: the install strategy (deployment.go Install).
	strategy := csv.Spec.InstallStrategy.StrategySpec.DeepCopy()
	caPEMs := map[string][]byte{}
	var certObjects []client.Object
	for n, d := range strategy.DeploymentSpecs {
		if len(webhooksFor(csv, d.Name)) == 0 {
			continue // "No api or webhook descs to add CA to"
		}
		cert, ok := opts.Certificates[d.Name]
		if !ok {
			return nil, fmt.Errorf("no certificate for Deployment %s, which webhooks name", d.Name)
		}
		objs, spec, caPEM, err := certRequirementsForDeployment(csv, d, cert)
		if err != nil {
			return nil, err
		}
		certObjects = append(certObjects, objs...)
		strategy.DeploymentSpecs[n].Spec = spec
		caPEMs[d.Name] = caPEM
	}
	out = append(out, certObjects...)
	// installDeployments: each Deployment, then createOrUpdateCertResourcesForDeployment (every
	// webhook of the CSV, with the CA of its Deployment). With one Deployment, as Meshlift has,
	// that is each webhook once; with several, OLM writes the webhooks again after each.
	for i, d := range strategy.DeploymentSpecs {
		dep, err := deploymentForSpec(csv, d)
		if err != nil {
			return nil, err
		}
		out = append(out, dep)
		if i < len(strategy.DeploymentSpecs)-1 {
			continue
		}
		for _, desc := range csv.Spec.WebhookDefinitions {
			hook, err := webhookFor(csv, og, desc, caPEMs[desc.DeploymentName])
			if err != nil {
				return nil, err
			}
			out = append(out, hook)
		}
	}
	return out, nil
}

// supportsAllNamespaces reports whether the CSV's installModes support AllNamespaces.
func supportsAllNamespaces(csv *v1alpha1.ClusterServiceVersion) bool {
	for _, m := range csv.Spec.InstallModes {
		if m.Type == v1alpha1.InstallModeTypeAllNamespaces {
			return m.Supported
		}
	}
	return false
}

// namespaced reports whether a bundle object is namespaced, for the kinds a registry+v1 bundle
// may carry (the catalog operator asks discovery; these are the kinds it knows cluster-scoped).
func namespaced(u *unstructured.Unstructured) bool {
	switch u.GetKind() {
	case "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "PriorityClass",
		"ConsoleYAMLSample", "ConsoleQuickStart", "ConsoleCLIDownload", "ConsoleLink", "ConsolePlugin":
		return false
	}
	return true
}

// ownerLabels are ownerutil.OwnerLabel(csv, "ClusterServiceVersion") (pkg/lib/ownerutil/util.go).
func ownerLabels(csv *v1alpha1.ClusterServiceVersion) map[string]string {
	return map[string]string{OwnerLabel: csv.Name, OwnerNamespaceLabel: csv.Namespace, OwnerKindLabel: csvKind}
}

// webhooksFor returns the CSV's webhookdefinitions of a Deployment
// (certresources.go certResourcesForDeployment, without APIServices).
func webhooksFor(csv *v1alpha1.ClusterServiceVersion, deployment string) []v1alpha1.WebhookDescription {
	var out []v1alpha1.WebhookDescription
	for _, w := range csv.Spec.WebhookDefinitions {
		if w.DeploymentName == deployment {
			out = append(out, w)
		}
	}
	return out
}
