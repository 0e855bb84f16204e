package preflight

import (
	"cmp"
	"crypto/x509"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/versions"
	"github.com/meshlift/meshlift/internal/webhookcert/pki"
)

// maxListed bounds the names a line lists; the rest are counted.
const maxListed = 5

// access describes a read, for the line and the hint of a read that failed.
type access struct {
	// what is read, as the line says it: "Secret meshlift-system/meshlift-ca".
	what string
	// verb, resource and namespace make the `kubectl auth can-i` of the hint.
	verb, resource, namespace string
	// unchecked says what cannot be checked without it.
	unchecked string
}

// readFailure is the result of a read that failed with something other than NotFound: a
// permission the caller lacks is a warning (Meshlift may be fine, check cannot tell), a missing
// CRD or any other error is an error.
func readFailure(id string, category Category, a access, err error) Result {
	if apierrors.IsForbidden(err) {
		canI := "kubectl auth can-i " + a.verb + " " + a.resource
		if a.namespace != "" {
			canI += " -n " + a.namespace
		} else if a.verb == "list" {
			canI += " -A"
		}
		return Result{ID: id, Category: category, Status: StatusWarning,
			Description: fmt.Sprintf("cannot read %s (forbidden): %s not checked", a.what, a.unchecked),
			Hint:        fmt.Sprintf("run check with an account that may %s %s (%s)", a.verb, a.resource, canI)}
	}
	if meta.IsNoMatchError(err) {
		return Result{ID: id, Category: category, Status: StatusError,
			Description: fmt.Sprintf("cannot read %s: its CRD is not installed", a.what),
			Hint:        "install the Meshlift CRDs: kubectl apply -k config/default"}
	}
	return Result{ID: id, Category: category, Status: StatusError,
		Description: fmt.Sprintf("cannot read %s: %v", a.what, err),
		Hint:        "run check again; if it persists, see the API server's health (kubectl get --raw /readyz?verbose)"}
}

func listed(names []string) string {
	if len(names) <= maxListed {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:maxListed], ", "), len(names)-maxListed)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

// checkCRDs: each CRD exists, is Established and serves ServedVersion.
func checkCRDs(in Input) []Result {
	var results []Result
	for _, name := range CRDNames {
		id := "crd." + name
		got, ok := in.CRDs[name]
		switch {
		case !ok || apierrors.IsNotFound(got.Err):
			results = append(results, Result{ID: id, Category: CategoryCRDs, Status: StatusError,
				Description: fmt.Sprintf("CRD %s is not installed", name),
				Hint:        "install the Meshlift CRDs (and the operator): kubectl apply -k config/default"})
			continue
		case got.Err != nil:
			results = append(results, readFailure(id, CategoryCRDs,
				access{what: "CRD " + name, verb: "get", resource: "customresourcedefinitions", unchecked: "the CRD"}, got.Err))
			continue
		}
		results = append(results, checkCRD(id, got.Object))
	}
	return results
}

func checkCRD(id string, crd *apiextensionsv1.CustomResourceDefinition) Result {
	established := false
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
			established = true
		}
	}
	if !established {
		return Result{ID: id, Category: CategoryCRDs, Status: StatusError,
			Description: fmt.Sprintf("CRD %s is not Established: the API server does not serve it", crd.Name),
			Hint:        fmt.Sprintf("see why in its conditions (a name conflict, an invalid schema): kubectl get crd %s -o jsonpath='{.status.conditions}'", crd.Name)}
	}
	var served []string
	for _, v := range crd.Spec.Versions {
		if v.Served {
			served = append(served, v.Name)
		}
	}
	if !slices.Contains(served, ServedVersion) {
		return Result{ID: id, Category: CategoryCRDs, Status: StatusError,
			Description: fmt.Sprintf("CRD %s does not serve %s (it serves %s)", crd.Name, ServedVersion, cmp.Or(strings.Join(served, ", "), "no version")),
			Hint:        "the CRD comes from another Meshlift release: apply the CRDs of this plugin's release (kubectl apply -k config/default)"}
	}
	return Result{ID: id, Category: CategoryCRDs, Status: StatusOK,
		Description: fmt.Sprintf("CRD %s is established and serves %s", crd.Name, ServedVersion)}
}

