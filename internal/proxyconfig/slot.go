package proxyconfig

import (
	"strconv"
	"strings"
	"time"
)

// Limits on the downward-API annotations file, which the kubelet writes but whose content comes
// from pod annotations anyone who may edit the pod controls.
const (
	maxAnnotationsFile = 256 << 10
	maxAnnotations     = 512
)

// ParseAnnotations reads a downward-API annotations file: one key="value" per line, the value a
// Go-quoted string. It returns an error for anything else, so a proxy never acts on a file it
// misread.
func ParseAnnotations(data []byte) (map[string]string, error) {
	if len(data) > maxAnnotationsFile {
		return nil, invalid("annotations file of %d bytes is larger than %d", len(data), maxAnnotationsFile)
	}
	annotations := map[string]string{}
	for i, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		key, quoted, ok := strings.Cut(line, "=")
		if !ok || key == "" || strings.ContainsAny(key, " \t\"") {
			return nil, invalid("annotations line %d is not key=\"value\"", i+1)
		}
		value, err := strconv.Unquote(quoted)
		if err != nil {
			return nil, invalid("annotations line %d: value of %s is not a quoted string", i+1, key)
		}
		if len(annotations) == maxAnnotations {
			return nil, invalid("more than %d annotations", maxAnnotations)
		}
		annotations[key] = value
	}
	return annotations, nil
}

// ActiveSlotAnnotation names the slot that owns the listeners (meshlift.io/active-slot).
const ActiveSlotAnnotation = "meshlift.io/active-slot"

// MayOwnListeners is the rule of ARCHITECTURE.md section 6: a process takes over the listeners
// (or binds them fresh when no owner answers) only when the pod's active-slot annotation names
// its slot. A proxy that restarts by accident in the other slot stays idle instead of stealing
// the listeners back. slot 0 is the single proxy of a version that cannot hot-upgrade: it always
// owns them.
func MayOwnListeners(slot int, annotations map[string]string) bool {
	if slot == 0 {
		return true
	}
	return annotations[ActiveSlotAnnotation] == strconv.Itoa(slot)
}

// DrainMaxDurationAnnotation, when the pod carries it, is the drain budget of the pod's proxies:
// how long a proxy that handed its listeners over keeps serving the connections that cannot move
// without loss (TCP streams, upgraded connections, HTTP/2 streams in flight) before it cuts
// them. A Go duration ("10m", "90s"). The proxy reads it from the downward-API annotations file
// at the moment it hands off, so the rollout may set or change it on a running pod; it overrides
// the --drain-max-duration flag.
const DrainMaxDurationAnnotation = "meshlift.io/drain-max-duration"

// DefaultDrainMaxDuration is the drain budget when neither the annotation nor the flag sets one:
// Envoy's default drain time for a hot restart (--drain-time-s, 600 s), within its parent
// shutdown time (--parent-shutdown-time-s, 900 s), after which Envoy's old process exits.
const DefaultDrainMaxDuration = 10 * time.Minute

// MaxDrainMaxDuration bounds a drain budget: a slot retiring for longer than a day holds its
// resources (and the pod's upgrade) for no workload a day of waiting would help.
const MaxDrainMaxDuration = 24 * time.Hour

// ParseDrainMaxDuration reads a drain budget: a Go duration of at least 1s and at most
// MaxDrainMaxDuration.
func ParseDrainMaxDuration(value string) (time.Duration, error) {
	d, err := time.ParseDuration(value)
	if err != nil {
		return 0, invalid("drain budget %q is not a duration such as 10m: %v", value, err)
	}
	if d < time.Second || d > MaxDrainMaxDuration {
		return 0, invalid("drain budget %s is not from 1s to %s", d, MaxDrainMaxDuration)
	}
	return d, nil
}

// DrainMaxDuration is the pod's drain budget from its annotations: ok is false when the
// annotation is absent, and err says why a present one is refused.
func DrainMaxDuration(annotations map[string]string) (budget time.Duration, ok bool, err error) {
	value, ok := annotations[DrainMaxDurationAnnotation]
	if !ok {
		return 0, false, nil
	}
	budget, err = ParseDrainMaxDuration(value)
	return budget, err == nil, err
}

// CaptureAnnotation lists the directions the pod's traffic is captured in (the capture
// package's AnnotationCapture, which the injector sets): "inbound", "outbound",
// "inbound,outbound", "none".
const CaptureAnnotation = "meshlift.io/capture"

// CapturesOutbound reports whether the pod's capture annotation names outbound: its proxy then
// listens for the app's captured outbound connections. Items are read as the capture package
// reads them (comma-separated, spaces around them allowed); anything else is not outbound.
func CapturesOutbound(annotations map[string]string) bool {
	for item := range strings.SplitSeq(annotations[CaptureAnnotation], ",") {
		if strings.TrimSpace(item) == "outbound" {
			return true
		}
	}
	return false
}
