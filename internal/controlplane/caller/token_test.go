package caller_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/meshlift/meshlift/internal/controlplane/caller"
	"github.com/meshlift/meshlift/internal/identity"
)

// jwt builds an unsigned token with the given JSON payload; the claims parser never checks the
// signature.
func jwt(payload string) string {
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"RS256"}`)) + "." + enc.EncodeToString([]byte(payload)) + ".c2lnbmF0dXJl"
}

func wantRefusal(t *testing.T, err error, reason identity.Reason, code codes.Code) {
	t.Helper()
	var refusal *identity.Refusal
	if !errors.As(err, &refusal) {
		t.Fatalf("got %v, want a %s refusal", err, reason)
	}
	if refusal.Reason != reason || refusal.Code() != code {
		t.Fatalf("got %s (%s), want %s (%s): %s", refusal.Reason, refusal.Code(), reason, code, refusal.Message)
	}
	if refusal.Message == "" {
		t.Fatal("the refusal does not say what is wrong")
	}
}

func TestBearerToken(t *testing.T) {
	for _, tc := range []struct {
		name   string
		md     metadata.MD
		want   string
		reason identity.Reason
	}{
		{"reads a bearer token", metadata.Pairs("authorization", "Bearer abc.def.ghi"), "abc.def.ghi", ""},
		{"accepts the scheme in any case", metadata.Pairs("authorization", "bearer abc"), "abc", ""},
		{"refuses a request without authorization", metadata.MD{}, "", identity.ReasonMissingToken},
		{"refuses basic authentication", metadata.Pairs("authorization", "Basic dXNlcjpwYXNz"), "", identity.ReasonMissingToken},
		{"refuses an empty token", metadata.Pairs("authorization", "Bearer  "), "", identity.ReasonMissingToken},
		{"refuses two authorization headers", metadata.Pairs("authorization", "Bearer a", "authorization", "Bearer b"), "", identity.ReasonMissingToken},
		{"refuses a huge token", metadata.Pairs("authorization", "Bearer "+strings.Repeat("a", caller.MaxTokenSize+1)), "", identity.ReasonInvalidToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := caller.BearerToken(tc.md)
			if tc.reason != "" {
				wantRefusal(t, err, tc.reason, codes.Unauthenticated)
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("BearerToken() = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestUnverifiedClaims(t *testing.T) {
	for _, tc := range []struct {
		name    string
		token   string
		want    caller.Claims
		invalid bool
	}{
		{
			name:  "reads exp, a list of audiences and the bound pod",
			token: jwt(`{"aud":["meshlift","other"],"exp":1900000000,"kubernetes.io":{"namespace":"shop","pod":{"name":"web-1","uid":"u-1"}}}`),
			want:  caller.Claims{Expiry: time.Unix(1900000000, 0), Audiences: []string{"meshlift", "other"}, Namespace: "shop", PodName: "web-1", PodUID: "u-1"},
		},
		{
			name:  "reads a single audience given as a string",
			token: jwt(`{"aud":"meshlift","exp":1900000000}`),
			want:  caller.Claims{Expiry: time.Unix(1900000000, 0), Audiences: []string{"meshlift"}},
		},
		{
			name:  "accepts a fractional exp",
			token: jwt(`{"exp":1900000000.5}`),
			want:  caller.Claims{Expiry: time.Unix(1900000000, 0)},
		},
		{
			name:  "leaves the expiry zero without exp",
			token: jwt(`{"aud":"meshlift"}`),
			want:  caller.Claims{Audiences: []string{"meshlift"}},
		},
		{
			name:  "accepts a padded payload",
			token: "e30." + base64.URLEncoding.EncodeToString([]byte(`{"exp":1}`)) + ".sig",
			want:  caller.Claims{Expiry: time.Unix(1, 0)},
		},
		{name: "refuses a token that is not three parts", token: "abc.def", invalid: true},
		{name: "refuses a payload that is not base64url", token: "a.***.c", invalid: true},
		{name: "refuses a payload that is not JSON", token: jwt(`not json`), invalid: true},
		{name: "refuses a negative exp", token: jwt(`{"exp":-1}`), invalid: true},
		{name: "refuses an exp far beyond any token", token: jwt(`{"exp":1e300}`), invalid: true},
		{name: "refuses an exp that is a string", token: jwt(`{"exp":"soon"}`), invalid: true},
		{name: "refuses an audience that is a number", token: jwt(`{"aud":7}`), invalid: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := caller.UnverifiedClaims(tc.token)
			if tc.invalid {
				wantRefusal(t, err, identity.ReasonInvalidToken, codes.Unauthenticated)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.Expiry.Equal(tc.want.Expiry) || strings.Join(got.Audiences, ",") != strings.Join(tc.want.Audiences, ",") ||
				got.Namespace != tc.want.Namespace || got.PodName != tc.want.PodName || got.PodUID != tc.want.PodUID {
				t.Fatalf("UnverifiedClaims() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestRejected(t *testing.T) {
	now := time.Unix(1800000000, 0)
	bound := caller.Claims{Audiences: []string{"meshlift"}, Expiry: now.Add(time.Hour), Namespace: "shop", PodName: "web-1", PodUID: "u-1"}
	for _, tc := range []struct {
		name      string
		claims    caller.Claims
		claimsErr error
		podGone   bool
		reason    identity.Reason
	}{
		{"explains a token for another audience", caller.Claims{Audiences: []string{"vault"}, Expiry: now.Add(time.Hour)}, nil, false, identity.ReasonWrongAudience},
		{"explains an expired token", caller.Claims{Audiences: []string{"meshlift"}, Expiry: now.Add(-time.Second)}, nil, false, identity.ReasonExpiredToken},
		{"explains a token whose pod is gone", bound, nil, true, identity.ReasonPodNotFound},
		{"passes on the API server's reason otherwise", bound, nil, false, identity.ReasonInvalidToken},
		{"says when the token is not even a JWT", caller.Claims{}, errors.New("not a JWT"), false, identity.ReasonInvalidToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantRefusal(t, caller.Rejected("invalid bearer token", tc.claims, tc.claimsErr, tc.podGone, now), tc.reason, codes.Unauthenticated)
		})
	}
}

func TestPrecheck(t *testing.T) {
	now := time.Unix(1800000000, 0)
	bound := func(claims string) string {
		return jwt(`{"aud":["meshlift"],"kubernetes.io":{"namespace":"shop","pod":{"name":"web-1","uid":"u-1"}}` + claims + `}`)
	}
	for _, tc := range []struct {
		name   string
		token  string
		reason identity.Reason
	}{
		{name: "passes a bound token for meshlift that has not expired", token: bound(`,"exp":1800000600,"nbf":1799999400`)},
		{name: "passes a token expired within the API server's leeway", token: bound(`,"exp":1799999970`)},
		{name: "passes a token valid within the leeway from now", token: bound(`,"exp":1800000600,"nbf":1800000030`)},
		{name: "refuses a token that is not a JWT", token: "not-a-jwt", reason: identity.ReasonInvalidToken},
		{name: "refuses a token whose header is not JSON", token: "bm90LWpzb24" + bound(`,"exp":1800000600`)[len("eyJhbGciOiJSUzI1NiJ9"):], reason: identity.ReasonInvalidToken},
		{name: "refuses an unsigned token", token: base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + bound(`,"exp":1800000600`)[len("eyJhbGciOiJSUzI1NiJ9"):], reason: identity.ReasonInvalidToken},
		{name: "refuses a token without a signature", token: strings.TrimSuffix(bound(`,"exp":1800000600`), "c2lnbmF0dXJl"), reason: identity.ReasonInvalidToken},
		{name: "refuses a token for another audience", token: jwt(`{"aud":["vault"],"exp":1800000600,"kubernetes.io":{"namespace":"shop","pod":{"name":"web-1","uid":"u-1"}}}`), reason: identity.ReasonWrongAudience},
		{name: "refuses a token without an audience", token: jwt(`{"exp":1800000600}`), reason: identity.ReasonWrongAudience},
		{name: "refuses a token that never expires", token: bound(``), reason: identity.ReasonInvalidToken},
		{name: "refuses a token expired beyond the leeway", token: bound(`,"exp":1799999900`), reason: identity.ReasonExpiredToken},
		{name: "refuses a token that is not valid yet", token: bound(`,"exp":1800000600,"nbf":1800000100`), reason: identity.ReasonInvalidToken},
		{name: "refuses a token that is not bound to a pod", token: jwt(`{"aud":"meshlift","exp":1800000600,"kubernetes.io":{"namespace":"shop"}}`), reason: identity.ReasonUnboundToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			claims, err := caller.Precheck(tc.token, now)
			if tc.reason != "" {
				wantRefusal(t, err, tc.reason, codes.Unauthenticated)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if claims.PodName != "web-1" || claims.Expiry.IsZero() {
				t.Fatalf("Precheck() = %+v", claims)
			}
		})
	}
}