// operatorHint is how to see why the operator does not run.
func operatorHint(s Settings, deploy string, podLabels map[string]string) string {
	selector := make([]string, 0, len(podLabels))
	for k, v := range podLabels {
		selector = append(selector, k+"="+v)
	}
	slices.Sort(selector)
	lines := []string{fmt.Sprintf("kubectl -n %s get pods -l %s", s.Namespace, strings.Join(selector, ","))}
	if deploy != "" {
		lines = append(lines,
			fmt.Sprintf("kubectl -n %s describe deployment %s", s.Namespace, deploy),
			fmt.Sprintf("kubectl -n %s logs deployment/%s -c %s", s.Namespace, deploy, OperatorContainer))
	}
	return strings.Join(lines, "\n")
}

// checkOperator: the operator's Deployment exists and has an available replica.
func checkOperator(in Input) []Result {
	const id = "operator.available"
	s := in.Settings
	if in.Deployments.Err != nil {
		return []Result{readFailure(id, CategoryOperator,
			access{what: "the Deployments of " + s.Namespace, verb: "list", resource: "deployments", namespace: s.Namespace, unchecked: "the operator"},
			in.Deployments.Err)}
	}
	deploy := FindOperator(in.Deployments.Object.Items, in.OperatorPodLabels)
	if deploy == nil {
		return []Result{{ID: id, Category: CategoryOperator, Status: StatusError,
			Description: fmt.Sprintf("operator not found: no Deployment %s (nor one whose pods are the operator's) in namespace %s", OperatorDeployment, s.Namespace),
			Hint: "install it: kubectl apply -k config/default\n" +
				"or, if it runs in another namespace: kubectl meshlift check --operator-namespace <namespace>"}}
	}
	name := deploy.Namespace + "/" + deploy.Name
	desired := ptr.Deref(deploy.Spec.Replicas, 1)
	available := deploy.Status.AvailableReplicas
	hint := operatorHint(s, deploy.Name, in.OperatorPodLabels)
	switch {
	case desired == 0 && available == 0:
		return []Result{{ID: id, Category: CategoryOperator, Status: StatusError,
			Description: fmt.Sprintf("operator has no ready replica: Deployment %s is scaled to 0", name),
			Hint: fmt.Sprintf("without it no pod gets a sidecar and no proxy gets a certificate; scale it up:\n"+
				"kubectl -n %s scale deployment %s --replicas=1", deploy.Namespace, deploy.Name)}}
	case available == 0:
		return []Result{{ID: id, Category: CategoryOperator, Status: StatusError,
			Description: fmt.Sprintf("operator has no ready replica: Deployment %s has 0 of %d replicas available", name, desired),
			Hint:        "see why its pods are not ready:\n" + hint}}
	case available < desired:
		return []Result{{ID: id, Category: CategoryOperator, Status: StatusWarning,
			Description: fmt.Sprintf("operator is degraded: Deployment %s has %d of %d replicas available", name, available, desired),
			Hint:        "see why some of its pods are not ready:\n" + hint}}
	}
	return []Result{{ID: id, Category: CategoryOperator, Status: StatusOK,
		Description: fmt.Sprintf("operator Deployment %s has %d of %d replicas available", name, available, desired)}}
}

// servingCertificate is the webhook serving certificate as read from its Secret.
type servingCertificate struct {
	secret string
	// chain is tls.crt: the leaf, then intermediates; nil when it could not be read.
	chain []*x509.Certificate
	// result is the line about the Secret when it could not be used (nil otherwise).
	result *Result
}

func readServingCertificate(in Input) servingCertificate {
	const id = "webhooks.serving-certificate"
	s := in.Settings
	sc := servingCertificate{secret: s.Namespace + "/" + s.WebhookSecretName}
	fail := func(r Result) servingCertificate {
		sc.result = &r
		return sc
	}
	switch {
	case apierrors.IsNotFound(in.WebhookSecret.Err):
		hint := fmt.Sprintf("the operator creates it when it starts (--webhook-cert-mode=self-managed); see its logs:\nkubectl -n %s logs deployment/%s -c %s",
			s.Namespace, cmp.Or(s.Deployment, OperatorDeployment), OperatorContainer)
		switch s.WebhookCertMode {
		case WebhookCertModeCertManager:
			hint = fmt.Sprintf("cert-manager writes it from the Certificate whose spec.secretName is %s (config/certmanager); see why it did not:\n"+
				"kubectl -n %s get certificates,certificaterequests", s.WebhookSecretName, s.Namespace)
		case WebhookCertModeExternal:
			hint = fmt.Sprintf("in --webhook-cert-mode=external whoever installed the operator provides it (OLM: the Secret %s of the CSV's Deployment); see the ClusterServiceVersion's status:\n"+
				"kubectl -n %s get clusterserviceversions", s.WebhookSecretName, s.Namespace)
		}
		return fail(Result{ID: id, Category: CategoryWebhooks, Status: StatusError,
			Description: fmt.Sprintf("webhook serving certificate Secret %s not found: the API server cannot call the webhooks", sc.secret),
			Hint:        hint})
	case in.WebhookSecret.Err != nil:
		return fail(readFailure(id, CategoryWebhooks,
			access{what: "Secret " + sc.secret, verb: "get", resource: "secrets", namespace: s.Namespace, unchecked: "the webhook serving certificate and caBundle are"},
			in.WebhookSecret.Err))
	}
	chain, err := parseCertificates(in.WebhookSecret.Object.Data[pki.TLSCertKey])
	if err != nil {
		return fail(Result{ID: id, Category: CategoryWebhooks, Status: StatusError,
			Description: fmt.Sprintf("Secret %s holds no usable serving certificate (%s: %v)", sc.secret, pki.TLSCertKey, err),
			Hint:        renewHint(s)})
	}
	sc.chain = chain
	return sc
}

