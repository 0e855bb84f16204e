package capture

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden rulesets in testdata")

func TestRulesetGolden(t *testing.T) {
	tests := []struct {
		golden      string
		annotations map[string]string
	}{
		{"inbound.golden", map[string]string{AnnotationCapture: "inbound"}},
		{"outbound.golden", map[string]string{AnnotationCapture: "outbound"}},
		{"none.golden", map[string]string{AnnotationCapture: "none"}},
		{"both-with-exclusions.golden", map[string]string{
			AnnotationCapture:              "inbound,outbound",
			AnnotationExcludeInboundPorts:  "8081,9090",
			AnnotationExcludeOutboundPorts: "5432",
			AnnotationExcludeOutboundCIDRs: "169.254.169.254,10.96.0.0/12,fd00:10:96::/112",
		}},
		{"excluded-ports-overlap-proxy-ports.golden", map[string]string{
			AnnotationCapture:              "inbound,outbound",
			AnnotationExcludeInboundPorts:  "15000",
			AnnotationExcludeOutboundPorts: "53,15007",
		}},
	}
	for _, tt := range tests {
		t.Run(strings.TrimSuffix(tt.golden, ".golden"), func(t *testing.T) {
			c, err := ParseAnnotations(tt.annotations)
			if err != nil {
				t.Fatal(err)
			}
			rs, err := NewRuleset(c)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			b.WriteString("# annotations:\n")
			for _, key := range []string{AnnotationCapture, AnnotationExcludeInboundPorts, AnnotationExcludeOutboundPorts, AnnotationExcludeOutboundCIDRs} {
				if value, ok := tt.annotations[key]; ok {
					b.WriteString("#   " + key + ": " + value + "\n")
				}
			}
			b.WriteString(rs.String())
			path := filepath.Join("testdata", tt.golden)
			if *update {
				if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/capture -run TestRulesetGolden -update to create it)", err)
			}
			if b.String() != string(want) {
				t.Errorf("ruleset differs from %s (rerun with -update if the change is intended):\n got:\n%s\nwant:\n%s", path, b.String(), want)
			}
		})
	}
}

func TestRulesetNeverCapturesTheProxyOrDNS(t *testing.T) {
	c := DefaultConfig()
	c.Inbound, c.Outbound = true, true
	rs, err := NewRuleset(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, chain := range rs.Chains {
		redirect := chain.Rules[len(chain.Rules)-1]
		if redirect.Verdict.Kind != VerdictRedirect {
			t.Fatalf("chain %s does not end with a redirect: %s", chain.Name, redirect)
		}
		excluded := map[uint16]bool{}
		uidExcluded := false
		for _, rule := range chain.Rules[:len(chain.Rules)-1] {
			if rule.Verdict.Kind != VerdictReturn {
				t.Errorf("chain %s: rule %q before the redirect does not return", chain.Name, rule)
			}
			for _, m := range rule.Matches {
				for _, p := range m.Ports {
					excluded[p] = true
				}
				uidExcluded = uidExcluded || (m.Kind == MatchSocketUID && m.UID == c.ProxyUID)
			}
		}
		for _, port := range []uint16{15000, 15001, c.InboundPort, c.OutboundPort} {
			if !excluded[port] {
				t.Errorf("chain %s captures connections to the proxy's port %d", chain.Name, port)
			}
		}
		if chain.Hook == HookOutput && (!excluded[DNSPort] || !uidExcluded) {
			t.Errorf("chain %s captures DNS (%v) or the proxy's own connections (%v)", chain.Name, !excluded[DNSPort], !uidExcluded)
		}
	}
}
