// Package peertest runs real TLS handshakes in which a server verifies its client's certificate
// chain with identity.VerifyPeer, as a proxy verifies a peer, for the tests of the CA backends.
package peertest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/identity"
)

// Handshake runs a TLS 1.3 handshake over loopback TCP in which the client presents chain (DER,
// leaf first) with key, and the server verifies it with identity.VerifyPeer against roots for
// trustDomain. It returns the SPIFFE ID the server accepted, or why it refused the client.
func Handshake(t testing.TB, roots *x509.CertPool, trustDomain string, chain [][]byte, key crypto.Signer) (string, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type verdict struct {
		id  string
		err error
	}
	result := make(chan verdict, 1)
	serverCert := selfSigned(t)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			result <- verdict{err: err}
			return
		}
		defer conn.Close()
		var id string
		server := tls.Server(conn, &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{serverCert},
			ClientAuth:   tls.RequireAnyClientCert,
			VerifyConnection: func(cs tls.ConnectionState) error {
				var err error
				id, err = identity.VerifyPeer(roots, cs.PeerCertificates, trustDomain, x509.ExtKeyUsageClientAuth)
				return err
			},
		})
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		err = server.Handshake()
		result <- verdict{id: id, err: err}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := tls.Client(conn, &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{{Certificate: chain, PrivateKey: key}},
		InsecureSkipVerify: true, // only the server's verification of the client is under test
	})
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_ = client.Handshake()
	// A TLS 1.3 client completes before the server has verified it: read to get its verdict.
	_, _ = client.Read(make([]byte, 1))
	v := <-result
	return v.id, v.err
}

// selfSigned is the server's certificate, which the client does not check.
func selfSigned(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "server"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
