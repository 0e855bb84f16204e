package capture

import (
	"reflect"
	"testing"
)

// FuzzParseAnnotations checks that untrusted annotation values never panic, that whatever
// parses renders to annotations that parse back to the same Config, and that a parsed Config
// always builds a ruleset.
func FuzzParseAnnotations(f *testing.F) {
	f.Add("inbound,outbound", "8081,9090", "5432", "10.0.0.0/8,fd00::/8")
	f.Add("none", "", "", "")
	f.Add(" outbound ", "1, 65535", "53,53", "192.0.2.1,::1")
	f.Add("inbound,", "0", "65536", "10.1.2.3/8")
	f.Add("inbound", "+80", "0x50", "::ffff:10.0.0.0/104,fe80::1%eth0")
	f.Fuzz(func(t *testing.T, capture, inboundPorts, outboundPorts, cidrs string) {
		annotations := map[string]string{
			AnnotationCapture:              capture,
			AnnotationExcludeInboundPorts:  inboundPorts,
			AnnotationExcludeOutboundPorts: outboundPorts,
			AnnotationExcludeOutboundCIDRs: cidrs,
		}
		c, err := ParseAnnotations(annotations)
		if err != nil {
			return
		}
		if Marked(annotations) != c.Enabled() {
			t.Fatalf("Marked = %v but the parsed config has Enabled = %v", Marked(annotations), c.Enabled())
		}
		again, err := ParseAnnotations(c.Annotations())
		if err != nil {
			t.Fatalf("the canonical annotations %v of %+v do not parse: %v", c.Annotations(), c, err)
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("round trip through %v:\n got %+v\nwant %+v", c.Annotations(), again, c)
		}
		rs, err := NewRuleset(c)
		if err != nil {
			t.Fatalf("NewRuleset(%+v): %v", c, err)
		}
		_ = rs.String()
	})
}
