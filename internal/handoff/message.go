// Package handoff is the hot-upgrade handoff protocol between two meshlift-proxy processes in
// the two slots of a pod (ARCHITECTURE.md section 6), over the Unix socket
// /var/run/meshlift/handoff.sock:
//
//  1. the new process connects and sends HELLO {version, protocol, slot};
//  2. the old process answers LISTENERS {names} with the listening sockets attached (SCM_RIGHTS),
//     in the order of the names;
//  3. the new process accepts on them, becomes ready and sends TAKEOVER; the old process stops
//     accepting (it keeps its copies of the sockets), drains and sends DRAINED.
//
// Either side may send ERROR {reason} instead and close. Only the other slot may take part: the
// socket is 0600 and each side refuses a peer of another UID (SO_PEERCRED) before the first
// message (peer.go). Messages from the peer are untrusted all the same: every frame is bounded
// in size, decoded strictly and validated, and every wait has a deadline.
package handoff

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
)

// ProtocolVersion is the version of this protocol; a SidecarVersion's spec.hotUpgrade.protocol.
const ProtocolVersion = 1

// Limits on what a peer may send.
const (
	// MaxFrameSize bounds one encoded message.
	MaxFrameSize = 16 << 10
	// MaxListeners bounds the listening sockets of one handoff (and so the FDs of one frame).
	MaxListeners = 64
	headerSize   = 4
)

// Type is the kind of a message.
type Type string

// Message types.
const (
	TypeHello     Type = "HELLO"
	TypeListeners Type = "LISTENERS"
	TypeTakeover  Type = "TAKEOVER"
	TypeDrained   Type = "DRAINED"
	TypeError     Type = "ERROR"
)

// Message is one frame of the protocol.
type Message struct {
	Type Type `json:"type"`
	// Version is the sender's build version (HELLO).
	Version string `json:"version,omitempty"`
	// Protocol is the sender's protocol version (HELLO).
	Protocol int `json:"protocol,omitempty"`
	// Slot is the sender's slot, 1 or 2 (HELLO).
	Slot int `json:"slot,omitempty"`
	// Listeners names the sockets attached to the frame, in order (LISTENERS).
	Listeners []string `json:"listeners,omitempty"`
	// Reason says why the sender gives up (ERROR).
	Reason string `json:"reason,omitempty"`
}

var (
	// ErrInvalid wraps every reason a frame is refused.
	ErrInvalid   = errors.New("invalid handoff message")
	versionRE    = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$`)
	listenerName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.:]{0,62}[a-z0-9])?$`)
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Validate checks that a message is well formed for its type. fds is the number of file
// descriptors that came with it.
func (m Message) Validate(fds int) error {
	if m.Type != TypeListeners && fds != 0 {
		return invalid("%s carries %d file descriptors, want none", m.Type, fds)
	}
	switch m.Type {
	case TypeHello:
		if m.Protocol < 1 {
			return invalid("HELLO needs protocol >= 1, got %d", m.Protocol)
		}
		if !versionRE.MatchString(m.Version) {
			return invalid("HELLO needs a version of letters, digits and .+_- (at most 64), got %q", m.Version)
		}
		if m.Slot != 1 && m.Slot != 2 {
			return invalid("HELLO needs slot 1 or 2, got %d", m.Slot)
		}
		if len(m.Listeners) != 0 || m.Reason != "" {
			return invalid("HELLO carries fields of other messages")
		}
	case TypeListeners:
		if len(m.Listeners) == 0 || len(m.Listeners) > MaxListeners {
			return invalid("LISTENERS needs 1 to %d names, got %d", MaxListeners, len(m.Listeners))
		}
		if len(m.Listeners) != fds {
			return invalid("LISTENERS names %d sockets but carries %d file descriptors", len(m.Listeners), fds)
		}
		seen := make(map[string]bool, len(m.Listeners))
		for _, name := range m.Listeners {
			if !listenerName.MatchString(name) {
				return invalid("listener name %q is not a short name of lowercase letters, digits and -.:", name)
			}
			if seen[name] {
				return invalid("listener %q is named twice", name)
			}
			seen[name] = true
		}
		if m.Version != "" || m.Protocol != 0 || m.Slot != 0 || m.Reason != "" {
			return invalid("LISTENERS carries fields of other messages")
		}
	case TypeTakeover, TypeDrained:
		if m.Version != "" || m.Protocol != 0 || m.Slot != 0 || len(m.Listeners) != 0 || m.Reason != "" {
			return invalid("%s carries fields", m.Type)
		}
	case TypeError:
		if m.Reason == "" || len(m.Reason) > 1024 {
			return invalid("ERROR needs a reason of 1 to 1024 bytes")
		}
	default:
		return invalid("unknown message type %q", m.Type)
	}
	return nil
}

// Encode validates m and returns its frame: a 4-byte big-endian length and the JSON payload.
func Encode(m Message, fds int) ([]byte, error) {
	if err := m.Validate(fds); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("failed to encode %s: %w", m.Type, err)
	}
	if len(payload) > MaxFrameSize-headerSize {
		return nil, invalid("%s is %d bytes, more than %d", m.Type, len(payload), MaxFrameSize-headerSize)
	}
	frame := make([]byte, headerSize, headerSize+len(payload))
	binary.BigEndian.PutUint32(frame, uint32(len(payload)))
	return append(frame, payload...), nil
}

// Decode parses and validates one frame received with fds file descriptors. It rejects unknown
// fields, trailing data and anything Validate refuses.
func Decode(frame []byte, fds int) (Message, error) {
	if len(frame) < headerSize {
		return Message{}, invalid("frame of %d bytes is shorter than its header", len(frame))
	}
	size := binary.BigEndian.Uint32(frame)
	if size == 0 || size > MaxFrameSize-headerSize {
		return Message{}, invalid("frame length %d is not within 1..%d", size, MaxFrameSize-headerSize)
	}
	if int(size) != len(frame)-headerSize {
		return Message{}, invalid("frame length %d does not match its %d payload bytes", size, len(frame)-headerSize)
	}
	decoder := json.NewDecoder(bytes.NewReader(frame[headerSize:]))
	decoder.DisallowUnknownFields()
	var m Message
	if err := decoder.Decode(&m); err != nil {
		return Message{}, invalid("payload is not a message: %v", err)
	}
	if decoder.More() {
		return Message{}, invalid("payload has data after the message")
	}
	if err := m.Validate(fds); err != nil {
		return Message{}, err
	}
	return m, nil
}
