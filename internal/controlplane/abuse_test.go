package controlplane_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	authenticationv1client "k8s.io/client-go/kubernetes/typed/authentication/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/meshlift/meshlift/internal/controlplane"
	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/podcache"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// The attacks of a pod on the control plane itself: bad tokens that would each cost a
// TokenReview, many streams at once, and a token or identity that is gone by the next rotation.

// reviewCounter counts the TokenReviews the control plane sends to envtest's API server, on the
// way there (a wrapped transport of the manager's config: the requests are real and the API
// server answers them). While held, it keeps them from leaving until released, as a slow API
// server would: that is what keeps a stream unauthenticated for as long as a test needs.
type reviewCounter struct {
	count atomic.Int64
	mu    sync.Mutex
	hold  chan struct{} // nil: not holding
}

// config is env.Config with the manager's requests going through the counter.
func (rc *reviewCounter) config() *rest.Config {
	cfg := rest.CopyConfig(env.Config)
	cfg.Wrap(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/tokenreviews") {
				rc.count.Add(1)
				rc.mu.Lock()
				hold := rc.hold
				rc.mu.Unlock()
				if hold != nil {
					select {
					case <-hold:
					case <-req.Context().Done():
						return nil, req.Context().Err()
					}
				}
			}
			return next.RoundTrip(req)
		})
	})
	return cfg
}

// holdReviews keeps TokenReviews from reaching the API server until the returned func is called
// (or the test ends).
func (rc *reviewCounter) holdReviews(t testing.TB) (release func()) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	hold := make(chan struct{})
	rc.hold = hold
	var once sync.Once
	release = func() {
		once.Do(func() {
			rc.mu.Lock()
			rc.hold = nil
			rc.mu.Unlock()
			close(hold)
		})
	}
	t.Cleanup(release)
	return release
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// startCountedControlPlane is startControlPlane with its TokenReviews counted.
func startCountedControlPlane(t testing.TB, opts controlplane.Options) (*controlPlane, *reviewCounter) {
	t.Helper()
	rc := &reviewCounter{}
	return startControlPlaneOn(t, rc.config(), opts), rc
}

// forgedToken is a JWT that looks like pod's projected token for meshlift (audience, exp, pod
// binding; a random jti makes each one new) with a random signature: only the API server can
// tell it from a real one.
func forgedToken(t testing.TB, pod *corev1.Pod) string {
	t.Helper()
	return signedLike(t, map[string]any{
		"aud": []string{"meshlift"},
		"exp": time.Now().Add(10 * time.Minute).Unix(),
		"iat": time.Now().Unix(),
		"iss": "https://kubernetes.default.svc.cluster.local",
		"jti": randomText(t),
		"sub": "system:serviceaccount:" + pod.Namespace + ":" + pod.Spec.ServiceAccountName,
		"kubernetes.io": map[string]any{
			"namespace":      pod.Namespace,
			"pod":            map[string]any{"name": pod.Name, "uid": string(pod.UID)},
			"serviceaccount": map[string]any{"name": pod.Spec.ServiceAccountName, "uid": randomText(t)},
		},
	})
}

