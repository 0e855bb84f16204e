package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
)

// Errors of VerifyPeer, for callers that count refusals by reason.
var (
	// ErrUntrustedPeer: the peer's chain does not lead to the trust bundle.
	ErrUntrustedPeer = errors.New("peer certificate is not trusted")
	// ErrNotMeshSigned: the chain leads to the trust bundle, but the certificate that signed the
	// leaf is not a CA of the mesh's trust domain (it is the upstream issuer's CA, or a CA the
	// upstream issuer signed for something else).
	ErrNotMeshSigned = errors.New("peer certificate is not signed by a CA of the mesh")
	// ErrBadPeerIdentity: the leaf does not carry exactly one SPIFFE ID of the trust domain.
	ErrBadPeerIdentity = errors.New("peer certificate has no valid SPIFFE ID")
)

// IsMeshCA says whether cert is a CA of the mesh's trust domain: a CA certificate allowed to sign
// certificates whose only URI SAN is spiffe://<trust-domain>. The built-in root carries that SAN
// (NewRoot), and so does the cert-manager backend's intermediate (its CSR asks for it); an
// upstream CA that cert-manager signs with does not, and neither does a CA certificate that the
// same issuer signed for anything else.
func IsMeshCA(cert *x509.Certificate, trustDomain string) bool {
	if cert == nil || !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 || len(cert.URIs) != 1 {
		return false
	}
	u := cert.URIs[0]
	return u.Scheme == "spiffe" && u.Host == trustDomain && u.Opaque == "" && u.User == nil &&
		(u.Path == "" || u.Path == "/") && u.RawQuery == "" && u.Fragment == ""
}

// VerifyPeer is the verification of a mesh peer's certificate chain (as presented in a TLS
// handshake: leaf first, then intermediates): the leaf must chain to roots with the given
// extended key usage, the certificate that signed the leaf must be a CA of the mesh (IsMeshCA)
// in at least one verified chain, and the leaf's only URI SAN must be a SPIFFE ID of the trust
// domain, which it returns.
//
// The second rule is what keeps a trust anchor shared with other users of a cert-manager issuer
// from turning into a mesh identity: a leaf the issuer signs directly, with any SPIFFE ID, or a
// leaf signed by another CA the issuer signed, chains to the anchor but is refused.
func VerifyPeer(roots *x509.CertPool, chain []*x509.Certificate, trustDomain string, usage x509.ExtKeyUsage) (string, error) {
	if len(chain) == 0 {
		return "", fmt.Errorf("%w: no certificate", ErrUntrustedPeer)
	}
	leaf := chain[0]
	opts := x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}
	if len(chain) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range chain[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	verified, err := leaf.Verify(opts)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUntrustedPeer, err)
	}
	meshSigned := false
	for _, c := range verified {
		// A leaf that is itself a root of the bundle has no signer in the chain: never a workload.
		if len(c) > 1 && IsMeshCA(c[1], trustDomain) {
			meshSigned = true
			break
		}
	}
	if !meshSigned {
		return "", fmt.Errorf("%w: it was signed by %q, which is not a CA carrying the URI SAN spiffe://%s", ErrNotMeshSigned, leaf.Issuer.String(), trustDomain)
	}
	if leaf.IsCA {
		return "", fmt.Errorf("%w: it is a CA certificate", ErrBadPeerIdentity)
	}
	if len(leaf.URIs) != 1 {
		return "", fmt.Errorf("%w: it has %d URI SANs", ErrBadPeerIdentity, len(leaf.URIs))
	}
	id := leaf.URIs[0].String()
	u, err := ParseSPIFFEID(id)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadPeerIdentity, err)
	}
	if u.Host != trustDomain {
		return "", fmt.Errorf("%w: %s is not in trust domain %s", ErrBadPeerIdentity, id, trustDomain)
	}
	return id, nil
}
