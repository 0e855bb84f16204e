// Package controlplane is the operator's control-plane gRPC server (docs/control-plane.md): it
// authenticates every meshlift-proxy (or Envoy) by its pod-bound service-account token and
// streams its mTLS identity (SDS) and the endpoints of the MeshServices it calls (EDS), over one
// state-of-the-world ADS stream or SDS alone. It runs on every operator replica.
//
// The streams are handled by hand rather than through go-control-plane's cache and server
// packages: what a stream carries depends on who is at the other end (a certificate signed for
// that caller, on that stream's own rotation schedule, from a key the caller may never send), so
// there is no shared snapshot to serve, and a per-stream loop keeps identity, CSR signing,
// rotation and ACK tracking in one place. Endpoints are shared: one index computes each
// MeshService's assignments once and wakes only the streams that watch it.
package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/meshlift/meshlift/internal/controlplane/caller"
	"github.com/meshlift/meshlift/internal/identity"
)

// Defaults of Options.
const (
	DefaultAddress          = ":15012"
	DefaultServiceName      = "meshlift-control-plane"
	DefaultLeafLifetime     = 24 * time.Hour
	DefaultServingLifetime  = 24 * time.Hour
	DefaultRotationFraction = 0.5
	DefaultRotationJitter   = 0.1
	DefaultTokenCacheSize   = 10000
	// DefaultRefusalCacheTTL: a token the API server refused is refused again without asking
	// it for this long.
	DefaultRefusalCacheTTL = 10 * time.Second
	// DefaultMaxUnauthenticatedStreams and DefaultMaxUnauthenticatedStreamsPerPeer bound the
	// streams being authenticated at once, in total and from one address.
	DefaultMaxUnauthenticatedStreams        = 1024
	DefaultMaxUnauthenticatedStreamsPerPeer = 8
	// DefaultPeerTokenReviewQPS and DefaultPeerTokenReviewBurst are one address's share of the
	// TokenReview client's budget (50 per second): a tenth of it, with a burst for the proxies
	// of a pod starting together.
	DefaultPeerTokenReviewQPS   = 5
	DefaultPeerTokenReviewBurst = 20
	// DefaultPeerRefusalQPS and DefaultPeerRefusalBurst are how many streams of one address
	// may be refused (for its tokens or its limits) before its new streams are refused as they
	// arrive: a proxy refused while its pod is not known yet retries far slower than that,
	// and a proxy that is accepted spends nothing.
	DefaultPeerRefusalQPS   = 2
	DefaultPeerRefusalBurst = 20
	// DefaultMaxConnectionAge: a connection is closed (GOAWAY, then its streams get
	// DefaultMaxConnectionAgeGrace to end) after about this long, so the proxies spread again
	// over the replicas after one restarts. gRPC adds ±10% jitter.
	DefaultMaxConnectionAge      = 30 * time.Minute
	DefaultMaxConnectionAgeGrace = time.Minute
)

// Limits of what a caller may send and how long the server waits.
const (
	// maxRequestSize bounds one DiscoveryRequest (a node with a CSR is a few KiB).
	maxRequestSize = 256 << 10
	// maxStreamsPerConnection: a proxy opens one stream, Envoy a few.
	maxStreamsPerConnection = 32
	handshakeTimeout        = 10 * time.Second
	shutdownGrace           = 5 * time.Second
	// minRotationDelay keeps a leaf capped by an expiring signer from being re-signed in a loop.
	minRotationDelay = time.Second
	// endpointBatch is how long endpoint changes are collected before streams are woken.
	endpointBatch = 50 * time.Millisecond
	// refusalLogQPS and refusalLogBurst bound the refusals logged at Info.
	refusalLogQPS   = 5
	refusalLogBurst = 20
	// tapLogQPS bounds the logged refusals of streams of peers that spent their refusal budget.
	tapLogQPS = 1
)

