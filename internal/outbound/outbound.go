// Package outbound owns the outbound routes resource (docs/control-plane.md, "Outbound routes"):
// which original destinations of captured outbound connections (a Service's ClusterIP:port, a
// pod's IP:port) belong to which MeshService port. The control plane builds it as one Envoy
// Listener (Build); the proxy reads it back into a Table (FromListener) and looks each captured
// connection's original destination up in it. It is pure: no Kubernetes client, no network.
package outbound

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	// ListenerName is the name of the one LDS resource that carries the routes.
	ListenerName = "meshlift.outbound"
	// TypeListener is the type URL of LDS resources.
	TypeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"
	// CapturePort is where captured outbound connections arrive (capture.DefaultOutboundPort):
	// the listener's address, for Envoy. The meshlift-proxy binds its own and ignores it.
	CapturePort = 15007

	// MetadataNamespace and MetadataProtocol: filter_chain.metadata.filter_metadata
	// ["meshlift"]{"protocol": ...} is the MeshService port's protocol.
	MetadataNamespace = "meshlift"
	MetadataProtocol  = "protocol"

	// FilterTCPProxy is the name of the one network filter of each filter chain.
	FilterTCPProxy = "envoy.filters.network.tcp_proxy"
	// FilterOriginalDst is the listener filter that recovers the original destination (Envoy).
	FilterOriginalDst = "envoy.filters.listener.original_dst"

	typeTCPProxy    = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
	typeOriginalDst = "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
)

// Limits of what FromListener accepts: the listener comes over the network.
const (
	// MaxDestinations bounds the addresses of all filter chains together (a ready pod or a
	// ClusterIP each, per port): ten times the 10,000 pods the operator is sized for.
	MaxDestinations = 100000
	// MaxFilterChains bounds the filter chains.
	MaxFilterChains = 20000
	// maxClusterName is a DNS name's length.
	maxClusterName = 253
)

// Protocols of a MeshService port (meshv1alpha1.Protocol), as the metadata carries them.
var Protocols = []string{"TCP", "HTTP", "HTTP2", "GRPC"}

// Route is where a captured connection to a destination of the mesh goes.
type Route struct {
	// Cluster is the MeshService port's cluster and TLS SNI: <port-name>.<meshservice>.<namespace>.
	Cluster string
	// Protocol is the MeshService port's protocol: TCP, HTTP, HTTP2 or GRPC.
	Protocol string
}

// Chain is the destinations of one MeshService port on one destination port: its ClusterIPs for a
// Service port, or its ready pods' IPs for the MeshService port itself.
type Chain struct {
	Route
	Port  uint16
	Addrs []netip.Addr
}

// Table maps original destinations to routes. The zero Table routes nothing.
type Table struct {
	routes map[netip.AddrPort]Route
}

// Lookup returns the route of the original destination dst; false: it is not in the mesh, the
// connection passes through unchanged. An IPv4-mapped IPv6 address is looked up as IPv4.
func (t *Table) Lookup(dst netip.AddrPort) (Route, bool) {
	if t == nil {
		return Route{}, false
	}
	route, ok := t.routes[netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())]
	return route, ok
}

// Len is the number of destinations in the table.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.routes)
}

// Clusters are the clusters the table routes to, sorted, each once: the EDS resources a proxy
// that captures outbound traffic subscribes to.
func (t *Table) Clusters() []string {
	if t == nil {
		return nil
	}
	seen := map[string]struct{}{}
	for _, route := range t.routes {
		seen[route.Cluster] = struct{}{}
	}
	return slices.Sorted(maps.Keys(seen))
}

// Conflict is a destination two chains claim; Build keeps the first chain's route.
type Conflict struct {
	Destination netip.AddrPort
	Kept, Left  string // clusters
}

