package bundle

import (
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/blang/semver/v4"
	"github.com/operator-framework/api/pkg/lib/version"
	"github.com/operator-framework/api/pkg/operators/v1alpha1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

//go:embed icon.svg
var icon []byte

// ManagerContainer is the operator's container in config/manager.
const ManagerContainer = "manager"

// WebhookPort is the container port the webhook server listens on (--webhook-port).
const WebhookPort = 9443

// MinKubeVersion is the oldest Kubernetes Meshlift supports: native sidecars (on by default)
// and the CRDs' CEL rules need 1.29 (docs/injection.md).
const MinKubeVersion = "1.29.0"

// Capability is the operator's capability level (docs/olm.md says why this one).
const Capability = "Seamless Upgrades"

// Categories are the OperatorHub categories.
const Categories = "Networking,Security"

// selfManagedFlags are the operator flags that only the self-managed certificate mode reads:
// in external mode the operator refuses to start with them (docs/webhook-certificates.md).
var selfManagedFlags = []string{"--webhook-secret-name", "--webhook-service-name", "--mutating-webhook-configuration", "--validating-webhook-configuration"}

// externalModeArgs replace what config/manager says about certificates: OLM mounts the serving
// certificate where the external mode reads it by default and writes the webhook configurations.
var externalModeArgs = []string{"--webhook-cert-mode=external"}

// certFlags are replaced by externalModeArgs.
var certFlags = []string{"--webhook-cert-mode", "--webhook-cert-dir"}

func buildCSV(in *objects, samples []*unstructured.Unstructured, opts Options) (map[string]any, error) {
	deployment, err := csvDeployment(in)
	if err != nil {
		return nil, err
	}
	for i := range deployment.Spec.Template.Spec.Containers {
		if deployment.Spec.Template.Spec.Containers[i].Name == ManagerContainer {
			deployment.Spec.Template.Spec.Containers[i].Image = opts.OperatorImage
		}
	}
	webhooks, err := webhookDefinitions(in, deployment)
	if err != nil {
		return nil, err
	}
	owned, err := ownedCRDs(in.crds)
	if err != nil {
		return nil, err
	}
	examples, err := almExamples(samples, in.crds)
	if err != nil {
		return nil, err
	}
	clusterPermissions, err := permissionsOf(in.serviceAccount, in.clusterRoles)
	if err != nil {
		return nil, err
	}
	permissions, err := permissionsOf(in.serviceAccount, in.roles)
	if err != nil {
		return nil, err
	}
	images, err := relatedImages(opts.OperatorImage, samples)
	if err != nil {
		return nil, err
	}

	csv := v1alpha1.ClusterServiceVersion{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: v1alpha1.ClusterServiceVersionKind},
		ObjectMeta: metav1.ObjectMeta{
			Name: CSVName(opts.Version),
			Annotations: map[string]string{
				"alm-examples":   examples,
				"capabilities":   Capability,
				"categories":     Categories,
				"containerImage": opts.OperatorImage,
				"createdAt":      opts.CreatedAt,
				"description":    "Sidecar injection, mTLS identities and lossless hot upgrades of the sidecar proxies of a service mesh.",
				"olm.skipRange":  opts.SkipRange,
				"repository":     "https://github.com/meshlift/meshlift",
				"support":        "Meshlift maintainers",
				// A namespace of its own, which the injector never injects (docs/olm.md).
				"operatorframework.io/suggested-namespace": "meshlift-system",
			},
		},
		Spec: v1alpha1.ClusterServiceVersionSpec{
			DisplayName:    "Meshlift",
			Description:    description,
			Version:        version.OperatorVersion{Version: semver.MustParse(opts.Version)},
			Replaces:       opts.Replaces,
			MinKubeVersion: MinKubeVersion,
			Maturity:       "alpha",
			Keywords:       []string{"service mesh", "sidecar", "mtls", "spiffe", "hot upgrade", "proxy", "injection", "zero downtime"},
			Maintainers:    []v1alpha1.Maintainer{{Name: "Meshlift maintainers", Email: "maintainers@meshlift.io"}},
			Provider:       v1alpha1.AppLink{Name: "Meshlift", URL: "https://github.com/meshlift/meshlift"},
			Links: []v1alpha1.AppLink{
				{Name: "Source", URL: "https://github.com/meshlift/meshlift"},
				{Name: "Documentation", URL: "https://github.com/meshlift/meshlift/tree/main/docs"},
				{Name: "OLM install", URL: "https://github.com/meshlift/meshlift/blob/main/docs/olm.md"},
			},
			Icon: []v1alpha1.Icon{{MediaType: "image/svg+xml", Data: base64.StdEncoding.EncodeToString(icon)}},
			InstallModes: []v1alpha1.InstallMode{
				{Type: v1alpha1.InstallModeTypeOwnNamespace, Supported: false},
				{Type: v1alpha1.InstallModeTypeSingleNamespace, Supported: false},
				{Type: v1alpha1.InstallModeTypeMultiNamespace, Supported: false},
				{Type: v1alpha1.InstallModeTypeAllNamespaces, Supported: true},
			},
			CustomResourceDefinitions: v1alpha1.CustomResourceDefinitions{Owned: owned},
			WebhookDefinitions:        webhooks,
			RelatedImages:             images,
			InstallStrategy: v1alpha1.NamedInstallStrategy{
				StrategyName: v1alpha1.InstallStrategyNameDeployment,
				StrategySpec: v1alpha1.StrategyDetailsDeployment{
					DeploymentSpecs:    []v1alpha1.StrategyDeploymentSpec{deployment},
					ClusterPermissions: clusterPermissions,
					Permissions:        permissions,
				},
			},
		},
	}
	out, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&csv)
	if err != nil {
		return nil, fmt.Errorf("failed to convert the ClusterServiceVersion: %w", err)
	}
	prune(out)
	delete(out, "status")
	unstructured.RemoveNestedField(out, "spec", "cleanup") // enabled: false, the default
	return out, nil
}

