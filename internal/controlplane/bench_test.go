package controlplane_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshlift/meshlift/internal/controlplane"
)

// BenchmarkTimeToFirstCertificate measures what a starting proxy waits for its certificate
// (ARCHITECTURE.md section 9: p99 < 50 ms with a warm token cache): a new connection (TCP and
// TLS handshake), a new ADS stream with its token, the first request with a CSR, and the
// response. The token was reviewed once before, as when a proxy restarts in its pod. It runs
// against envtest because the token must be a real one, bound to a real pod.
func BenchmarkTimeToFirstCertificate(b *testing.B) {
	cp := startControlPlane(b, controlplane.Options{})
	a := cp.workload(b, env.Namespace(b, "bench"), "a-1", "a", "a")
	_, csr := newCSR(b, nil, a.spiffeID())
	creds := credentials.NewTLS(&tls.Config{RootCAs: cp.holder.Current().Roots(), ServerName: serverName(), MinVersion: tls.VersionTLS13})
	request := certificateRequest(a.pod, csr)

	firstCertificate := func() time.Duration {
		start := time.Now()
		conn, err := grpc.NewClient(cp.server.Addr().String(), grpc.WithTransportCredentials(creds))
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+a.token), timeout)
		defer cancel()
		stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := stream.Send(request); err != nil {
			b.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		if len(resp.GetResources()) != 2 {
			b.Fatalf("the first response has %d resources, want the certificate and the bundle", len(resp.GetResources()))
		}
		return elapsed
	}
	firstCertificate() // warms the token cache

	durations := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		durations = append(durations, firstCertificate())
	}
	b.StopTimer()
	reportPercentiles(b, durations)
}

// BenchmarkTimeToFirstCertificateUnderFlood measures the time to first certificate of real
// proxies while one client floods the server with bad tokens, and without the flood
// (ARCHITECTURE.md section 9: p99 < 50 ms with a warm token cache). Everything runs on the
// loopback network: the flooding client dials from 127.0.0.2, the real proxies from addresses
// of 127.0.1.0/24, as pods have IPs of their own. The flood opens ADS streams from 16
// goroutines over 2 connections as fast as they are answered, with in turn a token that is not
// a JWT, a real token for another audience, a real token past its exp, the same forged token
// again and a new forged token (which only the API server can refuse, within the client's
// share). The warm sub-benchmarks reuse a token reviewed before (a proxy restarting in its
// pod); the cold ones bring a new token each time, so each costs a TokenReview: what the flood
// would delay if it could spend the TokenReview budget. Besides the percentiles, the flood
// sub-benchmarks report how many flood streams were refused per second and how many
// TokenReviews per second reached the API server.
func BenchmarkTimeToFirstCertificateUnderFlood(b *testing.B) {
	cp, reviews := startCountedControlPlane(b, controlplane.Options{})
	a := cp.workload(b, env.Namespace(b, "flood"), "a-1", "a", "a")
	_, csr := newCSR(b, nil, a.spiffeID())
	request := certificateRequest(a.pod, csr)
	creds := credentials.NewTLS(&tls.Config{RootCAs: cp.holder.Current().Roots(), ServerName: serverName(), MinVersion: tls.VersionTLS13})
	address := cp.server.Addr().String()

	var proxies atomic.Uint32
	firstCertificate := func(token string) time.Duration {
		// Each proxy its own address, so that none exhausts the share of one.
		from := fmt.Sprintf("127.0.1.%d", 1+proxies.Add(1)%250)
		start := time.Now()
		conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(creds), grpc.WithContextDialer(dialerFrom(from)))
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token), timeout)
		defer cancel()
		stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := stream.Send(request); err != nil {
			b.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			b.Fatalf("a real proxy got no certificate: %v", err)
		}
		elapsed := time.Since(start)
		if len(resp.GetResources()) != 2 {
			b.Fatalf("the first response has %d resources, want the certificate and the bundle", len(resp.GetResources()))
		}
		return elapsed
	}
	firstCertificate(a.token) // warms the token cache

	wrongAudience := mintToken(b, a.pod, "vault")
	expired := withClaims(b, a.token, func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() })
	repeated := forgedToken(b, a.pod)
	badToken := func(i int) string {
		switch i % 5 {
		case 0:
			return "not-a-jwt"
		case 1:
			return wrongAudience
		case 2:
			return expired
		case 3:
			return repeated
		}
		return forgedToken(b, a.pod)
	}
	// flood runs until stop is called, which returns how many flood streams were refused.
	flood := func(b *testing.B) (stop func() int64) {
		ctx, cancel := context.WithCancel(context.Background())
		conns := []*grpc.ClientConn{cp.dialFrom(b, "127.0.0.2"), cp.dialFrom(b, "127.0.0.2")}
		var refused atomic.Int64
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() {
				client := discoveryv3.NewAggregatedDiscoveryServiceClient(conns[g%len(conns)])
				for i := g; ctx.Err() == nil; i += 16 {
					streamCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+badToken(i))
					stream, err := client.StreamAggregatedResources(streamCtx)
					if err != nil {
						continue
					}
					_ = stream.Send(request)
					if _, err := stream.Recv(); err == nil {
						b.Error("a bad token got a response")
						return
					} else if code := status.Code(err); code == codes.Unauthenticated || code == codes.ResourceExhausted {
						refused.Add(1)
					}
				}
			})
		}
		for deadline := time.Now().Add(timeout); refused.Load() < 100; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatal("the flood is not being refused")
			}
		}
		return func() int64 {
			cancel()
			wg.Wait()
			for _, conn := range conns {
				_ = conn.Close()
			}
			return refused.Load()
		}
	}
	run := func(b *testing.B, withFlood bool, nextToken func() string) {
		tokens := make([]string, b.N)
		for i := range tokens {
			tokens[i] = nextToken()
		}
		var stop func() int64
		if withFlood {
			stop = flood(b)
		}
		reviewsBefore := reviews.count.Load()
		durations := make([]time.Duration, 0, b.N)
		started := time.Now()
		b.ResetTimer()
		for i := range b.N {
			durations = append(durations, firstCertificate(tokens[i]))
		}
		b.StopTimer()
		elapsed := time.Since(started).Seconds()
		reportPercentiles(b, durations)
		if withFlood {
			reviewed := reviews.count.Load() - reviewsBefore
			b.ReportMetric(float64(stop())/elapsed, "flood-refused/s")
			b.ReportMetric(float64(reviewed)/elapsed, "token-reviews/s")
		}
	}
	warm := func() string { return a.token }
	cold := func() string { return mintToken(b, a.pod, "meshlift") }
	b.Run("warm", func(b *testing.B) { run(b, false, warm) })
	b.Run("warm-flood", func(b *testing.B) { run(b, true, warm) })
	b.Run("cold", func(b *testing.B) { run(b, false, cold) })
	b.Run("cold-flood", func(b *testing.B) { run(b, true, cold) })
}

// reportPercentiles reports the median and the 99th percentile of durations in milliseconds.
func reportPercentiles(b *testing.B, durations []time.Duration) {
	slices.Sort(durations)
	percentile := func(p float64) float64 {
		return float64(durations[int(p*float64(len(durations)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(percentile(0.5), "p50-ms")
	b.ReportMetric(percentile(0.99), "p99-ms")
}
