package xdsclient

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/outbound"
)

// Handler applies what the control plane sends. An error NACKs the response; the handler keeps
// what it had.
type Handler interface {
	Certificate(c *Certificate) error
	TrustBundle(bundlePEM []byte) error
	Endpoints(a Assignment) error
}

// EndpointsSyncer is a Handler that wants to know when a whole EDS response was applied (also
// one with no clusters): from then on it has every endpoint the control plane knows for the
// clusters it asked for, so a new proxy can take traffic over without answering "no endpoints".
type EndpointsSyncer interface {
	EndpointsSynced()
}

// Options say where the control plane is and who this proxy is.
type Options struct {
	// Address is host:port of the control-plane server.
	Address string
	// ServerName is the name its certificate must carry; the host of Address by default.
	ServerName string
	// CAFile is the PEM trust bundle that verifies the server; re-read on every connect.
	CAFile string
	// TokenFile is the projected service-account token; re-read on every connect.
	TokenFile string

	PodName, Namespace, MeshService, Version string
	Slot                                     int
	// SPIFFEID is the identity the CSR asks for.
	SPIFFEID string
	// Clusters are the EDS resources to watch (the upstreams' SNIs).
	Clusters []string
	// OnOutboundRoutes, when set, subscribes the stream to the outbound routes (the listener
	// outbound.ListenerName) and is called with each version the client accepts, from the
	// stream's goroutine: the table maps the original destinations of captured connections to
	// MeshService ports. A listener that does not decode or that outbound.FromListener refuses is
	// NACKed without calling it; an error it returns NACKs the version too. Either way the proxy
	// keeps the last table it accepted. An empty response (no listener) is an empty table.
	// The client also subscribes to the endpoints (EDS) of every cluster an accepted table
	// routes to, next to Clusters, and calls EndpointsSynced only for an EDS response that
	// holds all of them.
	OnOutboundRoutes func(*outbound.Table) error
	// Key is the proxy's first private key; generated (ECDSA P-256, in memory only) when nil.
	// Every renewal generates a new one (see RenewFraction).
	Key crypto.Signer
	// RenewFraction of a certificate's remaining lifetime, counted from when it arrived, after
	// which the client generates a new key and sends its CSR, so the control plane signs the new
	// key instead of the old one again. 0.4 by default: before the control plane's own rotation
	// (half the lifetime, ±10%), which would sign the old key once more.
	RenewFraction float64

	Logger logr.Logger
	// MinBackoff and MaxBackoff bound the reconnect delay (0.5 s and 30 s by default).
	MinBackoff, MaxBackoff time.Duration
}

// DefaultRenewFraction is Options.RenewFraction's default.
const DefaultRenewFraction = 0.4

// minRenewDelay keeps a certificate that arrives already due from renewing in a tight loop.
const minRenewDelay = time.Second

// Client holds the stream to the control plane.
type Client struct {
	opts Options
	log  logr.Logger

	mu        sync.Mutex
	connected bool
	// key signs the proxy's handshakes with its certificate; next, once generated at renewal,
	// waits for its own. csrPEM asks for the newest of the two.
	key     crypto.Signer
	next    crypto.Signer
	csrPEM  []byte
	renewAt time.Time // zero until key has a certificate

	streams        prometheus.Counter
	connectedGauge prometheus.Gauge
	acks           *prometheus.CounterVec
	nacks          *prometheus.CounterVec
	renewals       prometheus.Counter
}