// Options configure the server. Zero values take the defaults.
type Options struct {
	// Address is the listen address (default ":15012").
	Address string
	// TrustDomain of the SPIFFE IDs (default identity.DefaultTrustDomain).
	TrustDomain string
	// Namespace is the operator's namespace; the serving certificate is for
	// <ServiceName>.<Namespace>.svc and <ServiceName>.<Namespace>.svc.cluster.local. Required.
	Namespace string
	// ServiceName is the Service proxies reach the server through (default meshlift-control-plane).
	ServiceName string
	// ExtraNames are more names of the serving certificate, DNS names or IP addresses: the host
	// of the address proxies are told to dial when it is not the Service's name (e.g. a fixed
	// ClusterIP on a cluster without DNS).
	ExtraNames []string
	// LeafLifetime is the lifetime of workload certificates (default 24h).
	LeafLifetime time.Duration
	// ServingLifetime is the lifetime of the server's own certificate (default 24h); it is
	// renewed at half life and whenever the Authority changes.
	ServingLifetime time.Duration
	// RotationFraction of a leaf's lifetime after which it is signed and pushed again on the same
	// stream (default 0.5), give or take RotationJitter of that delay (default 0.1, i.e. ±10%).
	RotationFraction float64
	RotationJitter   float64
	// TokenCacheSize bounds how many TokenReview results are cached (default 10000), and how
	// many refusals apart from them.
	TokenCacheSize int
	// RefusalCacheTTL is how long a token the API server refused is refused again without
	// asking it (default 10s).
	RefusalCacheTTL time.Duration
	// MaxUnauthenticatedStreams is how many streams may be waiting for their authentication at
	// once (default 1024); MaxUnauthenticatedStreamsPerPeer how many of them may come from one
	// address (default 8). More are refused with ResourceExhausted.
	MaxUnauthenticatedStreams        int
	MaxUnauthenticatedStreamsPerPeer int
	// PeerTokenReviewQPS and PeerTokenReviewBurst bound the TokenReviews the tokens of one
	// address may cost (default 5 per second, burst 20); tokens verified before (cached) cost
	// none. More are refused with ResourceExhausted.
	PeerTokenReviewQPS   float64
	PeerTokenReviewBurst int
	// PeerRefusalQPS and PeerRefusalBurst are the budget of refused streams of one address
	// (default 2 per second, burst 20): once it is spent, the address's new streams are
	// refused with ResourceExhausted as they arrive, before their metadata or token are read,
	// until the budget refills. Accepted streams spend none of it.
	PeerRefusalQPS   float64
	PeerRefusalBurst int
	// MaxConnectionAge is how long a client connection lives (default 30m, give or take 10%)
	// before the server sends it a GOAWAY; its streams then have MaxConnectionAgeGrace
	// (default 1m) to end before the connection is closed, and the proxy reconnects, maybe to
	// another replica.
	MaxConnectionAge      time.Duration
	MaxConnectionAgeGrace time.Duration
	// Clock schedules rotations and expires cached tokens (default the real clock).
	Clock clock.Clock
	// PodWriter patches pods: the expiry of the certificate each pod's proxies were sent last
	// (meshv1alpha1.AnnotationCertificateNotAfter) and, with ReplicaName, drain
	// acknowledgements. Nil: nothing is written on pods.
	PodWriter client.Writer
	// ReplicaName names this replica (its pod name) in the drain acknowledgements it writes on
	// pods excluded from EDS (meshv1alpha1.EDSAckAnnotation) with PodWriter. Empty: none are
	// written.
	ReplicaName string
}