// renewHint says who issues the webhook serving certificate and how to have it issued again.
func renewHint(s Settings) string {
	if s.WebhookCertMode == WebhookCertModeExternal {
		return fmt.Sprintf("in --webhook-cert-mode=external whoever installed the operator issues it (OLM rotates its own); see:\nkubectl -n %s get clusterserviceversions", s.Namespace)
	}
	if s.WebhookCertMode == WebhookCertModeCertManager {
		return fmt.Sprintf("cert-manager issues it (renewed 30 days before expiry); see its Certificate and requests:\nkubectl -n %s get certificates,certificaterequests", s.Namespace)
	}
	return fmt.Sprintf("the operator issues it (renewed 30 days before expiry, docs/webhook-certificates.md); to have it issued again:\n"+
		"kubectl -n %s patch secret %s --type=merge -p '{\"data\":{\"tls.crt\":\"\"}}'", s.Namespace, s.WebhookSecretName)
}

// caBundleHint says who writes caBundle.
func caBundleHint(s Settings, kind, name string) string {
	if s.WebhookCertMode == WebhookCertModeExternal {
		return fmt.Sprintf("in --webhook-cert-mode=external whoever installed the operator writes caBundle (OLM: from the CSV's webhookdefinitions) into %s %s", kind, name)
	}
	if s.WebhookCertMode == WebhookCertModeCertManager {
		return fmt.Sprintf("cert-manager's CA injector writes caBundle: check the annotation cert-manager.io/inject-ca-from of %s %s and the cainjector's logs", kind, name)
	}
	return fmt.Sprintf("the operator writes caBundle within seconds of a change (docs/webhook-certificates.md); if it stays wrong, see its logs:\n"+
		"kubectl -n %s logs deployment/%s -c %s", s.Namespace, cmp.Or(s.Deployment, OperatorDeployment), OperatorContainer)
}

// webhook is what the check needs of one webhook of either kind.
type webhook struct {
	name   string
	client admissionregistrationv1.WebhookClientConfig
}

// serverName is the name the API server verifies the webhook's certificate for.
func (w webhook) serverName() string {
	if w.client.Service != nil {
		return w.client.Service.Name + "." + w.client.Service.Namespace + ".svc"
	}
	if w.client.URL != nil {
		if u, err := url.Parse(*w.client.URL); err == nil {
			return u.Hostname()
		}
	}
	return ""
}

// checkWebhooks: both configurations exist, every webhook has a caBundle that verifies the
// serving certificate, and that certificate is not about to expire.
func checkWebhooks(in Input) []Result {
	s := in.Settings
	if s.WebhooksDisabled {
		return []Result{{ID: "webhooks.enabled", Category: CategoryWebhooks, Status: StatusWarning,
			Description: "the operator runs with --enable-webhooks=false: pods get no sidecar and Meshlift objects are not validated",
			Hint:        "run the operator with its webhooks unless another one serves them"}}
	}
	serving := readServingCertificate(in)
	var configurations []webhookConfiguration
	if s.MutatingWebhookConfiguration != "" {
		c := webhookConfiguration{id: "webhooks.mutating", kind: "MutatingWebhookConfiguration", name: s.MutatingWebhookConfiguration,
			without: "pods get no sidecar", err: in.MutatingWebhookConfiguration.Err}
		if obj := in.MutatingWebhookConfiguration.Object; obj != nil {
			for _, w := range obj.Webhooks {
				c.webhooks = append(c.webhooks, webhook{name: w.Name, client: w.ClientConfig})
			}
		}
		configurations = append(configurations, c)
	}
	if s.ValidatingWebhookConfiguration != "" {
		c := webhookConfiguration{id: "webhooks.validating", kind: "ValidatingWebhookConfiguration", name: s.ValidatingWebhookConfiguration,
			without: "Meshlift objects are not validated", err: in.ValidatingWebhookConfiguration.Err}
		if obj := in.ValidatingWebhookConfiguration.Object; obj != nil {
			for _, w := range obj.Webhooks {
				c.webhooks = append(c.webhooks, webhook{name: w.Name, client: w.ClientConfig})
			}
		}
		configurations = append(configurations, c)
	}
	var results []Result
	var verified [][]*x509.Certificate
	for _, c := range configurations {
		r, chains := checkWebhookConfiguration(in, c, serving)
		results = append(results, r)
		verified = append(verified, chains...)
	}
	return append(results, checkServingExpiry(in, serving, verified))
}