// New validates the options and generates the key and CSR.
func New(opts Options) (*Client, error) {
	if opts.Address == "" || opts.CAFile == "" || opts.TokenFile == "" {
		return nil, errors.New("the control-plane address, CA file and token file are required")
	}
	if opts.ServerName == "" {
		host, _, err := net.SplitHostPort(opts.Address)
		if err != nil {
			return nil, fmt.Errorf("control-plane address %q: %w", opts.Address, err)
		}
		opts.ServerName = host
	}
	uri, err := identity.ParseSPIFFEID(opts.SPIFFEID)
	if err != nil {
		return nil, err
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 500 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(30*time.Second, opts.MinBackoff)
	}
	if opts.RenewFraction == 0 {
		opts.RenewFraction = DefaultRenewFraction
	}
	if opts.RenewFraction <= 0 || opts.RenewFraction >= 1 {
		return nil, fmt.Errorf("the renewal fraction must be between 0 and 1, not %v", opts.RenewFraction)
	}
	key := opts.Key
	if key == nil {
		if key, err = generateKey(); err != nil {
			return nil, err
		}
	}
	csrPEM, err := createCSR(key, uri)
	if err != nil {
		return nil, err
	}
	c := &Client{
		opts:   opts,
		key:    key,
		csrPEM: csrPEM,
		log:    opts.Logger,
		streams: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshlift_proxy_control_plane_streams_total", Help: "Streams opened to the control plane.",
		}),
		connectedGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshlift_proxy_control_plane_connected", Help: "1 while a stream to the control plane is open and answered.",
		}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlift_proxy_xds_acks_total", Help: "Control-plane responses applied, by type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlift_proxy_xds_nacks_total", Help: "Control-plane responses refused, by type.",
		}, []string{"type"}),
		renewals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshlift_proxy_key_renewals_total", Help: "New private keys generated to renew the workload certificate.",
		}),
	}
	return c, nil
}

func generateKey() (crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the proxy key: %w", err)
	}
	return key, nil
}

func createCSR(key crypto.Signer, uri *url.URL) ([]byte, error) {
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{uri}}, key)
	if err != nil {
		return nil, fmt.Errorf("creating the CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}), nil
}

// Key is the proxy's private key in use: the one its latest certificate is for (it signs the
// TLS handshakes with that certificate).
func (c *Client) Key() crypto.Signer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.key
}

// Collectors are the client's metrics.
func (c *Client) Collectors() []prometheus.Collector {
	return []prometheus.Collector{c.streams, c.connectedGauge, c.acks, c.nacks, c.renewals}
}

// renewalTime is when a certificate that arrived at received and expires at notAfter is
// renewed: after fraction of what was left of it. Counting from its arrival rather than its
// NotBefore keeps the signer's backdating and clock skew out of it.
func renewalTime(received, notAfter time.Time, fraction float64) time.Time {
	return received.Add(time.Duration(float64(notAfter.Sub(received)) * fraction))
}

// renewal says when the next key is due; false while a new key waits for its certificate or
// before the first certificate.
func (c *Client) renewal() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.next != nil || c.renewAt.IsZero() {
		return time.Time{}, false
	}
	return c.renewAt, true
}

// startRenewal generates the next key and its CSR; the next node sent carries it.
func (c *Client) startRenewal() error {
	key, err := generateKey()
	if err != nil {
		return err
	}
	uri, err := identity.ParseSPIFFEID(c.opts.SPIFFEID)
	if err != nil {
		return err
	}
	csrPEM, err := createCSR(key, uri)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.next, c.csrPEM = key, csrPEM
	c.mu.Unlock()
	c.renewals.Inc()
	return nil
}

// keyFor is the key of ours that leaf is for: the one in use, or the next one.
func (c *Client) keyFor(leaf *x509.Certificate) crypto.Signer {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, key := range []crypto.Signer{c.next, c.key} {
		if key != nil && publicKeyMatches(leaf, key) {
			return key
		}
	}
	return nil
}

// certified records that the handler applied leaf for key at now: a certificate for the next
// key makes it the key in use, and sets the renewal from its lifetime; another certificate for
// the key in use (the control plane rotated first, or a new stream) never postpones the renewal.
func (c *Client) certified(key crypto.Signer, leaf *x509.Certificate, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	due := renewalTime(now, leaf.NotAfter, c.opts.RenewFraction)
	switch {
	case key == c.next:
		c.key, c.next, c.renewAt = key, nil, due
	case key == c.key && (c.renewAt.IsZero() || due.Before(c.renewAt)):
		c.renewAt = due
	}
}

// Connected says whether a stream is open and the server has answered on it.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

