package proxy

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/meshlift/meshlift/internal/identity"
)

// Handshake failures, each a reason label of meshlift_proxy_tls_handshake_failures_total.
var (
	errNoCertificate     = errors.New("no workload certificate yet")
	errNoTrustBundle     = errors.New("no trust bundle yet")
	errNoPeerCertificate = errors.New("peer presented no certificate")
	errUntrusted         = errors.New("peer certificate does not chain to the trust bundle")
	errBadIdentity       = errors.New("peer certificate does not carry exactly one SPIFFE ID of the trust domain")
	errIdentityMismatch  = errors.New("peer is not the endpoint's identity")
	errUnknownSNI        = errors.New("server name is not a port of this MeshService")
)

func handshakeFailureReason(err error) string {
	var opErr *net.OpError
	switch {
	case errors.Is(err, errNoCertificate):
		return "no_certificate"
	case errors.Is(err, errNoTrustBundle):
		return "no_trust_bundle"
	case errors.Is(err, errNoPeerCertificate):
		return "no_peer_certificate"
	case errors.Is(err, errUntrusted):
		return "untrusted_certificate"
	case errors.Is(err, errBadIdentity):
		return "bad_identity"
	case errors.Is(err, errIdentityMismatch):
		return "identity_mismatch"
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return "timeout"
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		return "peer_alert"
	default:
		return "protocol"
	}
}

func isTimeout(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

// workloadCertificate is the proxy's own leaf, presented to both peers and clients.
type workloadCertificate struct {
	cert     tls.Certificate
	identity string
}

// trustState is one trust bundle and the server TLS configurations built on it. A new bundle
// makes new configurations, so session tickets issued under the old bundle stop resuming.
type trustState struct {
	pool       *x509.CertPool
	generation uint64
	// server is what tls.Server gets; its GetConfigForClient picks serverHTTP or serverTCP
	// by the SNI's port, or refuses the handshake. Its ticket keys are the ones in use.
	server     *tls.Config
	serverHTTP *tls.Config
	serverTCP  *tls.Config
}

// SetCertificate installs the workload certificate (the leaf and its intermediates, PEM) and its
// PEM private key (PKCS#8, SEC1 or PKCS#1). New handshakes use it; connections keep theirs.
func (p *Proxy) SetCertificate(chainPEM, keyPEM []byte) error {
	key, err := identity.ParsePrivateKey(keyPEM)
	if err != nil {
		return fmt.Errorf("failed to read the workload key: %w", err)
	}
	return p.SetCertificateKey(chainPEM, key)
}

// SetCertificateKey installs the workload certificate (PEM chain, leaf first) for a key held in
// memory. The leaf must belong to key and carry exactly one SPIFFE ID of the trust domain.
func (p *Proxy) SetCertificateKey(chainPEM []byte, key crypto.Signer) error {
	if key == nil {
		return errors.New("workload key is missing")
	}
	var chain [][]byte
	for rest := chainPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type == "CERTIFICATE" {
			chain = append(chain, block.Bytes)
		}
	}
	if len(chain) == 0 {
		return errors.New("workload certificate chain holds no PEM certificate")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return fmt.Errorf("failed to parse the workload certificate: %w", err)
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(leaf.PublicKey) {
		return errors.New("workload key does not belong to the workload certificate")
	}
	id, err := p.spiffeID(leaf)
	if err != nil {
		return fmt.Errorf("workload certificate: %w", err)
	}
	if now := time.Now(); now.After(leaf.NotAfter) {
		return fmt.Errorf("workload certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	p.cert.Store(&workloadCertificate{
		cert:     tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf},
		identity: id,
	})
	p.metrics.certificateExpiry.Set(float64(leaf.NotAfter.Unix()))
	p.log.V(1).Info("Applied the workload certificate", "identity", id, "notAfter", leaf.NotAfter.UTC())
	return nil
}

// SetTrustBundle installs the PEM roots peers' certificates must chain to. New handshakes use
// them; sessions resumed from tickets of the previous bundle are not accepted any more.
func (p *Proxy) SetTrustBundle(bundlePEM []byte) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundlePEM) {
		return errors.New("trust bundle holds no PEM certificate")
	}
	p.trustMu.Lock()
	defer p.trustMu.Unlock()
	generation := uint64(1)
	if old := p.trust.Load(); old != nil {
		generation = old.generation + 1
	}
	p.trust.Store(p.newTrustState(pool, generation))
	p.log.V(1).Info("Applied the trust bundle", "generation", generation)
	return nil
}

// HasCertificate says whether a workload certificate is installed.
func (p *Proxy) HasCertificate() bool { return p.cert.Load() != nil }

// HasTrustBundle says whether a trust bundle is installed.
func (p *Proxy) HasTrustBundle() bool { return p.trust.Load() != nil }

// CertificateExpiry is when the installed workload certificate expires (zero without one).
func (p *Proxy) CertificateExpiry() time.Time {
	if c := p.cert.Load(); c != nil {
		return c.cert.Leaf.NotAfter
	}
	return time.Time{}
}

// Identity is the SPIFFE ID of the installed workload certificate ("" without one).
func (p *Proxy) Identity() string {
	if c := p.cert.Load(); c != nil {
		return c.identity
	}
	return ""
}

