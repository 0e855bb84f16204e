package xdsclient

import (
	"testing"

	"google.golang.org/protobuf/types/known/anypb"
)

// FuzzDecode feeds arbitrary bytes to the decoders of what the control plane sends: they must
// refuse or accept, never panic, and never accept an endpoint without an address and identity.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{}, true)
	f.Add([]byte("\x0a\x07default\x12\x00"), true)
	f.Add([]byte("\x0a\x0dhttp.api.shop"), false)
	f.Fuzz(func(t *testing.T, value []byte, secret bool) {
		if secret {
			_, cert, bundle, err := DecodeSecret(&anypb.Any{TypeUrl: TypeSecret, Value: value})
			if err == nil && (cert == nil) == (bundle == nil) {
				t.Fatalf("accepted a secret with cert %v and bundle %d bytes", cert != nil, len(bundle))
			}
			return
		}
		a, err := DecodeAssignment(&anypb.Any{TypeUrl: TypeAssignment, Value: value})
		if err != nil {
			return
		}
		for _, ep := range a.Endpoints {
			if ep.Address == "" || ep.Identity == "" {
				t.Fatalf("accepted endpoint %+v", ep)
			}
		}
	})
}