func (c *Client) setConnected(v bool) {
	c.mu.Lock()
	c.connected = v
	c.mu.Unlock()
	if v {
		c.connectedGauge.Set(1)
	} else {
		c.connectedGauge.Set(0)
	}
}

// Run keeps a stream open until ctx ends, reconnecting with jittered exponential backoff.
func (c *Client) Run(ctx context.Context, h Handler) error {
	backoff := c.opts.MinBackoff
	for {
		started := time.Now()
		answered, err := c.stream(ctx, h)
		c.setConnected(false)
		if ctx.Err() != nil {
			return nil
		}
		if answered {
			// The server was reachable: a short pause only, whatever ended the stream.
			backoff = c.opts.MinBackoff
		}
		wait := jitter(backoff)
		c.log.Info("Control-plane stream ended; reconnecting", "error", err, "after", wait.String(), "lasted", time.Since(started).Round(time.Millisecond).String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		if !answered {
			backoff = min(2*backoff, c.opts.MaxBackoff)
		}
	}
}

// jitter spreads d by ±20%.
func jitter(d time.Duration) time.Duration {
	n, err := rand.Int(rand.Reader, big.NewInt(400))
	if err != nil {
		return d
	}
	return d * time.Duration(800+n.Int64()) / 1000
}

func (c *Client) dialOptions() ([]grpc.DialOption, error) {
	bundle, err := os.ReadFile(c.opts.CAFile)
	if err != nil {
		return nil, fmt.Errorf("reading the control plane's trust bundle: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		return nil, fmt.Errorf("trust bundle %s holds no PEM certificate", c.opts.CAFile)
	}
	tlsConfig := &tls.Config{RootCAs: roots, ServerName: c.opts.ServerName, MinVersion: tls.VersionTLS13}
	return []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}, nil
}

func (c *Client) token() (string, error) {
	data, err := os.ReadFile(c.opts.TokenFile)
	if err != nil {
		return "", fmt.Errorf("reading the service-account token: %w", err)
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fmt.Errorf("service-account token file %s is empty", c.opts.TokenFile)
	}
	return token, nil
}

func (c *Client) node() *corev3.Node {
	str := func(s string) *structpb.Value { return structpb.NewStringValue(s) }
	return &corev3.Node{
		Id: c.opts.PodName + "." + c.opts.Namespace,
		Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			MetaPodName:     str(c.opts.PodName),
			MetaNamespace:   str(c.opts.Namespace),
			MetaCSR:         str(string(c.csr())),
			MetaMeshService: str(c.opts.MeshService),
			MetaSlot:        str(strconv.Itoa(c.opts.Slot)),
			MetaVersion:     str(c.opts.Version),
		}},
	}
}

func (c *Client) csr() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.csrPEM
}

type received struct {
	resp *discoveryv3.DiscoveryResponse
	err  error
}

