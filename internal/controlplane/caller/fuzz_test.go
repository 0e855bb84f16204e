package caller_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshlift/meshlift/internal/controlplane/caller"
	"github.com/meshlift/meshlift/internal/identity"
)

// Everything here parses what an unauthenticated caller sends: it must never panic, and every
// error must be a refusal the caller can read.

func FuzzUnverifiedClaims(f *testing.F) {
	f.Add(jwt(`{"aud":["meshlift"],"exp":1900000000,"kubernetes.io":{"namespace":"shop","pod":{"name":"web-1","uid":"u"}}}`))
	f.Add(jwt(`{"aud":"meshlift","exp":1.5e9}`))
	f.Add(jwt(`{"exp":null,"aud":null}`))
	f.Add("a.b.c")
	f.Add("..")
	f.Fuzz(func(t *testing.T, token string) {
		claims, err := caller.UnverifiedClaims(token)
		if err != nil {
			var refusal *identity.Refusal
			if !errors.As(err, &refusal) {
				t.Fatalf("error %v is not a refusal", err)
			}
			return
		}
		if !claims.Expiry.IsZero() && claims.Expiry.Unix() < 0 {
			t.Fatalf("expiry %v before 1970", claims.Expiry)
		}
	})
}

// FuzzPrecheck checks the pre-check against the claims the token holds: whatever it lets
// through is a three-part JWT for audience meshlift, bound to a pod, that has not expired and
// is valid now (give or take caller.Leeway).
func FuzzPrecheck(f *testing.F) {
	f.Add(jwt(`{"aud":["meshlift"],"exp":1800000600,"nbf":1799999000,"kubernetes.io":{"namespace":"shop","pod":{"name":"web-1","uid":"u"}}}`), int64(1800000000))
	f.Add(jwt(`{"aud":"meshlift","exp":1800000000,"kubernetes.io":{"namespace":"a","pod":{"name":"b","uid":"c"}}}`), int64(1800000059))
	f.Add(jwt(`{"aud":"vault","exp":1}`), int64(0))
	f.Add("eyJhbGciOiJub25lIn0.e30.", int64(0))
	f.Add("not-a-jwt", int64(0))
	f.Fuzz(func(t *testing.T, token string, unix int64) {
		now := time.Unix(unix%4e9, 0)
		claims, err := caller.Precheck(token, now)
		if err != nil {
			var refusal *identity.Refusal
			if !errors.As(err, &refusal) || refusal.Code() != codes.Unauthenticated {
				t.Fatalf("error %v is not an Unauthenticated refusal", err)
			}
			return
		}
		if strings.Count(token, ".") != 2 || strings.HasSuffix(token, ".") {
			t.Fatalf("passed %q, which is not a signed three-part JWT", token)
		}
		if !slices.Contains(claims.Audiences, caller.Audience) {
			t.Fatalf("passed a token for audiences %q", claims.Audiences)
		}
		if claims.Expiry.IsZero() || now.After(claims.Expiry.Add(caller.Leeway)) {
			t.Fatalf("passed a token that expired at %v, now is %v", claims.Expiry, now)
		}
		if !claims.NotBefore.IsZero() && claims.NotBefore.After(now.Add(caller.Leeway)) {
			t.Fatalf("passed a token valid only from %v, now is %v", claims.NotBefore, now)
		}
		if claims.Namespace == "" || claims.PodName == "" || claims.PodUID == "" {
			t.Fatalf("passed a token not bound to a pod: %+v", claims)
		}
	})
}

func FuzzBearerToken(f *testing.F) {
	f.Add("Bearer abc")
	f.Add("bearer")
	f.Add("Basic x")
	f.Fuzz(func(t *testing.T, header string) {
		token, err := caller.BearerToken(metadata.Pairs("authorization", header))
		if err != nil {
			var refusal *identity.Refusal
			if !errors.As(err, &refusal) {
				t.Fatalf("error %v is not a refusal", err)
			}
			return
		}
		if token == "" || len(token) > caller.MaxTokenSize {
			t.Fatalf("accepted token %q", token)
		}
	})
}

func FuzzParseNode(f *testing.F) {
	f.Add("web-1.shop", "web-1", "shop", "-----BEGIN CERTIFICATE REQUEST-----\n", "2", true)
	f.Add("", "", "", "", "", false)
	f.Fuzz(func(t *testing.T, id, podName, namespace, csr, slot string, csrIsString bool) {
		csrValue := structpb.NewStringValue(csr)
		if !csrIsString {
			csrValue = structpb.NewNumberValue(float64(len(csr)))
		}
		n, err := caller.ParseNode(&corev3.Node{Id: id, Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			caller.MetaPodName:      structpb.NewStringValue(podName),
			caller.MetaPodNamespace: structpb.NewStringValue(namespace),
			caller.MetaCSR:          csrValue,
			caller.MetaSlot:         structpb.NewStringValue(slot),
		}}})
		if err != nil {
			var refusal *identity.Refusal
			if !errors.As(err, &refusal) {
				t.Fatalf("error %v is not a refusal", err)
			}
			return
		}
		if n.PodName != podName || n.PodNamespace != namespace || len(n.CSR) > identity.MaxCSRSize {
			t.Fatalf("ParseNode() = %+v", n)
		}
	})
}
