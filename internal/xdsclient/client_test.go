package xdsclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshlift/meshlift/internal/identity"
)

// The client is tested against a small ADS server written here with the same go-control-plane
// types over real gRPC and TLS: it lets the test script what the server sends (bad resources,
// dropped streams) in ways the operator's server never would. The operator's own server is
// tested with this client in internal/controlplane and in the proxy's process tests.

const testID = "spiffe://example.org/ns/shop/sa/cart"

type scriptServer struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	authority *identity.Authority
	t         *testing.T

	mu      sync.Mutex
	acks    []*discoveryv3.DiscoveryRequest
	streams chan discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer
	done    chan struct{}
}

func (s *scriptServer) StreamAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer token-1" {
		return status.Error(codes.Unauthenticated, "bad token")
	}
	s.streams <- stream
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		s.mu.Lock()
		s.acks = append(s.acks, req)
		s.mu.Unlock()
	}
}

func (s *scriptServer) requests() []*discoveryv3.DiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*discoveryv3.DiscoveryRequest(nil), s.acks...)
}

type recorder struct {
	mu        sync.Mutex
	certs     []*Certificate
	bundles   [][]byte
	endpoints map[string][]Endpoint
	// synced counts EDS responses applied whole.
	synced  int
	changed chan struct{}
}

func newRecorder() *recorder {
	return &recorder{endpoints: map[string][]Endpoint{}, changed: make(chan struct{}, 100)}
}

func (r *recorder) Certificate(c *Certificate) error {
	r.mu.Lock()
	r.certs = append(r.certs, c)
	r.mu.Unlock()
	r.changed <- struct{}{}
	return nil
}

func (r *recorder) TrustBundle(b []byte) error {
	r.mu.Lock()
	r.bundles = append(r.bundles, b)
	r.mu.Unlock()
	r.changed <- struct{}{}
	return nil
}

func (r *recorder) Endpoints(a Assignment) error {
	r.mu.Lock()
	r.endpoints[a.Cluster] = a.Endpoints
	r.mu.Unlock()
	r.changed <- struct{}{}
	return nil
}

func (r *recorder) EndpointsSynced() {
	r.mu.Lock()
	r.synced++
	r.mu.Unlock()
	r.changed <- struct{}{}
}

func (r *recorder) wait(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("timed out waiting for the handler")
		}
	}
}

type fixture struct {
	server    *scriptServer
	address   string
	caFile    string
	tokenFile string
	grpc      *grpc.Server
}

func start(t *testing.T) *fixture {
	t.Helper()
	now := time.Now()
	rootPEM, keyPEM, err := identity.NewRoot("example.org", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	authority, err := identity.NewAuthority(rootPEM, keyPEM, nil, rootPEM)
	if err != nil {
		t.Fatal(err)
	}
	serverKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serving, err := authority.SignServing(&serverKey.PublicKey, []string{"control-plane.test"}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{serving.Cert.Raw}, PrivateKey: serverKey}
	dir := t.TempDir()
	f := &fixture{caFile: filepath.Join(dir, "ca.crt"), tokenFile: filepath.Join(dir, "token")}
	if err := os.WriteFile(f.caFile, rootPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.tokenFile, []byte("token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.address = lis.Addr().String()
	f.server = &scriptServer{authority: authority, t: t, streams: make(chan discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer, 10)}
	f.grpc = grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(f.grpc, f.server)
	go func() { _ = f.grpc.Serve(lis) }()
	t.Cleanup(f.grpc.Stop)
	return f
}

func (f *fixture) client(t *testing.T) *Client {
	t.Helper()
	c, err := New(Options{
		Address: f.address, ServerName: "control-plane.test", CAFile: f.caFile, TokenFile: f.tokenFile,
		PodName: "cart-0", Namespace: "shop", MeshService: "cart", Version: "v1", Slot: 1, SPIFFEID: testID,
		Clusters: []string{"http.api.shop"}, Logger: testr.New(t), MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fixture) signedSecret(t *testing.T, first *discoveryv3.DiscoveryRequest) *anypb.Any {
	t.Helper()
	csrPEM := first.GetNode().GetMetadata().GetFields()[MetaCSR].GetStringValue()
	csr, err := identity.ValidateCSR([]byte(csrPEM), testID)
	if err != nil {
		t.Fatalf("the client's CSR is refused: %v", err)
	}
	leaf, err := f.server.authority.SignWorkload(csr.PublicKey, testID, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return secretAny(t, &tlsv3.Secret{Name: SecretCertificate, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inline(leaf.ChainPEM),
	}}})
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func secretAny(t *testing.T, s *tlsv3.Secret) *anypb.Any {
	a, err := anypb.New(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func bundleAny(t *testing.T, pemBytes []byte) *anypb.Any {
	return secretAny(t, &tlsv3.Secret{Name: SecretTrustBundle, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: inline(pemBytes),
	}}})
}

func assignmentAny(t *testing.T, cluster string, addrs ...string) *anypb.Any {
	t.Helper()
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster, Endpoints: []*endpointv3.LocalityLbEndpoints{{}}}
	for _, addr := range addrs {
		cla.Endpoints[0].LbEndpoints = append(cla.Endpoints[0].LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 15006},
				}},
			}}},
			HealthStatus: corev3.HealthStatus_HEALTHY,
			Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{IdentityMetadataKey: {Fields: map[string]*structpb.Value{
				"identity": structpb.NewStringValue("spiffe://example.org/ns/shop/sa/api"),
			}}}},
		})
	}
	a, err := anypb.New(cla)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func send(t *testing.T, stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer, typeURL, version string, res ...*anypb.Any) {
	t.Helper()
	if err := stream.Send(&discoveryv3.DiscoveryResponse{TypeUrl: typeURL, VersionInfo: version, Nonce: "n-" + version, Resources: res}); err != nil {
		t.Fatal(err)
	}
}

