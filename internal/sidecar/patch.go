package sidecar

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	utiljson "k8s.io/apimachinery/pkg/util/json"
)

// CreatePatch returns the JSON patch that turns original into injected. The order of operations
// on different object keys is not stable between calls (operations on one array are); compare
// patches by applying them. Both pods are encoded from Go types, so a field these types do not
// know is not in either; the injector answers with InjectionPatch instead.
func CreatePatch(original, injected *corev1.Pod) ([]jsonpatch.Operation, error) {
	before, err := json.Marshal(original)
	if err != nil {
		return nil, fmt.Errorf("failed to encode the pod: %w", err)
	}
	after, err := json.Marshal(injected)
	if err != nil {
		return nil, fmt.Errorf("failed to encode the injected pod: %w", err)
	}
	patch, err := jsonpatch.CreatePatch(before, after)
	if err != nil {
		return nil, fmt.Errorf("failed to compute the injection patch: %w", err)
	}
	return patch, nil
}

// InjectionPatch returns the JSON patch the injector answers with: it turns the pod the API
// server sent (raw, which decodes to original) into injected (Inject's result), and it only adds
// what injection owns:
//
//   - keys of metadata.labels and metadata.annotations that injected adds or changes;
//   - spec.serviceAccountName when injected changes it;
//   - the elements of spec.initContainers, spec.containers, spec.volumes and spec.readinessGates
//     that injected adds (matched by name), at their place in injected's list;
//   - under traffic capture, the probes of the pod's own containers that injected rewrites: each
//     is replaced whole (an add of the probe's key), right after the additions to its list, so
//     the index is the container's in injected's list.
//
// Everything else in raw is neither removed nor re-encoded, so fields this build's Go types do
// not know (those of an API server newer than our client) survive. A diff of the re-encoded pod
// would remove them. It fails if injected reorders or drops an element of the pod's own lists,
// which injection never does.
//
// original must be decoded from raw case-sensitively, as the API server decodes
// (k8s.io/apimachinery/pkg/util/json), so that the paths of the patch are raw's keys. The
// operations come in a stable order: metadata, then spec, each field in the order above.
func InjectionPatch(raw []byte, original, injected *corev1.Pod) ([]jsonpatch.Operation, error) {
	var metadata, spec objectPatch
	metadata.mapKeys("labels", original.Labels, injected.Labels)
	metadata.mapKeys("annotations", original.Annotations, injected.Annotations)
	if injected.Spec.ServiceAccountName != original.Spec.ServiceAccountName {
		spec.whole("serviceAccountName", injected.Spec.ServiceAccountName)
	}
	containerName := func(c corev1.Container) string { return c.Name }
	err := addedElements(&spec, "initContainers", original.Spec.InitContainers, injected.Spec.InitContainers, containerName)
	if err == nil {
		rewrittenProbes(&spec, "initContainers", original.Spec.InitContainers, injected.Spec.InitContainers)
		err = addedElements(&spec, "containers", original.Spec.Containers, injected.Spec.Containers, containerName)
	}
	if err == nil {
		rewrittenProbes(&spec, "containers", original.Spec.Containers, injected.Spec.Containers)
	}
	if err == nil {
		err = addedElements(&spec, "volumes", original.Spec.Volumes, injected.Spec.Volumes, func(v corev1.Volume) string { return v.Name })
	}
	if err == nil {
		err = addedElements(&spec, "readinessGates", original.Spec.ReadinessGates, injected.Spec.ReadinessGates,
			func(g corev1.PodReadinessGate) string { return string(g.ConditionType) })
	}
	if err != nil {
		return nil, err
	}
	if metadata.empty() && spec.empty() {
		return nil, nil
	}

	// A field of the decoded pod proves that raw has the object holding it; without one (a pod
	// with no name and no labels, or no containers), raw is looked at.
	hasMetadata := original.Name != "" || original.GenerateName != "" || original.Labels != nil || original.Annotations != nil
	hasSpec := original.Spec.Containers != nil || original.Spec.InitContainers != nil || original.Spec.Volumes != nil ||
		original.Spec.ServiceAccountName != ""
	if !hasMetadata || !hasSpec {
		if hasMetadata, hasSpec, err = topLevelObjects(raw); err != nil {
			return nil, err
		}
	}
	ops, err := metadata.operations(nil, "/metadata", hasMetadata)
	if err != nil {
		return nil, err
	}
	return spec.operations(ops, "/spec", hasSpec)
}

// objectPatch collects what is added to one object of the pod (metadata or spec), in order.
type objectPatch struct {
	additions []addition
}