func (o *Options) defaults() error {
	if o.Address == "" {
		o.Address = DefaultAddress
	}
	if o.TrustDomain == "" {
		o.TrustDomain = identity.DefaultTrustDomain
	}
	if o.ServiceName == "" {
		o.ServiceName = DefaultServiceName
	}
	if o.LeafLifetime == 0 {
		o.LeafLifetime = DefaultLeafLifetime
	}
	if o.ServingLifetime == 0 {
		o.ServingLifetime = DefaultServingLifetime
	}
	if o.RotationFraction == 0 {
		o.RotationFraction = DefaultRotationFraction
	}
	if o.RotationJitter == 0 {
		o.RotationJitter = DefaultRotationJitter
	}
	if o.TokenCacheSize == 0 {
		o.TokenCacheSize = DefaultTokenCacheSize
	}
	if o.RefusalCacheTTL == 0 {
		o.RefusalCacheTTL = DefaultRefusalCacheTTL
	}
	if o.MaxUnauthenticatedStreams == 0 {
		o.MaxUnauthenticatedStreams = DefaultMaxUnauthenticatedStreams
	}
	if o.MaxUnauthenticatedStreamsPerPeer == 0 {
		o.MaxUnauthenticatedStreamsPerPeer = DefaultMaxUnauthenticatedStreamsPerPeer
	}
	if o.PeerTokenReviewQPS == 0 {
		o.PeerTokenReviewQPS = DefaultPeerTokenReviewQPS
	}
	if o.PeerTokenReviewBurst == 0 {
		o.PeerTokenReviewBurst = DefaultPeerTokenReviewBurst
	}
	if o.PeerRefusalQPS == 0 {
		o.PeerRefusalQPS = DefaultPeerRefusalQPS
	}
	if o.PeerRefusalBurst == 0 {
		o.PeerRefusalBurst = DefaultPeerRefusalBurst
	}
	if o.MaxConnectionAge == 0 {
		o.MaxConnectionAge = DefaultMaxConnectionAge
	}
	if o.MaxConnectionAgeGrace == 0 {
		o.MaxConnectionAgeGrace = DefaultMaxConnectionAgeGrace
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	switch {
	case o.Namespace == "":
		return errors.New("the control plane needs the operator's namespace for its serving certificate")
	case o.LeafLifetime < 0 || o.ServingLifetime < 0:
		return errors.New("certificate lifetimes must be positive")
	case o.RotationFraction <= 0 || o.RotationFraction >= 1:
		return fmt.Errorf("the rotation fraction must be between 0 and 1, not %v", o.RotationFraction)
	case o.RotationJitter < 0 || o.RotationJitter >= 0.5:
		return fmt.Errorf("the rotation jitter must be between 0 and 0.5, not %v", o.RotationJitter)
	case o.TokenCacheSize < 0:
		return errors.New("the token cache size must not be negative")
	case o.RefusalCacheTTL < 0:
		return errors.New("the refusal cache TTL must not be negative")
	case o.MaxUnauthenticatedStreams < 0 || o.MaxUnauthenticatedStreamsPerPeer < 0:
		return errors.New("the limits of unauthenticated streams must be positive")
	case o.PeerTokenReviewQPS < 0 || o.PeerTokenReviewBurst < 0:
		return errors.New("the TokenReview rate of a peer must be positive")
	case o.PeerRefusalQPS < 0 || o.PeerRefusalBurst < 0:
		return errors.New("the refusal budget of a peer must be positive")
	case o.MaxConnectionAge < 0 || o.MaxConnectionAgeGrace < 0:
		return errors.New("the maximum connection age and its grace must be positive")
	}
	return nil
}

// DNSNames are the names of the server's certificate.
func (o *Options) DNSNames() []string {
	svc := o.ServiceName + "." + o.Namespace + ".svc"
	names := []string{svc, svc + ".cluster.local"}
	for _, extra := range o.ExtraNames {
		if extra != "" && !slices.Contains(names, extra) {
			names = append(names, extra)
		}
	}
	return names
}

// TokenReviewer creates TokenReviews (client-go's TokenReviewInterface).
type TokenReviewer interface {
	Create(ctx context.Context, review *authenticationv1.TokenReview, opts metav1.CreateOptions) (*authenticationv1.TokenReview, error)
}

// Server is the control-plane gRPC server. It is a manager Runnable that runs on every replica.
type Server struct {
	opts   Options
	log    logr.Logger
	holder *identity.Holder
	authn  *authenticator
	admit  *admission
	// refusalLogs bounds how many refusals a second are logged at Info; the others are logged
	// at V(1), so a flood of bad callers cannot flood the log (the metrics count them all).
	refusalLogs flowcontrol.PassiveRateLimiter
	// refusalBudget refuses the new streams of a peer that had too many refused, in the
	// transport (tapStream); tapLogs bounds how many of those refusals are logged.
	refusalBudget *peerRefusalBudget
	tapLogs       flowcontrol.PassiveRateLimiter
	serving       *servingCertificate
	index         *endpointIndex
	outbound      *outboundIndex
	drain         *drainAcker      // nil without Options.ReplicaName
	expiry        *expiryPublisher // nil without Options.PodWriter
	shutdown      chan struct{}
	addr          atomic.Value // net.Addr once listening

	mu      sync.Mutex
	streams map[*stream]struct{}
	byPod   map[types.NamespacedName]map[*stream]struct{}
}

// New builds a server. reader reads pods and MeshServices (the manager's cache), reviewer
// verifies tokens with the API server, holder publishes the mesh CA.
func New(opts Options, reader client.Reader, reviewer TokenReviewer, holder *identity.Holder, log logr.Logger) (*Server, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	s := &Server{
		opts:          opts,
		log:           log,
		holder:        holder,
		authn:         newAuthenticator(reviewer, reader, opts),
		admit:         newAdmission(opts.MaxUnauthenticatedStreamsPerPeer, opts.MaxUnauthenticatedStreams),
		refusalLogs:   flowcontrol.NewTokenBucketPassiveRateLimiterWithClock(refusalLogQPS, refusalLogBurst, opts.Clock),
		refusalBudget: newPeerRefusalBudget(opts.PeerRefusalQPS, opts.PeerRefusalBurst, opts.Clock),
		tapLogs:       flowcontrol.NewTokenBucketPassiveRateLimiterWithClock(tapLogQPS, 1, opts.Clock),
		serving:       &servingCertificate{holder: holder, dnsNames: opts.DNSNames(), lifetime: opts.ServingLifetime, clock: opts.Clock, log: log},
		index:         newEndpointIndex(reader, opts.TrustDomain, log),
		outbound:      newOutboundIndex(reader, log),
		shutdown:      make(chan struct{}),
		streams:       map[*stream]struct{}{},
		byPod:         map[types.NamespacedName]map[*stream]struct{}{},
	}
	if opts.PodWriter != nil {
		s.expiry = newExpiryPublisher(reader, opts.PodWriter, log)
	}
	if opts.ReplicaName != "" && opts.PodWriter != nil {
		s.drain = newDrainAcker(s, reader, opts.PodWriter, opts.ReplicaName, log)
		s.index.flushed = s.drain.kick
	}
	return s, nil
}

// NeedLeaderElection is false: every replica serves the proxies that reach it.
func (s *Server) NeedLeaderElection() bool { return false }

// Start listens on Options.Address and serves until ctx is done.
func (s *Server) Start(ctx context.Context) error {
	listener, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.opts.Address)
	if err != nil {
		return fmt.Errorf("failed to listen on %s for the control plane: %w", s.opts.Address, err)
	}
	return s.Serve(ctx, listener)
}

