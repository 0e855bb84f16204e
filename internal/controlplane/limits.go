package controlplane

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	utilcache "k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/utils/clock"
)

// Reasons of the refusals that protect the server rather than the mesh identity: the caller is
// not refused for who it is but for how much it asks at once, so they end the stream with
// ResourceExhausted and the caller retries later.
const (
	// reasonPeerStreamLimit: the caller's address has MaxUnauthenticatedStreamsPerPeer streams
	// being authenticated already.
	reasonPeerStreamLimit = "PeerStreamLimit"
	// reasonStreamLimit: the replica has MaxUnauthenticatedStreams streams being authenticated.
	reasonStreamLimit = "StreamLimit"
	// reasonPeerTokenReviewLimit: the caller's address used its share of TokenReviews
	// (PeerTokenReviewQPS, PeerTokenReviewBurst).
	reasonPeerTokenReviewLimit = "PeerTokenReviewLimit"
	// reasonPeerRefusalLimit: the caller's address had more streams refused than its budget
	// (PeerRefusalQPS, PeerRefusalBurst) allows; its new streams are refused as they arrive,
	// before any handler runs, until the budget refills.
	reasonPeerRefusalLimit = "PeerRefusalLimit"
)

// limitError is a refusal of a caller that asks too much at once.
type limitError struct {
	reason  string
	message string
}

func (e *limitError) Error() string { return e.reason + ": " + e.message }

// GRPCStatus makes gRPC send the error as ResourceExhausted.
func (e *limitError) GRPCStatus() *status.Status {
	return status.New(codes.ResourceExhausted, e.Error())
}

func limited(reason, format string, args ...any) *limitError {
	return &limitError{reason: reason, message: fmt.Sprintf(format, args...)}
}

// peerOf is the address a stream comes from, without its port: the unit the per-peer limits
// count (a pod has one IP; its proxies and any other process in it share it).
func peerOf(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	if tcp, ok := p.Addr.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return host
	}
	return p.Addr.String()
}

// admission bounds the streams that are being authenticated (from the stream's start to the
// API server's verdict on its token), per peer and in total, so that no caller can hold an
// unbounded number of goroutines, TokenReviews or places in the TokenReview client's queue.
type admission struct {
	maxPerPeer, maxTotal int

	mu      sync.Mutex
	total   int
	perPeer map[string]int
}

func newAdmission(maxPerPeer, maxTotal int) *admission {
	return &admission{maxPerPeer: maxPerPeer, maxTotal: maxTotal, perPeer: map[string]int{}}
}

// enter counts a stream from peer as being authenticated, or refuses it; release must be
// called once it is authenticated or refused.
func (a *admission) enter(peer string) (release func(), err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.perPeer[peer] >= a.maxPerPeer {
		return nil, limited(reasonPeerStreamLimit,
			"%s has %d streams waiting for authentication already, the most one address may have; retry later", peer, a.maxPerPeer)
	}
	if a.total >= a.maxTotal {
		return nil, limited(reasonStreamLimit,
			"this control-plane replica has %d streams waiting for authentication already; retry later", a.maxTotal)
	}
	a.perPeer[peer]++
	a.total++
	var once sync.Once
	return func() { once.Do(func() { a.leave(peer) }) }, nil
}

func (a *admission) leave(peer string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if a.perPeer[peer]--; a.perPeer[peer] <= 0 {
		delete(a.perPeer, peer)
	}
}

// peerReviewLimiter gives each peer a token bucket of TokenReviews, so that one address (one
// pod, for instance) cannot spend more than its share of the TokenReview client's budget on
// tokens the API server has not seen. The buckets of peers not heard from for a while are
// dropped (a bucket left alone that long is full again anyway).
type peerReviewLimiter struct {
	qps   float32
	burst int
	clock clock.PassiveClock
	idle  time.Duration

	mu      sync.Mutex
	buckets *utilcache.LRUExpireCache
}

// maxPeerBuckets bounds how many peers' buckets are kept; a peer whose bucket was evicted gets
// a full one, which the total limits still bound.
const maxPeerBuckets = 10000

func newPeerReviewLimiter(qps float64, burst int, c clock.PassiveClock) *peerReviewLimiter {
	idle := time.Duration(float64(burst)/qps*float64(time.Second)) + time.Second
	return &peerReviewLimiter{qps: float32(qps), burst: burst, clock: c, idle: idle,
		buckets: utilcache.NewLRUExpireCacheWithClock(maxPeerBuckets, c)}
}

