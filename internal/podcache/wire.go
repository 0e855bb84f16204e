package podcache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
)

// The cache lists and watches pods in protobuf. Decoding a whole pod to keep a small part of it
// costs several times what is kept (ARCHITECTURE.md §9): the managed fields alone are often the
// largest part. FilterTransport drops, from the API server's responses, the fields of pods that
// Slim would drop anyway, before client-go decodes them: what is decoded is about what is kept.
// Slim still runs on every pod the cache gets, so what the cache holds does not depend on
// whether a response was filtered (a JSON response, or one the filter cannot read, passes
// unchanged).

// message says which fields of a protobuf message the filter keeps: the fields it names are
// dropped (nil) or kept and filtered in turn (keep: as they are); the others are kept when
// keepOthers is set, else dropped. A message with keepIf is kept only when keepIf says so.
type message struct {
	fields     map[protowire.Number]*message
	keepOthers bool
	keepIf     func(message []byte) bool
}

// keep keeps a field as it is.
var keep = &message{keepOthers: true}

// The protobuf field numbers of k8s.io/api/core/v1 and k8s.io/apimachinery (generated.proto),
// which never change for a field: what Slim keeps of a pod, and a bit more (Slim also drops
// the messages of container states and interns what pods share).
var (
	containerFields = &message{keepIf: namedProxy, fields: map[protowire.Number]*message{
		1: keep, 2: keep, 8: keep, 24: keep, // name, image, resources, restartPolicy
	}}
	containerStatusFields = &message{keepIf: namedProxy, fields: map[protowire.Number]*message{
		1: keep, 2: keep, 4: keep, 5: keep, 6: keep, 9: keep, 11: keep, // name, state, ready, restartCount, image, started, resources
	}}
	conditionFields          = &message{keepIf: keptCondition, keepOthers: true}
	operatorAnnotationFields = &message{keepIf: operatorAnnotation, keepOthers: true} // a map entry: key 1, value 2
	podFields                = &message{fields: map[protowire.Number]*message{
		// metadata, without selfLink, managedFields and annotations of other domains
		1: {keepOthers: true, fields: map[protowire.Number]*message{4: nil, 17: nil, 12: operatorAnnotationFields}},
		2: {fields: map[protowire.Number]*message{ // spec
			2: containerFields, 20: containerFields, // containers, initContainers
			3: keep, 8: keep, 10: keep, 11: keep, 28: keep, // restartPolicy, serviceAccountName, nodeName, hostNetwork, readinessGates
		}},
		3: {fields: map[protowire.Number]*message{ // status
			1: keep, 2: conditionFields, 6: keep, 17: keep, // phase, conditions, podIP, observedGeneration
			8: containerStatusFields, 10: containerStatusFields, // containerStatuses, initContainerStatuses
		}},
	}}
	// A PodList: its metadata and its pods.
	podListFields = &message{fields: map[protowire.Number]*message{1: keep, 2: podFields}}
)

var errMalformed = errors.New("malformed protobuf")

// namedProxy reports whether a Container or ContainerStatus (name 1) is a proxy's.
func namedProxy(message []byte) bool {
	name, ok := stringField(message, 1)
	return !ok || isProxy(string(name))
}

// keptCondition reports whether a PodCondition (type 1) is one Slim keeps.
func keptCondition(message []byte) bool {
	conditionType, ok := stringField(message, 1)
	return !ok || keptConditions[corev1.PodConditionType(conditionType)]
}

// operatorAnnotation reports whether an annotation (a map entry, key 1) is one Slim keeps.
func operatorAnnotation(entry []byte) bool {
	key, ok := stringField(entry, 1)
	return !ok || isOperatorAnnotation(string(key))
}

// stringField is the last value of field num of message, which must be a string; ok is false
// when message cannot be read (the message is then kept, for the decoder to refuse).
func stringField(message []byte, num protowire.Number) (value []byte, ok bool) {
	for len(message) > 0 {
		n, typ, size := protowire.ConsumeTag(message)
		if size < 0 {
			return nil, false
		}
		length := protowire.ConsumeFieldValue(n, typ, message[size:])
		if length < 0 {
			return nil, false
		}
		if n == num {
			if typ != protowire.BytesType {
				return nil, false
			}
			value, _ = protowire.ConsumeBytes(message[size : size+length])
		}
		message = message[size+length:]
	}
	return value, true
}

// filterMessage appends to dst the fields of src that m keeps.
func filterMessage(dst, src []byte, m *message) ([]byte, error) {
	for len(src) > 0 {
		num, typ, n := protowire.ConsumeTag(src)
		if n < 0 {
			return nil, errMalformed
		}
		size := protowire.ConsumeFieldValue(num, typ, src[n:])
		if size < 0 {
			return nil, errMalformed
		}
		field := src[:n+size]
		src = src[n+size:]
		child, named := m.fields[num]
		switch {
		case !named && m.keepOthers, named && child == keep:
			dst = append(dst, field...)
		case !named, child == nil:
		case typ != protowire.BytesType:
			return nil, errMalformed
		default:
			value, _ := protowire.ConsumeBytes(field[n:])
			if child.keepIf != nil && !child.keepIf(value) {
				continue
			}
			var err error
			if dst, err = appendFiltered(protowire.AppendTag(dst, num, typ), value, child); err != nil {
				return nil, err
			}
		}
	}
	return dst, nil
}