// Serve serves on listener until ctx is done, then ends every stream (the proxies reconnect to
// another replica) and stops. A Server serves once.
func (s *Server) Serve(ctx context.Context, listener net.Listener) error {
	s.addr.Store(listener.Addr())
	liveServers.Store(s, struct{}{})
	defer liveServers.Delete(s)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go s.serving.run(ctx)
	go s.index.run(ctx)
	go s.outbound.run(ctx)
	if s.drain != nil {
		go s.drain.run(ctx)
	}
	if s.expiry != nil {
		s.expiry.start(ctx) // before any stream can record
	}

	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.serving.getCertificate}
	server := grpc.NewServer(s.grpcOptions(credentials.NewTLS(tlsConfig))...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(server, aggregatedService{s: s})
	secretv3.RegisterSecretDiscoveryServiceServer(server, secretService{s: s})

	s.log.Info("Serving the control plane", "address", listener.Addr().String(), "dnsNames", s.opts.DNSNames(),
		"trustDomain", s.opts.TrustDomain, "leafLifetime", s.opts.LeafLifetime)
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	var serveErr error
	select {
	case serveErr = <-served:
	case <-ctx.Done():
	}
	close(s.shutdown)
	stopped := make(chan struct{})
	go func() {
		server.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(shutdownGrace):
		server.Stop()
		<-stopped
	}
	if serveErr != nil && !errors.Is(serveErr, grpc.ErrServerStopped) {
		return fmt.Errorf("the control-plane server stopped: %w", serveErr)
	}
	s.log.Info("Stopped serving the control plane")
	return nil
}

// grpcOptions are the gRPC server's limits and interceptors, with creds.
func (s *Server) grpcOptions(creds credentials.TransportCredentials) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(creds),
		grpc.MaxRecvMsgSize(maxRequestSize),
		grpc.MaxConcurrentStreams(maxStreamsPerConnection),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.InTapHandle(s.tapStream),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time: time.Minute, Timeout: 20 * time.Second,
			MaxConnectionAge: s.opts.MaxConnectionAge, MaxConnectionAgeGrace: s.opts.MaxConnectionAgeGrace,
		}),
		grpc.ChainStreamInterceptor(s.recoverStream),
		grpc.ChainUnaryInterceptor(s.recoverUnary),
	}
}

// handlerPanics counts the panics the interceptors recovered from. It is registered here rather
// than with the other metrics because it belongs to the interceptors below.
var handlerPanics = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "meshlift_control_plane_handler_panics_total",
	Help: "Panics recovered in the control plane's gRPC handlers, by method; each ended its stream or call with Internal.",
}, []string{"method"})

func init() {
	metrics.Registry.MustRegister(handlerPanics)
}

// recoverStream ends a stream whose handler panicked with Internal. gRPC does not recover
// handler panics, and this process also runs the controllers and the webhooks: one bad stream
// must not take them down, nor the other streams. The stream's own deferred cleanup
// (unregistering it, stopping its rotation timer) runs before the panic reaches here.
func (s *Server) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer s.recoverHandler(ss.Context(), info.FullMethod, &err)
	return handler(srv, ss)
}

// recoverUnary is recoverStream for unary calls (today only Unimplemented ones).
func (s *Server) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer s.recoverHandler(ctx, info.FullMethod, &err)
	return handler(ctx, req)
}