// webhookConfiguration is what the check needs of a webhook configuration of either kind.
type webhookConfiguration struct {
	id, kind, name string
	// without says what breaks when the API server cannot call its webhooks.
	without string
	// err is why it could not be read; webhooks are its webhooks otherwise.
	err      error
	webhooks []webhook
}

// checkWebhookConfiguration verifies the serving certificate with the caBundle of every webhook
// of c, and returns the chains it verified.
func checkWebhookConfiguration(in Input, c webhookConfiguration, serving servingCertificate) (Result, [][]*x509.Certificate) {
	s := in.Settings
	id, kind, name, without, webhooks := c.id, c.kind, c.name, c.without, c.webhooks
	switch {
	case apierrors.IsNotFound(c.err):
		return Result{ID: id, Category: CategoryWebhooks, Status: StatusError,
			Description: fmt.Sprintf("%s %s not found: %s", kind, name, without),
			Hint:        "install it with the operator: kubectl apply -k config/default"}, nil
	case c.err != nil:
		return readFailure(id, CategoryWebhooks,
			access{what: kind + " " + name, verb: "get", resource: strings.ToLower(kind) + "s", unchecked: "its caBundle"}, c.err), nil
	case len(webhooks) == 0:
		return Result{ID: id, Category: CategoryWebhooks, Status: StatusError,
			Description: fmt.Sprintf("%s %s has no webhook: %s", kind, name, without),
			Hint:        "apply it again from the operator's release: kubectl apply -k config/default"}, nil
	}
	var problems []string
	var chains [][]*x509.Certificate
	var names []string
	for _, w := range webhooks {
		serverName := w.serverName()
		names = append(names, serverName)
		if len(w.client.CABundle) == 0 {
			problems = append(problems, fmt.Sprintf("webhook %s has no caBundle", w.name))
			continue
		}
		bundle, err := parseCertificates(w.client.CABundle)
		if err != nil {
			problems = append(problems, fmt.Sprintf("the caBundle of webhook %s holds %v", w.name, err))
			continue
		}
		if serving.chain == nil {
			continue
		}
		chain, err := verifyServing(serving.chain, bundle, serverName, in.Now)
		if err != nil {
			problems = append(problems, fmt.Sprintf("the caBundle of webhook %s does not verify the serving certificate for %s: %v", w.name, serverName, err))
			continue
		}
		chains = append(chains, chain)
	}
	if len(problems) > 0 {
		return Result{ID: id, Category: CategoryWebhooks, Status: StatusError,
			Description: fmt.Sprintf("%s %s: %s (the API server cannot call it, so %s)", kind, name, strings.Join(problems, "; "), without),
			Hint:        caBundleHint(s, kind, name)}, nil
	}
	slices.Sort(names)
	names = slices.Compact(names)
	if serving.chain == nil {
		return Result{ID: id, Category: CategoryWebhooks, Status: StatusOK,
			Description: fmt.Sprintf("%s %s: %s a caBundle (not verified: no serving certificate to verify)", kind, name,
				plural(len(webhooks), "webhook has", "webhooks have"))}, nil
	}
	return Result{ID: id, Category: CategoryWebhooks, Status: StatusOK,
		Description: fmt.Sprintf("%s %s: the caBundle of its %s verifies the serving certificate for %s", kind, name,
			plural(len(webhooks), "webhook", "webhooks"), strings.Join(names, ", "))}, chains
}

