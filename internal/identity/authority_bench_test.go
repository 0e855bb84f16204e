package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"runtime"
	"testing"
	"time"
)

// BenchmarkSignWorkloadParallel signs leaves from GOMAXPROCS goroutines at once, as the SDS
// server does when many proxies connect together, and reports the throughput in leaves per
// second, in total and per core (target: at least 5,000 per core).
func BenchmarkSignWorkloadParallel(b *testing.B) {
	now := time.Now()
	certPEM, keyPEM, err := NewRoot("example.org", time.Hour, now)
	if err != nil {
		b.Fatal(err)
	}
	a, err := NewAuthority(certPEM, keyPEM, nil, certPEM)
	if err != nil {
		b.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	id := SPIFFEID("example.org", "shop", "cart")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.SignWorkload(&key.PublicKey, id, time.Hour, now); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if seconds := b.Elapsed().Seconds(); seconds > 0 {
		leavesPerSecond := float64(b.N) / seconds
		b.ReportMetric(leavesPerSecond, "leaves/s")
		b.ReportMetric(leavesPerSecond/float64(runtime.GOMAXPROCS(0)), "leaves/s/core")
	}
}
