// Package caller reads what a caller of the control plane presents (its bearer token, the
// token's claims, its xDS node) and decides which workload identity it gets, from the API
// server's verdict on the token and the pod the token is bound to. It is pure: the server
// gathers the TokenReview and the pod and calls it. Every refusal is an *identity.Refusal.
package caller

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/meshlift/meshlift/internal/identity"
)

// Audience is the audience of the projected token a proxy authenticates with.
const Audience = "meshlift"

// MaxTokenSize bounds a bearer token; projected service-account tokens are about 1 KiB.
const MaxTokenSize = 16 << 10

// BearerToken returns the token of the "authorization: Bearer <token>" metadata.
func BearerToken(md metadata.MD) (string, error) {
	values := md.Get("authorization")
	switch len(values) {
	case 0:
		return "", identity.Refuse(identity.ReasonMissingToken,
			"send the projected service-account token (audience %s) as gRPC metadata \"authorization: Bearer <token>\"", Audience)
	case 1:
	default:
		return "", identity.Refuse(identity.ReasonMissingToken, "the request carries %d authorization headers, want one", len(values))
	}
	scheme, token, found := strings.Cut(values[0], " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", identity.Refuse(identity.ReasonMissingToken, "the authorization metadata is not \"Bearer <token>\"")
	}
	token = strings.TrimSpace(token)
	switch {
	case token == "":
		return "", identity.Refuse(identity.ReasonMissingToken, "the bearer token is empty")
	case len(token) > MaxTokenSize:
		return "", identity.Refuse(identity.ReasonInvalidToken, "the bearer token has %d bytes, more than %d", len(token), MaxTokenSize)
	}
	return token, nil
}

// Claims are what a service-account token says about itself. They are read without verifying
// the signature, so the server uses them only to know how long the API server's verdict may be
// cached and to explain a refusal the API server already decided; never to grant anything.
type Claims struct {
	// Expiry is the exp claim; zero when the token has none.
	Expiry time.Time
	// Audiences is the aud claim.
	Audiences []string
	// NotBefore is the nbf claim; zero when the token has none.
	NotBefore time.Time
	// Namespace, PodName and PodUID are the kubernetes.io claims of a token bound to a pod.
	Namespace string
	PodName   string
	PodUID    string
}