// checkServingExpiry is the line about the serving certificate: its Secret, and how long the
// certificate (and the CAs it was verified with) stay valid.
func checkServingExpiry(in Input, serving servingCertificate, verified [][]*x509.Certificate) Result {
	const id = "webhooks.serving-certificate"
	if serving.result != nil {
		return *serving.result
	}
	// The earliest expiry of every chain the webhooks verify it with; the leaf alone when
	// none verified (the configuration lines say why).
	first := serving.chain[0]
	for _, chain := range verified {
		if c := firstExpiry(chain); c.NotAfter.Before(first.NotAfter) {
			first = c
		}
	}
	what := "the serving certificate"
	if first != serving.chain[0] {
		what = fmt.Sprintf("CA %q of the serving certificate", subject(first))
	}
	switch {
	case in.Now.Before(serving.chain[0].NotBefore):
		return Result{ID: id, Category: CategoryWebhooks, Status: StatusError,
			Description: fmt.Sprintf("webhook serving certificate (Secret %s) is not valid before %s: the API server's clock or the issuer's is wrong", serving.secret, stamp(serving.chain[0].NotBefore)),
			Hint:        renewHint(in.Settings)}
	case !in.Now.Before(first.NotAfter):
		return Result{ID: id, Category: CategoryWebhooks, Status: StatusError,
			Description: fmt.Sprintf("webhook serving certificate (Secret %s): %s expired at %s", serving.secret, what, stamp(first.NotAfter)),
			Hint:        renewHint(in.Settings)}
	case first.NotAfter.Sub(in.Now) < webhookWarnBefore(first):
		return Result{ID: id, Category: CategoryWebhooks, Status: StatusWarning,
			Description: fmt.Sprintf("webhook serving certificate (Secret %s): %s expires in %s (%s)", serving.secret, what, left(first.NotAfter.Sub(in.Now)), stamp(first.NotAfter)),
			Hint:        renewHint(in.Settings) + "\nthis warns 7 days before expiry (the last sixth of a shorter lifetime) and fails once expired"}
	}
	return Result{ID: id, Category: CategoryWebhooks, Status: StatusOK,
		Description: fmt.Sprintf("webhook serving certificate (Secret %s) is valid for %s more (until %s)", serving.secret, left(first.NotAfter.Sub(in.Now)), stamp(first.NotAfter))}
}

// checkControlPlane: the Service proxies dial exists, has their port and a ready endpoint.
func checkControlPlane(in Input) []Result {
	const id = "control-plane.endpoints"
	s := in.Settings
	if s.ControlPlaneDisabled {
		return []Result{{ID: id, Category: CategoryControlPlane, Status: StatusWarning,
			Description: "the operator runs with --control-plane-bind-address=0: proxies get no certificate and no endpoints from it",
			Hint:        "run the operator with its control plane (the default :15012) unless another one serves the proxies (docs/control-plane.md)"}}
	}
	name := s.ControlPlaneNamespace + "/" + s.ControlPlaneService
	switch {
	case apierrors.IsNotFound(in.ControlPlaneService.Err):
		return []Result{{ID: id, Category: CategoryControlPlane, Status: StatusError,
			Description: fmt.Sprintf("control-plane Service %s not found: proxies (which dial %s) get no certificate and no endpoints", name, s.ControlPlaneAddress),
			Hint: fmt.Sprintf("it is part of the operator's install (config/manager/control_plane_service.yaml): kubectl apply -k config/default\n" +
				"if the operator runs elsewhere, its --control-plane-address must name its Service (docs/control-plane.md)")}}
	case in.ControlPlaneService.Err != nil:
		return []Result{readFailure(id, CategoryControlPlane,
			access{what: "Service " + name, verb: "get", resource: "services", namespace: s.ControlPlaneNamespace, unchecked: "the control plane's reachability"},
			in.ControlPlaneService.Err)}
	}
	svc := in.ControlPlaneService.Object
	if s.ControlPlanePort != 0 && !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == s.ControlPlanePort }) {
		return []Result{{ID: id, Category: CategoryControlPlane, Status: StatusError,
			Description: fmt.Sprintf("control-plane Service %s has no port %d, the port proxies dial (%s)", name, s.ControlPlanePort, s.ControlPlaneAddress),
			Hint:        "apply the Service of the operator's release (config/manager/control_plane_service.yaml: port 15012), or fix --control-plane-address"}}
	}
	if in.ControlPlaneEndpointSlices.Err != nil {
		return []Result{readFailure(id, CategoryControlPlane,
			access{what: "the EndpointSlices of Service " + name, verb: "list", resource: "endpointslices", namespace: s.ControlPlaneNamespace, unchecked: "the control plane's endpoints"},
			in.ControlPlaneEndpointSlices.Err)}
	}
	ready := map[string]bool{}
	for _, slice := range in.ControlPlaneEndpointSlices.Object.Items {
		if slice.Labels[ServiceNameLabel] != svc.Name {
			continue
		}
		for _, ep := range slice.Endpoints {
			// A nil ready condition means ready (discovery.k8s.io/v1).
			if ptr.Deref(ep.Conditions.Ready, true) && len(ep.Addresses) > 0 {
				ready[ep.Addresses[0]] = true
			}
		}
	}
	if len(ready) == 0 {
		return []Result{{ID: id, Category: CategoryControlPlane, Status: StatusError,
			Description: fmt.Sprintf("control-plane Service %s has no ready endpoint: proxies cannot get certificates or endpoints", name),
			Hint: fmt.Sprintf("every ready operator replica serves the control plane; see why none is ready:\n%s\nkubectl -n %s get endpointslices -l %s=%s",
				operatorHint(s, s.Deployment, in.OperatorPodLabels), s.ControlPlaneNamespace, ServiceNameLabel, svc.Name)}}
	}
	return []Result{{ID: id, Category: CategoryControlPlane, Status: StatusOK,
		Description: fmt.Sprintf("control-plane Service %s has %s", name, plural(len(ready), "ready endpoint", "ready endpoints"))}}
}

