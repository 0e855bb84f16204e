package pki_test

import (
	"testing"

	"github.com/meshlift/meshlift/internal/webhookcert/pki"
)

// FuzzRenew feeds arbitrary Secret data to the decoder and the renewal decision, as a Secret
// edited by hand would: neither may panic, and whatever was stored, the renewed bundle must
// need nothing more and its serving certificate must verify against its CA bundle.
func FuzzRenew(f *testing.F) {
	valid, err := pki.Issue(svc, t0)
	if err != nil {
		f.Fatal(err)
	}
	other, err := pki.Issue(svc, t0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid.Cert, valid.Key, valid.CABundle, valid.CAKey)
	f.Add(other.Cert, other.Key, valid.CABundle, valid.CAKey)
	f.Add(valid.Cert, valid.Key, concat(valid.CABundle, other.CABundle, []byte("junk")), valid.CAKey)
	f.Add([]byte{}, []byte{}, []byte{}, []byte{})
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----\n"), valid.CAKey, valid.Key, valid.Cert)
	f.Fuzz(func(t *testing.T, cert, key, caBundle, caKey []byte) {
		stored := pki.FromSecretData(map[string][]byte{"tls.crt": cert, "tls.key": key, "ca.crt": caBundle, "ca.key": caKey})
		_ = pki.NextRenewal(stored, svc, t0)
		renewed, _, err := pki.Renew(stored, svc, t0)
		if err != nil {
			t.Fatal(err)
		}
		if d := pki.Check(renewed, svc, t0); d.NeedsUpdate() {
			t.Fatalf("the renewed bundle still needs %+v", d)
		}
		if err := verify(renewed, svc, t0); err != nil {
			t.Fatalf("the renewed serving certificate does not verify: %v", err)
		}
	})
}
