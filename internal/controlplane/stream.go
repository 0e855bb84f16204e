package controlplane

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/meshlift/meshlift/internal/controlplane/caller"
	"github.com/meshlift/meshlift/internal/controlplane/endpoints"
	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/outbound"
)

// Resource types and SDS resource names (docs/control-plane.md).
const (
	TypeSecret                = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
	TypeClusterLoadAssignment = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	// TypeListener carries the outbound routes (outbound.ListenerName), on ADS only.
	TypeListener = outbound.TypeListener

	// SecretDefault is the caller's certificate; the caller may also name it by its SPIFFE ID.
	SecretDefault = "default"
	// SecretRootCA is the trust bundle.
	SecretRootCA = "ROOTCA"

	typeEndpoints = TypeClusterLoadAssignment
	typeListeners = TypeListener
)

const (
	serviceADS = "ads"
	serviceSDS = "sds"
)

// Reasons a certificate is signed (the certificates_issued_total label).
const (
	issueInitial   = "initial"
	issueRotation  = "rotation"
	issueCSR       = "csr"
	issueAuthority = "authority"
)

type discoveryStream = grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]

// stream is one caller's stream. Its loop (run) owns every field but the channels, id (fixed
// before the stream is shared) and the atomics (read by the metrics and the Server).
type stream struct {
	srv     *Server
	service string
	gs      discoveryStream
	log     logr.Logger
	started time.Time
	id      caller.Identity
	// credential is the token the stream was opened with, checked again before each rotation.
	credential credential
	// rechecked is when the API server last vouched for credential again (recheck).
	rechecked time.Time

	ended chan error    // the stream must end with this error (its pod is gone)
	wake  chan struct{} // endpoints this stream watches changed
	// wakeOutbound: the outbound routes changed (the stream subscribes to them).
	wakeOutbound chan struct{}

	node  *caller.Node
	subs  map[string]*subscription
	nonce uint64

	// csrKey is the public key of the caller's validated CSR; nil when the server generates
	// the keys (and sends them).
	csrKey       crypto.PublicKey
	csrPEM       []byte
	authority    *identity.Authority
	leaf         *identity.Leaf
	keyPEM       []byte
	rotation     clock.Timer
	sentCert     bool
	leafNotAfter atomic.Int64 // UnixNano
	// recordedLeaf is the last leaf sent, which the pod's annotation is to show.
	recordedLeaf *identity.Leaf
	// sentBundle and ackedBundle are the fingerprints of the last trust bundle sent and the last
	// one the caller acknowledged ("" for none); Server.TrustBundleAcknowledged reads them.
	sentBundle  atomic.Value
	ackedBundle atomic.Value

	upstreamKeys []types.NamespacedName
	// eds is what the last EDS response sent and the last one acknowledged held, by upstream
	// MeshService: the drain acknowledger reads it to tell whether the caller may still route to
	// a pod (drain.go).
	eds atomic.Pointer[edsView]
}

// edsView are the MeshService states of an EDS response sent and of the last one acknowledged.
type edsView struct {
	sent, acked map[types.NamespacedName]*serviceState
}

// mayRoute reports whether the caller was sent, or still holds, endpoints of key with the pod
// of uid among them.
func (st *stream) mayRoute(key types.NamespacedName, uid types.UID) bool {
	v := st.eds.Load()
	return v != nil && (v.sent[key].routes(uid) || v.acked[key].routes(uid))
}

// subscription is the state of one resource type on a stream.
type subscription struct {
	subscribed bool
	// wildcard: the caller named no resource and gets every one it may have.
	wildcard    bool
	names       []string
	sentVersion string
	sentNonce   string
	// ackedVersion is the last version the caller accepted.
	ackedVersion string
	// sentBundle is the fingerprint of the trust bundle in the last response ("" for none).
	sentBundle string
}

