package xdsclient

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr/testr"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlift/meshlift/internal/outbound"
)

// listenerAny is the outbound routes listener of chains.
func listenerAny(t *testing.T, chains ...outbound.Chain) *anypb.Any {
	t.Helper()
	listener, _, err := outbound.Build(chains)
	if err != nil {
		t.Fatal(err)
	}
	a, err := anypb.New(listener)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func route(cluster, protocol string, port uint16, ips ...string) outbound.Chain {
	c := outbound.Chain{Route: outbound.Route{Cluster: cluster, Protocol: protocol}, Port: port}
	for _, ip := range ips {
		c.Addrs = append(c.Addrs, netip.MustParseAddr(ip))
	}
	return c
}

// outboundClient is f.client subscribed to the outbound routes, handing each table to tables.
func (f *fixture) outboundClient(t *testing.T, tables chan<- *outbound.Table) *Client {
	t.Helper()
	c, err := New(Options{
		Address: f.address, ServerName: "control-plane.test", CAFile: f.caFile, TokenFile: f.tokenFile,
		PodName: "cart-0", Namespace: "shop", MeshService: "cart", Version: "v1", Slot: 1, SPIFFEID: testID,
		Logger: testr.New(t), MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		OnOutboundRoutes: func(table *outbound.Table) error {
			tables <- table
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func nextTable(t *testing.T, tables <-chan *outbound.Table) *outbound.Table {
	t.Helper()
	select {
	case table := <-tables:
		return table
	case <-time.After(20 * time.Second):
		t.Fatal("the callback got no outbound routes")
	}
	return nil
}

func TestClientHandsOverEachAcceptedVersionOfTheOutboundRoutesAndNacksABadOne(t *testing.T) {
	f := start(t)
	tables := make(chan *outbound.Table, 10)
	c := f.outboundClient(t, tables)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx, newRecorder()) }()
	stream := <-f.server.streams

	subscribed := waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == TypeListener })
	if got := subscribed.GetResourceNames(); !slices.Equal(got, []string{outbound.ListenerName}) {
		t.Fatalf("the client asked for listeners %v, want only %s", got, outbound.ListenerName)
	}

	send(t, stream, TypeListener, "1", listenerAny(t, route("http.api.shop", "HTTP", 80, "10.96.0.10"), route("http.api.shop", "HTTP", 8080, "10.1.0.1")))
	table := nextTable(t, tables)
	if got, ok := table.Lookup(netip.MustParseAddrPort("10.96.0.10:80")); !ok || got != (outbound.Route{Cluster: "http.api.shop", Protocol: "HTTP"}) {
		t.Fatalf("10.96.0.10:80 routes to %+v, %v", got, ok)
	}
	if _, ok := table.Lookup(netip.MustParseAddrPort("10.96.0.10:8080")); ok {
		t.Fatal("a destination the listener does not name is routed")
	}
	waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetTypeUrl() == TypeListener && r.GetVersionInfo() == "1" && r.GetResponseNonce() == "n-1" && r.GetErrorDetail() == nil &&
			slices.Equal(r.GetResourceNames(), []string{outbound.ListenerName})
	})

	// A listener whose chain routes to something that is not a mesh cluster: NACKed with the
	// version the client keeps, and the callback is not called.
	send(t, stream, TypeListener, "2", listenerAny(t, route("api", "HTTP", 80, "10.96.0.10")))
	nack := waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetTypeUrl() == TypeListener && r.GetResponseNonce() == "n-2"
	})
	if nack.GetErrorDetail() == nil || nack.GetVersionInfo() != "1" || !strings.Contains(nack.GetErrorDetail().GetMessage(), `cluster "api" is not`) {
		t.Fatalf("the bad listener was answered with version %q and error %v; want a NACK keeping version 1 that says why", nack.GetVersionInfo(), nack.GetErrorDetail())
	}
	// Two listeners are refused too.
	send(t, stream, TypeListener, "3", listenerAny(t), listenerAny(t))
	waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetResponseNonce() == "n-3" && r.GetErrorDetail() != nil && r.GetVersionInfo() == "1"
	})

	// No listener at all: nothing is routed.
	send(t, stream, TypeListener, "4")
	if table := nextTable(t, tables); table.Len() != 0 {
		t.Fatalf("an empty response gave %d destinations", table.Len())
	}
	select {
	case table := <-tables:
		t.Fatalf("a refused version reached the callback (%d destinations)", table.Len())
	default:
	}
}

