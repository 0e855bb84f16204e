package outbound_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshlift/meshlift/internal/outbound"
)

// FuzzFromListener feeds arbitrary bytes, decoded as a Listener, to FromListener: it must refuse
// or accept, never panic, and what it accepts must route only to clusters of the mesh's form,
// with a known protocol, and only destinations that a filter chain names with its port (checked
// against the listener itself, independently of the table's own bookkeeping).
func FuzzFromListener(f *testing.F) {
	for _, chains := range [][]outbound.Chain{
		nil,
		{chain("http.api.shop", "HTTP", 80, "10.96.0.10", "fd00::1")},
		{chain("http.api.shop", "HTTP", 8080, "10.1.0.1"), chain("grpc.ledger.bank", "GRPC", 9090, "10.1.1.1")},
	} {
		listener, _, err := outbound.Build(chains)
		if err != nil {
			f.Fatal(err)
		}
		data, err := proto.Marshal(listener)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var listener listenerv3.Listener
		if err := proto.Unmarshal(data, &listener); err != nil {
			return
		}
		table, err := outbound.FromListener(&listener)
		if err != nil {
			return
		}
		named := 0
		for _, fc := range listener.GetFilterChains() {
			port := fc.GetFilterChainMatch().GetDestinationPort().GetValue()
			for _, r := range fc.GetFilterChainMatch().GetPrefixRanges() {
				named++
				dst := netip.AddrPortFrom(netip.MustParseAddr(r.GetAddressPrefix()), uint16(port))
				route, ok := table.Lookup(dst)
				if !ok {
					t.Fatalf("accepted chain %q, yet %s is not routed", fc.GetName(), dst)
				}
				if strings.Count(route.Cluster, ".") != 2 || !slices.Contains(outbound.Protocols, route.Protocol) {
					t.Fatalf("accepted route %+v", route)
				}
			}
		}
		if table.Len() != named {
			t.Fatalf("the table has %d destinations, the listener names %d", table.Len(), named)
		}
	})
}