// appendFiltered appends value filtered by m as a length-delimited field value. The filtered
// message is written in place after room for its length, which is at most value's.
func appendFiltered(dst, value []byte, m *message) ([]byte, error) {
	room := protowire.SizeVarint(uint64(len(value)))
	start := len(dst)
	dst = append(dst, make([]byte, room)...)
	dst, err := filterMessage(dst, value, m)
	if err != nil {
		return nil, err
	}
	length := len(dst) - start - room
	size := protowire.SizeVarint(uint64(length))
	protowire.AppendVarint(dst[start:start], uint64(length))
	if size < room {
		copy(dst[start+size:], dst[start+room:])
		dst = dst[:len(dst)-(room-size)]
	}
	return dst, nil
}

// protobufPrefix starts every object the API server encodes in protobuf: "k8s" and the
// envelope, a runtime.Unknown.
var protobufPrefix = []byte{0x6b, 0x38, 0x73, 0x00}

// filterObject filters an object as the API server encodes it (protobufPrefix and a
// runtime.Unknown: typeMeta 1 {apiVersion 1, kind 2}, raw 2, contentEncoding 3, contentType 4)
// when it is a v1 Pod or PodList; other objects come back unchanged.
func filterObject(dst, object []byte) ([]byte, error) {
	unknown, ok := bytes.CutPrefix(object, protobufPrefix)
	if !ok {
		return append(dst, object...), nil
	}
	var raw []byte
	var filter *message
	for rest := unknown; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return nil, errMalformed
		}
		size := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if size < 0 {
			return nil, errMalformed
		}
		value, _ := protowire.ConsumeBytes(rest[n : n+size])
		switch {
		case num == 1 && typ == protowire.BytesType:
			filter = filterFor(value)
		case num == 2 && typ == protowire.BytesType:
			raw = value
		case num == 3 && typ == protowire.BytesType && len(value) > 0:
			return append(dst, object...), nil // compressed or otherwise encoded: not ours to read
		}
		rest = rest[n+size:]
	}
	if filter == nil || raw == nil {
		return append(dst, object...), nil
	}
	dst = append(dst, protobufPrefix...)
	for rest := unknown; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		size := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if num == 2 && typ == protowire.BytesType {
			var err error
			if dst, err = appendFiltered(protowire.AppendTag(dst, num, typ), raw, filter); err != nil {
				return nil, err
			}
		} else {
			dst = append(dst, rest[:n+size]...)
		}
		rest = rest[n+size:]
	}
	return dst, nil
}

// filterFor is the filter of the object whose runtime.TypeMeta is typeMeta, nil for objects
// other than pods.
func filterFor(typeMeta []byte) *message {
	var apiVersion, kind string
	for len(typeMeta) > 0 {
		num, typ, n := protowire.ConsumeTag(typeMeta)
		if n < 0 {
			return nil
		}
		size := protowire.ConsumeFieldValue(num, typ, typeMeta[n:])
		if size < 0 {
			return nil
		}
		if typ == protowire.BytesType {
			value, _ := protowire.ConsumeBytes(typeMeta[n : n+size])
			switch num {
			case 1:
				apiVersion = string(value)
			case 2:
				kind = string(value)
			}
		}
		typeMeta = typeMeta[n+size:]
	}
	switch {
	case apiVersion != "v1":
		return nil
	case kind == "Pod":
		return podFields
	case kind == "PodList":
		return podListFields
	}
	return nil
}

