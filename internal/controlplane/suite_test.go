package controlplane_test

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
	"io"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/controlplane"
	"github.com/meshlift/meshlift/internal/controlplane/caller"
	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/podcache"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// Each test runs the control plane as main.go wires it (controlplane.Setup in a manager of its
// own) against envtest's kube-apiserver, which verifies the tokens (TokenReview) and mints them
// (TokenRequest). Clients dial it over real TLS with go-control-plane's generated gRPC client.

var env *testenv.Env

const (
	timeout           = 30 * time.Second
	operatorNamespace = "meshlift-system"
	trustDomain       = "test.local"
	// quiet is how long a test waits to be sure that nothing more arrives on a stream.
	quiet = time.Second
)

func TestMain(m *testing.M) {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapLevel())))
	testenv.Main(m, &env)
}

// zapLevel keeps the server quiet unless MESHLIFT_TEST_LOG=debug asks for its logs.
func zapLevel() zapcore.Level {
	if os.Getenv("MESHLIFT_TEST_LOG") == "debug" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel
}

// controlPlane is a running server and what a test needs to talk to it.
type controlPlane struct {
	server *controlplane.Server
	holder *identity.Holder
	// cache is the manager's cache: what the server sees.
	cache client.Reader
}

// startControlPlane runs a server with opts (listening on a free local port) in a manager of its
// own, with a fresh mesh CA, until the test ends.
func startControlPlane(t testing.TB, opts controlplane.Options) *controlPlane {
	t.Helper()
	return startControlPlaneOn(t, env.Config, opts)
}

// startControlPlaneOn is startControlPlane with the manager talking to the API server with cfg.
func startControlPlaneOn(t testing.TB, cfg *rest.Config, opts controlplane.Options) *controlPlane {
	t.Helper()
	holder := identity.NewHolder()
	holder.Set(newAuthority(t))
	cp := startControlPlaneWithOn(t, cfg, opts, holder)
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		if err := cp.server.Ready(nil); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	return cp
}

// startControlPlaneWith is startControlPlane with the mesh CA of holder (which may have none
// yet); it returns once the server listens.
func startControlPlaneWith(t testing.TB, opts controlplane.Options, holder *identity.Holder) *controlPlane {
	t.Helper()
	return startControlPlaneWithOn(t, env.Config, opts, holder)
}

func startControlPlaneWithOn(t testing.TB, cfg *rest.Config, opts controlplane.Options, holder *identity.Holder) *controlPlane {
	t.Helper()
	if opts.Address == "" {
		opts.Address = "127.0.0.1:0"
	}
	opts.TrustDomain = trustDomain
	opts.Namespace = operatorNamespace
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  podcache.CacheOptions(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	server, err := controlplane.Setup(ctx, mgr, holder, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager stopped with an error: %v", err)
		}
	})
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		return server.Addr() != nil, "the server does not listen yet"
	})
	return &controlPlane{server: server, holder: holder, cache: mgr.GetCache()}
}

// newAuthority is a fresh built-in mesh CA.
func newAuthority(t testing.TB) *identity.Authority {
	t.Helper()
	certPEM, keyPEM, err := identity.NewRoot(trustDomain, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	authority, err := identity.NewAuthority(certPEM, keyPEM, nil, certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return authority
}

// serverName is the name proxies verify the server's certificate against.
func serverName() string {
	return "meshlift-control-plane." + operatorNamespace + ".svc"
}

// dial connects over TLS, trusting only the current trust bundle, as a proxy does.
func (cp *controlPlane) dial(t testing.TB) *grpc.ClientConn {
	t.Helper()
	return cp.dialFrom(t, "")
}

// dialFrom is dial from the local address ip ("" for any): the loopback network has all of
// 127.0.0.0/8, so tests play several peers (pods) on one machine.
func (cp *controlPlane) dialFrom(t testing.TB, ip string) *grpc.ClientConn {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(cp.holder.Current().TrustBundle())
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: serverName(), MinVersion: tls.VersionTLS13})
	options := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if ip != "" {
		options = append(options, grpc.WithContextDialer(dialerFrom(ip)))
	}
	conn, err := grpc.NewClient(cp.server.Addr().String(), options...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// dialerFrom dials TCP from the local address ip.
func dialerFrom(ip string) func(context.Context, string) (net.Conn, error) {
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		return dialer.DialContext(ctx, "tcp", addr)
	}
}

// xds is one client stream: its responses and how it ended arrive on channels.
type xds struct {
	stream    grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	responses chan *discoveryv3.DiscoveryResponse
	ended     chan error
	cancel    context.CancelFunc
}

// openADS opens an ADS stream authenticated with token ("" for none).
func (cp *controlPlane) openADS(t testing.TB, token string) *xds {
	t.Helper()
	return openADSOn(t, cp.dial(t), token)
}

// openADSOn opens an ADS stream on conn.
func openADSOn(t testing.TB, conn *grpc.ClientConn, token string) *xds {
	t.Helper()
	return openStream(t, token, func(ctx context.Context) (grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse], error) {
		return discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	})
}