// Build makes the Listener of chains, in their order, each address once: a destination already
// claimed by an earlier chain is left out of the later one and reported as a conflict (Envoy
// refuses a listener whose filter chains match the same destination). Chains left without
// addresses are dropped.
func Build(chains []Chain) (*listenerv3.Listener, []Conflict, error) {
	originalDst, err := anypb.New(&originaldstv3.OriginalDst{})
	if err != nil {
		return nil, nil, fmt.Errorf("marshaling the original_dst filter: %w", err)
	}
	listener := &listenerv3.Listener{
		Name: ListenerName,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: CapturePort},
		}}},
		ListenerFilters: []*listenerv3.ListenerFilter{{
			Name: FilterOriginalDst, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: originalDst},
		}},
	}
	claimed := map[netip.AddrPort]string{}
	var conflicts []Conflict
	for _, chain := range chains {
		var ranges []*corev3.CidrRange
		for _, addr := range chain.Addrs {
			addr = addr.Unmap()
			dst := netip.AddrPortFrom(addr, chain.Port)
			if kept, ok := claimed[dst]; ok {
				if kept != chain.Cluster {
					conflicts = append(conflicts, Conflict{Destination: dst, Kept: kept, Left: chain.Cluster})
				}
				continue
			}
			claimed[dst] = chain.Cluster
			ranges = append(ranges, &corev3.CidrRange{AddressPrefix: addr.String(), PrefixLen: wrapperspb.UInt32(uint32(addr.BitLen()))})
		}
		if len(ranges) == 0 {
			continue
		}
		proxy, err := anypb.New(&tcpproxyv3.TcpProxy{
			StatPrefix:       chain.Cluster,
			ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: chain.Cluster},
		})
		if err != nil {
			return nil, nil, fmt.Errorf("marshaling the tcp_proxy of %s: %w", chain.Cluster, err)
		}
		listener.FilterChains = append(listener.FilterChains, &listenerv3.FilterChain{
			Name: fmt.Sprintf("%s:%d", chain.Cluster, chain.Port),
			FilterChainMatch: &listenerv3.FilterChainMatch{
				DestinationPort: wrapperspb.UInt32(uint32(chain.Port)),
				PrefixRanges:    ranges,
			},
			Filters: []*listenerv3.Filter{{Name: FilterTCPProxy, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: proxy}}},
			Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				MetadataNamespace: {Fields: map[string]*structpb.Value{MetadataProtocol: structpb.NewStringValue(chain.Protocol)}},
			}},
		})
	}
	return listener, conflicts, nil
}

// ErrInvalid wraps every reason FromListener refuses a listener.
var ErrInvalid = errors.New("invalid outbound routes")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// FromListener reads the routes of the listener the control plane sent. It is untrusted input,
// and refuses (ErrInvalid, with the reason) anything it would not route exactly as Envoy would:
// another name; a filter chain that matches on anything but destination addresses (whole
// /32 or /128 prefixes) and one destination port; whose filters are not one tcp_proxy to one
// cluster named <port>.<meshservice>.<namespace>; whose protocol is unknown; a destination two
// chains match; more than MaxFilterChains chains or MaxDestinations destinations. A default
// filter chain is refused too: what no chain matches passes through.
func FromListener(listener *listenerv3.Listener) (*Table, error) {
	if listener == nil {
		return nil, invalid("no listener")
	}
	if listener.GetName() != ListenerName {
		return nil, invalid("the listener is named %q, not %q", listener.GetName(), ListenerName)
	}
	if listener.GetDefaultFilterChain() != nil || listener.GetFilterChainMatcher() != nil {
		return nil, invalid("listener %s has a default filter chain or a filter chain matcher, which the proxy does not implement", ListenerName)
	}
	if n := len(listener.GetFilterChains()); n > MaxFilterChains {
		return nil, invalid("listener %s has %d filter chains, more than %d", ListenerName, n, MaxFilterChains)
	}
	table := &Table{routes: map[netip.AddrPort]Route{}}
	for i, chain := range listener.GetFilterChains() {
		name := chain.GetName()
		if name == "" {
			name = fmt.Sprintf("#%d", i)
		}
		route, err := routeOf(chain)
		if err != nil {
			return nil, fmt.Errorf("filter chain %s: %w", name, err)
		}
		destinations, err := destinationsOf(chain.GetFilterChainMatch())
		if err != nil {
			return nil, fmt.Errorf("filter chain %s: %w", name, err)
		}
		for _, dst := range destinations {
			if previous, ok := table.routes[dst]; ok {
				return nil, invalid("filter chain %s: destination %s is matched by the chain of %s too", name, dst, previous.Cluster)
			}
			if len(table.routes) == MaxDestinations {
				return nil, invalid("the listener has more than %d destinations", MaxDestinations)
			}
			table.routes[dst] = route
		}
	}
	return table, nil
}