// filterWatchEvent filters the object of a metav1.WatchEvent (type 1, object 2 as a
// runtime.RawExtension: raw 1), as one frame of a watch carries it. scratch is reused between
// calls. Bookmarks pass unchanged: their annotations are the API server's word to the reflector
// (k8s.io/initial-events-end ends the initial events of a watch list).
func filterWatchEvent(dst, event []byte, scratch *eventScratch) ([]byte, error) {
	eventType, ok := stringField(event, 1)
	if !ok {
		return nil, errMalformed
	}
	if string(eventType) != string(watch.Added) && string(eventType) != string(watch.Modified) && string(eventType) != string(watch.Deleted) {
		return append(dst, event...), nil
	}
	for len(event) > 0 {
		num, typ, n := protowire.ConsumeTag(event)
		if n < 0 {
			return nil, errMalformed
		}
		size := protowire.ConsumeFieldValue(num, typ, event[n:])
		if size < 0 {
			return nil, errMalformed
		}
		field := event[:n+size]
		event = event[n+size:]
		if num != 2 || typ != protowire.BytesType {
			dst = append(dst, field...)
			continue
		}
		extension, _ := protowire.ConsumeBytes(field[n:])
		scratch.extension = scratch.extension[:0]
		for len(extension) > 0 {
			xnum, xtyp, xn := protowire.ConsumeTag(extension)
			if xn < 0 {
				return nil, errMalformed
			}
			xsize := protowire.ConsumeFieldValue(xnum, xtyp, extension[xn:])
			if xsize < 0 {
				return nil, errMalformed
			}
			if xnum == 1 && xtyp == protowire.BytesType {
				raw, _ := protowire.ConsumeBytes(extension[xn : xn+xsize])
				var err error
				if scratch.object, err = filterObject(scratch.object[:0], raw); err != nil {
					return nil, err
				}
				scratch.extension = protowire.AppendBytes(protowire.AppendTag(scratch.extension, xnum, xtyp), scratch.object)
			} else {
				scratch.extension = append(scratch.extension, extension[:xn+xsize]...)
			}
			extension = extension[xn+xsize:]
		}
		dst = protowire.AppendBytes(protowire.AppendTag(dst, num, typ), scratch.extension)
	}
	return dst, nil
}

// eventScratch are the buffers filterWatchEvent fills, kept from one event to the next.
type eventScratch struct{ object, extension []byte }

// FilterTransport wraps the transport of the cache's client (rest.Config.Wrap) so that the
// pods it lists and watches in protobuf arrive without the fields Slim drops. Other requests,
// and responses in JSON, pass unchanged.
func FilterTransport(next http.RoundTripper) http.RoundTripper {
	return filterTransport{next: next}
}

type filterTransport struct{ next http.RoundTripper }

func (t filterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.next.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || !isPodCollection(req.URL.Path) || res.StatusCode != http.StatusOK ||
		res.Header.Get("Content-Encoding") != "" {
		return res, err
	}
	mediaType, params, err := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if err != nil || mediaType != runtime.ContentTypeProtobuf {
		return res, nil
	}
	if params["stream"] == "watch" {
		res.Body, res.ContentLength = &watchFilter{body: res.Body}, -1
		res.Header.Del("Content-Length")
		return res, nil
	}
	body, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil {
		return nil, err
	}
	if filtered, err := filterObject(nil, body); err == nil {
		body = filtered
	}
	res.Body, res.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	res.Header.Del("Content-Length")
	return res, nil
}

// isPodCollection reports whether path is the collection of pods of the cluster
// (/api/v1/pods) or of a namespace (/api/v1/namespaces/<namespace>/pods).
func isPodCollection(path string) bool {
	if path == "/api/v1/pods" {
		return true
	}
	namespace, ok := strings.CutPrefix(path, "/api/v1/namespaces/")
	namespace, ok2 := strings.CutSuffix(namespace, "/pods")
	return ok && ok2 && namespace != "" && !strings.Contains(namespace, "/")
}

// maxFrame bounds the frames the watch filter reads: the API server's own limit on a request
// is 3 MiB, and an object of a watch is smaller than that.
const maxFrame = 64 << 20

// watchFilter filters a watch's frames (a 4-byte big-endian length, then a WatchEvent) as they
// are read. A frame it cannot read passes unchanged.
type watchFilter struct {
	body  io.ReadCloser
	frame []byte // the frame being read, reused
	out   []byte // the filtered frame being served, reused
	next  int    // what of out is served
	err   error

	scratch eventScratch
}

func (w *watchFilter) Read(p []byte) (int, error) {
	for w.next == len(w.out) {
		if w.err != nil {
			return 0, w.err
		}
		w.readFrame()
	}
	n := copy(p, w.out[w.next:])
	w.next += n
	return n, nil
}

// readFrame reads the next frame and fills out with it, filtered; or sets err.
func (w *watchFilter) readFrame() {
	w.out, w.next = w.out[:0], 0
	var header [4]byte
	if _, err := io.ReadFull(w.body, header[:]); err != nil {
		w.err = err
		return
	}
	length := binary.BigEndian.Uint32(header[:])
	if length > maxFrame {
		w.err = errors.New("watch frame too large")
		return
	}
	if cap(w.frame) < int(length) {
		w.frame = make([]byte, length)
	}
	w.frame = w.frame[:length]
	if _, err := io.ReadFull(w.body, w.frame); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		w.err = err
		return
	}
	w.out = append(w.out, 0, 0, 0, 0)
	filtered, err := filterWatchEvent(w.out, w.frame, &w.scratch)
	if err != nil {
		filtered = append(w.out, w.frame...)
	}
	binary.BigEndian.PutUint32(filtered[:4], uint32(len(filtered)-4))
	w.out = filtered
}

func (w *watchFilter) Close() error { return w.body.Close() }