// prune removes the null creationTimestamps and empty objects that the typed structs leave
// behind, so the CSV says only what is set.
func prune(obj map[string]any) {
	for key, value := range obj {
		switch v := value.(type) {
		case nil:
			delete(obj, key)
		case map[string]any:
			prune(v)
			if len(v) == 0 && key != "emptyDir" {
				delete(obj, key)
			}
		case []any:
			for _, item := range v {
				if m, ok := item.(map[string]any); ok {
					prune(m)
				}
			}
		}
	}
}

// csvDeployment is config/manager's Deployment as OLM runs it: the external certificate mode,
// and the control plane's address in whatever namespace OLM installs into.
func csvDeployment(in *objects) (v1alpha1.StrategyDeploymentSpec, error) {
	var spec appsv1.DeploymentSpec
	rawSpec, _, _ := unstructured.NestedMap(in.deployment.Object, "spec")
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(rawSpec, &spec, true); err != nil {
		return v1alpha1.StrategyDeploymentSpec{}, fmt.Errorf("Deployment %s: %w", in.deployment.GetName(), err)
	}
	if spec.Template.Spec.ServiceAccountName != in.serviceAccount {
		return v1alpha1.StrategyDeploymentSpec{}, fmt.Errorf("Deployment %s runs as %q, not as the ServiceAccount %s", in.deployment.GetName(), spec.Template.Spec.ServiceAccountName, in.serviceAccount)
	}
	i := slices.IndexFunc(spec.Template.Spec.Containers, func(c corev1.Container) bool { return c.Name == ManagerContainer })
	if i < 0 {
		return v1alpha1.StrategyDeploymentSpec{}, fmt.Errorf("Deployment %s has no container %q", in.deployment.GetName(), ManagerContainer)
	}
	manager := &spec.Template.Spec.Containers[i]
	if !slices.ContainsFunc(manager.Ports, func(p corev1.ContainerPort) bool { return p.ContainerPort == WebhookPort }) {
		return v1alpha1.StrategyDeploymentSpec{}, fmt.Errorf("container %s has no port %d for the webhooks", ManagerContainer, WebhookPort)
	}
	if !slices.ContainsFunc(manager.Env, func(e corev1.EnvVar) bool { return e.Name == "POD_NAMESPACE" }) {
		return v1alpha1.StrategyDeploymentSpec{}, fmt.Errorf("container %s has no POD_NAMESPACE variable (the control plane's address is built from it)", ManagerContainer)
	}
	controlPlane, err := controlPlaneAddress(in.others)
	if err != nil {
		return v1alpha1.StrategyDeploymentSpec{}, err
	}
	var args []string
	for _, arg := range manager.Args {
		name, _, _ := strings.Cut(arg, "=")
		switch {
		case slices.Contains(selfManagedFlags, name):
			// Refused in external mode: the operator would not start.
		case slices.Contains(certFlags, name), name == "--control-plane-address":
			// Replaced below.
		default:
			args = append(args, arg)
		}
	}
	manager.Args = append(append(args, externalModeArgs...), "--control-plane-address="+controlPlane)
	return v1alpha1.StrategyDeploymentSpec{Name: in.deployment.GetName(), Label: in.deployment.GetLabels(), Spec: spec}, nil
}