// addition adds value at field+below, or sets the whole field when below is "".
type addition struct {
	field, below string
	value        any
}

func (p *objectPatch) empty() bool { return len(p.additions) == 0 }

func (p *objectPatch) whole(field string, value any) {
	p.additions = append(p.additions, addition{field: field, value: value})
}

func (p *objectPatch) below(field, path string, value any) {
	p.additions = append(p.additions, addition{field: field, below: path, value: value})
}

// mapKeys adds the keys that injected adds or changes; it never removes one.
func (p *objectPatch) mapKeys(field string, original, injected map[string]string) {
	if original == nil {
		if len(injected) > 0 {
			p.whole(field, injected)
		}
		return
	}
	keys := make([]string, 0, len(injected))
	for key, value := range injected {
		if old, ok := original[key]; !ok || old != value {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	for _, key := range keys {
		p.below(field, "/"+pointerEscaper.Replace(key), injected[key])
	}
}

// pointerEscaper escapes a key for a JSON pointer (RFC 6901).
var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// addedElements adds the elements of injected whose key the pod's own list does not have, at
// their index in injected: inserted in increasing order, each lands where injected has it. The
// pod's own elements must stay in injected, in their order.
func addedElements[T any](p *objectPatch, field string, original, injected []T, key func(T) string) error {
	if len(original) == 0 {
		if len(injected) > 0 {
			p.whole(field, injected)
		}
		return nil
	}
	own := make(map[string]bool, len(original))
	for _, element := range original {
		own[key(element)] = true
	}
	kept := 0
	for i, element := range injected {
		if !own[key(element)] {
			p.below(field, "/"+strconv.Itoa(i), element)
			continue
		}
		if kept == len(original) || key(original[kept]) != key(element) {
			return fmt.Errorf("injection moved %s %q of the pod; it may only add elements", field, key(element))
		}
		kept++
	}
	if kept != len(original) {
		return fmt.Errorf("injection dropped elements of the pod's %s; it may only add elements", field)
	}
	return nil
}

// rewrittenProbes replaces the probes that injected rewrote in the pod's own containers. Only
// a probe that injected still has is replaced; injection never removes one.
func rewrittenProbes(p *objectPatch, field string, original, injected []corev1.Container) {
	own := make(map[string]*corev1.Container, len(original))
	for i := range original {
		own[original[i].Name] = &original[i]
	}
	for i := range injected {
		before, ok := own[injected[i].Name]
		if !ok {
			continue
		}
		after := &injected[i]
		for _, probe := range []struct {
			key           string
			before, after *corev1.Probe
		}{
			{"livenessProbe", before.LivenessProbe, after.LivenessProbe},
			{"readinessProbe", before.ReadinessProbe, after.ReadinessProbe},
			{"startupProbe", before.StartupProbe, after.StartupProbe},
		} {
			if probe.after != nil && !equality.Semantic.DeepEqual(probe.before, probe.after) {
				p.below(field, "/"+strconv.Itoa(i)+"/"+probe.key, probe.after)
			}
		}
	}
}

// operations appends p's operations on the object at path to ops; exists says whether the pod
// has that object. Without it, one operation adds the object with the whole fields.
func (p *objectPatch) operations(ops []jsonpatch.Operation, path string, exists bool) ([]jsonpatch.Operation, error) {
	if p.empty() {
		return ops, nil
	}
	if !exists {
		object := make(map[string]any, len(p.additions))
		for _, a := range p.additions {
			if a.below != "" { // only a field the pod has is added to, and then the pod has the object
				return nil, fmt.Errorf("the pod has no %s, yet injection adds to its %s", path, a.field)
			}
			object[a.field] = a.value
		}
		return append(ops, jsonpatch.NewOperation("add", path, object)), nil
	}
	for _, a := range p.additions {
		ops = append(ops, jsonpatch.NewOperation("add", path+"/"+a.field+a.below, a.value))
	}
	return ops, nil
}

// topLevelObjects reports whether raw has a metadata and a spec object (neither absent nor null).
func topLevelObjects(raw []byte) (hasMetadata, hasSpec bool, err error) {
	var top struct {
		Metadata json.RawMessage `json:"metadata"`
		Spec     json.RawMessage `json:"spec"`
	}
	if err := utiljson.Unmarshal(raw, &top); err != nil {
		return false, false, fmt.Errorf("failed to decode the pod: %w", err)
	}
	isObject := func(value json.RawMessage) bool { return len(value) > 0 && !bytes.Equal(value, []byte("null")) }
	return isObject(top.Metadata), isObject(top.Spec), nil
}
