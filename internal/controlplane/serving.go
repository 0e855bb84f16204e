package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/meshlift/meshlift/internal/identity"
)

// servingRetry is how long the server waits before retrying a failed serving certificate.
const servingRetry = 10 * time.Second

// servingCertificate keeps the server's own TLS certificate, signed by the current Authority so
// proxies verify it with the mesh trust bundle. It is re-issued whenever the Authority changes
// and at half its life.
type servingCertificate struct {
	holder   *identity.Holder
	dnsNames []string
	lifetime time.Duration
	clock    clock.Clock
	log      logr.Logger
	current  atomic.Pointer[tls.Certificate]
}

func (c *servingCertificate) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if cert := c.current.Load(); cert != nil {
		return cert, nil
	}
	return nil, errors.New("the control plane has no serving certificate yet: the mesh CA has not published an Authority")
}

func (c *servingCertificate) run(ctx context.Context) {
	for {
		changed := c.holder.Changed()
		var renew clock.Timer
		if authority := c.holder.Current(); authority != nil {
			delay := servingRetry
			cert, notAfter, err := c.issue(authority)
			if err != nil {
				c.log.Error(err, "Failed to issue the control plane's serving certificate", "retryIn", servingRetry)
			} else {
				c.current.Store(cert)
				now := c.clock.Now()
				delay = max(notAfter.Sub(now)/2, minRotationDelay)
				c.log.V(1).Info("Issued the control plane's serving certificate", "dnsNames", c.dnsNames, "notAfter", notAfter, "renewIn", delay)
			}
			renew = c.clock.NewTimer(delay)
		}
		var renewC <-chan time.Time
		if renew != nil {
			renewC = renew.C()
		}
		select {
		case <-ctx.Done():
			if renew != nil {
				renew.Stop()
			}
			return
		case <-changed:
		case <-renewC:
		}
		if renew != nil {
			renew.Stop()
		}
	}
}

func (c *servingCertificate) issue(authority *identity.Authority) (*tls.Certificate, time.Time, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("generating the serving key: %w", err)
	}
	leaf, err := authority.SignServing(key.Public(), c.dnsNames, c.lifetime, c.clock.Now())
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("signing the serving certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, time.Time{}, err
	}
	cert, err := tls.X509KeyPair(leaf.ChainPEM, keyPEM)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("loading the serving certificate: %w", err)
	}
	return &cert, leaf.NotAfter, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding a private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
