package handoff

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func TestMessagesRoundTripAndMalformedFramesAreRefused(t *testing.T) {
	valid := []struct {
		name string
		m    Message
		fds  int
	}{
		{"a HELLO from slot 2", Message{Type: TypeHello, Version: "2.0.0-rc.1+b7", Protocol: 1, Slot: 2}, 0},
		{"LISTENERS with one socket per name", Message{Type: TypeListeners, Listeners: []string{"inbound", "outbound-7001"}}, 2},
		{"a TAKEOVER", Message{Type: TypeTakeover}, 0},
		{"a DRAINED", Message{Type: TypeDrained}, 0},
		{"an ERROR with a reason", Message{Type: TypeError, Reason: "protocol 2 is not supported"}, 0},
	}
	for _, tt := range valid {
		t.Run(tt.name, func(t *testing.T) {
			frame, err := Encode(tt.m, tt.fds)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(frame, tt.fds)
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != tt.m.Type || got.Version != tt.m.Version || got.Slot != tt.m.Slot || strings.Join(got.Listeners, ",") != strings.Join(tt.m.Listeners, ",") {
				t.Errorf("Decode(Encode(m)) = %+v, want %+v", got, tt.m)
			}
		})
	}

	frame := func(payload string) []byte {
		b := make([]byte, 4, 4+len(payload))
		binary.BigEndian.PutUint32(b, uint32(len(payload)))
		return append(b, payload...)
	}
	invalid := []struct {
		name  string
		frame []byte
		fds   int
		want  string
	}{
		{"a frame shorter than its header", []byte{0, 0}, 0, "shorter than its header"},
		{"a length beyond the limit", []byte{0xff, 0xff, 0xff, 0xff, '{'}, 0, "not within"},
		{"a length that does not match the payload", append([]byte{0, 0, 0, 9}, `{}`...), 0, "does not match"},
		{"a payload that is not JSON", frame(`hello`), 0, "not a message"},
		{"an unknown field", frame(`{"type":"TAKEOVER","evil":1}`), 0, "unknown field"},
		{"data after the message", frame(`{"type":"TAKEOVER"}{"type":"DRAINED"}`), 0, "data after"},
		{"an unknown type", frame(`{"type":"SHUTDOWN"}`), 0, "unknown message type"},
		{"a HELLO without protocol", frame(`{"type":"HELLO","version":"1.0.0","slot":2}`), 0, "protocol >= 1"},
		{"a HELLO from slot 3", frame(`{"type":"HELLO","version":"1.0.0","protocol":1,"slot":3}`), 0, "slot 1 or 2"},
		{"a HELLO with a version full of shell", frame(`{"type":"HELLO","version":"$(rm -rf)","protocol":1,"slot":1}`), 0, "version"},
		{"file descriptors on a HELLO", frame(`{"type":"HELLO","version":"1.0.0","protocol":1,"slot":1}`), 1, "carries 1 file descriptors"},
		{"more names than sockets", frame(`{"type":"LISTENERS","listeners":["a","b"]}`), 1, "names 2 sockets but carries 1"},
		{"a listener named twice", frame(`{"type":"LISTENERS","listeners":["a","a"]}`), 2, "named twice"},
		{"a listener name with a slash", frame(`{"type":"LISTENERS","listeners":["../etc"]}`), 1, "not a short name"},
		{"LISTENERS without names", frame(`{"type":"LISTENERS","listeners":[]}`), 0, "1 to 64 names"},
		{"an ERROR without a reason", frame(`{"type":"ERROR"}`), 0, "needs a reason"},
		{"a TAKEOVER with fields", frame(`{"type":"TAKEOVER","slot":1}`), 0, "carries fields"},
	}
	for _, tt := range invalid {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			_, err := Decode(tt.frame, tt.fds)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Decode() error = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, m := range []Message{
		{Type: TypeHello, Version: "1.0.0", Protocol: 1, Slot: 2},
		{Type: TypeListeners, Listeners: []string{"inbound"}},
		{Type: TypeTakeover}, {Type: TypeError, Reason: "no"},
	} {
		fds := len(m.Listeners)
		frame, _ := Encode(m, fds)
		f.Add(frame, fds)
	}
	f.Add([]byte{0, 0, 0, 1, '{'}, 0)
	f.Fuzz(func(t *testing.T, frame []byte, fds int) {
		m, err := Decode(frame, fds)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// Whatever is accepted is valid and encodes again.
		if _, err := Encode(m, fds); err != nil {
			t.Fatalf("accepted %+v but cannot encode it: %v", m, err)
		}
	})
}