// carriesLeaf reports whether the secrets of the subscription include the caller's certificate,
// i.e. any but the trust bundle alone.
func (sub *subscription) carriesLeaf() bool {
	return sub.wildcard || slices.ContainsFunc(sub.names, func(name string) bool { return name != SecretRootCA })
}

func (s *Server) serveStream(gs discoveryStream, service string) error {
	ctx := gs.Context()
	started := s.opts.Clock.Now()
	gauge := activeStreams.WithLabelValues(service)
	gauge.Inc()
	defer gauge.Dec()

	from := peerOf(ctx)
	id, cred, err := s.admitCaller(ctx, from)
	if err != nil {
		s.chargeRefusal(from, err)
		// The logger gets its values only if the refusal is logged: a flood of refusals
		// must cost as little as possible.
		return s.streamEnded(s.log, err, "service", service, "peer", from)
	}
	log := s.log.WithValues("service", service, "peer", from, "pod", klog.KRef(id.Pod.Namespace, id.Pod.Name), "identity", id.SPIFFEID)
	st := &stream{
		srv:          s,
		service:      service,
		gs:           gs,
		log:          log,
		started:      started,
		id:           id,
		credential:   cred,
		ended:        make(chan error, 1),
		wake:         make(chan struct{}, 1),
		wakeOutbound: make(chan struct{}, 1),
		subs:         map[string]*subscription{},
	}
	s.register(st)
	defer s.unregister(st)
	log.V(1).Info("Opened a control-plane stream")
	return s.streamEnded(log, st.run(ctx))
}

// admitCaller authenticates the caller of a new stream from peer, within the limits of
// streams being authenticated.
func (s *Server) admitCaller(ctx context.Context, from string) (caller.Identity, credential, error) {
	release, err := s.admit.enter(from)
	if err != nil {
		return caller.Identity{}, credential{}, err
	}
	defer release()
	// Only the token is read; FromIncomingContext would copy all the metadata.
	md := metadata.MD{"authorization": metadata.ValueFromIncomingContext(ctx, "authorization")}
	return s.authn.authenticate(ctx, md, from)
}

// chargeRefusal takes a refusal of a stream of peer from its budget (tapStream): refusals for
// what the caller presented or asked for, not errors of the server or the API server.
func (s *Server) chargeRefusal(peer string, err error) {
	var refusal *identity.Refusal
	var limit *limitError
	if errors.As(err, &refusal) || errors.As(err, &limit) {
		s.refusalBudget.charge(peer)
	}
}

// streamEnded counts and logs why a stream ended and returns what the caller is told.
// Refusals are logged at Info up to refusalLogQPS a second, the others at V(1). keysAndValues
// are added to what is logged.
func (s *Server) streamEnded(log logr.Logger, err error, keysAndValues ...any) error {
	var refusal *identity.Refusal
	var limit *limitError
	switch {
	case err == nil:
		log.V(1).Info("Control-plane stream closed", keysAndValues...)
	case errors.As(err, &refusal):
		refusals.WithLabelValues(string(refusal.Reason)).Inc()
		s.refusalLog(log).Info("Refused a control-plane caller", append(keysAndValues,
			"reason", refusal.Reason, "code", refusal.Code().String(), "message", refusal.Message)...)
		return refusal
	case errors.As(err, &limit):
		refusals.WithLabelValues(limit.reason).Inc()
		s.refusalLog(log).Info("Refused a control-plane caller", append(keysAndValues,
			"reason", limit.reason, "code", codes.ResourceExhausted.String(), "message", limit.message)...)
		return limit
	default:
		log.Info("Control-plane stream ended", append(keysAndValues, "code", status.Code(err).String(), "error", err.Error())...)
	}
	return err
}

// refusalLog is log, or log.V(1) once more than refusalLogQPS refusals a second were logged.
func (s *Server) refusalLog(log logr.Logger) logr.Logger {
	if s.refusalLogs.TryAccept() {
		return log
	}
	return log.V(1)
}