// routeOf reads a chain's tcp_proxy cluster and metadata protocol.
func routeOf(chain *listenerv3.FilterChain) (Route, error) {
	if chain.GetTransportSocket() != nil || chain.GetTransportSocketConnectTimeout() != nil {
		return Route{}, invalid("a transport socket is not expected: the proxy originates mTLS itself")
	}
	filters := chain.GetFilters()
	if len(filters) != 1 || filters[0].GetName() != FilterTCPProxy {
		return Route{}, invalid("want exactly one filter, %s", FilterTCPProxy)
	}
	config := filters[0].GetTypedConfig()
	if config.GetTypeUrl() != typeTCPProxy {
		return Route{}, invalid("the %s filter's typed config is %q, not a TcpProxy", FilterTCPProxy, config.GetTypeUrl())
	}
	var proxy tcpproxyv3.TcpProxy
	if err := proto.Unmarshal(config.GetValue(), &proxy); err != nil {
		return Route{}, invalid("the TcpProxy does not decode: %v", err)
	}
	cluster := proxy.GetCluster()
	if err := checkCluster(cluster); err != nil {
		return Route{}, err
	}
	protocolValue, ok := chain.GetMetadata().GetFilterMetadata()[MetadataNamespace].GetFields()[MetadataProtocol]
	if !ok {
		return Route{}, invalid("no metadata %s.%s", MetadataNamespace, MetadataProtocol)
	}
	protocol := protocolValue.GetStringValue()
	if !slices.Contains(Protocols, protocol) {
		return Route{}, invalid("protocol %q is none of %s", protocol, strings.Join(Protocols, ", "))
	}
	return Route{Cluster: cluster, Protocol: protocol}, nil
}

// checkCluster checks that cluster is <port>.<meshservice>.<namespace>, three DNS labels.
func checkCluster(cluster string) error {
	labels := strings.Split(cluster, ".")
	if len(cluster) > maxClusterName || len(labels) != 3 || slices.ContainsFunc(labels, func(l string) bool { return !isDNSLabel(l) }) {
		return invalid("cluster %q is not <port>.<meshservice>.<namespace> (three DNS labels)", cluster)
	}
	return nil
}

func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return false
		}
	}
	return true
}

// destinationsOf reads the destinations a filter chain matches: each prefix range (a whole
// address) on the destination port.
func destinationsOf(match *listenerv3.FilterChainMatch) ([]netip.AddrPort, error) {
	switch {
	case match == nil:
		return nil, invalid("no filter_chain_match: the chain would match every destination")
	case len(match.GetDirectSourcePrefixRanges()) > 0, len(match.GetSourcePrefixRanges()) > 0, len(match.GetSourcePorts()) > 0,
		match.GetSourceType() != listenerv3.FilterChainMatch_ANY, len(match.GetServerNames()) > 0,
		match.GetTransportProtocol() != "", len(match.GetApplicationProtocols()) > 0, match.GetAddressSuffix() != "",
		match.GetSuffixLen() != nil:
		return nil, invalid("the match may only name destination prefix ranges and a destination port")
	}
	port := match.GetDestinationPort()
	if port == nil || port.GetValue() == 0 || port.GetValue() > 65535 {
		return nil, invalid("destination port must be 1 to 65535")
	}
	ranges := match.GetPrefixRanges()
	if len(ranges) == 0 {
		return nil, invalid("no prefix ranges: the chain would match every address")
	}
	out := make([]netip.AddrPort, 0, len(ranges))
	for _, r := range ranges {
		addr, err := netip.ParseAddr(r.GetAddressPrefix())
		if err != nil || addr.Zone() != "" || addr.Is4In6() {
			return nil, invalid("prefix %q is not an IPv4 or IPv6 address", r.GetAddressPrefix())
		}
		if r.GetPrefixLen() == nil || r.GetPrefixLen().GetValue() != uint32(addr.BitLen()) {
			return nil, invalid("prefix %s/%d is not a single address (/%d)", addr, r.GetPrefixLen().GetValue(), addr.BitLen())
		}
		out = append(out, netip.AddrPortFrom(addr, uint16(port.GetValue())))
	}
	return out, nil
}

// SortChains orders chains by cluster and port (stably), so that Build's output (and
// which chain keeps a contested destination) does not depend on map order.
func SortChains(chains []Chain) {
	slices.SortStableFunc(chains, func(a, b Chain) int {
		return cmp.Or(cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(a.Port, b.Port))
	})
}