func waitRequest(t *testing.T, s *scriptServer, match func(*discoveryv3.DiscoveryRequest) bool) *discoveryv3.DiscoveryRequest {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range s.requests() {
			if match(r) {
				return r
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("timed out waiting for a request")
	return nil
}

func TestClientGetsItsCertificateAndEndpointsAndAcks(t *testing.T) {
	f := start(t)
	c := f.client(t)
	rec := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx, rec) }()
	stream := <-f.server.streams

	first := waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == TypeSecret })
	if got := first.GetNode().GetId(); got != "cart-0.shop" {
		t.Errorf("node id %q, want cart-0.shop", got)
	}
	if got := first.GetResourceNames(); len(got) != 2 || got[0] != SecretCertificate || got[1] != SecretTrustBundle {
		t.Errorf("secret names %v", got)
	}
	eds := waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == TypeAssignment })
	if got := eds.GetResourceNames(); len(got) != 1 || got[0] != "http.api.shop" {
		t.Errorf("cluster names %v", got)
	}

	send(t, stream, TypeSecret, "1", f.signedSecret(t, first), bundleAny(t, f.server.authority.TrustBundle()))
	send(t, stream, TypeAssignment, "7", assignmentAny(t, "http.api.shop", "10.244.0.5", "10.244.0.6"))
	rec.wait(t, func() bool {
		return len(rec.certs) == 1 && len(rec.bundles) == 1 && len(rec.endpoints["http.api.shop"]) == 2 && rec.synced == 1
	})
	// A response with no clusters (none of the requested ones exists) is a sync too.
	send(t, stream, TypeAssignment, "8")
	rec.wait(t, func() bool { return rec.synced == 2 })
	if rec.certs[0].Key != c.Key() {
		t.Error("the certificate is not paired with the proxy's own key")
	}
	if got := rec.endpoints["http.api.shop"][0]; got.Address != "10.244.0.5:15006" || got.Identity != "spiffe://example.org/ns/shop/sa/api" {
		t.Errorf("endpoint %+v", got)
	}
	waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetTypeUrl() == TypeSecret && r.GetVersionInfo() == "1" && r.GetResponseNonce() == "n-1" && r.GetErrorDetail() == nil
	})
	waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetTypeUrl() == TypeAssignment && r.GetVersionInfo() == "7" && r.GetErrorDetail() == nil
	})
	if !c.Connected() {
		t.Error("client does not report itself connected")
	}
}