// controlPlaneAddress is where injected proxies reach the control plane: its Service in the
// operator's namespace, which under OLM is whatever namespace the operator was installed into.
// The kubelet expands $(POD_NAMESPACE) from the container's environment.
func controlPlaneAddress(others []*unstructured.Unstructured) (string, error) {
	for _, obj := range others {
		if obj.GetKind() != "Service" {
			continue
		}
		ports, _, _ := unstructured.NestedSlice(obj.Object, "spec", "ports")
		for _, p := range ports {
			port := p.(map[string]any)
			if port["targetPort"] == "control-plane" {
				return fmt.Sprintf("%s.$(POD_NAMESPACE).svc:%v", obj.GetName(), port["port"]), nil
			}
		}
	}
	return "", fmt.Errorf("no Service targets the port control-plane: cannot tell the proxies where the control plane is")
}

// webhookDefinitions converts config/webhook's configurations. OLM writes the configurations
// itself, with a namespaceSelector from the OperatorGroup (the injector keeps system namespaces
// and its own out by itself) and a Service <deployment>-service to the webhook port.
func webhookDefinitions(in *objects, deployment v1alpha1.StrategyDeploymentSpec) ([]v1alpha1.WebhookDescription, error) {
	var out []v1alpha1.WebhookDescription
	convert := func(cfg *unstructured.Unstructured, webhookType v1alpha1.WebhookAdmissionType) error {
		hooks, _, _ := unstructured.NestedSlice(cfg.Object, "webhooks")
		for _, raw := range hooks {
			data, err := json.Marshal(raw)
			if err != nil {
				return err
			}
			var h admissionregistrationv1.MutatingWebhook // a superset of ValidatingWebhook
			if err := json.Unmarshal(data, &h); err != nil {
				return fmt.Errorf("webhook of %s: %w", cfg.GetName(), err)
			}
			if h.ClientConfig.Service == nil || h.ClientConfig.Service.Path == nil {
				return fmt.Errorf("webhook %s calls no Service path: OLM can only route to the operator's Deployment", h.Name)
			}
			if len(h.MatchConditions) > 0 {
				return fmt.Errorf("webhook %s has matchConditions, which a CSV webhookdefinition cannot carry", h.Name)
			}
			for _, rule := range h.Rules {
				if slices.Contains(rule.APIGroups, "*") {
					return fmt.Errorf("webhook %s matches every API group: OLM refuses such a webhook (it could intercept OLM's own objects)", h.Name)
				}
			}
			d := v1alpha1.WebhookDescription{
				GenerateName:            h.Name,
				Type:                    webhookType,
				DeploymentName:          deployment.Name,
				ContainerPort:           WebhookPort,
				TargetPort:              ptr.To(intstr.FromInt32(WebhookPort)),
				Rules:                   h.Rules,
				FailurePolicy:           h.FailurePolicy,
				MatchPolicy:             h.MatchPolicy,
				ObjectSelector:          h.ObjectSelector,
				SideEffects:             h.SideEffects,
				TimeoutSeconds:          h.TimeoutSeconds,
				AdmissionReviewVersions: h.AdmissionReviewVersions,
				WebhookPath:             h.ClientConfig.Service.Path,
			}
			if webhookType == v1alpha1.MutatingAdmissionWebhook {
				d.ReinvocationPolicy = h.ReinvocationPolicy
			}
			out = append(out, d)
		}
		return nil
	}
	for _, cfg := range in.mutating {
		if err := convert(cfg, v1alpha1.MutatingAdmissionWebhook); err != nil {
			return nil, err
		}
	}
	for _, cfg := range in.validating {
		if err := convert(cfg, v1alpha1.ValidatingAdmissionWebhook); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// permissionsOf merges the rules of roles into the one entry of the ServiceAccount.
func permissionsOf(serviceAccount string, roles []*unstructured.Unstructured) ([]v1alpha1.StrategyDeploymentPermissions, error) {
	if len(roles) == 0 {
		return nil, nil
	}
	entry := v1alpha1.StrategyDeploymentPermissions{ServiceAccountName: serviceAccount}
	for _, role := range roles {
		var r rbacv1.ClusterRole // Role has the same rules
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(role.Object, &r); err != nil {
			return nil, fmt.Errorf("%s %s: %w", role.GetKind(), role.GetName(), err)
		}
		entry.Rules = append(entry.Rules, r.Rules...)
	}
	return []v1alpha1.StrategyDeploymentPermissions{entry}, nil
}

// ownedCRDs describes each CRD's served storage version with the descriptors of kinds.
func ownedCRDs(crds []*unstructured.Unstructured) ([]v1alpha1.CRDDescription, error) {
	var out []v1alpha1.CRDDescription
	for _, crd := range crds {
		kind, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind")
		d, ok := kinds[kind]
		if !ok {
			return nil, fmt.Errorf("CRD %s: no description of kind %s in internal/bundle/descriptors.go", crd.GetName(), kind)
		}
		versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		for _, v := range versions {
			version := v.(map[string]any)
			if version["served"] != true {
				continue
			}
			out = append(out, v1alpha1.CRDDescription{
				Name:              crd.GetName(),
				Version:           version["name"].(string),
				Kind:              kind,
				DisplayName:       d.displayName,
				Description:       d.description,
				Resources:         d.resources,
				SpecDescriptors:   d.spec,
				StatusDescriptors: d.status,
			})
		}
	}
	return out, nil
}

// almExamples is the alm-examples annotation: the samples, which the console offers as the
// starting point of a new instance. Every owned kind must have one.
func almExamples(samples []*unstructured.Unstructured, crds []*unstructured.Unstructured) (string, error) {
	var list []map[string]any
	seen := map[string]bool{}
	for _, s := range samples {
		obj := s.DeepCopy()
		obj.SetNamespace("")
		unstructured.RemoveNestedField(obj.Object, "metadata", "creationTimestamp")
		list = append(list, obj.Object)
		seen[obj.GetKind()] = true
	}
	for _, crd := range crds {
		kind, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind")
		if !seen[kind] {
			return "", fmt.Errorf("config/samples has no %s: alm-examples needs one of each owned kind", kind)
		}
	}
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return "", err
	}
	return string(data), nil
}

// relatedImages lists every image the bundle may make the cluster pull: the operator's and the
// proxy and idle images of the sample SidecarVersions (for mirroring in disconnected clusters).
func relatedImages(operatorImage string, samples []*unstructured.Unstructured) ([]v1alpha1.RelatedImage, error) {
	images := []v1alpha1.RelatedImage{{Name: "meshlift-operator", Image: operatorImage}}
	for _, s := range samples {
		if s.GetKind() != "SidecarVersion" {
			continue
		}
		for _, field := range []struct{ key, role string }{{"image", "proxy"}, {"idleImage", "idle"}} {
			image, _, _ := unstructured.NestedString(s.Object, "spec", field.key)
			if image == "" {
				continue
			}
			images = append(images, v1alpha1.RelatedImage{Name: s.GetName() + "-" + field.role, Image: image})
		}
	}
	return images, nil
}
