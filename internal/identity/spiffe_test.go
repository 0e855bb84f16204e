package identity_test

import (
	"testing"

	"github.com/meshlift/meshlift/internal/identity"
)

func TestParseSPIFFEID(t *testing.T) {
	tests := []struct {
		id    string
		valid bool
	}{
		{identity.SPIFFEID("cluster.local", "shop", "web"), true},
		{"spiffe://example.org/ns/shop/sa/api", true},
		{"spiffe://example.org/workload", true},
		{"spiffe://example.org", false},
		{"spiffe://example.org/", false},
		{"spiffe:///ns/shop/sa/api", false},
		{"spiffe:example.org/ns/shop", false},
		{"https://example.org/ns/shop/sa/api", false},
		{"SPIFFE-less", false},
		{"", false},
		{"spiffe://user@example.org/ns/shop/sa/api", false},
		{"spiffe://example.org:8443/ns/shop/sa/api", false},
		{"spiffe://example.org/ns/shop/sa/api?x=1", false},
		{"spiffe://example.org/ns/shop/sa/api?", false},
		{"spiffe://example.org/ns/shop/sa/api#frag", false},
		{"spiffe://example.org/ns//sa/api", false},
		{"spiffe://example.org/ns/shop/sa/api/", false},
		{"spiffe://example.org/ns/../sa/api", false},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			u, err := identity.ParseSPIFFEID(tt.id)
			if (err == nil) != tt.valid {
				t.Fatalf("ParseSPIFFEID(%q) = %v, %v; want valid %v", tt.id, u, err, tt.valid)
			}
			if err == nil && u.String() != tt.id {
				t.Errorf("ParseSPIFFEID(%q) renders as %q", tt.id, u.String())
			}
		})
	}
}

// FuzzParseSPIFFEID: whatever it accepts renders back as written and is accepted again, so a
// certificate's URI SAN and the ID it was issued for compare as strings.
func FuzzParseSPIFFEID(f *testing.F) {
	for _, seed := range []string{"spiffe://cluster.local/ns/default/sa/default", "spiffe://a/b", "spiffe://a:1/b", "spiffe://a/b%2Fc", "spiffe://a/./b"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, id string) {
		u, err := identity.ParseSPIFFEID(id)
		if err != nil {
			return
		}
		again, err := identity.ParseSPIFFEID(u.String())
		if err != nil || again.String() != u.String() {
			t.Fatalf("%q parses as %q, which parses as %v, %v", id, u.String(), again, err)
		}
	})
}
