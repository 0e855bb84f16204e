package outbound_test

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlift/meshlift/internal/outbound"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func chain(cluster, protocol string, port uint16, ips ...string) outbound.Chain {
	return outbound.Chain{Route: outbound.Route{Cluster: cluster, Protocol: protocol}, Port: port, Addrs: addrs(ips...)}
}

func build(t *testing.T, chains ...outbound.Chain) *listenerv3.Listener {
	t.Helper()
	listener, _, err := outbound.Build(chains)
	if err != nil {
		t.Fatal(err)
	}
	return listener
}

func TestLookupRoutesWhatTheListenerMatchesAndNothingElse(t *testing.T) {
	listener := build(t,
		chain("http.api.shop", "HTTP", 80, "10.96.0.10", "fd00::10"),
		chain("http.api.shop", "HTTP", 8080, "10.1.0.1", "10.1.0.2"),
		chain("grpc.ledger.bank", "GRPC", 9090, "10.1.1.1"),
	)
	table, err := outbound.FromListener(listener)
	if err != nil {
		t.Fatal(err)
	}
	if table.Len() != 5 {
		t.Fatalf("the table has %d destinations, want 5", table.Len())
	}
	for _, tc := range []struct {
		dst  string
		want outbound.Route
		ok   bool
	}{
		{"10.96.0.10:80", outbound.Route{Cluster: "http.api.shop", Protocol: "HTTP"}, true},
		{"[fd00::10]:80", outbound.Route{Cluster: "http.api.shop", Protocol: "HTTP"}, true},
		{"[::ffff:10.96.0.10]:80", outbound.Route{Cluster: "http.api.shop", Protocol: "HTTP"}, true},
		{"10.1.0.2:8080", outbound.Route{Cluster: "http.api.shop", Protocol: "HTTP"}, true},
		{"10.1.1.1:9090", outbound.Route{Cluster: "grpc.ledger.bank", Protocol: "GRPC"}, true},
		{"10.96.0.10:8080", outbound.Route{}, false}, // the ClusterIP on another port
		{"10.1.0.1:80", outbound.Route{}, false},     // a pod on the Service's port
		{"93.184.216.34:443", outbound.Route{}, false},
	} {
		got, ok := table.Lookup(netip.MustParseAddrPort(tc.dst))
		if ok != tc.ok || got != tc.want {
			t.Errorf("Lookup(%s) = %+v, %v; want %+v, %v", tc.dst, got, ok, tc.want, tc.ok)
		}
	}
	if got, want := table.Clusters(), []string{"grpc.ledger.bank", "http.api.shop"}; !slices.Equal(got, want) {
		t.Errorf("Clusters() = %v, want %v", got, want)
	}
	var none *outbound.Table
	if _, ok := none.Lookup(netip.MustParseAddrPort("10.1.0.1:8080")); ok || none.Len() != 0 || none.Clusters() != nil {
		t.Error("a nil table routes something")
	}
}