// stream runs one stream; answered says whether the server sent anything on it.
func (c *Client) stream(ctx context.Context, h Handler) (answered bool, err error) {
	dialOpts, err := c.dialOptions()
	if err != nil {
		return false, err
	}
	token, err := c.token()
	if err != nil {
		return false, err
	}
	conn, err := grpc.NewClient(c.opts.Address, dialOpts...)
	if err != nil {
		return false, fmt.Errorf("dialing the control plane: %w", err)
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token))
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return false, fmt.Errorf("opening the discovery stream: %w", err)
	}
	c.streams.Inc()
	secrets := []string{SecretCertificate, SecretTrustBundle}
	if at, due := c.renewal(); due && !time.Now().Before(at) {
		// Due while disconnected: the first request asks for the new key right away.
		if err := c.startRenewal(); err != nil {
			return false, err
		}
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: c.node(), TypeUrl: TypeSecret, ResourceNames: secrets}); err != nil {
		return false, fmt.Errorf("requesting secrets: %w", err)
	}
	// clusters are the EDS subscription: the upstreams', then those of the outbound routes
	// (captured connections go to any MeshService port the table names). It only grows on a
	// stream; a new stream starts again from the upstreams.
	clusters := slices.Clone(c.opts.Clusters)
	if len(clusters) > 0 {
		if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: TypeAssignment, ResourceNames: clusters}); err != nil {
			return false, fmt.Errorf("requesting endpoints: %w", err)
		}
	}
	listeners := []string{outbound.ListenerName}
	if c.opts.OnOutboundRoutes != nil {
		if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: TypeListener, ResourceNames: listeners}); err != nil {
			return false, fmt.Errorf("requesting the outbound routes: %w", err)
		}
	}
	responses := make(chan received)
	go func() {
		for {
			resp, err := stream.Recv()
			select {
			case responses <- received{resp, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	accepted := map[string]string{} // type URL -> last accepted version on this stream
	// lastNonce is of the last secret response accepted: a renewal acknowledges it again (after
	// a NACK, the control plane takes the renewal for stale and reads only its node, its CSR).
	lastNonce := ""
	lastEDSNonce := ""
	for {
		var renew <-chan time.Time
		var timer *time.Timer
		if at, due := c.renewal(); due {
			timer = time.NewTimer(max(time.Until(at), minRenewDelay))
			renew = timer.C
		}
		var r received
		renewing := false
		select {
		case <-ctx.Done():
		case <-renew:
			renewing = true
		case r = <-responses:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return answered, ctx.Err()
		}
		if renewing {
			if err := c.startRenewal(); err != nil {
				return answered, err
			}
			c.log.Info("Renewing the certificate with a new key")
			// The same subscription, acknowledging what was accepted: only the node's CSR is new,
			// and the control plane answers it with a certificate for the new key.
			req := &discoveryv3.DiscoveryRequest{
				Node: c.node(), TypeUrl: TypeSecret, ResourceNames: secrets,
				VersionInfo: accepted[TypeSecret], ResponseNonce: lastNonce,
			}
			if err := stream.Send(req); err != nil {
				return answered, fmt.Errorf("sending the new key's CSR: %w", err)
			}
			continue
		}
		if r.err != nil {
			return answered, fmt.Errorf("control-plane stream (%s): %w", status.Code(r.err), r.err)
		}
		resp := r.resp
		if !answered {
			answered = true
			c.setConnected(true)
			c.log.Info("Connected to the control plane", "address", c.opts.Address)
		}
		names := clusters
		switch resp.GetTypeUrl() {
		case TypeSecret:
			names = secrets
		case TypeListener:
			names = listeners
		}
		req := &discoveryv3.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResourceNames: names, ResponseNonce: resp.GetNonce()}
		table, applyErr := c.apply(resp, h, clusters)
		if applyErr != nil {
			c.nacks.WithLabelValues(shortType(resp.GetTypeUrl())).Inc()
			c.log.Error(applyErr, "Refusing a control-plane response", "type", shortType(resp.GetTypeUrl()), "version", resp.GetVersionInfo())
			req.VersionInfo = accepted[resp.GetTypeUrl()]
			req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: applyErr.Error()}
		} else {
			c.acks.WithLabelValues(shortType(resp.GetTypeUrl())).Inc()
			accepted[resp.GetTypeUrl()] = resp.GetVersionInfo()
			req.VersionInfo = resp.GetVersionInfo()
			switch resp.GetTypeUrl() {
			case TypeSecret:
				lastNonce = resp.GetNonce()
			case TypeAssignment:
				lastEDSNonce = resp.GetNonce()
			}
		}
		if err := stream.Send(req); err != nil {
			return answered, fmt.Errorf("acknowledging: %w", err)
		}
		if grown, ok := withClusters(clusters, table.Clusters()); ok {
			clusters = grown
			c.log.V(1).Info("Subscribing to the endpoints of the outbound routes' clusters", "clusters", len(clusters))
			req := &discoveryv3.DiscoveryRequest{
				TypeUrl: TypeAssignment, ResourceNames: clusters,
				VersionInfo: accepted[TypeAssignment], ResponseNonce: lastEDSNonce,
			}
			if err := stream.Send(req); err != nil {
				return answered, fmt.Errorf("subscribing to the outbound routes' endpoints: %w", err)
			}
		}
	}
}

// withClusters is subscribed with the clusters of more it lacks, appended in order; false when
// it lacks none.
func withClusters(subscribed, more []string) ([]string, bool) {
	var added []string
	for _, name := range more {
		if !slices.Contains(subscribed, name) {
			added = append(added, name)
		}
	}
	if len(added) == 0 {
		return subscribed, false
	}
	return append(slices.Clone(subscribed), added...), true
}

// apply decodes every resource first and hands them to h only when all of them are good, so
// a bad response changes nothing.
// It returns the outbound routes it accepted (nil for other types).
func (c *Client) apply(resp *discoveryv3.DiscoveryResponse, h Handler, clusters []string) (*outbound.Table, error) {
	switch resp.GetTypeUrl() {
	case TypeSecret:
		var cert *Certificate
		var bundle []byte
		for _, res := range resp.GetResources() {
			name, crt, b, err := DecodeSecret(res)
			if err != nil {
				return nil, err
			}
			switch {
			case crt != nil && (name == SecretCertificate || name == c.opts.SPIFFEID):
				if crt.Key == nil {
					crt.Key = c.keyFor(crt.Leaf)
				}
				if crt.Key == nil || !publicKeyMatches(crt.Leaf, crt.Key) {
					return nil, invalid("certificate %q is not for this proxy's key", name)
				}
				cert = crt
			case b != nil && name == SecretTrustBundle:
				bundle = b
			default:
				return nil, invalid("unexpected secret %q", name)
			}
		}
		if bundle != nil {
			if err := h.TrustBundle(bundle); err != nil {
				return nil, err
			}
		}
		if cert != nil {
			if err := h.Certificate(cert); err != nil {
				return nil, err
			}
			c.certified(cert.Key, cert.Leaf, time.Now())
		}
		return nil, nil
	case TypeAssignment:
		want := make(map[string]bool, len(clusters))
		for _, name := range clusters {
			want[name] = true
		}
		assignments := make([]Assignment, 0, len(resp.GetResources()))
		got := make(map[string]bool, len(resp.GetResources()))
		for _, res := range resp.GetResources() {
			a, err := DecodeAssignment(res)
			if err != nil {
				return nil, err
			}
			if !want[a.Cluster] {
				return nil, invalid("unexpected cluster %q", a.Cluster)
			}
			got[a.Cluster] = true
			assignments = append(assignments, a)
		}
		for _, a := range assignments {
			if err := h.Endpoints(a); err != nil {
				return nil, err
			}
		}
		// A response to the subscription before the outbound routes' clusters were added does
		// not sync them: the control plane sends every cluster subscribed to (empty when its
		// MeshService has no such port), so a response that lacks one is an older answer.
		// (The upstreams' clusters keep the rule of proxies without capture: any response.)
		complete := true
		for _, name := range clusters[len(c.opts.Clusters):] {
			complete = complete && got[name]
		}
		if syncer, ok := h.(EndpointsSyncer); ok && complete {
			syncer.EndpointsSynced()
		}
		return nil, nil
	case TypeListener:
		if c.opts.OnOutboundRoutes == nil {
			return nil, invalid("unexpected listeners: this proxy did not subscribe to the outbound routes")
		}
		table := &outbound.Table{}
		switch resources := resp.GetResources(); len(resources) {
		case 0:
		case 1:
			var err error
			if table, err = DecodeOutboundRoutes(resources[0]); err != nil {
				return nil, err
			}
		default:
			return nil, invalid("%d listeners, want only %s", len(resources), outbound.ListenerName)
		}
		if err := c.opts.OnOutboundRoutes(table); err != nil {
			return nil, err
		}
		return table, nil
	default:
		return nil, invalid("unexpected resource type %q", resp.GetTypeUrl())
	}
}

func publicKeyMatches(cert *x509.Certificate, key crypto.Signer) bool {
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(key.Public())
}

func shortType(typeURL string) string {
	switch typeURL {
	case TypeSecret:
		return "secret"
	case TypeAssignment:
		return "endpoints"
	case TypeListener:
		return "listeners"
	default:
		return "other"
	}
}