// checkTrustBundle: the mesh CA is readable and not about to expire, and every namespace with a
// MeshService has the trust bundle ConfigMap, equal to the CA's bundle.
func checkTrustBundle(in Input) []Result {
	s := in.Settings
	// reference is the CA Secret's bundle (built-in backend), which the ConfigMaps must equal.
	var reference []*x509.Certificate
	var caResult *Result
	caSource := ""
	if s.CABackend != CABackendCertManager {
		secret := s.Namespace + "/" + s.CASecretName
		switch got := in.CASecret; {
		case apierrors.IsNotFound(got.Err):
			caResult = &Result{ID: "trust-bundle.ca", Category: CategoryTrustBundle, Status: StatusError,
				Description: fmt.Sprintf("mesh CA Secret %s not found: proxies get no certificate", secret),
				Hint: fmt.Sprintf("the operator creates it when it starts (--ca-backend=builtin); see its logs:\nkubectl -n %s logs deployment/%s -c %s",
					s.Namespace, cmp.Or(s.Deployment, OperatorDeployment), OperatorContainer)}
		case apierrors.IsForbidden(got.Err):
			// The published ConfigMaps hold the same bundle: check the CA's expiry there.
		case got.Err != nil:
			r := readFailure("trust-bundle.ca", CategoryTrustBundle,
				access{what: "Secret " + secret, verb: "get", resource: "secrets", namespace: s.Namespace, unchecked: "the mesh CA"}, got.Err)
			caResult = &r
		default:
			certs, err := parseCertificates(got.Object.Data[TrustBundleKey])
			if err != nil {
				caResult = &Result{ID: "trust-bundle.ca", Category: CategoryTrustBundle, Status: StatusError,
					Description: fmt.Sprintf("mesh CA Secret %s holds no usable CA (%s: %v)", secret, TrustBundleKey, err),
					Hint:        "the operator never overwrites it: fix or delete it (a new root breaks trust until every proxy has it), see docs/control-plane.md"}
			} else {
				reference, caSource = certs, "Secret "+secret
			}
		}
	}
	bundles, bundleResult := checkTrustBundleConfigMaps(in, reference)
	if caResult == nil {
		r := checkCAExpiry(in, reference, caSource, bundles)
		caResult = &r
	}
	return []Result{*caResult, bundleResult}
}

// publishedBundle is one parsed trust bundle ConfigMap.
type publishedBundle struct {
	namespace string
	certs     []*x509.Certificate
}

