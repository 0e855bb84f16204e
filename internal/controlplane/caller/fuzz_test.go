package caller_test

import (
	"errors"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
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