// end makes the stream end with err (from any goroutine).
func (st *stream) end(err error) {
	select {
	case st.ended <- err:
	default:
	}
}

// wakeOutboundRoutes makes the stream re-send the outbound routes if they changed (from any
// goroutine).
func (st *stream) wakeOutboundRoutes() {
	select {
	case st.wakeOutbound <- struct{}{}:
	default:
	}
}

// wakeEndpoints makes the stream re-send its endpoints if they changed (from any goroutine).
func (st *stream) wakeEndpoints() {
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

func (st *stream) run(ctx context.Context) error {
	requests := make(chan *discoveryv3.DiscoveryRequest)
	received := make(chan error, 1)
	go func() {
		for {
			req, err := st.gs.Recv()
			if err != nil {
				received <- err
				return
			}
			select {
			case requests <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer st.stopRotation()
	authorityChanged := st.srv.holder.Changed()
	for {
		var rotate <-chan time.Time
		if st.rotation != nil {
			rotate = st.rotation.C()
		}
		var err error
		select {
		case <-ctx.Done():
			return nil
		case <-st.srv.shutdown:
			return status.Error(codes.Unavailable, "this control-plane replica is shutting down; reconnect")
		case err = <-received:
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
		case err = <-st.ended:
		case req := <-requests:
			err = st.handle(ctx, req)
		case <-rotate:
			st.rotation = nil
			err = st.rotate(ctx)
		case <-authorityChanged:
			authorityChanged = st.srv.holder.Changed()
			err = st.authorityChanged(ctx)
		case <-st.wake:
			err = st.push(ctx, typeEndpoints)
		case <-st.wakeOutbound:
			err = st.push(ctx, typeListeners)
		}
		if err != nil {
			return err
		}
	}
}

func (st *stream) handle(ctx context.Context, req *discoveryv3.DiscoveryRequest) error {
	csrChanged, err := st.readNode(req.GetNode())
	if err != nil {
		return err
	}
	typeURL := req.GetTypeUrl()
	if typeURL == "" && st.service == serviceSDS {
		typeURL = TypeSecret
	}
	if typeURL != TypeSecret && ((typeURL != typeEndpoints && typeURL != typeListeners) || st.service != serviceADS) {
		served := TypeSecret
		if st.service == serviceADS {
			served += ", " + typeEndpoints + " and " + typeListeners
		}
		return identity.Refuse(identity.ReasonUnsupportedType, "this stream serves %s, not %q", served, typeURL)
	}
	sub := st.subs[typeURL]
	if sub == nil {
		sub = &subscription{}
		st.subs[typeURL] = sub
	}
	// A request answering an older response is stale: the caller will answer the newer one, so
	// its version and names are ignored (its node, read above, is not).
	nonce := req.GetResponseNonce()
	stale := nonce != "" && nonce != sub.sentNonce
	changed := false
	if !stale {
		if nonce != "" {
			if detail := req.GetErrorDetail(); detail != nil {
				nacks.WithLabelValues(shortType(typeURL)).Inc()
				st.log.Info("The proxy rejected a response", "type", shortType(typeURL), "version", sub.sentVersion,
					"acceptedVersion", req.GetVersionInfo(), "error", detail.GetMessage())
			} else {
				sub.ackedVersion = req.GetVersionInfo()
				if sub.sentBundle != "" {
					st.ackedBundle.Store(sub.sentBundle)
				}
				if typeURL == typeEndpoints {
					if v := st.eds.Load(); v != nil {
						st.eds.Store(&edsView{sent: v.sent, acked: v.sent})
						st.srv.drain.kick()
					}
				}
			}
		}
		names := slices.Compact(slices.Sorted(slices.Values(req.GetResourceNames())))
		wildcard := len(names) == 0
		if typeURL == TypeSecret {
			if err := st.checkSecretNames(names); err != nil {
				return err
			}
		}
		changed = !sub.subscribed || wildcard != sub.wildcard || !slices.Equal(names, sub.names)
		sub.subscribed, sub.wildcard, sub.names = true, wildcard, names
	}
	if csrChanged && st.leaf != nil {
		// A new CSR is a renewal by the proxy (a new key): the caller must still have its
		// identity, as for a rotation.
		if err := st.recheck(ctx, csrRecheckInterval); err != nil {
			return err
		}
		if err := st.issue(issueCSR); err != nil {
			return err
		}
		if err := st.push(ctx, TypeSecret); err != nil {
			return err
		}
	}
	if changed {
		return st.push(ctx, typeURL)
	}
	return nil
}

// readNode checks the node of a request: the first one must name the caller's pod, and a later
// one may bring a new CSR.
func (st *stream) readNode(n *corev3.Node) (csrChanged bool, err error) {
	if n == nil && st.node != nil {
		return false, nil
	}
	node, err := caller.ParseNode(n)
	if err != nil {
		return false, err
	}
	if err := caller.CheckNode(node, st.id); err != nil {
		return false, err
	}
	if st.node == nil {
		st.log.V(1).Info("Identified the caller", "nodeID", node.ID, "meshService", node.MeshService, "slot", node.Slot,
			"version", node.Version, "csr", node.CSR != nil)
	}
	st.node = &node
	if node.CSR == nil || bytes.Equal(node.CSR, st.csrPEM) {
		return false, nil
	}
	csr, err := identity.ValidateCSR(node.CSR, st.id.SPIFFEID)
	if err != nil {
		return false, err
	}
	st.csrKey, st.csrPEM = csr.PublicKey, node.CSR
	return true, nil
}

func (st *stream) checkSecretNames(names []string) error {
	for _, name := range names {
		if name != SecretDefault && name != SecretRootCA && name != st.id.SPIFFEID {
			return identity.Refuse(identity.ReasonForeignResource,
				"the caller is %s and may ask for the secrets %q (or its own SPIFFE ID) and %q, not %q",
				st.id.SPIFFEID, SecretDefault, SecretRootCA, name)
		}
	}
	return nil
}

// push sends the current resources of typeURL, unless the caller has them already.
func (st *stream) push(ctx context.Context, typeURL string) error {
	sub := st.subs[typeURL]
	if sub == nil || !sub.subscribed {
		return nil
	}
	var resources []*anypb.Any
	var version, bundle string
	var states map[types.NamespacedName]*serviceState
	var err error
	switch typeURL {
	case TypeSecret:
		resources, version, bundle, err = st.secrets(sub)
	case typeListeners:
		resources, version, err = st.outboundRoutes(ctx, sub)
	default:
		resources, version, states, err = st.assignments(ctx, sub)
	}
	if err != nil {
		return err
	}
	if sub.sentNonce != "" && version == sub.sentVersion {
		return nil
	}
	if typeURL == typeEndpoints {
		// Recorded before sending: from now on the caller may route to what these states hold.
		var acked map[types.NamespacedName]*serviceState
		if v := st.eds.Load(); v != nil {
			acked = v.acked
		}
		st.eds.Store(&edsView{sent: states, acked: acked})
	}
	st.nonce++
	nonce := strconv.FormatUint(st.nonce, 10)
	if err := st.gs.Send(&discoveryv3.DiscoveryResponse{VersionInfo: version, Resources: resources, TypeUrl: typeURL, Nonce: nonce}); err != nil {
		return err
	}
	sub.sentVersion, sub.sentNonce = version, nonce
	if typeURL == TypeSecret {
		if sub.sentBundle = bundle; bundle != "" {
			st.sentBundle.Store(bundle)
		}
		if !st.sentCert && st.leaf != nil {
			st.sentCert = true
			timeToFirstCertificate.Observe(st.srv.opts.Clock.Since(st.started).Seconds())
		}
		if st.leaf != nil && st.leaf != st.recordedLeaf && sub.carriesLeaf() {
			// Only once sent: a leaf the caller never got must not be shown as its own.
			st.recordedLeaf = st.leaf
			st.srv.expiry.record(st.id.Pod, st.id.PodUID, st.leaf.NotAfter)
		}
	}
	st.log.V(1).Info("Sent resources", "type", shortType(typeURL), "version", version, "nonce", nonce, "resources", len(resources))
	return nil
}

// secrets are the SDS resources the caller subscribed to, their version (which changes with
// the leaf and the trust bundle) and the fingerprint of the bundle among them ("" if none).
func (st *stream) secrets(sub *subscription) (resources []*anypb.Any, version, bundle string, err error) {
	names := sub.names
	if sub.wildcard {
		names = []string{SecretDefault, SecretRootCA}
	}
	digest := sha256.New()
	resources = make([]*anypb.Any, 0, len(names))
	for _, name := range names {
		var secret *tlsv3.Secret
		if name == SecretRootCA {
			if st.authority == nil {
				st.authority = st.srv.holder.Current()
			}
			if st.authority == nil {
				return nil, "", "", status.Error(codes.Unavailable, "the mesh CA has not published a trust bundle yet; retry")
			}
			bundlePEM := st.authority.TrustBundle()
			secret = &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inline(bundlePEM),
			}}}
			bundle = identity.BundleFingerprint(bundlePEM)
			fmt.Fprintf(digest, "%s bundle %s\n", name, bundle)
		} else {
			if st.leaf == nil {
				if err := st.issue(issueInitial); err != nil {
					return nil, "", "", err
				}
			}
			certificate := &tlsv3.TlsCertificate{CertificateChain: inline(st.leaf.ChainPEM)}
			if st.keyPEM != nil {
				certificate.PrivateKey = inline(st.keyPEM)
			}
			secret = &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: certificate}}
			fmt.Fprintf(digest, "%s leaf %s\n", name, st.leaf.Cert.SerialNumber.Text(16))
		}
		value, err := proto.Marshal(secret)
		if err != nil {
			return nil, "", "", status.Errorf(codes.Internal, "marshaling secret %s: %v", name, err)
		}
		resources = append(resources, &anypb.Any{TypeUrl: TypeSecret, Value: value})
	}
	return resources, hex.EncodeToString(digest.Sum(nil)[:8]), bundle, nil
}