func checkTrustBundleConfigMaps(in Input, reference []*x509.Certificate) ([]publishedBundle, Result) {
	const id = "trust-bundle.configmaps"
	s := in.Settings
	if in.MeshServices.Err != nil {
		return nil, readFailure(id, CategoryTrustBundle,
			access{what: "the MeshServices", verb: "list", resource: "meshservices", unchecked: "the trust bundle ConfigMaps"}, in.MeshServices.Err)
	}
	if in.TrustBundles.Err != nil {
		return nil, readFailure(id, CategoryTrustBundle,
			access{what: "the ConfigMaps " + TrustBundleConfigMap, verb: "list", resource: "configmaps", unchecked: "the trust bundle ConfigMaps"}, in.TrustBundles.Err)
	}
	var meshed []string
	for _, ms := range in.MeshServices.Object.Items {
		meshed = append(meshed, ms.Namespace)
	}
	slices.Sort(meshed)
	meshed = slices.Compact(meshed)
	byNamespace := map[string][]byte{}
	for _, cm := range in.TrustBundles.Object.Items {
		if cm.Name == TrustBundleConfigMap {
			byNamespace[cm.Namespace] = []byte(cm.Data[TrustBundleKey])
		}
	}
	var bundles []publishedBundle
	var missing, unusable, stale []string
	for _, ns := range slices.Sorted(maps.Keys(byNamespace)) {
		certs, err := parseCertificates(byNamespace[ns])
		if err != nil {
			if slices.Contains(meshed, ns) {
				unusable = append(unusable, ns)
			}
			continue
		}
		bundles = append(bundles, publishedBundle{namespace: ns, certs: certs})
		if reference != nil && !sameCertificates(certs, reference) && slices.Contains(meshed, ns) {
			stale = append(stale, ns)
		}
	}
	for _, ns := range meshed {
		if _, ok := byNamespace[ns]; !ok {
			missing = append(missing, ns)
		}
	}
	leaderLogs := fmt.Sprintf("the operator's leader publishes it (the trust-bundle controller); see its logs:\nkubectl -n %s logs deployment/%s -c %s",
		s.Namespace, cmp.Or(s.Deployment, OperatorDeployment), OperatorContainer)
	switch {
	case len(missing) > 0:
		return bundles, Result{ID: id, Category: CategoryTrustBundle, Status: StatusError,
			Description: fmt.Sprintf("trust bundle ConfigMap %s is missing in %s with MeshServices (%s): their proxies cannot verify their peers",
				TrustBundleConfigMap, plural(len(missing), "namespace", "namespaces"), listed(missing)),
			Hint: leaderLogs}
	case len(unusable) > 0:
		return bundles, Result{ID: id, Category: CategoryTrustBundle, Status: StatusError,
			Description: fmt.Sprintf("trust bundle ConfigMap %s holds no PEM certificate under %s in %s (%s)",
				TrustBundleConfigMap, TrustBundleKey, plural(len(unusable), "namespace", "namespaces"), listed(unusable)),
			Hint: "the operator repairs an edited bundle within seconds unless its label app.kubernetes.io/part-of=meshlift was removed;\n" + leaderLogs}
	case len(stale) > 0:
		return bundles, Result{ID: id, Category: CategoryTrustBundle, Status: StatusWarning,
			Description: fmt.Sprintf("trust bundle ConfigMap %s differs from the mesh CA in %s (%s)",
				TrustBundleConfigMap, plural(len(stale), "namespace", "namespaces"), listed(stale)),
			Hint: "the operator rewrites it within seconds of a CA change; if it stays, " + leaderLogs}
	case len(meshed) == 0:
		return bundles, Result{ID: id, Category: CategoryTrustBundle, Status: StatusOK,
			Description: fmt.Sprintf("no MeshService yet, so no trust bundle ConfigMap %s is needed", TrustBundleConfigMap)}
	}
	where := fmt.Sprintf("all %d namespaces", len(meshed))
	if len(meshed) == 1 {
		where = "the namespace"
	}
	return bundles, Result{ID: id, Category: CategoryTrustBundle, Status: StatusOK,
		Description: fmt.Sprintf("trust bundle ConfigMap %s is published in %s with MeshServices (%s)",
			TrustBundleConfigMap, where, listed(meshed))}
}

