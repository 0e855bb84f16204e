package controlplane_test

import (
	"context"
	"crypto/x509"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshlift/meshlift/internal/controlplane"
	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// attempt is what a caller presents: its token and its first request.
type attempt struct {
	token   string
	request *discoveryv3.DiscoveryRequest
}

// certificateRequest is the first request of a proxy in pod: its node (with csrPEM) and the
// SDS resources names.
func certificateRequest(pod *corev1.Pod, csrPEM []byte, names ...string) *discoveryv3.DiscoveryRequest {
	if len(names) == 0 {
		names = []string{controlplane.SecretDefault, controlplane.SecretRootCA}
	}
	return &discoveryv3.DiscoveryRequest{Node: node(pod, csrPEM), TypeUrl: controlplane.TypeSecret, ResourceNames: names}
}

func TestRefusals(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{})
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		setup  func(t *testing.T, ns string) attempt
		code   codes.Code
		reason identity.Reason
	}{
		{
			name: "a token of service account A cannot get service account B's certificate",
			setup: func(t *testing.T, ns string) attempt {
				a := cp.workload(t, ns, "a-1", "a", "a")
				b := identity.SPIFFEID(trustDomain, ns, "b")
				return attempt{a.token, certificateRequest(a.pod, nil, b)}
			},
			code: codes.PermissionDenied, reason: identity.ReasonForeignResource,
		},
		{
			name: "a token of service account A cannot get A's namesake in another namespace",
			setup: func(t *testing.T, ns string) attempt {
				a := cp.workload(t, ns, "a-1", "a", "a")
				return attempt{a.token, certificateRequest(a.pod, nil, identity.SPIFFEID(trustDomain, "kube-system", "a"))}
			},
			code: codes.PermissionDenied, reason: identity.ReasonForeignResource,
		},
		{
			name: "a token minted for another audience is unauthenticated",
			setup: func(t *testing.T, ns string) attempt {
				pod := cp.createPod(t, ns, "a-1", "a", "a")
				return attempt{mintToken(t, pod, "vault"), certificateRequest(pod, nil)}
			},
			code: codes.Unauthenticated, reason: identity.ReasonWrongAudience,
		},
		{
			name: "a token that is not bound to a pod is unauthenticated",
			setup: func(t *testing.T, ns string) attempt {
				pod := cp.createPod(t, ns, "a-1", "a", "a")
				token := requestToken(t, ns, "a", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
					Audiences: []string{"meshlift"}, ExpirationSeconds: ptr.To[int64](600),
				}})
				return attempt{token, certificateRequest(pod, nil)}
			},
			code: codes.Unauthenticated, reason: identity.ReasonUnboundToken,
		},
		{
			name: "a token bound to a deleted pod is unauthenticated",
			setup: func(t *testing.T, ns string) attempt {
				a := cp.workload(t, ns, "a-1", "a", "a")
				if err := env.Client.Delete(ctx, a.pod); err != nil {
					t.Fatal(err)
				}
				cp.waitGone(t, a.pod)
				return attempt{a.token, certificateRequest(a.pod, nil)}
			},
			code: codes.Unauthenticated, reason: identity.ReasonPodNotFound,
		},
		{
			name: "a token whose pod was recreated under the same name is unauthenticated",
			setup: func(t *testing.T, ns string) attempt {
				a := cp.workload(t, ns, "a-1", "a", "a")
				if err := env.Client.Delete(ctx, a.pod); err != nil {
					t.Fatal(err)
				}
				cp.waitGone(t, a.pod)
				again := cp.createPod(t, ns, "a-1", "a", "a")
				return attempt{a.token, certificateRequest(again, nil)}
			},
			code: codes.Unauthenticated, reason: identity.ReasonPodNotFound,
		},
		{
			name: "a request without a token is unauthenticated",
			setup: func(t *testing.T, ns string) attempt {
				pod := cp.createPod(t, ns, "a-1", "a", "a")
				return attempt{"", certificateRequest(pod, nil)}
			},
			code: codes.Unauthenticated, reason: identity.ReasonMissingToken,
		},
		{
			name: "a token the API server does not know is unauthenticated",
			setup: func(t *testing.T, ns string) attempt {
				pod := cp.createPod(t, ns, "a-1", "a", "a")
				return attempt{forgedToken(t, pod), certificateRequest(pod, nil)}
			},
			code: codes.Unauthenticated, reason: identity.ReasonInvalidToken,
		},
		{
			name: "a CSR for another SPIFFE ID is permission denied",
			setup: func(t *testing.T, ns string) attempt {
				a := cp.workload(t, ns, "a-1", "a", "a")
				_, csr := newCSR(t, nil, identity.SPIFFEID(trustDomain, ns, "b"))
				return attempt{a.token, certificateRequest(a.pod, csr)}
			},
			code: codes.PermissionDenied, reason: identity.ReasonSANMismatch,
		},
		{
			name: "a CSR with a DNS name besides the SPIFFE ID is an invalid argument",
			setup: func(t *testing.T, ns string) attempt {
				a := cp.workload(t, ns, "a-1", "a", "a")
				_, csr := newCSR(t, func(r *x509.CertificateRequest) { r.DNSNames = []string{"a.example.com"} }, a.spiffeID())
				return attempt{a.token, certificateRequest(a.pod, csr)}
			},
			code: codes.InvalidArgument, reason: identity.ReasonForbiddenSAN,
		},
		{
			name: "a CSR that is not a CSR is an invalid argument",
			setup: func(t *testing.T, ns string) attempt {
				a := cp.workload(t, ns, "a-1", "a", "a")
				return attempt{a.token, certificateRequest(a.pod, []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))}
			},
			code: codes.InvalidArgument, reason: identity.ReasonMalformedCSR,
		},
		{
			name: "a node naming another pod is permission denied",
			setup: func(t *testing.T, ns string) attempt {
				a := cp.workload(t, ns, "a-1", "a", "a")
				other := cp.createPod(t, ns, "a-2", "a", "a")
				return attempt{a.token, certificateRequest(other, nil)}
			},
			code: codes.PermissionDenied, reason: identity.ReasonWrongPod,
		},
		{
			name: "a first request without a node is an invalid argument",
			setup: func(t *testing.T, ns string) attempt {
				a := cp.workload(t, ns, "a-1", "a", "a")
				return attempt{a.token, &discoveryv3.DiscoveryRequest{TypeUrl: controlplane.TypeSecret, ResourceNames: []string{controlplane.SecretDefault}}}
			},
			code: codes.InvalidArgument, reason: identity.ReasonMalformedRequest,
		},
		{
			name: "a pod that was not injected gets no identity",
			setup: func(t *testing.T, ns string) attempt {
				a := cp.workload(t, ns, "a-1", "a", "a", gen.PodMeta(func(m *metav1.ObjectMeta) { m.Annotations = nil }))
				return attempt{a.token, certificateRequest(a.pod, nil)}
			},
			code: codes.PermissionDenied, reason: identity.ReasonNotInjected,
		},
		{
			name: "a terminating pod cannot open a stream",
			setup: func(t *testing.T, ns string) attempt {
				a := cp.workload(t, ns, "a-1", "a", "a", gen.PodMeta(func(m *metav1.ObjectMeta) { m.Finalizers = []string{"test.meshlift.io/hold"} }))
				t.Cleanup(func() {
					_ = env.Client.Patch(ctx, a.pod, client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"finalizers":null}}`)))
				})
				if err := env.Client.Delete(ctx, a.pod); err != nil {
					t.Fatal(err)
				}
				testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
					seen := &corev1.Pod{}
					err := cp.cache.Get(ctx, client.ObjectKeyFromObject(a.pod), seen)
					return err == nil && seen.DeletionTimestamp != nil, "the cache does not see the pod terminating"
				})
				return attempt{a.token, certificateRequest(a.pod, nil)}
			},
			code: codes.PermissionDenied, reason: identity.ReasonPodTerminating,
		},
		{
			name: "a cluster discovery request is unimplemented",
			setup: func(t *testing.T, ns string) attempt {
				a := cp.workload(t, ns, "a-1", "a", "a")
				return attempt{a.token, &discoveryv3.DiscoveryRequest{Node: node(a.pod, nil), TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"}}
			},
			code: codes.Unimplemented, reason: identity.ReasonUnsupportedType,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := env.Namespace(t, "refusal")
			try := tc.setup(t, ns)
			before := metricValue(t, "meshlift_control_plane_refusals_total", map[string]string{"reason": string(tc.reason)})
			c := cp.openADS(t, try.token)
			c.send(t, try.request)
			c.refusedWith(t, tc.code, tc.reason)
			if after := metricValue(t, "meshlift_control_plane_refusals_total", map[string]string{"reason": string(tc.reason)}); after != before+1 {
				t.Errorf("refusals_total{reason=%s} went from %v to %v, want one more", tc.reason, before, after)
			}
		})
	}
}

func TestPodDeletionEndsItsStream(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{})
	a := cp.workload(t, env.Namespace(t, "deleted"), "a-1", "a", "a")
	c := cp.openADS(t, a.token)
	c.send(t, certificateRequest(a.pod, nil))
	first := c.recv(t, timeout)
	c.ack(t, first, []string{controlplane.SecretDefault, controlplane.SecretRootCA})

	if err := env.Client.Delete(context.Background(), a.pod); err != nil {
		t.Fatal(err)
	}
	c.refusedWith(t, codes.Unauthenticated, identity.ReasonPodNotFound)
}

func TestAWarmTokenCacheStillChecksThePod(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{})
	ns := env.Namespace(t, "cache")
	a := cp.workload(t, ns, "a-1", "a", "a")

	reviewed := metricValue(t, "meshlift_control_plane_token_reviews_total", map[string]string{"result": "authenticated"})
	cached := metricValue(t, "meshlift_control_plane_token_reviews_total", map[string]string{"result": "cached"})
	for range 2 {
		c := cp.openADS(t, a.token)
		c.send(t, certificateRequest(a.pod, nil))
		c.recv(t, timeout)
		c.cancel()
	}
	if got := metricValue(t, "meshlift_control_plane_token_reviews_total", map[string]string{"result": "authenticated"}); got != reviewed+1 {
		t.Errorf("the API server reviewed the token %v times for two streams, want once", got-reviewed)
	}
	if got := metricValue(t, "meshlift_control_plane_token_reviews_total", map[string]string{"result": "cached"}); got != cached+1 {
		t.Errorf("the second stream used the cache %v times, want once", got-cached)
	}

	// The token stays cached, but the pod it was bound to is replaced by another of that name.
	if err := env.Client.Delete(context.Background(), a.pod); err != nil {
		t.Fatal(err)
	}
	cp.waitGone(t, a.pod)
	again := cp.createPod(t, ns, "a-1", "a", "a")
	c := cp.openADS(t, a.token)
	c.send(t, certificateRequest(again, nil))
	c.refusedWith(t, codes.Unauthenticated, identity.ReasonPodNotFound)
}

func TestUnservedMethodsAreUnimplemented(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{})
	a := cp.workload(t, env.Namespace(t, "unimplemented"), "a-1", "a", "a")
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+a.token)
	conn := cp.dial(t)

	delta, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err == nil {
		_, err = delta.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("DeltaAggregatedResources: %v, want Unimplemented", err)
	}
	_, err = secretv3.NewSecretDiscoveryServiceClient(conn).FetchSecrets(ctx, certificateRequest(a.pod, nil))
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("FetchSecrets: %v, want Unimplemented", err)
	}
	deltaSecrets, err := secretv3.NewSecretDiscoveryServiceClient(conn).DeltaSecrets(ctx)
	if err == nil {
		_, err = deltaSecrets.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("DeltaSecrets: %v, want Unimplemented", err)
	}
	// Endpoints are served over ADS only.
	sds := openStream(t, a.token, func(ctx context.Context) (grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse], error) {
		return secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	})
	sds.send(t, &discoveryv3.DiscoveryRequest{Node: node(a.pod, nil), TypeUrl: controlplane.TypeClusterLoadAssignment})
	sds.refusedWith(t, codes.Unimplemented, identity.ReasonUnsupportedType)
}
