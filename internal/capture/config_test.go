package capture

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParseAnnotations(t *testing.T) {
	withDefaults := func(edit func(*Config)) Config {
		c := DefaultConfig()
		edit(&c)
		return c
	}
	tests := []struct {
		name        string
		annotations map[string]string
		want        Config
		wantErr     []string // substrings of the error
	}{
		{
			name:        "captures nothing without annotations",
			annotations: nil,
			want:        DefaultConfig(),
		},
		{
			name:        "captures nothing when the value is none",
			annotations: map[string]string{AnnotationCapture: "none"},
			want:        DefaultConfig(),
		},
		{
			name:        "captures inbound only",
			annotations: map[string]string{AnnotationCapture: "inbound"},
			want:        withDefaults(func(c *Config) { c.Inbound = true }),
		},
		{
			name:        "accepts both directions in any order with spaces",
			annotations: map[string]string{AnnotationCapture: " outbound , inbound "},
			want:        withDefaults(func(c *Config) { c.Inbound, c.Outbound = true, true }),
		},
		{
			name: "sorts and deduplicates excluded ports and CIDRs, and reads an address as its host network",
			annotations: map[string]string{
				AnnotationCapture:              "inbound,outbound",
				AnnotationExcludeInboundPorts:  "9090, 8081,9090",
				AnnotationExcludeOutboundPorts: "6379,5432",
				AnnotationExcludeOutboundCIDRs: "fd00::/8, 192.0.2.10,10.0.0.0/8,10.0.0.0/8",
			},
			want: withDefaults(func(c *Config) {
				c.Inbound, c.Outbound = true, true
				c.ExcludeInboundPorts = []uint16{8081, 9090}
				c.ExcludeOutboundPorts = []uint16{5432, 6379}
				c.ExcludeOutboundCIDRs = []netip.Prefix{
					netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.10/32"), netip.MustParsePrefix("fd00::/8"),
				}
			}),
		},
		{
			name:        "rejects an unknown direction and names the accepted values",
			annotations: map[string]string{AnnotationCapture: "inbound,sideways"},
			wantErr:     []string{AnnotationCapture, `"sideways" is not a direction`, `"inbound,outbound"`},
		},
		{
			name:        "rejects a direction named twice",
			annotations: map[string]string{AnnotationCapture: "inbound,inbound"},
			wantErr:     []string{`names "inbound" twice`},
		},
		{
			name:        "rejects none together with a direction",
			annotations: map[string]string{AnnotationCapture: "none,inbound"},
			wantErr:     []string{`"none" is not a direction`},
		},
		{
			name:        "rejects port 0, ports above 65535, names and empty items",
			annotations: map[string]string{AnnotationExcludeInboundPorts: "0", AnnotationExcludeOutboundPorts: "65536"},
			wantErr:     []string{AnnotationExcludeInboundPorts, `"0" is not a port number`, AnnotationExcludeOutboundPorts, `"65536" is not a port number`},
		},
		{
			name:        "rejects an empty item in a port list",
			annotations: map[string]string{AnnotationExcludeInboundPorts: "80,,81"},
			wantErr:     []string{`"" is not a port number`},
		},
		{
			name:        "rejects a named port",
			annotations: map[string]string{AnnotationExcludeOutboundPorts: "http"},
			wantErr:     []string{`"http" is not a port number`},
		},
		{
			name:        "rejects a CIDR with host bits and suggests the network",
			annotations: map[string]string{AnnotationExcludeOutboundCIDRs: "10.1.2.3/8"},
			wantErr:     []string{AnnotationExcludeOutboundCIDRs, `did you mean "10.0.0.0/8"`},
		},
		{
			name:        "rejects an address with a zone",
			annotations: map[string]string{AnnotationExcludeOutboundCIDRs: "fe80::1%eth0"},
			wantErr:     []string{`"fe80::1%eth0" is not a CIDR or an IP address`},
		},
		{
			name:        "rejects a host name",
			annotations: map[string]string{AnnotationExcludeOutboundCIDRs: "example.com"},
			wantErr:     []string{`"example.com" is not a CIDR or an IP address`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAnnotations(tt.annotations)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("ParseAnnotations(%v) = %+v, want an error", tt.annotations, got)
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not contain %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAnnotations(%v): %v", tt.annotations, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseAnnotations(%v)\n got %+v\nwant %+v", tt.annotations, got, tt.want)
			}
			again, err := ParseAnnotations(got.Annotations())
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Errorf("round trip through %v: got %+v, %v", got.Annotations(), again, err)
			}
		})
	}
}

func TestMarked(t *testing.T) {
	for value, want := range map[string]bool{"": false, "none": false, " none ": false, "inbound": true, "outbound": true, "bogus": true} {
		if got := Marked(map[string]string{AnnotationCapture: value}); got != want {
			t.Errorf("Marked(%s=%q) = %v, want %v", AnnotationCapture, value, got, want)
		}
	}
	if Marked(nil) {
		t.Error("a pod without annotations is marked")
	}
}

func TestValidateRejectsConfigsThatWouldCaptureTheProxy(t *testing.T) {
	tests := map[string]func(*Config){
		"the same inbound and outbound port":   func(c *Config) { c.OutboundPort = c.InboundPort },
		"a zero inbound port":                  func(c *Config) { c.InboundPort = 0 },
		"root as the proxy user with outbound": func(c *Config) { c.Outbound, c.ProxyUID = true, 0 },
		"an excluded CIDR with host bits":      func(c *Config) { c.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/8")} },
		"an excluded port 0":                   func(c *Config) { c.ExcludeInboundPorts = []uint16{0} },
	}
	for name, edit := range tests {
		t.Run(name, func(t *testing.T) {
			c := DefaultConfig()
			edit(&c)
			if err := c.Validate(); err == nil {
				t.Errorf("Validate accepted %+v", c)
			}
			if _, err := NewRuleset(c); err == nil {
				t.Errorf("NewRuleset accepted %+v", c)
			}
		})
	}
}
