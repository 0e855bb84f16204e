package certmanager

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
)

// The trust anchor is read from the ConfigMap or Secret the admin names (by default the
// ConfigMap meshlift-trust-anchor, which a trust-manager Bundle of that name can write) in the
// operator's namespace.
// +kubebuilder:rbac:groups="",namespace=system,resources=configmaps;secrets,resourceNames=meshlift-trust-anchor,verbs=get;list;watch

const (
	// DefaultTrustAnchorName is the object the trust anchor is read from by default.
	DefaultTrustAnchorName = "meshlift-trust-anchor"
	// DefaultTrustAnchorKey is the key of the trust anchor's PEM certificates.
	DefaultTrustAnchorKey = "ca.crt"

	// KindConfigMap and KindSecret are the kinds of object a trust anchor is read from.
	KindConfigMap = "ConfigMap"
	KindSecret    = "Secret"
)

// TrustAnchor names the object of the operator's namespace that holds the PEM roots peers
// trust (the trust bundle), pinned by the admin instead of taken from what the issuer returns.
// The zero value pins nothing.
type TrustAnchor struct {
	// Kind is KindConfigMap or KindSecret.
	Kind string
	// Name of the ConfigMap or Secret.
	Name string
	// Key holding the PEM certificates; DefaultTrustAnchorKey when empty.
	Key string
}

// DefaultTrustAnchor is the ConfigMap meshlift-trust-anchor, key ca.crt.
func DefaultTrustAnchor() TrustAnchor {
	return TrustAnchor{Kind: KindConfigMap, Name: DefaultTrustAnchorName, Key: DefaultTrustAnchorKey}
}

// IsSet says whether an object is pinned.
func (a TrustAnchor) IsSet() bool { return a.Name != "" }

// String is the flag syntax, configmap/<name> or secret/<name> ("" when unset).
func (a TrustAnchor) String() string {
	if !a.IsSet() {
		return ""
	}
	return strings.ToLower(a.Kind) + "/" + a.Name
}

// Set parses configmap/<name> or secret/<name>; the empty string pins nothing (unsafe, see
// Risks). The key is kept.
func (a *TrustAnchor) Set(s string) error {
	if s == "" {
		a.Kind, a.Name = "", ""
		return nil
	}
	kind, name, ok := strings.Cut(s, "/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("must be configmap/<name> or secret/<name>, not %q", s)
	}
	switch strings.ToLower(kind) {
	case "configmap", "cm":
		a.Kind = KindConfigMap
	case "secret":
		a.Kind = KindSecret
	default:
		return fmt.Errorf("the kind must be configmap or secret, not %q", kind)
	}
	a.Name = name
	return nil
}

// Risk is an unsafe configuration the admin accepts explicitly (--ca-i-understand-unsafe).
type Risk string

const (
	// RiskClusterIssuer accepts an issuer of cluster scope: whoever may create a
	// CertificateRequest for it in any namespace can get a CA of the mesh's trust domain signed,
	// unless an approver (approver-policy) stops them.
	RiskClusterIssuer Risk = "cluster-issuer"
	// RiskIssuerCA accepts the issuer's status.ca as the trust bundle, with no pinned trust
	// anchor: the bundle is whatever the issuer (or whoever can change it) returns.
	RiskIssuerCA Risk = "issuer-ca"
)

// Risks is the set of accepted risks, a comma-separated flag.
type Risks []Risk

// String makes *Risks a flag.Value.
func (r Risks) String() string {
	s := make([]string, len(r))
	for i, risk := range r {
		s[i] = string(risk)
	}
	return strings.Join(s, ",")
}

// Set parses a comma-separated list of risks; each call adds to the set.
func (r *Risks) Set(s string) error {
	for _, item := range strings.Split(s, ",") {
		risk := Risk(strings.TrimSpace(item))
		switch risk {
		case "":
		case RiskClusterIssuer, RiskIssuerCA:
			if !slices.Contains(*r, risk) {
				*r = append(*r, risk)
			}
		default:
			return fmt.Errorf("unknown risk %q: the risks are %s and %s", risk, RiskClusterIssuer, RiskIssuerCA)
		}
	}
	return nil
}

// Has says whether risk is accepted.
func (r Risks) Has(risk Risk) bool { return slices.Contains(r, risk) }

// ClusterScoped says whether ref names an issuer that serves CertificateRequests of every
// namespace: cert-manager's ClusterIssuer, and for external issuers (another group, whose kinds
// are their own) any kind whose name says Cluster, as their convention is (e.g.
// AWSPCAClusterIssuer, StepClusterIssuer).
func ClusterScoped(ref cmmeta.IssuerReference) bool {
	if ref.Group == "" || ref.Group == "cert-manager.io" {
		return ref.Kind == cmapi.ClusterIssuerKind
	}
	return strings.Contains(ref.Kind, "Cluster")
}

// checkSafety refuses the configurations that let someone else mint mesh identities, unless the
// admin accepted the risk. Its error says what to change. opts has its defaults set.
func checkSafety(opts Options) error {
	var errs []error
	if ClusterScoped(opts.IssuerRef) && !opts.AcceptRisks.Has(RiskClusterIssuer) {
		errs = append(errs, fmt.Errorf("the issuer %s %q serves every namespace: anyone who may create a CertificateRequest for it can get a CA certificate for spiffe://%s and mint any mesh identity; "+
			"use an Issuer dedicated to the mesh in namespace %s (--ca-issuer-kind=Issuer), or accept the risk with --ca-i-understand-unsafe=%s and restrict the issuer with approver-policy (docs/control-plane.md)",
			opts.IssuerRef.Kind, opts.IssuerRef.Name, opts.TrustDomain, opts.Namespace, RiskClusterIssuer))
	}
	if !opts.TrustAnchor.IsSet() && !opts.AcceptRisks.Has(RiskIssuerCA) {
		errs = append(errs, fmt.Errorf("no trust anchor is pinned: the trust bundle would be whatever the issuer returns in status.ca; "+
			"name the ConfigMap or Secret of namespace %s holding the roots (--ca-trust-anchor=configmap/<name>, e.g. one a trust-manager Bundle writes), or accept the risk with --ca-i-understand-unsafe=%s",
			opts.Namespace, RiskIssuerCA))
	}
	if len(errs) > 0 {
		return fmt.Errorf("the cert-manager CA backend is configured unsafely: %w", errors.Join(errs...))
	}
	return nil
}

// checkAnchorPEM checks that data holds PEM certificates only, at least one, all of them CAs.
func checkAnchorPEM(data []byte) error {
	certs := 0
	for rest := data; len(rest) > 0; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("it holds a PEM %q block; it must hold certificates only", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return fmt.Errorf("certificate %d cannot be parsed: %w", certs+1, err)
		}
		if !cert.IsCA {
			return fmt.Errorf("certificate %d (%q) is not a CA", certs+1, cert.Subject.String())
		}
		certs++
	}
	if certs == 0 {
		return errors.New("it holds no PEM certificate")
	}
	return nil
}