// recoverHandler, deferred by a handler's interceptor, turns a panic into Internal, and logs
// it with its stack and counts it.
func (s *Server) recoverHandler(ctx context.Context, method string, err *error) {
	recovered := recover()
	if recovered == nil {
		return
	}
	handlerPanics.WithLabelValues(method).Inc()
	log := s.log.WithValues("method", method)
	if p, ok := peer.FromContext(ctx); ok {
		log = log.WithValues("peer", p.Addr.String())
	}
	log.Error(fmt.Errorf("panic: %v", recovered), "Recovered from a panic in a control-plane handler", "stack", string(debug.Stack()))
	*err = status.Error(codes.Internal, "an internal error of the control plane ended this request; retry")
}

// Addr is the address the server listens on, nil before it does.
func (s *Server) Addr() net.Addr {
	addr, _ := s.addr.Load().(net.Addr)
	return addr
}

// Ready is a readiness check: it fails until the server has a serving certificate (the mesh CA
// has published an Authority).
func (s *Server) Ready(*http.Request) error {
	if s.serving.current.Load() == nil {
		return errors.New("the control plane has no serving certificate yet: the mesh CA has not published an Authority")
	}
	return nil
}

// GetCertificate returns the serving certificate (for tls.Config.GetCertificate).
func (s *Server) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.serving.getCertificate(hello)
}

// Notify tells the server that the MeshService key, or one of the pods injected for it,
// changed. The server recomputes that MeshService's endpoints and outbound routes (in batches)
// and pushes them to the streams whose clusters changed and to those subscribed to the outbound
// routes. PodEventHandler and MeshServiceEventHandler call it; any other source of changes may too.
func (s *Server) Notify(key types.NamespacedName) {
	s.index.notify(key)
	s.outbound.notify(key)
}

// NotifyService tells the server that a Service leading to the MeshService key changed (was
// added, edited or deleted): its outbound routes are recomputed. ServiceEventHandler calls it.
func (s *Server) NotifyService(key types.NamespacedName) { s.outbound.notify(key) }

// PodDeleted tells the server that a pod is gone (uid "" for any UID): the streams of that pod
// end, since an identity ends with its pod.
func (s *Server) PodDeleted(key types.NamespacedName, uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for st := range s.byPod[key] {
		if uid == "" || st.id.PodUID == uid {
			st.end(caller.StillBound(key, st.id.PodUID, nil))
		}
	}
}

func (s *Server) register(st *stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams[st] = struct{}{}
	key := st.id.Pod
	if s.byPod[key] == nil {
		s.byPod[key] = map[*stream]struct{}{}
	}
	s.byPod[key][st] = struct{}{}
}

func (s *Server) unregister(st *stream) {
	s.index.unwatch(st)
	s.outbound.unsubscribe(st)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.streams, st)
	key := st.id.Pod
	delete(s.byPod[key], st)
	if len(s.byPod[key]) == 0 {
		delete(s.byPod, key)
	}
}

// TrustBundleAcknowledged counts the open streams that were sent a trust bundle (ROOTCA), and
// how many of them acknowledged bundlePEM. A staged root rotation adds the new root to the
// bundle and switches the signer once every stream has acknowledged it.
func (s *Server) TrustBundleAcknowledged(bundlePEM []byte) (acknowledged, streams int) {
	fingerprint := identity.BundleFingerprint(bundlePEM)
	s.mu.Lock()
	defer s.mu.Unlock()
	for st := range s.streams {
		if sent, _ := st.sentBundle.Load().(string); sent == "" {
			continue
		}
		streams++
		if acked, _ := st.ackedBundle.Load().(string); acked == fingerprint {
			acknowledged++
		}
	}
	return acknowledged, streams
}

// earliestLeafExpiry is the earliest NotAfter of the leaves the open streams hold.
func (s *Server) earliestLeafExpiry() (earliest time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for st := range s.streams {
		if nanos := st.leafNotAfter.Load(); nanos != 0 {
			if t := time.Unix(0, nanos); !ok || t.Before(earliest) {
				earliest, ok = t, true
			}
		}
	}
	return earliest, ok
}

// aggregatedService serves ADS: SDS, EDS and the outbound routes (LDS) on one state-of-the-world
// stream. Delta xDS is Unimplemented (the embedded type answers it).
type aggregatedService struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	s *Server
}

func (a aggregatedService) StreamAggregatedResources(gs grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	return a.s.serveStream(gs, serviceADS)
}

// secretService serves SDS alone, for Envoy. Fetch and Delta are Unimplemented.
type secretService struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	s *Server
}

func (d secretService) StreamSecrets(gs grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	return d.s.serveStream(gs, serviceSDS)
}