func TestAClientThatDoesNotAskForTheOutboundRoutesRefusesThem(t *testing.T) {
	f := start(t)
	c := f.client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx, newRecorder()) }()
	stream := <-f.server.streams
	waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == TypeAssignment })

	send(t, stream, TypeListener, "1", listenerAny(t, route("http.api.shop", "HTTP", 80, "10.96.0.10")))
	nack := waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool { return r.GetResponseNonce() == "n-1" })
	if nack.GetErrorDetail() == nil {
		t.Fatal("a client that did not subscribe accepted the outbound routes")
	}
	for _, r := range f.server.requests() {
		if r.GetTypeUrl() == TypeListener && r.GetResponseNonce() == "" {
			t.Fatalf("the client subscribed to listeners %v without OnOutboundRoutes", r.GetResourceNames())
		}
	}
}

func TestAClientSubscribesToTheEndpointsOfEveryClusterItsOutboundRoutesName(t *testing.T) {
	f := start(t)
	tables := make(chan *outbound.Table, 10)
	c := f.outboundClient(t, tables)
	rec := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx, rec) }()
	stream := <-f.server.streams
	waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == TypeListener })
	for _, r := range f.server.requests() {
		if r.GetTypeUrl() == TypeAssignment {
			t.Fatalf("a client without upstreams subscribed to endpoints %v before it had routes", r.GetResourceNames())
		}
	}

	send(t, stream, TypeListener, "1", listenerAny(t,
		route("http.api.shop", "HTTP", 80, "10.96.0.10"), route("tcp.db.shop", "TCP", 5432, "10.96.0.11")))
	nextTable(t, tables)
	eds := waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == TypeAssignment })
	if got, want := eds.GetResourceNames(), []string{"http.api.shop", "tcp.db.shop"}; !slices.Equal(got, want) {
		t.Fatalf("the client subscribed to endpoints %v, want %v", got, want)
	}

	// A response that lacks one of them answers an older subscription: applied, not synced.
	send(t, stream, TypeAssignment, "1", assignmentAny(t, "http.api.shop", "10.244.0.5"))
	rec.wait(t, func() bool { return len(rec.endpoints["http.api.shop"]) == 1 })
	if rec.synced != 0 {
		t.Fatal("a response without every subscribed cluster synced the endpoints")
	}
	send(t, stream, TypeAssignment, "2", assignmentAny(t, "http.api.shop", "10.244.0.5"), assignmentAny(t, "tcp.db.shop"))
	rec.wait(t, func() bool { return rec.synced == 1 })

	// A new table adds its new cluster to the subscription, acknowledging the endpoints held.
	send(t, stream, TypeListener, "2", listenerAny(t, route("grpc.ledger.bank", "GRPC", 9090, "10.96.1.1")))
	nextTable(t, tables)
	grown := waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetTypeUrl() == TypeAssignment && len(r.GetResourceNames()) == 3
	})
	if got, want := grown.GetResourceNames(), []string{"http.api.shop", "tcp.db.shop", "grpc.ledger.bank"}; !slices.Equal(got, want) || grown.GetVersionInfo() != "2" || grown.GetResponseNonce() != "n-2" {
		t.Fatalf("the grown subscription is %v at version %q nonce %q; want %v at 2, n-2", got, grown.GetVersionInfo(), grown.GetResponseNonce(), want)
	}
}