func inline(data []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: data}}
}

// maxCapturedClusters bounds the clusters a stream may subscribe to beyond its upstreams: the
// outbound routes' filter chains.
const maxCapturedClusters = outbound.MaxFilterChains

// assignments are the EDS resources the caller subscribed to, among the clusters of its
// MeshService's upstreams and (by name only) the ports of any MeshService, and the states of
// the MeshServices they come from; the version changes with their content.
func (st *stream) assignments(ctx context.Context, sub *subscription) ([]*anypb.Any, string, map[types.NamespacedName]*serviceState, error) {
	if st.id.MeshService == "" {
		return nil, "none", nil, nil
	}
	own := st.id.MeshServiceKey()
	index := st.srv.index
	// Watch before reading: a change from now on wakes this stream again.
	index.watch(st, append([]types.NamespacedName{own}, st.upstreamKeys...))
	ownState, err := index.service(ctx, own)
	if err != nil {
		return nil, "", nil, status.Errorf(codes.Unavailable, "endpoints cannot be computed now (%v); retry", err)
	}
	var upstreamKeys []types.NamespacedName
	var selected []endpoints.Upstream
	for _, u := range ownState.upstreams {
		if !slices.Contains(upstreamKeys, u.MeshService) {
			upstreamKeys = append(upstreamKeys, u.MeshService)
		}
		_, requested := slices.BinarySearch(sub.names, u.Cluster)
		if (sub.wildcard || requested) && !slices.ContainsFunc(selected, func(s endpoints.Upstream) bool { return s.Cluster == u.Cluster }) {
			selected = append(selected, u)
		}
	}
	// Clusters the caller asks for that are not its upstreams: those of the outbound routes, for
	// its captured connections to any MeshService port. Any meshed proxy may have them (the
	// outbound routes already name every ready pod); a name that is not a cluster is left out.
	extra := 0
	for _, name := range sub.names {
		if extra == maxCapturedClusters {
			break
		}
		if slices.ContainsFunc(selected, func(s endpoints.Upstream) bool { return s.Cluster == name }) {
			continue
		}
		u, ok := endpoints.ParseCluster(name)
		if !ok {
			continue
		}
		extra++
		selected = append(selected, u)
		if !slices.Contains(upstreamKeys, u.MeshService) {
			upstreamKeys = append(upstreamKeys, u.MeshService)
		}
	}
	if !slices.Equal(upstreamKeys, st.upstreamKeys) {
		st.upstreamKeys = upstreamKeys
		index.watch(st, append([]types.NamespacedName{own}, upstreamKeys...))
	}
	slices.SortFunc(selected, func(a, b endpoints.Upstream) int { return cmp.Compare(a.Cluster, b.Cluster) })
	version := sha256.New()
	resources := make([]*anypb.Any, 0, len(selected))
	states := make(map[types.NamespacedName]*serviceState, len(selected))
	for _, u := range selected {
		state, err := index.service(ctx, u.MeshService)
		if err != nil {
			return nil, "", nil, status.Errorf(codes.Unavailable, "endpoints cannot be computed now (%v); retry", err)
		}
		states[u.MeshService] = state
		res, err := state.assignment(u.Cluster, u.Port)
		if err != nil {
			return nil, "", nil, status.Errorf(codes.Internal, "%v", err)
		}
		resources = append(resources, res.any)
		fmt.Fprintf(version, "%s %s\n", u.Cluster, res.digest)
	}
	return resources, hex.EncodeToString(version.Sum(nil)[:8]), states, nil
}

