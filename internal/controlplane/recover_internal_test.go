package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshlift/meshlift/internal/identity"
)

// panicToken looks like a projected token (it passes caller.Precheck), so it reaches the
// reviewer.
var panicToken = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256"}`)) + "." +
	base64.RawURLEncoding.EncodeToString([]byte(`{"aud":["meshlift"],"exp":9999999999,"jti":"make-the-reviewer-panic",`+
		`"kubernetes.io":{"namespace":"shop","pod":{"name":"web-1","uid":"u-1"}}}`)) + ".c2lnbmF0dXJl"

// panickingReviewer panics on panicToken, the way a bug anywhere under a stream's handler
// would; any other token it rejects.
type panickingReviewer struct{}

func (panickingReviewer) Create(_ context.Context, review *authenticationv1.TokenReview, _ metav1.CreateOptions) (*authenticationv1.TokenReview, error) {
	if review.Spec.Token == panicToken {
		panic("the token reviewer broke")
	}
	review.Status = authenticationv1.TokenReviewStatus{Authenticated: false, Error: "unknown token"}
	return review, nil
}

// A stream whose handler panics ends with Internal, the panic is logged with its stack and
// counted, and the server (and the process) goes on serving other streams. The real server
// runs on loopback over TLS; the panic comes from inside its ADS handler, in the token review.
func TestAStreamThatPanicsEndsAloneWithInternal(t *testing.T) {
	logged := &logLines{}
	holder := identity.NewHolder()
	holder.Set(testAuthority(t))
	s, err := New(Options{Address: "127.0.0.1:0", Namespace: "meshlift-system"}, nil, panickingReviewer{}, holder, logged.logger())
	if err != nil {
		t.Fatal(err)
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, listener) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("the server stopped with an error: %v", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for s.Ready(nil) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the server got no serving certificate")
		}
		time.Sleep(10 * time.Millisecond)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(holder.Current().TrustBundle())
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: s.opts.DNSNames()[0], MinVersion: tls.VersionTLS13})
	conn, err := grpc.NewClient(listener.Addr().String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	const method = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
	panicsBefore := panicsCounted(t, method)

	// openAndWait opens an ADS stream with token and returns how it ended.
	openAndWait := func(token string) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token), 10*time.Second)
		defer cancel()
		stream, err := ads.StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = stream.Recv()
		return err
	}

	if err := openAndWait(panicToken); status.Code(err) != codes.Internal {
		t.Fatalf("the stream whose handler panicked ended with %v, want Internal", err)
	}
	if got := panicsCounted(t, method) - panicsBefore; got != 1 {
		t.Errorf("handler panics counted: %v, want 1", got)
	}
	lines := logged.matching("Recovered from a panic in a control-plane handler")
	if len(lines) != 1 || !strings.Contains(lines[0], method) || !strings.Contains(lines[0], "the token reviewer broke") ||
		!strings.Contains(lines[0], "panickingReviewer.Create") {
		t.Errorf("want one error log with the method, the panic and its stack; got:\n%s", strings.Join(lines, "\n"))
	}

	// The same server, on the same connection and on a new one, still serves: the next stream
	// is authenticated (and refused) as usual.
	if err := openAndWait("another-token"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("the next stream ended with %v, want the usual Unauthenticated refusal", err)
	}
	fresh, err := grpc.NewClient(listener.Addr().String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fresh.Close() })
	ads = discoveryv3.NewAggregatedDiscoveryServiceClient(fresh)
	if err := openAndWait(panicToken); status.Code(err) != codes.Internal {
		t.Fatalf("a second panicking stream ended with %v, want Internal", err)
	}
	if err := openAndWait("another-token"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("the stream after it ended with %v, want the usual Unauthenticated refusal", err)
	}
}

// panickingHealth is a unary service whose handler panics for the service "panic". The
// control plane serves no unary method of its own (FetchSecrets is Unimplemented), so the
// unary interceptor is tested on a service of the test's own, in a server with the control
// plane's options.
type panickingHealth struct {
	healthpb.UnimplementedHealthServer
}

func (panickingHealth) Check(_ context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if req.GetService() == "panic" {
		panic(errors.New("the health check broke"))
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func TestAUnaryCallThatPanicsFailsAloneWithInternal(t *testing.T) {
	logged := &logLines{}
	s, err := New(Options{Namespace: "meshlift-system"}, nil, panickingReviewer{}, identity.NewHolder(), logged.logger())
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer(s.grpcOptions(insecure.NewCredentials())...)
	healthpb.RegisterHealthServer(server, panickingHealth{})
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	conn, err := grpc.NewClient(listener.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	health := healthpb.NewHealthClient(conn)
	const method = "/grpc.health.v1.Health/Check"
	panicsBefore := panicsCounted(t, method)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "panic"}); status.Code(err) != codes.Internal {
		t.Fatalf("the call whose handler panicked failed with %v, want Internal", err)
	}
	if got := panicsCounted(t, method) - panicsBefore; got != 1 {
		t.Errorf("handler panics counted: %v, want 1", got)
	}
	if lines := logged.matching("Recovered from a panic in a control-plane handler"); len(lines) != 1 || !strings.Contains(lines[0], "panickingHealth.Check") {
		t.Errorf("want one error log with the stack; got:\n%s", strings.Join(lines, "\n"))
	}
	resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "ok"})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("the next call = %v, %v; want SERVING", resp, err)
	}
}

// panicsCounted reads the handler panics counted for method.
func panicsCounted(t *testing.T, method string) float64 {
	t.Helper()
	m := &dto.Metric{}
	if err := handlerPanics.WithLabelValues(method).Write(m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// testAuthority is a fresh built-in mesh CA.
func testAuthority(t *testing.T) *identity.Authority {
	t.Helper()
	certPEM, keyPEM, err := identity.NewRoot("test.local", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	authority, err := identity.NewAuthority(certPEM, keyPEM, nil, certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return authority
}

// logLines collects what a logger writes.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logger() logr.Logger {
	return funcr.New(func(_, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, args)
	}, funcr.Options{})
}

// matching returns the lines that contain part.
func (l *logLines) matching(part string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(l.lines), func(line string) bool { return !strings.Contains(line, part) })
}