func TestClientNacksABadResponseAndKeepsWhatItHad(t *testing.T) {
	f := start(t)
	c := f.client(t)
	rec := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx, rec) }()
	stream := <-f.server.streams
	first := waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == TypeSecret })
	send(t, stream, TypeSecret, "1", f.signedSecret(t, first))
	rec.wait(t, func() bool { return len(rec.certs) == 1 })

	// A certificate for another key, then a good bundle together with garbage.
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, _ := f.server.authority.SignWorkload(&otherKey.PublicKey, testID, time.Hour, time.Now())
	foreign := secretAny(t, &tlsv3.Secret{Name: SecretCertificate, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{CertificateChain: inline(leaf.ChainPEM)}}})
	send(t, stream, TypeSecret, "2", foreign)
	send(t, stream, TypeSecret, "3", bundleAny(t, f.server.authority.TrustBundle()), bundleAny(t, []byte("not pem")))
	send(t, stream, TypeAssignment, "4", assignmentAny(t, "http.other.shop", "10.244.0.9"))

	for _, version := range []string{"2", "3"} {
		nack := waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool {
			return r.GetResponseNonce() == "n-"+version
		})
		if nack.GetErrorDetail() == nil || nack.GetVersionInfo() != "1" {
			t.Errorf("response %s: got version %q error %v, want a NACK that keeps version 1", version, nack.GetVersionInfo(), nack.GetErrorDetail())
		}
	}
	nack := waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool { return r.GetResponseNonce() == "n-4" })
	if nack.GetErrorDetail() == nil || nack.GetVersionInfo() != "" {
		t.Errorf("an unrequested cluster was not NACKed: %v", nack)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.certs) != 1 || len(rec.bundles) != 0 || len(rec.endpoints) != 0 || rec.synced != 0 {
		t.Errorf("a refused response reached the handler: %d certs, %d bundles, %d clusters, %d syncs", len(rec.certs), len(rec.bundles), len(rec.endpoints), rec.synced)
	}
}

func TestClientReconnectsAndRereadsItsToken(t *testing.T) {
	f := start(t)
	// No token accepted at first: the server refuses, the client retries.
	if err := os.WriteFile(f.tokenFile, []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := f.client(t)
	rec := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, rec) }()
	time.Sleep(200 * time.Millisecond)
	if err := os.WriteFile(f.tokenFile, []byte("token-1"), 0o600); err != nil {
		t.Fatal(err)
	}
	stream := <-f.server.streams
	first := waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == TypeSecret })
	send(t, stream, TypeSecret, "1", f.signedSecret(t, first))
	rec.wait(t, func() bool { return len(rec.certs) == 1 })
	// The ACK of that response is the last Secret request of the first stream: once it is here,
	// no request of that stream can be taken for one of the next.
	waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetTypeUrl() == TypeSecret && r.GetVersionInfo() == "1"
	})

	// The server drops every stream; the client comes back on a new one.
	f.server.mu.Lock()
	f.server.acks = nil
	f.server.mu.Unlock()
	f.grpc.Stop()
	rec.wait(t, func() bool { return !c.Connected() })
	lis, err := net.Listen("tcp", f.address)
	if err != nil {
		t.Fatalf("cannot listen on %s again: %v", f.address, err)
	}
	g := grpc.NewServer(grpc.Creds(f.grpc2Creds(t)))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, f.server)
	go func() { _ = g.Serve(lis) }()
	defer g.Stop()
	stream = <-f.server.streams
	again := waitRequest(t, f.server, func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == TypeSecret })
	if again.GetNode() == nil {
		t.Fatal("the first request of a new stream has no node")
	}
	send(t, stream, TypeSecret, "2", f.signedSecret(t, again))
	rec.wait(t, func() bool { return len(rec.certs) == 2 })
	rec.mu.Lock()
	if !rec.certs[0].Leaf.PublicKey.(*ecdsa.PublicKey).Equal(rec.certs[1].Leaf.PublicKey) {
		t.Error("the key changed across reconnects; it lives as long as the process")
	}
	rec.mu.Unlock()
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v", err)
	}
}

// grpc2Creds re-signs a serving certificate for a restarted server.
func (f *fixture) grpc2Creds(t *testing.T) credentials.TransportCredentials {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serving, err := f.server.authority.SignServing(&key.PublicKey, []string{"control-plane.test"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{serving.Cert.Raw}, PrivateKey: key}}})
}

func TestNewRefusesIncompleteOptions(t *testing.T) {
	for name, opts := range map[string]Options{
		"no address":           {CAFile: "a", TokenFile: "b", SPIFFEID: testID},
		"not a SPIFFE ID":      {Address: "x:1", CAFile: "a", TokenFile: "b", SPIFFEID: "https://x"},
		"address without port": {Address: "x", CAFile: "a", TokenFile: "b", SPIFFEID: testID},
	} {
		if _, err := New(opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCSRAsksForExactlyTheProxyIdentity(t *testing.T) {
	c, err := New(Options{Address: "x:1", CAFile: "a", TokenFile: "b", SPIFFEID: testID})
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(c.csrPEM)
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := identity.ValidateCSR(c.csrPEM, testID); err != nil {
		t.Errorf("the operator would refuse this CSR: %v", err)
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != testID {
		t.Errorf("CSR URIs %v", csr.URIs)
	}
}