func openStream(t testing.TB, token string, open func(context.Context) (grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse], error)) *xds {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	stream, err := open(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &xds{stream: stream, responses: make(chan *discoveryv3.DiscoveryResponse, 16), ended: make(chan error, 1), cancel: cancel}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				c.ended <- err
				return
			}
			c.responses <- resp
		}
	}()
	t.Cleanup(cancel)
	return c
}

// send sends req. io.EOF means the server already ended the stream (a refusal before the first
// request, for instance): its status arrives through Recv, so tests look there.
func (c *xds) send(t testing.TB, req *discoveryv3.DiscoveryRequest) {
	t.Helper()
	if err := c.stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("failed to send a request: %v", err)
	}
}

// recv waits for the next response; the stream must not end first.
func (c *xds) recv(t testing.TB, within time.Duration) *discoveryv3.DiscoveryResponse {
	t.Helper()
	select {
	case resp := <-c.responses:
		return resp
	case err := <-c.ended:
		t.Fatalf("the stream ended (%v) instead of sending a response", err)
	case <-time.After(within):
		t.Fatalf("no response within %s", within)
	}
	return nil
}

// ack accepts resp.
func (c *xds) ack(t testing.TB, resp *discoveryv3.DiscoveryResponse, names []string) {
	t.Helper()
	c.send(t, &discoveryv3.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(), ResourceNames: names})
}

// expectNothing checks that no response arrives and the stream stays open for d.
func (c *xds) expectNothing(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case resp := <-c.responses:
		t.Fatalf("unexpected response of type %s version %s", resp.GetTypeUrl(), resp.GetVersionInfo())
	case err := <-c.ended:
		t.Fatalf("the stream ended: %v", err)
	case <-time.After(d):
	}
}

// refusedWith waits until the stream ends and checks its gRPC code and refusal reason.
func (c *xds) refusedWith(t testing.TB, code codes.Code, reason identity.Reason) {
	t.Helper()
	select {
	case resp := <-c.responses:
		t.Fatalf("got a response of type %s, want a %s refusal", resp.GetTypeUrl(), reason)
	case err := <-c.ended:
		checkRefusal(t, err, code, reason)
	case <-time.After(timeout):
		t.Fatalf("the stream did not end within %s; want a %s refusal", timeout, reason)
	}
}

func checkRefusal(t testing.TB, err error, code codes.Code, reason identity.Reason) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("the stream ended with %s (%q), want %s", st.Code(), st.Message(), code)
	}
	if reason != "" && !hasPrefix(st.Message(), string(reason)+": ") {
		t.Fatalf("the refusal says %q, want reason %s", st.Message(), reason)
	}
}

func hasPrefix(s, prefix string) bool { return len(s) >= len(prefix) && s[:len(prefix)] == prefix }

// workload is an injected pod, its service account and a token bound to it.
type workload struct {
	pod   *corev1.Pod
	token string
}

func (w workload) spiffeID() string {
	return identity.SPIFFEID(trustDomain, w.pod.Namespace, w.pod.Spec.ServiceAccountName)
}

// createServiceAccount creates a service account (unless it exists).
func createServiceAccount(t testing.TB, ns, name string) {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := env.Client.Create(context.Background(), sa); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// createPod creates a pod injected for meshService, running as serviceAccount, and waits until
// the control plane sees it.
func (cp *controlPlane) createPod(t testing.TB, ns, name, serviceAccount, meshService string, opts ...gen.PodOption) *corev1.Pod {
	t.Helper()
	createServiceAccount(t, ns, serviceAccount)
	pod := gen.Pod(name, append([]gen.PodOption{
		gen.PodMeta(gen.SetNamespace(ns), gen.SetLabels("app", meshService), gen.SetAnnotations(meshv1alpha1.AnnotationInjectionHash, "test")),
		gen.Injected(meshService, "v1"),
		gen.SetServiceAccount(serviceAccount),
	}, opts...)...)
	if err := env.Client.Create(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	cp.waitSeen(t, pod)
	return pod
}

// waitSeen waits until the control plane's cache has pod (with its UID).
func (cp *controlPlane) waitSeen(t testing.TB, pod *corev1.Pod) {
	t.Helper()
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		seen := &corev1.Pod{}
		if err := cp.cache.Get(ctx, client.ObjectKeyFromObject(pod), seen); err != nil {
			return false, err.Error()
		}
		return seen.UID == pod.UID, "the cache has another pod of that name"
	})
}

// waitGone waits until the control plane's cache no longer has pod.
func (cp *controlPlane) waitGone(t testing.TB, pod *corev1.Pod) {
	t.Helper()
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		err := cp.cache.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{})
		return apierrors.IsNotFound(err), fmt.Sprintf("the cache still has the pod (%v)", err)
	})
}

// workload creates an injected pod and mints a token bound to it with audience meshlift.
func (cp *controlPlane) workload(t testing.TB, ns, name, serviceAccount, meshService string, opts ...gen.PodOption) workload {
	t.Helper()
	pod := cp.createPod(t, ns, name, serviceAccount, meshService, opts...)
	return workload{pod: pod, token: mintToken(t, pod, caller.Audience)}
}