func (p *Proxy) newTrustState(pool *x509.CertPool, generation uint64) *trustState {
	ts := &trustState{pool: pool, generation: generation}
	common := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: p.serverCertificate,
		// Client certificates are verified by verifyClient (chain and SPIFFE ID), so every
		// refusal has a reason of our own.
		ClientAuth:       tls.RequestClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error { return p.verifyClient(ts, cs) },
	}
	ts.serverTCP = common
	ts.serverHTTP = common.Clone()
	ts.serverHTTP.NextProtos = []string{"h2", "http/1.1"}
	ts.server = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			port, ok := p.cfg.Route(hello.ServerName, p.opts.Namespace)
			if !ok {
				return nil, errUnknownSNI
			}
			if p.cert.Load() == nil {
				return nil, errNoCertificate
			}
			if port.Protocol == protocolTCP {
				return ts.serverTCP, nil
			}
			return ts.serverHTTP, nil
		},
	}
	return ts
}

// serverTLS is the configuration inbound handshakes start with.
func (p *Proxy) serverTLS() *tls.Config {
	if ts := p.trust.Load(); ts != nil {
		return ts.server
	}
	return p.noTrustServer
}

func (p *Proxy) serverCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := p.cert.Load(); c != nil {
		return &c.cert, nil
	}
	return nil, errNoCertificate
}

func (p *Proxy) clientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c := p.cert.Load(); c != nil {
		return &c.cert, nil
	}
	return &tls.Certificate{}, nil // no certificate: the peer refuses us
}

// verifyClient accepts a client whose leaf chains to the trust bundle and carries exactly one
// SPIFFE ID of our trust domain. A resumed session was verified when it was established, under
// the same bundle (a new bundle changes the ticket keys).
func (p *Proxy) verifyClient(ts *trustState, cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errNoPeerCertificate
	}
	if cs.DidResume {
		_, err := p.spiffeID(cs.PeerCertificates[0])
		return err
	}
	_, err := p.verifyPeer(ts.pool, cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
	return err
}

// verifyServer accepts an upstream whose leaf chains to the current trust bundle and whose only
// SPIFFE ID is the one the control plane gave for that endpoint.
func (p *Proxy) verifyServer(cs tls.ConnectionState, expected string) error {
	if len(cs.PeerCertificates) == 0 {
		return errNoPeerCertificate
	}
	var id string
	var err error
	if cs.DidResume {
		id, err = spiffeIDOf(cs.PeerCertificates[0])
	} else {
		ts := p.trust.Load()
		if ts == nil {
			return errNoTrustBundle
		}
		id, err = p.verifyPeer(ts.pool, cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
	}
	if err != nil {
		return err
	}
	if id != expected {
		return fmt.Errorf("%w: server is %s, endpoint is %s", errIdentityMismatch, id, expected)
	}
	return nil
}

// verifyPeer is identity.VerifyPeer (the chain leads to the trust bundle through a CA of the
// mesh, and the leaf carries one SPIFFE ID of the trust domain) with its errors counted by the
// proxy's reasons.
func (p *Proxy) verifyPeer(roots *x509.CertPool, chain []*x509.Certificate, usage x509.ExtKeyUsage) (string, error) {
	id, err := identity.VerifyPeer(roots, chain, p.opts.TrustDomain, usage)
	switch {
	case err == nil:
		return id, nil
	case errors.Is(err, identity.ErrBadPeerIdentity):
		return "", fmt.Errorf("%w: %w", errBadIdentity, err)
	default: // identity.ErrUntrustedPeer, identity.ErrNotMeshSigned
		return "", fmt.Errorf("%w: %w", errUntrusted, err)
	}
}

// spiffeIDOf returns the only URI SAN of a leaf, which must be a SPIFFE ID.
func spiffeIDOf(leaf *x509.Certificate) (string, error) {
	if len(leaf.URIs) != 1 {
		return "", fmt.Errorf("%w: it has %d URI SANs", errBadIdentity, len(leaf.URIs))
	}
	id := leaf.URIs[0].String()
	if _, err := identity.ParseSPIFFEID(id); err != nil {
		return "", fmt.Errorf("%w: %w", errBadIdentity, err)
	}
	return id, nil
}

// spiffeID is spiffeIDOf for our own trust domain.
func (p *Proxy) spiffeID(leaf *x509.Certificate) (string, error) {
	id, err := spiffeIDOf(leaf)
	if err != nil {
		return "", err
	}
	if leaf.URIs[0].Host != p.opts.TrustDomain {
		return "", fmt.Errorf("%w: %s is not in trust domain %s", errBadIdentity, id, p.opts.TrustDomain)
	}
	return id, nil
}

// sessionCache keeps the latest TLS session of one endpoint, for as long as the trust bundle
// does not change. One per endpoint: every endpoint of a cluster has the same server name, which
// is the key tls uses, and a ticket from one endpoint means nothing to another.
type sessionCache struct {
	trust *atomic.Pointer[trustState]
	state atomic.Pointer[cachedSession]
}

type cachedSession struct {
	session    *tls.ClientSessionState
	generation uint64
}

func (c *sessionCache) Get(string) (*tls.ClientSessionState, bool) {
	s := c.state.Load()
	ts := c.trust.Load()
	if s == nil || ts == nil || s.generation != ts.generation {
		return nil, false
	}
	return s.session, true
}

func (c *sessionCache) Put(_ string, session *tls.ClientSessionState) {
	if session == nil {
		c.state.Store(nil)
		return
	}
	var generation uint64
	if ts := c.trust.Load(); ts != nil {
		generation = ts.generation
	}
	c.state.Store(&cachedSession{session: session, generation: generation})
}
