package preflight

import (
	"cmp"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
)

// The names check looks for. They are the defaults of the operator's flags (main.go) with the
// name prefix of config/default; when the operator's Deployment sets one of those flags, the
// check follows the Deployment (SettingsFor).
const (
	// DefaultOperatorNamespace is where check looks for the operator unless --operator-namespace
	// says otherwise.
	DefaultOperatorNamespace = "meshlift-system"
	// OperatorDeployment is the operator's Deployment in config/default.
	OperatorDeployment = "meshlift-controller-manager"
	// OperatorContainer is the container whose arguments are the operator's flags.
	OperatorContainer = "manager"

	// DefaultWebhookServiceName is --webhook-service-name.
	DefaultWebhookServiceName = "meshlift-webhook-service"
	// DefaultWebhookSecretName is --webhook-secret-name: the self-managed Secret of the webhook CA
	// and serving certificate.
	DefaultWebhookSecretName = "meshlift-webhook-certs"
	// DefaultCertManagerWebhookSecretName is the Secret cert-manager writes the serving
	// certificate into (config/certmanager), when the Deployment mounts none at --webhook-cert-dir.
	DefaultCertManagerWebhookSecretName = "meshlift-webhook-server-cert"
	// DefaultWebhookCertDir is --webhook-cert-dir.
	DefaultWebhookCertDir = "/etc/meshlift/webhook-certs"
	// DefaultExternalWebhookCertDir is --webhook-cert-dir in external mode: where OLM mounts the
	// serving certificate.
	DefaultExternalWebhookCertDir = "/tmp/k8s-webhook-server/serving-certs"
	// DefaultMutatingWebhookConfiguration (the pod injector) is --mutating-webhook-configuration.
	DefaultMutatingWebhookConfiguration = "meshlift-mutating-webhook-configuration"
	// DefaultValidatingWebhookConfiguration is --validating-webhook-configuration.
	DefaultValidatingWebhookConfiguration = "meshlift-validating-webhook-configuration"

	// DefaultCASecretName is --ca-secret-name (builtin.DefaultSecretName): the built-in CA's root.
	DefaultCASecretName = "meshlift-ca"
	// TrustBundleConfigMap (key TrustBundleKey) is the trust bundle the operator publishes in
	// every namespace with a MeshService (controllers/trustbundle_controller.go).
	TrustBundleConfigMap = sidecar.CARootConfigMap
	TrustBundleKey       = sidecar.CARootKey

	// WebhookCertModeSelfManaged and WebhookCertModeCertManager are the values of
	// --webhook-cert-mode (webhookcert.Mode).
	WebhookCertModeSelfManaged = "self-managed"
	WebhookCertModeCertManager = "cert-manager"
	// WebhookCertModeExternal: OLM (or whoever) mounts the serving certificate and writes the
	// webhook configurations.
	WebhookCertModeExternal = "external"
	// CABackendBuiltin and CABackendCertManager are the values of --ca-backend.
	CABackendBuiltin     = "builtin"
	CABackendCertManager = "cert-manager"

	// DefaultControlPlaneService is the control-plane Service of config/manager, in the operator's
	// namespace; check uses it when --control-plane-address is not a Service name.
	DefaultControlPlaneService = "meshlift-control-plane"

	// ServiceNameLabel is the label that ties an EndpointSlice to its Service.
	ServiceNameLabel = "kubernetes.io/service-name"
)

// CRDNames are the CustomResourceDefinitions Meshlift needs, each serving ServedVersion.
var CRDNames = []string{
	"upgradeplans." + meshv1alpha1.GroupVersion.Group,
	"meshservices." + meshv1alpha1.GroupVersion.Group,
	"sidecarversions." + meshv1alpha1.GroupVersion.Group,
}

// ServedVersion is the API version the plugin and the operator speak.
var ServedVersion = meshv1alpha1.GroupVersion.Version

// DefaultControlPlaneAddress is --control-plane-address: where injected proxies reach the
// control plane, hence the Service that must have ready endpoints.
var DefaultControlPlaneAddress = sidecar.DefaultOptions().ControlPlaneAddress

// Settings are the names the operator runs with: the defaults, overridden by the flags of the
// operator's Deployment.
type Settings struct {
	// Namespace is the operator's namespace: its --namespace flag, else the Deployment's.
	Namespace string
	// Deployment is the operator's Deployment ("" when none was found).
	Deployment string

	WebhookCertMode    string
	WebhookServiceName string
	// WebhookSecretName is the Secret holding the serving certificate in the mode in use: the
	// self-managed Secret, or cert-manager's Secret mounted at --webhook-cert-dir.
	WebhookSecretName string
	// MutatingWebhookConfiguration and ValidatingWebhookConfiguration are "" when the operator
	// runs without one.
	MutatingWebhookConfiguration   string
	ValidatingWebhookConfiguration string
	// WebhooksDisabled: --enable-webhooks=false.
	WebhooksDisabled bool

	// ControlPlaneAddress is where proxies dial (--control-plane-address); the Service and port
	// come from it when it is a Service name (<service>.<namespace>.svc[.cluster.local]:<port>).
	ControlPlaneAddress string
	ControlPlaneService string
	// ControlPlaneNamespace is where ControlPlaneService lives.
	ControlPlaneNamespace string
	// ControlPlanePort is 0 when the address names no port.
	ControlPlanePort int32
	// ControlPlaneDisabled: --control-plane-bind-address=0.
	ControlPlaneDisabled bool

	CABackend    string
	CASecretName string
}