// jwtPayload is the part of a service-account token's payload the server reads.
type jwtPayload struct {
	Exp        json.Number     `json:"exp"`
	Nbf        json.Number     `json:"nbf"`
	Aud        json.RawMessage `json:"aud"`
	Kubernetes struct {
		Namespace string `json:"namespace"`
		Pod       struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"pod"`
	} `json:"kubernetes.io"`
}

// maxUnixSeconds keeps exp within what time.Time and the cache TTLs handle (year 5138).
const maxUnixSeconds = 1e11

// UnverifiedClaims decodes the payload of a JWT without verifying it (see Claims).
func UnverifiedClaims(token string) (Claims, error) {
	invalid := func(format string, args ...any) (Claims, error) {
		return Claims{}, identity.Refuse(identity.ReasonInvalidToken, "the bearer token is not a JWT: "+format, args...)
	}
	if len(token) > MaxTokenSize {
		return invalid("it has %d bytes, more than %d", len(token), MaxTokenSize)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return invalid("it has %d dot-separated parts, want 3", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return invalid("its payload is not base64url: %v", err)
	}
	decoder := json.NewDecoder(bytes.NewReader(raw))
	decoder.UseNumber()
	var payload jwtPayload
	if err := decoder.Decode(&payload); err != nil {
		return invalid("its payload is not a JSON object: %v", err)
	}
	claims := Claims{
		Namespace: payload.Kubernetes.Namespace,
		PodName:   payload.Kubernetes.Pod.Name,
		PodUID:    payload.Kubernetes.Pod.UID,
	}
	for _, c := range []struct {
		name  string
		value json.Number
		into  *time.Time
	}{{"exp", payload.Exp, &claims.Expiry}, {"nbf", payload.Nbf, &claims.NotBefore}} {
		if c.value == "" {
			continue
		}
		seconds, err := c.value.Float64()
		if err != nil || math.IsNaN(seconds) || seconds < 0 || seconds > maxUnixSeconds {
			return invalid("its %s claim %q is not a time", c.name, c.value.String())
		}
		*c.into = time.Unix(int64(seconds), 0)
	}
	if len(payload.Aud) > 0 && string(payload.Aud) != "null" {
		var one string
		if err := json.Unmarshal(payload.Aud, &one); err == nil {
			claims.Audiences = []string{one}
		} else if err := json.Unmarshal(payload.Aud, &claims.Audiences); err != nil {
			return invalid("its aud claim is neither a string nor a list of strings")
		}
	}
	return claims, nil
}

// Rejected explains why the API server refused a token (apiError is the TokenReview's
// status.error), from the token's unverified claims: they only choose the words of a refusal
// the API server already decided. boundPodGone says the pod named in the claims no longer
// exists with that UID.
func Rejected(apiError string, claims Claims, claimsErr error, boundPodGone bool, now time.Time) *identity.Refusal {
	switch {
	case claimsErr != nil:
		return identity.Refuse(identity.ReasonInvalidToken, "the API server rejected the token (%s); %v", apiError, claimsErr)
	case !slices.Contains(claims.Audiences, Audience):
		return identity.Refuse(identity.ReasonWrongAudience,
			"the token is for audiences %q, not %q: send the projected token the injector mounts (audience %s)", claims.Audiences, Audience, Audience)
	case !claims.Expiry.IsZero() && !now.Before(claims.Expiry):
		return identity.Refuse(identity.ReasonExpiredToken,
			"the token expired at %s: re-read the projected token file, which the kubelet refreshes", claims.Expiry.UTC().Format(time.RFC3339))
	case boundPodGone:
		return identity.Refuse(identity.ReasonPodNotFound,
			"the token is bound to pod %s/%s (UID %s), which no longer exists: a token stops working with its pod", claims.Namespace, claims.PodName, claims.PodUID)
	default:
		return identity.Refuse(identity.ReasonInvalidToken, "the API server rejected the token: %s", apiError)
	}
}

// Leeway is how far past exp (or before nbf) a token is still taken: the API server's own
// validator allows one minute of clock skew, and the pre-check must never refuse a token the
// API server would accept.
const Leeway = time.Minute

// jwtHeader is the part of a JWT's header the pre-check reads.
type jwtHeader struct {
	Alg string `json:"alg"`
}

// Precheck refuses, without asking the API server, a token that cannot be a projected
// service-account token for this server at now: one that is not a signed JWT, is not for
// audience Audience, has no exp, expired (more than Leeway ago), is not valid yet (nbf more
// than Leeway ahead) or is not bound to a pod. It returns the token's claims otherwise. Nothing
// is verified: a token that passes may still be forged, and only the API server's verdict
// grants anything; the pre-check only spares the API server the tokens it would reject anyway.
func Precheck(token string, now time.Time) (Claims, error) {
	claims, err := UnverifiedClaims(token)
	if err != nil {
		return Claims{}, err
	}
	header, _, _ := strings.Cut(token, ".")
	rawHeader, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(header, "="))
	var h jwtHeader
	if err != nil || json.Unmarshal(rawHeader, &h) != nil {
		return Claims{}, identity.Refuse(identity.ReasonInvalidToken, "the bearer token is not a JWT: its header is not a base64url JSON object")
	}
	if h.Alg == "" || strings.EqualFold(h.Alg, "none") {
		return Claims{}, identity.Refuse(identity.ReasonInvalidToken, "the bearer token is not signed (alg %q)", h.Alg)
	}
	if signature := token[strings.LastIndexByte(token, '.')+1:]; signature == "" {
		return Claims{}, identity.Refuse(identity.ReasonInvalidToken, "the bearer token has no signature")
	}
	switch {
	case !slices.Contains(claims.Audiences, Audience):
		return Claims{}, identity.Refuse(identity.ReasonWrongAudience,
			"the token is for audiences %q, not %q: send the projected token the injector mounts (audience %s)", claims.Audiences, Audience, Audience)
	case claims.Expiry.IsZero():
		return Claims{}, identity.Refuse(identity.ReasonInvalidToken,
			"the token has no exp claim: send the projected service-account token, which expires")
	case now.After(claims.Expiry.Add(Leeway)):
		return Claims{}, identity.Refuse(identity.ReasonExpiredToken,
			"the token expired at %s: re-read the projected token file, which the kubelet refreshes", claims.Expiry.UTC().Format(time.RFC3339))
	case !claims.NotBefore.IsZero() && now.Add(Leeway).Before(claims.NotBefore):
		return Claims{}, identity.Refuse(identity.ReasonInvalidToken,
			"the token is not valid before %s", claims.NotBefore.UTC().Format(time.RFC3339))
	case claims.Namespace == "" || claims.PodName == "" || claims.PodUID == "":
		return Claims{}, identity.Refuse(identity.ReasonUnboundToken,
			"the token is not bound to a pod: send the projected token the kubelet mounts into the pod")
	}
	return claims, nil
}
