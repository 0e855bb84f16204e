package controlplane

import (
	"context"
	"crypto/sha256"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilcache "k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshlift/meshlift/internal/controlplane/caller"
	"github.com/meshlift/meshlift/internal/identity"
)

// authenticator turns a caller's bearer token into an identity: the API server verifies the
// token (TokenReview, cached until the token expires), and the pod it is bound to, read fresh
// from the cache every time, must be admitted (caller.Admit).
type authenticator struct {
	reviewer    TokenReviewer
	reader      client.Reader
	trustDomain string
	clock       clock.PassiveClock
	// reviews caches the Binding of a verified token by the token's SHA-256, until the token's
	// exp. Failures are not cached.
	reviews *utilcache.LRUExpireCache
}

func newAuthenticator(reviewer TokenReviewer, reader client.Reader, trustDomain string, cacheSize int, c clock.PassiveClock) *authenticator {
	return &authenticator{
		reviewer:    reviewer,
		reader:      reader,
		trustDomain: trustDomain,
		clock:       c,
		reviews:     utilcache.NewLRUExpireCacheWithClock(max(cacheSize, 1), c),
	}
}

// authenticate admits the caller whose gRPC metadata is md, or refuses it.
func (a *authenticator) authenticate(ctx context.Context, md metadata.MD) (caller.Identity, error) {
	token, err := caller.BearerToken(md)
	if err != nil {
		return caller.Identity{}, err
	}
	binding, err := a.review(ctx, token)
	if err != nil {
		return caller.Identity{}, err
	}
	pod, err := a.pod(ctx, binding.Pod())
	if err != nil {
		return caller.Identity{}, err
	}
	return caller.Admit(binding, pod, a.trustDomain)
}

// stillBound checks that the pod of an admitted caller still exists with the same UID.
func (a *authenticator) stillBound(ctx context.Context, id caller.Identity) error {
	pod, err := a.pod(ctx, id.Pod)
	if err != nil {
		return err
	}
	return caller.StillBound(id.Pod, id.PodUID, pod)
}

type tokenKey [sha256.Size]byte

// tokenReviewTimeout bounds one TokenReview, so a slow API server cannot hold streams (and a
// graceful stop) forever.
const tokenReviewTimeout = 10 * time.Second

func (a *authenticator) review(ctx context.Context, token string) (caller.Binding, error) {
	key := tokenKey(sha256.Sum256([]byte(token)))
	if cached, ok := a.reviews.Get(key); ok {
		tokenReviews.WithLabelValues("cached").Inc()
		return cached.(caller.Binding), nil
	}
	// The claims are not verified: they only bound how long the API server's verdict is
	// cached and choose the words of a refusal.
	claims, claimsErr := caller.UnverifiedClaims(token)
	ctx, cancel := context.WithTimeout(ctx, tokenReviewTimeout)
	defer cancel()
	review, err := a.reviewer.Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{caller.Audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		tokenReviews.WithLabelValues("error").Inc()
		return caller.Binding{}, status.Errorf(codes.Unavailable, "the token cannot be verified now (TokenReview failed: %v); retry", err)
	}
	if !review.Status.Authenticated {
		tokenReviews.WithLabelValues("rejected").Inc()
		return caller.Binding{}, caller.Rejected(review.Status.Error, claims, claimsErr, a.boundPodGone(ctx, claims, claimsErr), a.clock.Now())
	}
	if !slices.Contains(review.Status.Audiences, caller.Audience) {
		tokenReviews.WithLabelValues("rejected").Inc()
		return caller.Binding{}, identity.Refuse(identity.ReasonWrongAudience,
			"the API server authenticated the token for audiences %q, not %q", review.Status.Audiences, caller.Audience)
	}
	tokenReviews.WithLabelValues("authenticated").Inc()
	binding, err := caller.BindingFromUser(review.Status.User)
	if err != nil {
		return caller.Binding{}, err
	}
	if claimsErr == nil && !claims.Expiry.IsZero() {
		if ttl := claims.Expiry.Sub(a.clock.Now()); ttl > 0 {
			a.reviews.Add(key, binding, ttl)
		}
	}
	return binding, nil
}

// boundPodGone reports whether the pod a rejected token claims to be bound to is gone, to
// explain the rejection.
func (a *authenticator) boundPodGone(ctx context.Context, claims caller.Claims, claimsErr error) bool {
	if claimsErr != nil || claims.Namespace == "" || claims.PodName == "" {
		return false
	}
	pod, err := a.pod(ctx, types.NamespacedName{Namespace: claims.Namespace, Name: claims.PodName})
	return err == nil && (pod == nil || string(pod.UID) != claims.PodUID)
}

// pod reads a pod from the cache; nil when it does not exist.
func (a *authenticator) pod(ctx context.Context, key types.NamespacedName) (*corev1.Pod, error) {
	pod := &corev1.Pod{}
	if err := a.reader.Get(ctx, key, pod); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, status.Errorf(codes.Unavailable, "pod %s cannot be read now (%v); retry", key, err)
	}
	return pod, nil
}