// FindOperator picks the operator's Deployment among the Deployments of its namespace: the one
// named OperatorDeployment, else the first (by name) whose pods carry podLabels. Nil when none.
func FindOperator(deployments []appsv1.Deployment, podLabels map[string]string) *appsv1.Deployment {
	for i := range deployments {
		if deployments[i].Name == OperatorDeployment {
			return &deployments[i]
		}
	}
	var candidates []*appsv1.Deployment
	for i := range deployments {
		if len(podLabels) > 0 && hasLabels(deployments[i].Spec.Template.Labels, podLabels) {
			candidates = append(candidates, &deployments[i])
		}
	}
	if len(candidates) == 0 {
		return nil
	}
	return slices.MinFunc(candidates, func(a, b *appsv1.Deployment) int { return cmp.Compare(a.Name, b.Name) })
}

func hasLabels(labels, want map[string]string) bool {
	for k, v := range want {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// SettingsFor reads the operator's flags from its Deployment (nil: the defaults in namespace).
func SettingsFor(namespace string, deploy *appsv1.Deployment) Settings {
	flags := map[string]string{}
	var container *corev1.Container
	var volumes []corev1.Volume
	if deploy != nil {
		namespace = deploy.Namespace
		container = operatorContainer(deploy)
		volumes = deploy.Spec.Template.Spec.Volumes
		if container != nil {
			flags = parseFlags(append(slices.Clone(container.Command), container.Args...))
		}
	}
	flag := func(name, def string) string {
		if v, ok := flags[name]; ok {
			return v
		}
		return def
	}
	s := Settings{
		Namespace:                      flag("namespace", namespace),
		WebhookCertMode:                flag("webhook-cert-mode", WebhookCertModeSelfManaged),
		WebhookServiceName:             flag("webhook-service-name", DefaultWebhookServiceName),
		WebhookSecretName:              flag("webhook-secret-name", DefaultWebhookSecretName),
		MutatingWebhookConfiguration:   flag("mutating-webhook-configuration", DefaultMutatingWebhookConfiguration),
		ValidatingWebhookConfiguration: flag("validating-webhook-configuration", DefaultValidatingWebhookConfiguration),
		WebhooksDisabled:               isFalse(flag("enable-webhooks", "true")),
		ControlPlaneAddress:            flag("control-plane-address", DefaultControlPlaneAddress),
		ControlPlaneDisabled:           flag("control-plane-bind-address", "") == "0",
		CABackend:                      flag("ca-backend", CABackendBuiltin),
		CASecretName:                   flag("ca-secret-name", DefaultCASecretName),
	}
	if deploy != nil {
		s.Deployment = deploy.Name
	}
	switch s.WebhookCertMode {
	case WebhookCertModeCertManager:
		s.WebhookSecretName = mountedSecret(container, volumes, flag("webhook-cert-dir", DefaultWebhookCertDir), DefaultCertManagerWebhookSecretName)
	case WebhookCertModeExternal:
		// OLM mounts the Secret <deployment>-service-cert it issues (docs/webhook-certificates.md).
		s.WebhookSecretName = mountedSecret(container, volumes, flag("webhook-cert-dir", DefaultExternalWebhookCertDir), s.Deployment+"-service-cert")
	}
	s.ControlPlaneService, s.ControlPlaneNamespace, s.ControlPlanePort = serviceOf(s.ControlPlaneAddress, s.Namespace)
	return s
}

func operatorContainer(deploy *appsv1.Deployment) *corev1.Container {
	containers := deploy.Spec.Template.Spec.Containers
	for i := range containers {
		if containers[i].Name == OperatorContainer {
			return &containers[i]
		}
	}
	if len(containers) > 0 {
		return &containers[0]
	}
	return nil
}

// parseFlags reads --name=value, --name value, -name=value and bare boolean flags (value
// "true"); the last occurrence wins, as with the flag package.
func parseFlags(args []string) map[string]string {
	flags := map[string]string{}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if !strings.HasPrefix(arg, "-") || arg == "-" || arg == "--" {
			continue
		}
		name := strings.TrimLeft(arg, "-")
		if n, v, ok := strings.Cut(name, "="); ok {
			flags[n] = v
			continue
		}
		if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			flags[name] = args[i+1]
			i++
			continue
		}
		flags[name] = "true"
	}
	return flags
}

func isFalse(v string) bool {
	b, err := strconv.ParseBool(v)
	return err == nil && !b
}

// mountedSecret is the Secret mounted at dir in container, or fallback when none is.
func mountedSecret(container *corev1.Container, volumes []corev1.Volume, dir, fallback string) string {
	if container != nil {
		for _, m := range container.VolumeMounts {
			if path.Clean(m.MountPath) != path.Clean(dir) {
				continue
			}
			for _, v := range volumes {
				if v.Name == m.Name && v.Secret != nil {
					return v.Secret.SecretName
				}
			}
		}
	}
	return fallback
}

// serviceOf reads <service>.<namespace>[.svc[.<cluster domain>]][:port]; an address that is not
// a Service name (an IP, an external host) leaves the Service of config/manager in the operator's
// namespace.
func serviceOf(address, operatorNamespace string) (service, namespace string, port int32) {
	host := address
	if h, p, err := net.SplitHostPort(address); err == nil {
		host = h
		if n, err := strconv.ParseInt(p, 10, 32); err == nil {
			port = int32(n)
		}
	}
	labels := strings.Split(host, ".")
	if net.ParseIP(host) == nil && (len(labels) == 2 || (len(labels) >= 3 && labels[2] == "svc")) {
		return labels[0], labels[1], port
	}
	return DefaultControlPlaneService, operatorNamespace, port
}