// outboundRoutes is the outbound routes listener, if the caller subscribed to it (by name, or to
// every listener), and its version; the stream is woken when it changes. Other listener names
// are left out of the response, as clusters that are not the caller's upstreams are.
func (st *stream) outboundRoutes(ctx context.Context, sub *subscription) ([]*anypb.Any, string, error) {
	index := st.srv.outbound
	if _, named := slices.BinarySearch(sub.names, outbound.ListenerName); !sub.wildcard && !named {
		index.unsubscribe(st)
		return nil, "none", nil
	}
	res, err := index.subscribe(ctx, st)
	if err != nil {
		return nil, "", status.Errorf(codes.Unavailable, "outbound routes cannot be computed now (%v); retry", err)
	}
	return []*anypb.Any{res.any}, res.digest, nil
}

// issue signs a leaf for the caller with the current Authority: for the key of its CSR, or a
// key generated here (sent with the certificate).
func (st *stream) issue(reason string) error {
	authority := st.srv.holder.Current()
	if authority == nil {
		return status.Error(codes.Unavailable, "the mesh CA has not published an Authority yet; retry")
	}
	publicKey, keyPEM := st.csrKey, []byte(nil)
	if publicKey == nil {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return status.Errorf(codes.Internal, "generating a key: %v", err)
		}
		if keyPEM, err = encodeKey(key); err != nil {
			return status.Errorf(codes.Internal, "%v", err)
		}
		publicKey = key.Public()
	}
	now := st.srv.opts.Clock.Now()
	leaf, err := authority.SignWorkload(publicKey, st.id.SPIFFEID, st.srv.opts.LeafLifetime, now)
	if err != nil {
		st.log.Error(err, "Failed to sign a workload certificate")
		return status.Errorf(codes.Internal, "signing the certificate failed: %v", err)
	}
	st.authority, st.leaf, st.keyPEM = authority, leaf, keyPEM
	st.leafNotAfter.Store(leaf.NotAfter.UnixNano())
	certificatesIssued.WithLabelValues(reason).Inc()
	st.scheduleRotation(now, leaf.NotAfter)
	st.log.V(1).Info("Signed a workload certificate", "reason", reason, "serial", leaf.Cert.SerialNumber.Text(16),
		"notAfter", leaf.NotAfter, "keyFromCSR", st.csrKey != nil)
	return nil
}

