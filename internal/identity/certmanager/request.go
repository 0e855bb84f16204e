package certmanager

import (
	"cmp"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net/url"
	"slices"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"

	"github.com/meshlift/meshlift/internal/identity"
)

// intermediateKeyUsage is what the intermediate may do: sign leaves (cert sign) and prove
// possession of its key (digital signature). cert-manager adds cert sign itself for isCA
// requests; the CSR states the same usages, which cert-manager then checks.
const intermediateKeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature

var intermediateUsages = []cmapi.KeyUsage{cmapi.UsageCertSign, cmapi.UsageDigitalSignature}

// newCSR returns a PEM CSR for an intermediate CA of the trust domain: URI SAN
// spiffe://<trust-domain>, basic constraints CA:TRUE and the intermediate's key usages.
func newCSR(key crypto.Signer, trustDomain string) ([]byte, error) {
	basicConstraints, err := pki.MarshalBasicConstraints(true, nil)
	if err != nil {
		return nil, fmt.Errorf("encoding basic constraints: %w", err)
	}
	keyUsage, err := pki.MarshalKeyUsage(intermediateKeyUsage)
	if err != nil {
		return nil, fmt.Errorf("encoding key usage: %w", err)
	}
	tmpl := &x509.CertificateRequest{
		Subject:         pkix.Name{Organization: []string{"meshlift"}, CommonName: "meshlift intermediate CA " + trustDomain},
		URIs:            []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
		ExtraExtensions: []pkix.Extension{basicConstraints, keyUsage},
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("creating the intermediate CA's CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// requestState is where a CertificateRequest stands.
type requestState struct {
	// Issued is true once status.certificate holds the certificate.
	Issued bool
	// Waiting says what the request waits for when it is neither issued nor failed.
	Waiting string
	// Err is set when the request will never be issued (denied, invalid or failed).
	Err error
}

// stateOf reads the conditions cert-manager sets on a CertificateRequest.
func stateOf(cr *cmapi.CertificateRequest) requestState {
	name := cr.Namespace + "/" + cr.Name
	issuer := describeIssuer(cr.Spec.IssuerRef)
	if c := condition(cr, cmapi.CertificateRequestConditionDenied); c != nil && c.Status == cmmeta.ConditionTrue {
		return requestState{Err: fmt.Errorf("CertificateRequest %s for %s was denied (%s: %s); an approver (cert-manager's built-in one, or approver-policy) must approve meshlift's requests for this issuer",
			name, issuer, c.Reason, c.Message)}
	}
	if c := condition(cr, cmapi.CertificateRequestConditionInvalidRequest); c != nil && c.Status == cmmeta.ConditionTrue {
		return requestState{Err: fmt.Errorf("%s refused CertificateRequest %s as invalid (%s: %s)", issuer, name, c.Reason, c.Message)}
	}
	ready := condition(cr, cmapi.CertificateRequestConditionReady)
	switch {
	case ready != nil && ready.Status == cmmeta.ConditionTrue && len(cr.Status.Certificate) > 0:
		return requestState{Issued: true}
	case ready != nil && ready.Status == cmmeta.ConditionFalse && ready.Reason == cmapi.CertificateRequestReasonFailed:
		return requestState{Err: fmt.Errorf("%s failed to issue CertificateRequest %s: %s", issuer, name, ready.Message)}
	case ready != nil && ready.Message != "":
		return requestState{Waiting: ready.Reason + ": " + ready.Message}
	case condition(cr, cmapi.CertificateRequestConditionApproved) == nil:
		return requestState{Waiting: "approval"}
	default:
		return requestState{Waiting: "the issuer"}
	}
}

func condition(cr *cmapi.CertificateRequest, conditionType cmapi.CertificateRequestConditionType) *cmapi.CertificateRequestCondition {
	for i := range cr.Status.Conditions {
		if cr.Status.Conditions[i].Type == conditionType {
			return &cr.Status.Conditions[i]
		}
	}
	return nil
}

func describeIssuer(ref cmmeta.IssuerReference) string {
	return fmt.Sprintf("%s %q", cmp.Or(ref.Kind, cmapi.IssuerKind), ref.Name)
}

// authorityFromRequest builds the Authority of an issued CertificateRequest: status.certificate
// is the intermediate (and the chain above it, if any), keyPEM the intermediate's key, and the
// trust bundle is anchorPEM, the pinned trust anchor, or status.ca when none is pinned. The
// intermediate must chain to the bundle and be a CA of the trust domain (identity.IsMeshCA), or
// proxies would refuse its leaves.
func authorityFromRequest(cr *cmapi.CertificateRequest, keyPEM, anchorPEM []byte, trustDomain string) (*identity.Authority, error) {
	name := cr.Namespace + "/" + cr.Name
	bundle := anchorPEM
	if bundle == nil {
		if len(cr.Status.CA) == 0 {
			return nil, fmt.Errorf("%s issued CertificateRequest %s without its CA in status.ca, and no trust anchor is pinned; pin the roots the issuer chains to (--ca-trust-anchor)",
				describeIssuer(cr.Spec.IssuerRef), name)
		}
		bundle = cr.Status.CA
	}
	authority, err := identity.NewAuthority(cr.Status.Certificate, keyPEM, cr.Status.Certificate, bundle)
	if err != nil {
		if anchorPEM != nil {
			return nil, fmt.Errorf("the certificate %s issued for CertificateRequest %s is not an intermediate CA of the pinned trust anchor (is the issuer the CA you pinned?): %w",
				describeIssuer(cr.Spec.IssuerRef), name, err)
		}
		return nil, fmt.Errorf("the certificate issued for CertificateRequest %s is not a usable intermediate CA: %w", name, err)
	}
	if !identity.IsMeshCA(authority.Signer(), trustDomain) {
		return nil, fmt.Errorf("the certificate %s issued for CertificateRequest %s is not a CA of spiffe://%s (its URI SANs are %v): the issuer must keep the CSR's URI SAN, or proxies refuse the leaves it signs",
			describeIssuer(cr.Spec.IssuerRef), name, trustDomain, authority.Signer().URIs)
	}
	return authority, nil
}

// renewalTime is when an intermediate is replaced: at two thirds of its lifetime.
func renewalTime(cert *x509.Certificate) time.Time {
	lifetime := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotBefore.Add(lifetime * 2 / 3)
}

// requestsToDelete picks the CertificateRequests to clean up: this replica's beyond the keep
// newest (current, the one in use, always kept), and any other replica's older than maxAge
// (their certificates have expired; the replica is gone or has renewed since).
func requestsToDelete(requests []cmapi.CertificateRequest, replica, current string, keep int, maxAge time.Duration, now time.Time) []string {
	var own []cmapi.CertificateRequest
	var names []string
	for _, cr := range requests {
		switch {
		case cr.Labels[LabelReplica] == replica:
			own = append(own, cr)
		case cr.CreationTimestamp.Add(maxAge).Before(now):
			names = append(names, cr.Name)
		}
	}
	// Newest first, the current one before any other.
	slices.SortStableFunc(own, func(a, b cmapi.CertificateRequest) int {
		if a.Name == current || b.Name == current {
			return cmp.Compare(boolRank(b.Name == current), boolRank(a.Name == current))
		}
		return b.CreationTimestamp.Compare(a.CreationTimestamp.Time)
	})
	for i, cr := range own {
		if i >= keep {
			names = append(names, cr.Name)
		}
	}
	return names
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}