// allow takes one TokenReview from peer's bucket, or refuses.
func (l *peerReviewLimiter) allow(peer string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var bucket flowcontrol.PassiveRateLimiter
	if cached, ok := l.buckets.Get(peer); ok {
		bucket = cached.(flowcontrol.PassiveRateLimiter)
	} else {
		bucket = flowcontrol.NewTokenBucketPassiveRateLimiterWithClock(l.qps, l.burst, l.clock)
	}
	l.buckets.Add(peer, bucket, l.idle)
	if !bucket.TryAccept() {
		return limited(reasonPeerTokenReviewLimit,
			"%s asked for more than %v new tokens to be verified per second (burst %d); retry later", peer, l.qps, l.burst)
	}
	return nil
}

// peerRefusalBudget gives each peer a budget of refused streams, a token bucket that each
// refusal empties by one. A peer whose budget is spent has its new streams refused in the gRPC
// transport (tapStream), before a goroutine, a handler, the metadata or the token are looked
// at: a client that floods the server with streams it cannot authenticate costs it almost
// nothing, while a proxy whose streams are accepted never spends any budget. The buckets of
// peers not refused for a while are dropped (a bucket left alone that long is full again).
type peerRefusalBudget struct {
	rate  float64 // tokens per second
	burst float64
	clock clock.PassiveClock
	idle  time.Duration

	mu      sync.Mutex
	buckets *utilcache.LRUExpireCache
}

// refusalBucket is one peer's budget: tokens at last.
type refusalBucket struct {
	tokens float64
	last   time.Time
}

func newPeerRefusalBudget(qps float64, burst int, c clock.PassiveClock) *peerRefusalBudget {
	idle := time.Duration(float64(burst)/qps*float64(time.Second)) + time.Second
	return &peerRefusalBudget{rate: qps, burst: float64(burst), clock: c, idle: idle,
		buckets: utilcache.NewLRUExpireCacheWithClock(maxPeerBuckets, c)}
}

// refill brings the bucket's tokens to now; the caller holds mu.
func (l *peerRefusalBudget) refill(bucket *refusalBucket, now time.Time) {
	if elapsed := now.Sub(bucket.last).Seconds(); elapsed > 0 {
		bucket.tokens = min(l.burst, bucket.tokens+elapsed*l.rate)
	}
	bucket.last = now
}

// spent reports whether peer has no refusal left in its budget. It changes nothing: a stream
// refused because of it does not push the peer's recovery further away.
func (l *peerRefusalBudget) spent(peer string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	cached, ok := l.buckets.Get(peer)
	if !ok {
		return false
	}
	bucket := cached.(*refusalBucket)
	l.refill(bucket, l.clock.Now())
	return bucket.tokens < 1
}

// charge takes one refusal from peer's budget.
func (l *peerRefusalBudget) charge(peer string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	bucket := &refusalBucket{tokens: l.burst, last: now}
	if cached, ok := l.buckets.Get(peer); ok {
		bucket = cached.(*refusalBucket)
		l.refill(bucket, now)
	}
	bucket.tokens = max(0, bucket.tokens-1)
	l.buckets.Add(peer, bucket, l.idle)
}

// tapStream is the gRPC server's InTapHandle: it runs in the connection's reader as each new
// stream's headers arrive, and refuses the streams of a peer that spent its refusal budget with
// ResourceExhausted, before the stream gets a goroutine or a handler.
func (s *Server) tapStream(ctx context.Context, _ *tap.Info) (context.Context, error) {
	from := peerOf(ctx)
	if !s.refusalBudget.spent(from) {
		return ctx, nil
	}
	refusals.WithLabelValues(reasonPeerRefusalLimit).Inc()
	if s.tapLogs.TryAccept() {
		s.log.Info("Refusing the new streams of a control-plane caller that had too many refused", "peer", from,
			"reason", reasonPeerRefusalLimit, "code", codes.ResourceExhausted.String())
	}
	return nil, limited(reasonPeerRefusalLimit,
		"%s had more than %v streams a second refused (burst %v); retry later", from, s.refusalBudget.rate, s.refusalBudget.burst)
}