// rotate signs and pushes a new leaf, if the caller still has its identity: its pod is still
// there and the API server still accepts its token (authenticator.recheck).
func (st *stream) rotate(ctx context.Context) error {
	if err := st.recheck(ctx, 0); err != nil {
		return err
	}
	if err := st.issue(issueRotation); err != nil {
		return err
	}
	return st.push(ctx, TypeSecret)
}

// csrRecheckInterval is how often a stream's token is reviewed again at most: a proxy renews
// its key hours apart, and a stream that sends CSR after CSR must not turn each into a
// TokenReview. In between, only the pod is checked (from the cache).
const csrRecheckInterval = time.Minute

// recheck checks that the caller still has its identity before a new certificate: its pod is
// still there, and the API server still accepts its token unless it did less than interval ago
// (a rotation, which the server schedules, asks every time: interval 0).
func (st *stream) recheck(ctx context.Context, interval time.Duration) error {
	now := st.srv.opts.Clock.Now()
	if !st.rechecked.IsZero() && now.Sub(st.rechecked) < interval {
		return st.srv.authn.stillBound(ctx, st.id)
	}
	if err := st.srv.authn.recheck(ctx, st.id, st.credential); err != nil {
		return err
	}
	st.rechecked = now
	return nil
}

// authorityChanged re-signs the leaf with the new Authority and pushes it with the new trust
// bundle.
func (st *stream) authorityChanged(ctx context.Context) error {
	authority := st.srv.holder.Current()
	if authority == nil || authority == st.authority {
		return nil
	}
	if st.leaf != nil {
		if err := st.issue(issueAuthority); err != nil {
			return err
		}
	} else {
		st.authority = authority
	}
	return st.push(ctx, TypeSecret)
}

