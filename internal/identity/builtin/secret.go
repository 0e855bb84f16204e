package builtin

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/meshlift/meshlift/internal/identity"
)

// Keys of the CA Secret.
const (
	// CertKey holds PEM certificates: the root that signs (the one ca.key belongs to) and any
	// other root peers should trust. All of them form the trust bundle.
	CertKey = "ca.crt"
	// KeyKey holds the signing key, PEM (PKCS#8, SEC1 or PKCS#1).
	KeyKey = "ca.key"
)

// newSecretData creates a root for the trust domain and returns the Secret data holding it.
func newSecretData(trustDomain string, lifetime time.Duration, now time.Time) (map[string][]byte, error) {
	certPEM, keyPEM, err := identity.NewRoot(trustDomain, lifetime, now)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{CertKey: certPEM, KeyKey: keyPEM}, nil
}

// authorityFromSecretData builds the Authority of the CA Secret's data for the trust domain. Its
// errors say what is wrong with the data, without the Secret's name.
func authorityFromSecretData(data map[string][]byte, trustDomain string) (*identity.Authority, error) {
	certsPEM, keyPEM := data[CertKey], data[KeyKey]
	switch {
	case len(certsPEM) == 0 && len(keyPEM) == 0:
		return nil, fmt.Errorf("it has neither %s nor %s", CertKey, KeyKey)
	case len(certsPEM) == 0:
		return nil, fmt.Errorf("%s is missing or empty", CertKey)
	case len(keyPEM) == 0:
		return nil, fmt.Errorf("%s is missing or empty", KeyKey)
	}
	key, err := identity.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s is not a PEM private key: %w", KeyKey, err)
	}
	var signerPEM []byte
	certs := 0
	for rest := certsPEM; len(rest) > 0; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s holds a PEM %q block; it must hold certificates only", CertKey, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of %s cannot be parsed: %w", certs+1, CertKey, err)
		}
		certs++
		if signerPEM == nil && publicKeysEqual(key.Public(), cert.PublicKey) {
			signerPEM = pem.EncodeToMemory(block)
		}
	}
	switch {
	case certs == 0:
		return nil, fmt.Errorf("%s holds no PEM certificate", CertKey)
	case signerPEM == nil:
		return nil, fmt.Errorf("no certificate of %s belongs to the key in %s", CertKey, KeyKey)
	}
	authority, err := identity.NewAuthority(signerPEM, keyPEM, nil, certsPEM)
	if err != nil {
		return nil, err
	}
	// Proxies accept only leaves whose signer is a CA of the mesh (identity.VerifyPeer).
	if !identity.IsMeshCA(authority.Signer(), trustDomain) {
		return nil, fmt.Errorf("the certificate of %s is not a CA of trust domain %s: its only URI SAN must be spiffe://%s, or proxies refuse the leaves it signs",
			KeyKey, trustDomain, trustDomain)
	}
	return authority, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}
