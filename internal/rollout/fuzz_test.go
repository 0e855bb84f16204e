package rollout_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/meshlift/meshlift/internal/rollout"
)

// FuzzDecodeState feeds the meshlift.io/upgrade annotation, which anyone allowed to patch a pod
// can write: DecodeState must never panic, every error must wrap ErrMalformedState, and what it
// accepts must encode and decode to the same state.
func FuzzDecodeState(f *testing.F) {
	valid, err := rollout.EncodeState(validState())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(`{"plan":"p","from":"a","to":"b","strategy":"Recreate","phase":"Evicting","slot":0,"startedAt":"2026-01-01T00:00:00Z","phaseSince":"2026-01-01T00:00:00Z","attempt":1}`)
	f.Add(`{"plan":"p","from":"a","to":"b","strategy":"InPlace","phase":"Reverting","outcome":"Failed","slot":0,"fromImage":"x","toImage":"y","startedAt":"2026-01-01T00:00:00Z","phaseSince":"2026-01-01T00:00:00Z","attempt":1}`)
	f.Add(`{}`)
	f.Add(`{"PLAN":"p","plan":"q"}`)
	f.Add(`{"startedAt":"9999-12-31T23:59:59Z"}`)
	f.Add("\x00")
	f.Add(strings.Replace(valid, `"plan":"web-v2"`, `"plan":"web\u002dv2"`, 1))
	f.Add(strings.Replace(valid, `"readySince":"2026-03-01T12:00:03Z"`, `"readySince":null`, 1))
	f.Add(strings.Replace(valid, `"startedAt":"2026-03-01T12:00:00Z"`, `"startedAt":"2026-03-01T14:00:00+02:00"`, 1))
	f.Fuzz(func(t *testing.T, value string) {
		state, err := rollout.DecodeState(value)
		if err != nil {
			if !errors.Is(err, rollout.ErrMalformedState) {
				t.Fatalf("error %v does not wrap ErrMalformedState", err)
			}
			return
		}
		// The hand-written parser accepts a subset of what encoding/json accepts, with the same
		// meaning.
		var reference rollout.PodState
		decoder := json.NewDecoder(strings.NewReader(value))
		decoder.DisallowUnknownFields()
		if err := decoder.Decode(&reference); err != nil {
			t.Fatalf("DecodeState accepted %q, encoding/json refuses it: %v", value, err)
		}
		if !reflect.DeepEqual(normalize(state), normalize(&reference)) {
			t.Fatalf("DecodeState and encoding/json read %q differently:\n%+v\n%+v", value, state, reference)
		}
		encoded, err := rollout.EncodeState(state)
		if err != nil {
			t.Fatalf("DecodeState accepted %q but EncodeState refuses it: %v", value, err)
		}
		again, err := rollout.DecodeState(encoded)
		if err != nil {
			t.Fatalf("the re-encoded state %q does not decode: %v", encoded, err)
		}
		if !reflect.DeepEqual(normalize(state), normalize(again)) {
			t.Fatalf("round trip changed the state:\n%+v\n%+v", state, again)
		}
	})
}

// normalize drops monotonic and location details that JSON does not carry.
func normalize(s *rollout.PodState) rollout.PodState {
	out := *s
	out.StartedAt, out.PhaseSince = out.StartedAt.UTC(), out.PhaseSince.UTC()
	if out.ReadySince != nil {
		r := out.ReadySince.UTC()
		out.ReadySince = &r
	}
	return out
}
