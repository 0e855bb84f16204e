package controlplane

import (
	"context"
	"crypto/sha256"
	"errors"
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
// from the cache every time, must be admitted (caller.Admit). What can be refused without the
// API server is: a token that cannot be a projected token for this server (caller.Precheck),
// a token the API server refused a moment ago (refused), and a peer that asks for more
// TokenReviews than its share (peerReviews).
type authenticator struct {
	reviewer    TokenReviewer
	reader      client.Reader
	trustDomain string
	clock       clock.PassiveClock
	// reviews caches the binding and claims of a verified token (verified) by the token's
	// SHA-256, until the token's exp.
	reviews *utilcache.LRUExpireCache
	// refused caches the refusal of a token (*identity.Refusal), by the API server or the
	// pre-check, by the token's SHA-256, for refusalTTL: a caller repeating a bad token costs
	// no TokenReview, and not even a second look at its claims.
	refused     *utilcache.LRUExpireCache
	refusalTTL  time.Duration
	peerReviews *peerReviewLimiter
}

func newAuthenticator(reviewer TokenReviewer, reader client.Reader, opts Options) *authenticator {
	size := max(opts.TokenCacheSize, 1)
	return &authenticator{
		reviewer:    reviewer,
		reader:      reader,
		trustDomain: opts.TrustDomain,
		clock:       opts.Clock,
		reviews:     utilcache.NewLRUExpireCacheWithClock(size, opts.Clock),
		refused:     utilcache.NewLRUExpireCacheWithClock(size, opts.Clock),
		refusalTTL:  opts.RefusalCacheTTL,
		peerReviews: newPeerReviewLimiter(opts.PeerTokenReviewQPS, opts.PeerTokenReviewBurst, opts.Clock),
	}
}

// credential is the token a stream was authenticated with, kept to check it again before each
// rotation.
type credential struct {
	token  string
	expiry time.Time
}

// authenticate admits the caller whose gRPC metadata is md, coming from peer, or refuses it.
func (a *authenticator) authenticate(ctx context.Context, md metadata.MD, peer string) (caller.Identity, credential, error) {
	token, err := caller.BearerToken(md)
	if err != nil {
		return caller.Identity{}, credential{}, err
	}
	binding, claims, err := a.review(ctx, token, peer, false)
	if err != nil {
		return caller.Identity{}, credential{}, err
	}
	pod, err := a.pod(ctx, binding.Pod())
	if err != nil {
		return caller.Identity{}, credential{}, err
	}
	id, err := caller.Admit(binding, pod, a.trustDomain)
	return id, credential{token: token, expiry: claims.Expiry}, err
}

// stillBound checks that the pod of an admitted caller still exists with the same UID.
func (a *authenticator) stillBound(ctx context.Context, id caller.Identity) error {
	pod, err := a.pod(ctx, id.Pod)
	if err != nil {
		return err
	}
	return caller.StillBound(id.Pod, id.PodUID, pod)
}

// recheck is what a stream checks before its certificate is renewed: its pod is still there
// with the same UID, and the API server still accepts its token for the same binding (a fresh
// TokenReview, not the cache: it also checks that the service account and the pod still
// exist). A token that has expired since the stream opened cannot be checked again: the
// stream must end, and the caller reconnect with its current token.
func (a *authenticator) recheck(ctx context.Context, id caller.Identity, cred credential) error {
	if err := a.stillBound(ctx, id); err != nil {
		return err
	}
	if !a.clock.Now().Before(cred.expiry) {
		return status.Errorf(codes.Unavailable,
			"the token this stream was opened with expired at %s: reconnect with the current token to get the renewed certificate",
			cred.expiry.UTC().Format(time.RFC3339))
	}
	binding, _, err := a.review(ctx, cred.token, "", true)
	if err != nil {
		return err
	}
	if binding.Pod() != id.Pod || binding.PodUID != id.PodUID || binding.ServiceAccount != id.ServiceAccount {
		return identity.Refuse(identity.ReasonUnboundToken,
			"the token is now bound to pod %s (UID %s) of service account %s, not to pod %s (UID %s) of %s",
			binding.Pod(), binding.PodUID, binding.ServiceAccount, id.Pod, id.PodUID, id.ServiceAccount)
	}
	return nil
}

type tokenKey [sha256.Size]byte

// tokenReviewTimeout bounds one TokenReview, so a slow API server cannot hold streams (and a
// graceful stop) forever.
const tokenReviewTimeout = 10 * time.Second

// verified is what the cache keeps of a token the API server accepted.
type verified struct {
	binding caller.Binding
	claims  caller.Claims
}

// review returns the binding the API server vouches for, from the cache unless fresh. peer
// ("" for none) pays for a TokenReview from its share. The caches are looked up first: a
// SHA-256 costs less than decoding the claims, and a flood repeats its tokens.
func (a *authenticator) review(ctx context.Context, token, peer string, fresh bool) (caller.Binding, caller.Claims, error) {
	key := tokenKey(sha256.Sum256([]byte(token)))
	if !fresh {
		if cached, ok := a.reviews.Get(key); ok {
			tokenReviews.WithLabelValues("cached").Inc()
			v := cached.(verified)
			return v.binding, v.claims, nil
		}
		if cached, ok := a.refused.Get(key); ok {
			tokenReviews.WithLabelValues("cached_refusal").Inc()
			return caller.Binding{}, caller.Claims{}, cached.(*identity.Refusal)
		}
	}
	// The claims are not verified: they refuse what the API server would refuse anyway, bound
	// how long its verdict is cached and choose the words of a refusal.
	claims, err := caller.Precheck(token, a.clock.Now())
	if err != nil {
		tokenReviews.WithLabelValues("precheck").Inc()
		var refusal *identity.Refusal
		if errors.As(err, &refusal) {
			a.refused.Add(key, refusal, a.refusalTTL)
		}
		return caller.Binding{}, caller.Claims{}, err
	}
	if peer != "" {
		if err := a.peerReviews.allow(peer); err != nil {
			tokenReviews.WithLabelValues("limited").Inc()
			return caller.Binding{}, caller.Claims{}, err
		}
	}
	binding, err := a.askAPIServer(ctx, token, claims)
	var refusal *identity.Refusal
	switch {
	case errors.As(err, &refusal):
		a.reviews.Remove(key)
		a.refused.Add(key, refusal, a.refusalTTL)
		return caller.Binding{}, caller.Claims{}, err
	case err != nil:
		return caller.Binding{}, caller.Claims{}, err
	}
	if ttl := claims.Expiry.Sub(a.clock.Now()); ttl > 0 {
		a.reviews.Add(key, verified{binding: binding, claims: claims}, ttl)
	}
	return binding, claims, nil
}

// askAPIServer creates a TokenReview of token. A verdict against the token is an
// *identity.Refusal; any other error means the API server could not be asked.
func (a *authenticator) askAPIServer(ctx context.Context, token string, claims caller.Claims) (caller.Binding, error) {
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
		return caller.Binding{}, caller.Rejected(review.Status.Error, claims, nil, a.boundPodGone(ctx, claims), a.clock.Now())
	}
	if !slices.Contains(review.Status.Audiences, caller.Audience) {
		tokenReviews.WithLabelValues("rejected").Inc()
		return caller.Binding{}, identity.Refuse(identity.ReasonWrongAudience,
			"the API server authenticated the token for audiences %q, not %q", review.Status.Audiences, caller.Audience)
	}
	tokenReviews.WithLabelValues("authenticated").Inc()
	return caller.BindingFromUser(review.Status.User)
}

// boundPodGone reports whether the pod a rejected token claims to be bound to is gone, to
// explain the rejection.
func (a *authenticator) boundPodGone(ctx context.Context, claims caller.Claims) bool {
	if claims.Namespace == "" || claims.PodName == "" {
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
