package controlplane_test

import (
	"context"
	"crypto/tls"
	"slices"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

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
	slices.Sort(durations)
	percentile := func(p float64) float64 {
		return float64(durations[int(p*float64(len(durations)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(percentile(0.5), "p50-ms")
	b.ReportMetric(percentile(0.99), "p99-ms")
}
