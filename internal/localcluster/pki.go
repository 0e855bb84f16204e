// Package localcluster runs a real single-node Kubernetes cluster on this machine from binaries
// built from Go modules (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
// kube-proxy) and Debian's containerd. It owns the cluster's PKI, the components' configuration,
// the processes it starts and their teardown. hack/local-cluster is its command line.
package localcluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// CertSpec describes one certificate of the cluster.
type CertSpec struct {
	// Name is the file name stem: <Name>.crt and <Name>.key.
	Name         string
	CommonName   string
	Organization []string
	Server       bool
	Client       bool
	DNSNames     []string
	IPs          []net.IP
}

// PKI is the cluster's certificate authority and the certificates it issued, all PEM files in Dir.
type PKI struct {
	Dir string
}

const (
	caName        = "ca"
	certLifetime  = 365 * 24 * time.Hour
	caLifetime    = 10 * 365 * 24 * time.Hour
	renewBefore   = 30 * 24 * time.Hour
	serviceKeyPEM = "sa.key"
	servicePubPEM = "sa.pub"
)

// CertPath and KeyPath return the files of a certificate.
func (p PKI) CertPath(name string) string { return filepath.Join(p.Dir, name+".crt") }
func (p PKI) KeyPath(name string) string  { return filepath.Join(p.Dir, name+".key") }

// CAPath is the CA certificate every component trusts.
func (p PKI) CAPath() string { return p.CertPath(caName) }

// ServiceAccountKeyPath and ServiceAccountPubPath are the service account token signing keys.
func (p PKI) ServiceAccountKeyPath() string { return filepath.Join(p.Dir, serviceKeyPEM) }
func (p PKI) ServiceAccountPubPath() string { return filepath.Join(p.Dir, servicePubPEM) }

// ClusterCerts lists the certificates a cluster with this node needs.
func ClusterCerts(nodeName string, nodeIP, apiServiceIP net.IP) []CertSpec {
	return []CertSpec{
		{Name: "apiserver", CommonName: "kube-apiserver", Server: true,
			DNSNames: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost", nodeName},
			IPs:      []net.IP{net.IPv4(127, 0, 0, 1), nodeIP, apiServiceIP}},
		{Name: "apiserver-kubelet-client", CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Client: true},
		{Name: "admin", CommonName: "meshlift-local-admin", Organization: []string{"system:masters"}, Client: true},
		{Name: "kube-controller-manager", CommonName: "system:kube-controller-manager", Client: true},
		{Name: "kube-scheduler", CommonName: "system:kube-scheduler", Client: true},
		{Name: "kube-proxy", CommonName: "system:kube-proxy", Client: true},
		{Name: "kubelet", CommonName: "system:node:" + nodeName, Organization: []string{"system:nodes"}, Client: true},
		{Name: "kubelet-serving", CommonName: nodeName, Server: true, DNSNames: []string{nodeName, "localhost"},
			IPs: []net.IP{net.IPv4(127, 0, 0, 1), nodeIP}},
	}
}

// Ensure creates the CA, the service account key and every certificate in specs that is missing,
// unreadable, not signed by the CA, about to expire or issued for other names. Valid files are
// kept, so `up` on an existing cluster does not invalidate its credentials. It returns the names
// of the files it (re)wrote.
func (p PKI) Ensure(specs []CertSpec, now time.Time) ([]string, error) {
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create PKI directory: %w", err)
	}
	var written []string
	ca, caKey, err := p.loadPair(caName)
	if err != nil || !ca.IsCA || now.Add(renewBefore).After(ca.NotAfter) {
		ca, caKey, err = p.issue(CertSpec{Name: caName, CommonName: "meshlift-local-ca"}, nil, nil, now)
		if err != nil {
			return nil, err
		}
		written = append(written, caName)
	}
	if _, err := os.Stat(p.ServiceAccountKeyPath()); err != nil {
		if err := p.writeServiceAccountKeys(); err != nil {
			return nil, err
		}
		written = append(written, "sa")
	}
	for _, spec := range specs {
		cert, _, err := p.loadPair(spec.Name)
		if err == nil && Satisfies(cert, spec, ca, now) {
			continue
		}
		if _, _, err := p.issue(spec, ca, caKey, now); err != nil {
			return nil, err
		}
		written = append(written, spec.Name)
	}
	return written, nil
}

// Satisfies reports whether cert is a valid certificate for spec issued by ca.
func Satisfies(cert *x509.Certificate, spec CertSpec, ca *x509.Certificate, now time.Time) bool {
	if cert.CheckSignatureFrom(ca) != nil || now.Add(renewBefore).After(cert.NotAfter) {
		return false
	}
	if cert.Subject.CommonName != spec.CommonName || !slices.Equal(cert.Subject.Organization, spec.Organization) {
		return false
	}
	for _, name := range spec.DNSNames {
		if !slices.Contains(cert.DNSNames, name) {
			return false
		}
	}
	for _, ip := range spec.IPs {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

func (p PKI) issue(spec CertSpec, ca *x509.Certificate, caKey crypto.Signer, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to generate key for %s: %w", spec.Name, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("failed to generate serial for %s: %w", spec.Name, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: spec.CommonName, Organization: spec.Organization},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		DNSNames:     spec.DNSNames,
		IPAddresses:  spec.IPs,
	}
	if spec.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if spec.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	parent, signer := ca, caKey
	if ca == nil { // self-signed CA
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
		tmpl.NotAfter = now.Add(caLifetime)
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to sign certificate %s: %w", spec.Name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to parse new certificate %s: %w", spec.Name, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to encode key %s: %w", spec.Name, err)
	}
	if err := writePEM(p.KeyPath(spec.Name), "EC PRIVATE KEY", keyDER, 0o600); err != nil {
		return nil, nil, err
	}
	if err := writePEM(p.CertPath(spec.Name), "CERTIFICATE", der, 0o644); err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

func (p PKI) writeServiceAccountKeys() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("failed to generate service account key: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("failed to encode service account key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("failed to encode service account public key: %w", err)
	}
	if err := writePEM(p.ServiceAccountKeyPath(), "EC PRIVATE KEY", keyDER, 0o600); err != nil {
		return err
	}
	return writePEM(p.ServiceAccountPubPath(), "PUBLIC KEY", pubDER, 0o644)
}

// loadPair reads a certificate and its key.
func (p PKI) loadPair(name string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(p.CertPath(name))
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(p.KeyPath(name))
	if err != nil {
		return nil, nil, err
	}
	certBlock, _ := pem.Decode(certPEM)
	keyBlock, _ := pem.Decode(keyPEM)
	if certBlock == nil || keyBlock == nil {
		return nil, nil, errors.New("not PEM")
	}
	cert, err := x509.ParseCertificate(certBlock.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(keyBlock.Bytes)
	if err != nil {
		return nil, nil, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, errors.New("key does not match certificate")
	}
	return cert, key, nil
}

func writePEM(path, blockType string, der []byte, mode os.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}