// mintToken asks the API server for a token of the pod's service account bound to the pod
// (nil: not bound), for audience, valid 10 minutes (the API's minimum).
func mintToken(t testing.TB, pod *corev1.Pod, audience string) string {
	t.Helper()
	request := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         []string{audience},
		ExpirationSeconds: ptr.To[int64](600),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	return requestToken(t, pod.Namespace, pod.Spec.ServiceAccountName, request)
}

func requestToken(t testing.TB, ns, serviceAccount string, request *authenticationv1.TokenRequest) string {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: serviceAccount}}
	if err := env.Client.SubResource("token").Create(context.Background(), sa, request); err != nil {
		t.Fatalf("failed to mint a token for %s/%s: %v", ns, serviceAccount, err)
	}
	return request.Status.Token
}

// setStatus makes the pod Running with IP ip, ready or not.
func setStatus(t testing.TB, pod *corev1.Pod, ip string, ready bool) {
	t.Helper()
	ctx := context.Background()
	current := &corev1.Pod{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), current); err != nil {
		t.Fatal(err)
	}
	if ready {
		gen.Ready(current)(&current.Status)
	} else {
		gen.NotReady(current)(&current.Status)
	}
	current.Status.PodIP = ip
	current.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	if err := env.Client.Status().Update(ctx, current); err != nil {
		t.Fatal(err)
	}
}

// node is what a proxy in pod sends, with csrPEM (nil: no CSR).
func node(pod *corev1.Pod, csrPEM []byte) *corev3.Node {
	fields := map[string]*structpb.Value{
		caller.MetaPodName:      structpb.NewStringValue(pod.Name),
		caller.MetaPodNamespace: structpb.NewStringValue(pod.Namespace),
		caller.MetaMeshService:  structpb.NewStringValue(pod.Annotations[meshv1alpha1.AnnotationMeshService]),
		caller.MetaSlot:         structpb.NewStringValue("1"),
		caller.MetaVersion:      structpb.NewStringValue("v1"),
	}
	if csrPEM != nil {
		fields[caller.MetaCSR] = structpb.NewStringValue(string(csrPEM))
	}
	return &corev3.Node{Id: pod.Name + "." + pod.Namespace, Metadata: &structpb.Struct{Fields: fields}}
}

// newCSR makes a key and a CSR for uris, optionally changed by edit.
func newCSR(t testing.TB, edit func(*x509.CertificateRequest), uris ...string) (crypto.Signer, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// secrets decodes an SDS response by resource name.
func secrets(t testing.TB, resp *discoveryv3.DiscoveryResponse) map[string]*tlsv3.Secret {
	t.Helper()
	if resp.GetTypeUrl() != controlplane.TypeSecret {
		t.Fatalf("got a response of type %s, want secrets", resp.GetTypeUrl())
	}
	if resp.GetVersionInfo() == "" || resp.GetNonce() == "" {
		t.Fatalf("the response has version %q and nonce %q; both must be set", resp.GetVersionInfo(), resp.GetNonce())
	}
	out := map[string]*tlsv3.Secret{}
	for _, res := range resp.GetResources() {
		secret := &tlsv3.Secret{}
		if err := res.UnmarshalTo(secret); err != nil {
			t.Fatal(err)
		}
		out[secret.GetName()] = secret
	}
	return out
}

// leafOf parses the leaf of a certificate secret.
func leafOf(t testing.TB, secret *tlsv3.Secret) *x509.Certificate {
	t.Helper()
	chain := secret.GetTlsCertificate().GetCertificateChain().GetInlineBytes()
	block, _ := pem.Decode(chain)
	if block == nil {
		t.Fatalf("secret %s holds no certificate", secret.GetName())
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// verifyLeaf checks that cert is a workload certificate for spiffeID that chains to bundlePEM.
func verifyLeaf(t testing.TB, cert *x509.Certificate, spiffeID string, bundlePEM []byte) {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundlePEM) {
		t.Fatal("the trust bundle holds no certificate")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("the leaf does not verify with the trust bundle: %v", err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != spiffeID || len(cert.DNSNames) > 0 || cert.IsCA {
		t.Fatalf("the leaf is for %v (DNS %v, CA %v), want exactly %s", cert.URIs, cert.DNSNames, cert.IsCA, spiffeID)
	}
}

// metricValue reads a counter or gauge of the operator's metrics registry (0 when absent).
func metricValue(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, family := range families {
		if family.GetName() != name {
			continue
		}
		for _, m := range family.GetMetric() {
			if matches(m, labels) {
				switch {
				case m.GetCounter() != nil:
					return m.GetCounter().GetValue()
				case m.GetGauge() != nil:
					return m.GetGauge().GetValue()
				case m.GetHistogram() != nil:
					return float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	return 0
}

func matches(m *dto.Metric, labels map[string]string) bool {
	for _, pair := range m.GetLabel() {
		if want, ok := labels[pair.GetName()]; ok && want != pair.GetValue() {
			return false
		}
	}
	return true
}

// samePublicKey reports whether cert holds key's public key.
func samePublicKey(cert *x509.Certificate, key crypto.Signer) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}
