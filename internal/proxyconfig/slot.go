package proxyconfig

import (
	"strconv"
	"strings"
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