func TestBuildGivesAContestedDestinationToTheFirstChainAndSaysSo(t *testing.T) {
	listener, conflicts, err := outbound.Build([]outbound.Chain{
		chain("http.a.shop", "HTTP", 8080, "10.0.0.1", "10.0.0.2"),
		chain("tcp.b.shop", "TCP", 8080, "10.0.0.2"),
		chain("tcp.c.shop", "TCP", 8080),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(conflicts) != 1 || conflicts[0].Destination.String() != "10.0.0.2:8080" || conflicts[0].Kept != "http.a.shop" || conflicts[0].Left != "tcp.b.shop" {
		t.Fatalf("conflicts %+v", conflicts)
	}
	if n := len(listener.GetFilterChains()); n != 1 {
		t.Fatalf("%d filter chains, want only http.a.shop's (the others have no destination left)", n)
	}
	table, err := outbound.FromListener(listener)
	if err != nil {
		t.Fatalf("the listener Build made is refused: %v", err)
	}
	if route, _ := table.Lookup(netip.MustParseAddrPort("10.0.0.2:8080")); route.Cluster != "http.a.shop" {
		t.Fatalf("10.0.0.2:8080 goes to %q", route.Cluster)
	}
}

func TestBuildMakesAListenerEnvoyCanLoad(t *testing.T) {
	listener := build(t, chain("http.api.shop", "HTTP", 80, "10.96.0.10"))
	if err := listener.ValidateAll(); err != nil {
		t.Fatalf("the listener breaks Envoy's own constraints: %v", err)
	}
	if listener.GetName() != outbound.ListenerName || listener.GetAddress().GetSocketAddress().GetPortValue() != outbound.CapturePort {
		t.Fatalf("listener %s on %v", listener.GetName(), listener.GetAddress())
	}
	proxy := &tcpproxyv3.TcpProxy{}
	if err := listener.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(proxy); err != nil {
		t.Fatal(err)
	}
	if proxy.GetCluster() != "http.api.shop" {
		t.Fatalf("tcp_proxy cluster %q", proxy.GetCluster())
	}
}

// edit builds a valid listener of one chain and changes it.
func edit(t *testing.T, change func(*listenerv3.Listener)) *listenerv3.Listener {
	t.Helper()
	listener := build(t, chain("http.api.shop", "HTTP", 80, "10.96.0.10"))
	change(listener)
	return listener
}

func firstChain(l *listenerv3.Listener) *listenerv3.FilterChain { return l.GetFilterChains()[0] }

func withProxy(t *testing.T, proxy *tcpproxyv3.TcpProxy) func(*listenerv3.Listener) {
	return func(l *listenerv3.Listener) {
		config, err := anypb.New(proxy)
		if err != nil {
			t.Fatal(err)
		}
		firstChain(l).GetFilters()[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: config}
	}
}

func TestFromListenerRefusesWhatItWouldNotRouteAsEnvoyWould(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*listenerv3.Listener)
		reason string
	}{
		{"refuses another listener name", func(l *listenerv3.Listener) { l.Name = "other" }, `named "other"`},
		{"refuses a default filter chain", func(l *listenerv3.Listener) { l.DefaultFilterChain = &listenerv3.FilterChain{} }, "default filter chain"},
		{"refuses a chain without a match", func(l *listenerv3.Listener) { firstChain(l).FilterChainMatch = nil }, "no filter_chain_match"},
		{"refuses a chain without prefix ranges", func(l *listenerv3.Listener) { firstChain(l).FilterChainMatch.PrefixRanges = nil }, "no prefix ranges"},
		{"refuses a chain without a destination port", func(l *listenerv3.Listener) { firstChain(l).FilterChainMatch.DestinationPort = nil }, "destination port"},
		{"refuses a port above 65535", func(l *listenerv3.Listener) {
			firstChain(l).FilterChainMatch.DestinationPort = wrapperspb.UInt32(70000)
		}, "destination port"},
		{"refuses a prefix wider than one address", func(l *listenerv3.Listener) {
			firstChain(l).FilterChainMatch.PrefixRanges[0].PrefixLen = wrapperspb.UInt32(24)
		}, "not a single address"},
		{"refuses a prefix that is not an address", func(l *listenerv3.Listener) {
			firstChain(l).FilterChainMatch.PrefixRanges[0].AddressPrefix = "api.shop"
		}, "not an IPv4 or IPv6 address"},
		{"refuses a match on server names", func(l *listenerv3.Listener) { firstChain(l).FilterChainMatch.ServerNames = []string{"x"} }, "may only name"},
		{"refuses a match on source addresses", func(l *listenerv3.Listener) {
			firstChain(l).FilterChainMatch.SourcePrefixRanges = []*corev3.CidrRange{{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(8)}}
		}, "may only name"},
		{"refuses two filters", func(l *listenerv3.Listener) {
			firstChain(l).Filters = append(firstChain(l).Filters, firstChain(l).Filters[0])
		}, "exactly one filter"},
		{"refuses another filter", func(l *listenerv3.Listener) { firstChain(l).Filters[0].Name = "envoy.filters.network.echo" }, "exactly one filter"},
		{"refuses a tcp_proxy config of another type", func(l *listenerv3.Listener) {
			config, _ := anypb.New(&structpb.Struct{})
			firstChain(l).Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: config}
		}, "not a TcpProxy"},
		{"refuses weighted clusters", withProxy(t, &tcpproxyv3.TcpProxy{StatPrefix: "x", ClusterSpecifier: &tcpproxyv3.TcpProxy_WeightedClusters{}}), "is not <port>"},
		{"refuses a cluster that is not an SNI of the mesh", withProxy(t, &tcpproxyv3.TcpProxy{ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "api.shop"}}), "is not <port>"},
		{"refuses a cluster with upper-case letters", withProxy(t, &tcpproxyv3.TcpProxy{ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "HTTP.api.shop"}}), "is not <port>"},
		{"refuses a chain without a protocol", func(l *listenerv3.Listener) { firstChain(l).Metadata = nil }, "no metadata"},
		{"refuses an unknown protocol", func(l *listenerv3.Listener) {
			firstChain(l).Metadata.FilterMetadata[outbound.MetadataNamespace].Fields[outbound.MetadataProtocol] = structpb.NewStringValue("UDP")
		}, `protocol "UDP"`},
		{"refuses a transport socket", func(l *listenerv3.Listener) { firstChain(l).TransportSocket = &corev3.TransportSocket{Name: "tls"} }, "transport socket"},
		{"refuses a destination two chains match", func(l *listenerv3.Listener) {
			other := build(t, chain("tcp.db.shop", "TCP", 80, "10.96.0.10"))
			l.FilterChains = append(l.FilterChains, firstChain(other))
		}, "matched by the chain of http.api.shop too"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := outbound.FromListener(edit(t, tc.change))
			if !errors.Is(err, outbound.ErrInvalid) || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("got %v, want an ErrInvalid saying %q", err, tc.reason)
			}
		})
	}
}

func TestFromListenerRefusesMoreThanItsLimit(t *testing.T) {
	var ips []string
	for i := range outbound.MaxDestinations + 1 {
		ips = append(ips, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String())
	}
	_, err := outbound.FromListener(build(t, chain("tcp.big.shop", "TCP", 80, ips...)))
	if !errors.Is(err, outbound.ErrInvalid) || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("got %v, want a refusal of more than %d destinations", err, outbound.MaxDestinations)
	}
}