// checkCAExpiry is the line about the mesh CA: from the CA Secret when it was read, else from a
// published bundle (cert-manager backend, or a Secret the caller may not read).
func checkCAExpiry(in Input, reference []*x509.Certificate, source string, bundles []publishedBundle) Result {
	const id = "trust-bundle.ca"
	s := in.Settings
	if reference == nil && len(bundles) > 0 {
		reference, source = bundles[0].certs, fmt.Sprintf("ConfigMap %s/%s", bundles[0].namespace, TrustBundleConfigMap)
	}
	if reference == nil {
		if s.CABackend == CABackendCertManager {
			return Result{ID: id, Category: CategoryTrustBundle, Status: StatusOK,
				Description: "mesh CA not checked: the cert-manager CA backend publishes it only in the trust bundle ConfigMaps, and there is none yet"}
		}
		return Result{ID: id, Category: CategoryTrustBundle, Status: StatusWarning,
			Description: fmt.Sprintf("cannot read the mesh CA (Secret %s/%s is forbidden and no trust bundle ConfigMap is published): its expiry is not checked", s.Namespace, s.CASecretName),
			Hint:        fmt.Sprintf("run check with an account that may get secrets (kubectl auth can-i get secrets -n %s)", s.Namespace)}
	}
	ca := lastExpiry(reference)
	hint := "the operator's root: replace it before it expires, in three steps that keep trust (docs/control-plane.md, \"Built-in: the Secret\")"
	if s.CABackend == CABackendCertManager {
		hint = "the bundle is the CA of the cert-manager issuer (--ca-issuer-name): renew it there, then restart the operator to publish it"
	}
	hint += "\nthis warns 30 days before the CA expires and fails once it has"
	switch {
	case !in.Now.Before(ca.NotAfter):
		return Result{ID: id, Category: CategoryTrustBundle, Status: StatusError,
			Description: fmt.Sprintf("mesh CA %q (%s) expired at %s: proxies cannot verify their peers", subject(ca), source, stamp(ca.NotAfter)),
			Hint:        hint}
	case ca.NotAfter.Sub(in.Now) < CAWarnBefore:
		return Result{ID: id, Category: CategoryTrustBundle, Status: StatusWarning,
			Description: fmt.Sprintf("mesh CA %q (%s) expires in %s (%s)", subject(ca), source, left(ca.NotAfter.Sub(in.Now)), stamp(ca.NotAfter)),
			Hint:        hint}
	}
	return Result{ID: id, Category: CategoryTrustBundle, Status: StatusOK,
		Description: fmt.Sprintf("mesh CA %q (%s) is valid for %s more (until %s)", subject(ca), source, left(ca.NotAfter.Sub(in.Now)), stamp(ca.NotAfter))}
}

// checkSidecarVersions: exactly one SidecarVersion is the default.
func checkSidecarVersions(in Input) []Result {
	const id = "sidecar-versions.default"
	if in.SidecarVersions.Err != nil {
		return []Result{readFailure(id, CategorySidecarVersions,
			access{what: "the SidecarVersions", verb: "list", resource: "sidecarversions", unchecked: "the default version"}, in.SidecarVersions.Err)}
	}
	items := in.SidecarVersions.Object.Items
	defaults := versions.DefaultClaims(items)
	switch len(defaults) {
	case 0:
		if len(items) == 0 {
			return []Result{{ID: id, Category: CategorySidecarVersions, Status: StatusWarning,
				Description: "no SidecarVersion exists, so no pod can get a sidecar yet",
				Hint: "create one with spec.default: true (see config/samples/mesh_v1alpha1_sidecarversion.yaml); " +
					"without a default, MeshServices need spec.sidecar.version (or an UpgradePlan) to get a sidecar"}}
		}
		example := slices.MinFunc(items, func(a, b meshv1alpha1.SidecarVersion) int { return cmp.Compare(a.Name, b.Name) }).Name
		return []Result{{ID: id, Category: CategorySidecarVersions, Status: StatusWarning,
			Description: fmt.Sprintf("no SidecarVersion is the default (spec.default: true; %s exist)", plural(len(items), "SidecarVersion", "SidecarVersions")),
			Hint: "MeshServices then need spec.sidecar.version (or an UpgradePlan) to get a sidecar; to make one the default:\n" +
				fmt.Sprintf("kubectl patch sidecarversion %s --type=merge -p '{\"spec\":{\"default\":true}}'", example)}}
	case 1:
		version := ""
		for _, v := range items {
			if v.Name == defaults[0] && v.Spec.Version != "" {
				version = " (" + v.Spec.Version + ")"
			}
		}
		return []Result{{ID: id, Category: CategorySidecarVersions, Status: StatusOK,
			Description: fmt.Sprintf("SidecarVersion %s%s is the default", defaults[0], version)}}
	}
	return []Result{{ID: id, Category: CategorySidecarVersions, Status: StatusError,
		Description: fmt.Sprintf("DefaultConflict: %d SidecarVersions claim spec.default (%s), so none is used as the default", len(defaults), listed(defaults)),
		Hint: "MeshServices without spec.sidecar.version or an UpgradePlan get no sidecar until one is left; unset it on all but one:\n" +
			fmt.Sprintf("kubectl patch sidecarversion %s --type=merge -p '{\"spec\":{\"default\":false}}'", defaults[len(defaults)-1])}}
}