// signedLike encodes claims as a JWT with an RS256 header and a random signature.
func signedLike(t testing.TB, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	signature := make([]byte, 256)
	if _, err := rand.Read(signature); err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"RS256","kid":"forged"}`)) + "." + enc.EncodeToString(payload) + "." + enc.EncodeToString(signature)
}

func randomText(t testing.TB) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// withClaims is a real token whose payload is edited (so its signature no longer matches).
func withClaims(t testing.TB, token string, edit func(map[string]any)) string {
	t.Helper()
	parts := strings.Split(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{}
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	edit(claims)
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]
}

func tokenReviewsTotal(t testing.TB, result string) float64 {
	t.Helper()
	return metricValue(t, "meshlift_control_plane_token_reviews_total", map[string]string{"result": result})
}

func TestTokensThatCannotBeValidCostNoTokenReview(t *testing.T) {
	cp, reviews := startCountedControlPlane(t, controlplane.Options{})
	for _, tc := range []struct {
		name   string
		token  func(t *testing.T, pod *corev1.Pod) string
		reason identity.Reason
	}{
		{
			name:   "a token that is not a JWT",
			token:  func(*testing.T, *corev1.Pod) string { return "not-a-jwt" },
			reason: identity.ReasonInvalidToken,
		},
		{
			name:   "a real token for another audience",
			token:  func(t *testing.T, pod *corev1.Pod) string { return mintToken(t, pod, "vault") },
			reason: identity.ReasonWrongAudience,
		},
		{
			name: "a real token whose exp has passed",
			token: func(t *testing.T, pod *corev1.Pod) string {
				return withClaims(t, mintToken(t, pod, "meshlift"), func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() })
			},
			reason: identity.ReasonExpiredToken,
		},
		{
			name: "a real token that is not valid yet",
			token: func(t *testing.T, pod *corev1.Pod) string {
				return withClaims(t, mintToken(t, pod, "meshlift"), func(c map[string]any) { c["nbf"] = time.Now().Add(time.Hour).Unix() })
			},
			reason: identity.ReasonInvalidToken,
		},
		{
			name: "an unsigned token",
			token: func(t *testing.T, pod *corev1.Pod) string {
				parts := strings.Split(forgedToken(t, pod), ".")
				return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + "."
			},
			reason: identity.ReasonInvalidToken,
		},
		{
			name: "a real token that is not bound to a pod",
			token: func(t *testing.T, pod *corev1.Pod) string {
				return requestToken(t, pod.Namespace, pod.Spec.ServiceAccountName, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
					Audiences: []string{"meshlift"}, ExpirationSeconds: ptr.To[int64](600),
				}})
			},
			reason: identity.ReasonUnboundToken,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := cp.createPod(t, env.Namespace(t, "precheck"), "a-1", "a", "a")
			token := tc.token(t, pod)
			before, prechecked := reviews.count.Load(), tokenReviewsTotal(t, "precheck")
			c := cp.openADS(t, token)
			c.send(t, certificateRequest(pod, nil))
			c.refusedWith(t, codes.Unauthenticated, tc.reason)
			if n := reviews.count.Load() - before; n != 0 {
				t.Errorf("%d TokenReviews reached the API server, want none", n)
			}
			if got := tokenReviewsTotal(t, "precheck"); got != prechecked+1 {
				t.Errorf("token_reviews_total{result=precheck} went from %v to %v, want one more", prechecked, got)
			}
		})
	}
}

func TestARepeatedBadTokenIsRefusedFromTheCache(t *testing.T) {
	const ttl = time.Second
	cp, reviews := startCountedControlPlane(t, controlplane.Options{RefusalCacheTTL: ttl})
	pod := cp.createPod(t, env.Namespace(t, "refusal-cache"), "a-1", "a", "a")
	token := forgedToken(t, pod)

	attempt := func() {
		t.Helper()
		c := cp.openADS(t, token)
		c.send(t, certificateRequest(pod, nil))
		c.refusedWith(t, codes.Unauthenticated, identity.ReasonInvalidToken)
	}
	before := reviews.count.Load()
	attempt()
	if n := reviews.count.Load() - before; n != 1 {
		t.Fatalf("the first attempt cost %d TokenReviews, want 1", n)
	}
	cachedRefusals := tokenReviewsTotal(t, "cached_refusal")
	for range 3 {
		attempt()
	}
	if n := reviews.count.Load() - before; n != 1 {
		t.Errorf("three more attempts within %s cost %d more TokenReviews, want none", ttl, n-1)
	}
	if got := tokenReviewsTotal(t, "cached_refusal"); got != cachedRefusals+3 {
		t.Errorf("token_reviews_total{result=cached_refusal} went from %v to %v, want 3 more", cachedRefusals, got)
	}

	// The refusal is cached briefly only: then the API server is asked again.
	time.Sleep(ttl + 100*time.Millisecond)
	attempt()
	if n := reviews.count.Load() - before; n != 2 {
		t.Errorf("an attempt after the refusal expired cost %d TokenReviews in all, want 2", n)
	}
}

func TestUnauthenticatedStreamsAreLimitedPerPeerAndInTotal(t *testing.T) {
	cp, reviews := startCountedControlPlane(t, controlplane.Options{MaxUnauthenticatedStreamsPerPeer: 2, MaxUnauthenticatedStreams: 3})
	pod := cp.createPod(t, env.Namespace(t, "stream-limit"), "a-1", "a", "a")
	release := reviews.holdReviews(t)
	before := reviews.count.Load()

	// Two streams from 127.0.0.1 and one from 127.0.0.2 wait for their TokenReviews.
	local := cp.dialFrom(t, "127.0.0.1")
	waiting := []*xds{
		openADSOn(t, local, forgedToken(t, pod)),
		openADSOn(t, local, forgedToken(t, pod)),
		openADSOn(t, cp.dialFrom(t, "127.0.0.2"), forgedToken(t, pod)),
	}
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		return reviews.count.Load()-before == 3, "the three streams are not all waiting for a TokenReview"
	})

	perPeer := metricValue(t, "meshlift_control_plane_refusals_total", map[string]string{"reason": "PeerStreamLimit"})
	third := openADSOn(t, local, forgedToken(t, pod))
	third.refusedWith(t, codes.ResourceExhausted, "PeerStreamLimit")
	if got := metricValue(t, "meshlift_control_plane_refusals_total", map[string]string{"reason": "PeerStreamLimit"}); got != perPeer+1 {
		t.Errorf("refusals_total{reason=PeerStreamLimit} went from %v to %v, want one more", perPeer, got)
	}
	// Another address is under its own limit, but the replica is at its total.
	other := openADSOn(t, cp.dialFrom(t, "127.0.0.3"), forgedToken(t, pod))
	other.refusedWith(t, codes.ResourceExhausted, "StreamLimit")
	if n := reviews.count.Load() - before; n != 3 {
		t.Errorf("%d TokenReviews were asked for, want only the 3 of the admitted streams", n)
	}

	// Once the API server answers, the waiting streams are refused for their tokens and the
	// places are free again.
	release()
	for _, c := range waiting {
		c.refusedWith(t, codes.Unauthenticated, identity.ReasonInvalidToken)
	}
	a := workload{pod: pod, token: mintToken(t, pod, "meshlift")}
	c := openADSOn(t, local, a.token)
	c.send(t, certificateRequest(pod, nil))
	verifyLeaf(t, leafOf(t, secrets(t, c.recv(t, timeout))[controlplane.SecretDefault]), a.spiffeID(), cp.holder.Current().TrustBundle())
}

func TestTokenReviewsArePaidFromEachPeersShare(t *testing.T) {
	// A bucket of 2 that refills once in 1000 s: this test never sees it refill.
	cp, reviews := startCountedControlPlane(t, controlplane.Options{PeerTokenReviewQPS: 0.001, PeerTokenReviewBurst: 2})
	ns := env.Namespace(t, "review-share")
	pod := cp.createPod(t, ns, "a-1", "a", "a")
	attacker := cp.dialFrom(t, "127.0.0.1")
	before := reviews.count.Load()
	for range 2 {
		c := openADSOn(t, attacker, forgedToken(t, pod))
		c.refusedWith(t, codes.Unauthenticated, identity.ReasonInvalidToken)
	}
	limited := tokenReviewsTotal(t, "limited")
	c := openADSOn(t, attacker, forgedToken(t, pod))
	c.refusedWith(t, codes.ResourceExhausted, "PeerTokenReviewLimit")
	if n := reviews.count.Load() - before; n != 2 {
		t.Errorf("%d TokenReviews were asked for, want 2 (the share of 127.0.0.1)", n)
	}
	if got := tokenReviewsTotal(t, "limited"); got != limited+1 {
		t.Errorf("token_reviews_total{result=limited} went from %v to %v, want one more", limited, got)
	}

	// A proxy in another pod (another address) is not affected.
	b := cp.workload(t, ns, "b-1", "b", "b")
	proxy := openADSOn(t, cp.dialFrom(t, "127.0.0.2"), b.token)
	proxy.send(t, certificateRequest(b.pod, nil))
	verifyLeaf(t, leafOf(t, secrets(t, proxy.recv(t, timeout))[controlplane.SecretDefault]), b.spiffeID(), cp.holder.Current().TrustBundle())
}

// tokensChecked is how many bearer tokens the authenticator looked at, whatever its verdict.
func tokensChecked(t testing.TB) float64 {
	t.Helper()
	total := 0.0
	for _, result := range []string{"cached", "cached_refusal", "precheck", "limited", "authenticated", "rejected", "error"} {
		total += tokenReviewsTotal(t, result)
	}
	return total
}

func TestAFloodingPeerIsRefusedBeforeItsTokensAreReadWhileOtherPeersGetTheirCertificates(t *testing.T) {
	// A budget of 3 refusals that refills once in 1000 s: this test never sees it refill.
	cp, reviews := startCountedControlPlane(t, controlplane.Options{PeerRefusalQPS: 0.001, PeerRefusalBurst: 3})
	ns := env.Namespace(t, "refusal-budget")
	pod := cp.createPod(t, ns, "a-1", "a", "a")
	attacker := cp.dialFrom(t, "127.0.0.2")

	// The first refusals are the handler's, for the tokens.
	for _, token := range []string{"not-a-jwt", forgedToken(t, pod), forgedToken(t, pod)} {
		c := openADSOn(t, attacker, token)
		c.send(t, certificateRequest(pod, nil))
		c.refusedWith(t, codes.Unauthenticated, identity.ReasonInvalidToken)
	}

	// Then the attacker floods with new forged tokens, each of which would cost a TokenReview,
	// and every stream is refused as it arrives: no token is looked at, none is sent to the
	// API server.
	checked, reviewed := tokensChecked(t), reviews.count.Load()
	transportRefusals := metricValue(t, "meshlift_control_plane_refusals_total", map[string]string{"reason": "PeerRefusalLimit"})
	ctx, stop := context.WithCancel(context.Background())
	var flooded atomic.Int64
	var wg sync.WaitGroup
	client := discoveryv3.NewAggregatedDiscoveryServiceClient(attacker)
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				streamCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+forgedToken(t, pod))
				stream, err := client.StreamAggregatedResources(streamCtx)
				if err != nil {
					continue
				}
				_ = stream.Send(certificateRequest(pod, nil))
				_, err = stream.Recv()
				switch {
				case err == nil:
					t.Error("a forged token got a response")
					return
				case status.Code(err) == codes.ResourceExhausted && strings.HasPrefix(status.Convert(err).Message(), "PeerRefusalLimit: "):
					flooded.Add(1)
				case ctx.Err() == nil:
					t.Errorf("a flood stream ended with %v, want a PeerRefusalLimit refusal", err)
					return
				}
			}
		})
	}
	defer func() {
		stop()
		wg.Wait()
	}()
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		return flooded.Load() >= 200, "fewer than 200 flood streams refused"
	})

	// Meanwhile a proxy of another pod (another address) gets its certificate.
	b := cp.workload(t, ns, "b-1", "b", "b")
	proxy := openADSOn(t, cp.dialFrom(t, "127.0.0.3"), b.token)
	proxy.send(t, certificateRequest(b.pod, nil))
	verifyLeaf(t, leafOf(t, secrets(t, proxy.recv(t, timeout))[controlplane.SecretDefault]), b.spiffeID(), cp.holder.Current().TrustBundle())
	stop()
	wg.Wait()

	// Only the proxy's token was looked at, and it cost the only TokenReview.
	if n := tokensChecked(t) - checked; n != 1 {
		t.Errorf("%v tokens were checked during the flood, want only the proxy's", n)
	}
	if n := reviews.count.Load() - reviewed; n != 1 {
		t.Errorf("%d TokenReviews reached the API server during the flood, want only the proxy's", n)
	}
	// The flood's last streams may have been refused after it stopped reading their status.
	if got := metricValue(t, "meshlift_control_plane_refusals_total", map[string]string{"reason": "PeerRefusalLimit"}) - transportRefusals; got < float64(flooded.Load()) {
		t.Errorf("refusals_total{reason=PeerRefusalLimit} grew by %v, want at least the %d flood streams refused", got, flooded.Load())
	}
}

func TestConnectionsAreClosedAfterTheirMaximumAge(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{MaxConnectionAge: time.Second, MaxConnectionAgeGrace: time.Second})
	a := cp.workload(t, env.Namespace(t, "max-age"), "a-1", "a", "a")
	conn := cp.dial(t)
	c := openADSOn(t, conn, a.token)
	c.send(t, certificateRequest(a.pod, nil))
	c.ack(t, c.recv(t, timeout), bothSecrets)

	// The server sends a GOAWAY after the age (give or take 10%), then ends the stream after
	// the grace; the proxy reconnects, as after any stream end.
	select {
	case resp := <-c.responses:
		t.Fatalf("got a response of type %s, want the connection to be closed", resp.GetTypeUrl())
	case err := <-c.ended:
		checkRefusal(t, err, codes.Unavailable, "")
	case <-time.After(timeout):
		t.Fatalf("the stream was still open after %s, with a maximum connection age of 1s", timeout)
	}
	again := openADSOn(t, conn, a.token)
	again.send(t, certificateRequest(a.pod, nil))
	again.recv(t, timeout)
}

func TestRotationRechecksTheToken(t *testing.T) {
	const lifetime = 4 * time.Second
	cp, reviews := startCountedControlPlane(t, controlplane.Options{LeafLifetime: lifetime, RotationFraction: 0.5})
	a := cp.workload(t, env.Namespace(t, "recheck"), "a-1", "a", "a")
	c := cp.openADS(t, a.token)
	c.send(t, certificateRequest(a.pod, nil))
	c.ack(t, c.recv(t, timeout), bothSecrets)

	// A rotation asks the API server again, though the token is cached.
	before := reviews.count.Load()
	c.ack(t, c.recv(t, lifetime), bothSecrets)
	if n := reviews.count.Load() - before; n != 1 {
		t.Errorf("the rotation cost %d TokenReviews, want 1", n)
	}

	// The pod stays, but its service account is deleted: the API server no longer accepts the
	// token, and the next rotation ends the stream instead of signing.
	sa := &corev1.ServiceAccount{}
	sa.Namespace, sa.Name = a.pod.Namespace, a.pod.Spec.ServiceAccountName
	if err := env.Client.Delete(context.Background(), sa); err != nil {
		t.Fatal(err)
	}
	// The API server caches its verdicts on tokens for 10 seconds (kube-apiserver's token
	// cache), so rotations may go on for that long.
	deleted := time.Now()
	for {
		select {
		case resp := <-c.responses:
			if time.Since(deleted) > 10*time.Second+lifetime {
				t.Fatal("rotations went on after the service account was deleted")
			}
			c.ack(t, resp, bothSecrets)
		case err := <-c.ended:
			checkRefusal(t, err, codes.Unauthenticated, identity.ReasonInvalidToken)
			return
		case <-time.After(timeout):
			t.Fatalf("the stream was still open %s after its service account was deleted", timeout)
		}
	}
}

func TestRotationIsRefusedOnceThePodIsGone(t *testing.T) {
	testRenewalOnceThePodIsGone(t, false)
}

// TestANewCSRIsRefusedOnceThePodIsGone: a proxy renews its key with a new CSR on its stream; that
// renewal is checked like a rotation (the leaf lives an hour here: no rotation comes first).
func TestANewCSRIsRefusedOnceThePodIsGone(t *testing.T) {
	testRenewalOnceThePodIsGone(t, true)
}

func testRenewalOnceThePodIsGone(t *testing.T, byCSR bool) {
	// Built with controlplane.New instead of Setup, the server gets no pod events: the pod's
	// deletion does not end the stream, and only the check before the rotation can notice it.
	lifetime := 4 * time.Second
	if byCSR {
		lifetime = time.Hour
	}
	holder := identity.NewHolder()
	holder.Set(newAuthority(t))
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0", Cache: podcache.CacheOptions(),
	})
	if err != nil {
		t.Fatal(err)
	}
	reviewer, err := authenticationv1client.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	server, err := controlplane.New(controlplane.Options{
		Address: "127.0.0.1:0", TrustDomain: trustDomain, Namespace: operatorNamespace, LeafLifetime: lifetime, RotationFraction: 0.5,
	}, mgr.GetCache(), reviewer.TokenReviews(), holder, mgr.GetLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(server); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager stopped with an error: %v", err)
		}
	})
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		return server.Addr() != nil && server.Ready(nil) == nil, "the server does not serve yet"
	})
	cp := &controlPlane{server: server, holder: holder, cache: mgr.GetCache()}

	a := cp.workload(t, env.Namespace(t, "rotation-gone"), "a-1", "a", "a")
	c := cp.openADS(t, a.token)
	var csr []byte
	if byCSR {
		_, csr = newCSR(t, nil, a.spiffeID())
	}
	c.send(t, certificateRequest(a.pod, csr))
	first := c.recv(t, timeout)
	c.ack(t, first, bothSecrets)
	if err := env.Client.Delete(context.Background(), a.pod); err != nil {
		t.Fatal(err)
	}
	cp.waitGone(t, a.pod)
	// A rotation signed before the cache saw the deletion was right to be signed.
	for len(c.responses) > 0 {
		<-c.responses
	}
	if byCSR {
		_, renewal := newCSR(t, nil, a.spiffeID())
		c.send(t, &discoveryv3.DiscoveryRequest{Node: node(a.pod, renewal), TypeUrl: controlplane.TypeSecret, ResourceNames: bothSecrets,
			VersionInfo: first.GetVersionInfo(), ResponseNonce: first.GetNonce()})
	}
	c.refusedWith(t, codes.Unauthenticated, identity.ReasonPodNotFound)
}