func (st *stream) scheduleRotation(now, notAfter time.Time) {
	st.stopRotation()
	lifetime := validity(now, notAfter, st.srv.opts.LeafLifetime)
	st.rotation = st.srv.opts.Clock.NewTimer(rotationDelay(lifetime, st.srv.opts.RotationFraction, st.srv.opts.RotationJitter, mathrand.Float64()))
}

// validity is how long a leaf signed at now for lifetime really lasts: lifetime, unless the
// signer's own expiry cut it short. Certificate times have whole seconds, so a NotAfter less
// than a second early is the lifetime asked for.
func validity(now, notAfter time.Time, lifetime time.Duration) time.Duration {
	if notAfter.Add(time.Second).Before(now.Add(lifetime)) {
		return notAfter.Sub(now)
	}
	return lifetime
}

func (st *stream) stopRotation() {
	if st.rotation != nil {
		st.rotation.Stop()
		st.rotation = nil
	}
}

// rotationDelay is when a leaf valid for lifetime is renewed: after fraction of it, give or take
// jitter of that (random in [0, 1) picks where), and never sooner than minRotationDelay.
func rotationDelay(lifetime time.Duration, fraction, jitter, random float64) time.Duration {
	delay := time.Duration(float64(lifetime) * fraction * (1 + jitter*(2*random-1)))
	return max(delay, minRotationDelay)
}

func shortType(typeURL string) string {
	switch typeURL {
	case TypeSecret:
		return "secret"
	case TypeClusterLoadAssignment:
		return "endpoints"
	case TypeListener:
		return "listeners"
	}
	return "other"
}
