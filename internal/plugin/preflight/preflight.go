// Package preflight decides what `kubectl meshlift check` reports: given the objects the command
// read from the cluster (or the errors that kept it from reading them) and the time, it returns
// one result per check, each with a status and, when something is wrong, a hint saying what to do.
// It never talks to the API server, so every failure is a table test; internal/plugin/cmd fetches
// the objects and internal/plugin/view prints the results.
package preflight

import (
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
)

// Status is how a check came out.
type Status string

const (
	// StatusOK: nothing to do.
	StatusOK Status = "ok"
	// StatusWarning: works now, but needs attention (expiring soon, degraded, or not verifiable
	// with the caller's permissions). Warnings alone do not fail the check.
	StatusWarning Status = "warning"
	// StatusError: Meshlift does not work as installed. `kubectl meshlift check` exits 2.
	StatusError Status = "error"
)

// Category groups the results as the output shows them, in this order.
type Category string

const (
	CategoryCRDs            Category = "CRDs"
	CategoryOperator        Category = "Operator"
	CategoryWebhooks        Category = "Webhooks"
	CategoryControlPlane    Category = "Control plane"
	CategoryTrustBundle     Category = "Trust bundle"
	CategorySidecarVersions Category = "Sidecar versions"
)

// Result is one line of the check. Its fields are what `check -o json|yaml` prints and are
// stable: new fields may be added, none is renamed or removed.
type Result struct {
	// ID names the check, independent of the values in Description (e.g. "operator.available",
	// "crd.upgradeplans.mesh.meshlift.io"); scripts match on it.
	ID       string   `json:"id"`
	Category Category `json:"category"`
	// Description says what was found, in one line.
	Description string `json:"description"`
	Status      Status `json:"status"`
	// Hint says what to do (lines separated by \n); empty when Status is ok.
	Hint string `json:"hint,omitempty"`
}

// Report is the whole check: the results and how many came out each way.
type Report struct {
	// Status is the worst status of Results.
	Status   Status   `json:"status"`
	OK       int      `json:"ok"`
	Warnings int      `json:"warnings"`
	Errors   int      `json:"errors"`
	Results  []Result `json:"results"`
}

// Summarize counts results into a Report.
func Summarize(results []Result) Report {
	r := Report{Status: StatusOK, Results: results}
	if r.Results == nil {
		r.Results = []Result{}
	}
	for _, res := range results {
		switch res.Status {
		case StatusError:
			r.Errors++
		case StatusWarning:
			r.Warnings++
		default:
			r.OK++
		}
	}
	switch {
	case r.Errors > 0:
		r.Status = StatusError
	case r.Warnings > 0:
		r.Status = StatusWarning
	}
	return r
}

// Got is one object (or list) the command read, or the error that kept it from reading it:
// NotFound, Forbidden, a missing CRD (no match for kind)... Exactly one of Object and Err is set.
type Got[T any] struct {
	Object *T
	Err    error
}

// Found wraps what a Get or List returned: obj when err is nil, err otherwise.
func Found[T any](obj *T, err error) Got[T] {
	if err != nil {
		return Got[T]{Err: err}
	}
	return Got[T]{Object: obj}
}

// Input is everything the checks look at. The command reads the CRDs and the Deployments first,
// derives the Settings from the operator's Deployment (FindOperator, SettingsFor) and reads the
// rest at the names they give.
type Input struct {
	// Now is the time certificates are verified at.
	Now time.Time
	// CRDs by name (every name of CRDNames).
	CRDs map[string]Got[apiextensionsv1.CustomResourceDefinition]
	// Deployments of the operator's namespace (--operator-namespace).
	Deployments Got[appsv1.DeploymentList]
	// OperatorPodLabels select the operator's pods (cmd.OperatorPodLabels); FindOperator falls
	// back to the Deployment whose pods carry them.
	OperatorPodLabels map[string]string
	// Settings are the names the operator runs with (SettingsFor).
	Settings Settings

	// MutatingWebhookConfiguration and ValidatingWebhookConfiguration are read at the names of
	// Settings (left empty when the operator runs without one).
	MutatingWebhookConfiguration   Got[admissionregistrationv1.MutatingWebhookConfiguration]
	ValidatingWebhookConfiguration Got[admissionregistrationv1.ValidatingWebhookConfiguration]
	// WebhookSecret holds the serving certificate (Settings.WebhookSecretName).
	WebhookSecret Got[corev1.Secret]

	// ControlPlaneService and its EndpointSlices (label kubernetes.io/service-name).
	ControlPlaneService        Got[corev1.Service]
	ControlPlaneEndpointSlices Got[discoveryv1.EndpointSliceList]

	// CASecret is the built-in CA's Secret (Settings.CASecretName); not read with the
	// cert-manager CA backend.
	CASecret Got[corev1.Secret]
	// TrustBundles are the ConfigMaps named TrustBundleConfigMap, in every namespace.
	TrustBundles Got[corev1.ConfigMapList]
	// MeshServices of every namespace (metadata only): a namespace with one needs a trust bundle.
	MeshServices Got[metav1.PartialObjectMetadataList]
	// SidecarVersions (cluster-scoped).
	SidecarVersions Got[meshv1alpha1.SidecarVersionList]
}

// Run runs every check, in the order of the categories.
func Run(in Input) Report {
	var results []Result
	results = append(results, checkCRDs(in)...)
	results = append(results, checkOperator(in)...)
	results = append(results, checkWebhooks(in)...)
	results = append(results, checkControlPlane(in)...)
	results = append(results, checkTrustBundle(in)...)
	results = append(results, checkSidecarVersions(in)...)
	return Summarize(results)
}
