package podcache

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// What the pods of a workload share is held once in the cache: the strings that repeat (names,
// images, label and annotation keys and values), the label set, the owner, the proxy containers
// and their resources. Pods take it from these tables when Slim runs, the first pod with a value
// puts it in.

// table holds values shared by cached objects, by a rendering of them. It starts again when it
// is full, so that values no object uses any more are not held for ever.
type table[V any] struct {
	mu   sync.Mutex
	max  int
	byID map[string]V
}

// shared returns the value held for id, else holds and returns v.
func (t *table[V]) shared(id string, v V) V {
	t.mu.Lock()
	defer t.mu.Unlock()
	if held, ok := t.byID[id]; ok {
		return held
	}
	if t.byID == nil || len(t.byID) >= t.max {
		t.byID = make(map[string]V)
	}
	t.byID[id] = v
	return v
}

// maxInternedString is the longest string shared: names, images, keys and short values, not the
// JSON a pod's upgrade state is.
const maxInternedString = 64

var (
	strs       = table[string]{max: 8192}
	labelSets  = table[map[string]string]{max: 4096}
	owners     = table[[]metav1.OwnerReference]{max: 4096}
	resources  = table[corev1.ResourceRequirements]{max: 1024}
	enacted    = table[*corev1.ResourceRequirements]{max: 1024}
	containers = table[[]corev1.Container]{max: 1024}
)

// intern returns a string equal to s, shared with the cached objects that have the same one.
func intern(s string) string {
	if s == "" || len(s) > maxInternedString {
		return s
	}
	return strs.shared(s, s)
}

// internMap returns a copy of m with its keys and short values interned.
func internMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[intern(k)] = intern(v)
	}
	return out
}

// internLabels returns a map equal to labels, shared with the pods that have the same labels
// (a workload's replicas).
func internLabels(labels map[string]string) map[string]string {
	if len(labels) == 0 {
		return nil
	}
	var id strings.Builder
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		id.WriteString(k)
		id.WriteByte('=')
		id.WriteString(labels[k])
		id.WriteByte(0)
	}
	return labelSets.shared(id.String(), internMap(labels))
}

// internOwners returns owner references equal to refs, shared with the pods that have the same
// owners (a workload's replicas).
func internOwners(refs []metav1.OwnerReference) []metav1.OwnerReference {
	if len(refs) == 0 {
		return nil
	}
	var id strings.Builder
	for _, ref := range refs {
		for _, field := range []string{ref.APIVersion, ref.Kind, ref.Name, string(ref.UID), flag(ref.Controller), flag(ref.BlockOwnerDeletion)} {
			id.WriteString(field)
			id.WriteByte(0)
		}
	}
	return owners.shared(id.String(), slices.Clone(refs))
}

func flag(b *bool) string {
	if b == nil {
		return "-"
	}
	return strconv.FormatBool(*b)
}

// internResources returns a ResourceRequirements equal to r whose lists are shared with the pods
// that have the same resources.
func internResources(r corev1.ResourceRequirements) corev1.ResourceRequirements {
	if len(r.Claims) > 0 || len(r.Requests)+len(r.Limits) == 0 {
		return r
	}
	return resources.shared(resourcesID(r), r)
}

// internEnacted returns a pointer to resources equal to r (what a container status reports),
// shared with the pods whose proxies report the same.
func internEnacted(r corev1.ResourceRequirements) *corev1.ResourceRequirements {
	if len(r.Claims) > 0 || len(r.Requests)+len(r.Limits) == 0 {
		return &r
	}
	r = internResources(r)
	return enacted.shared(resourcesID(r), &r)
}

// resourcesID renders requests and limits as they serialize (Quantity.String), so that pods
// that share a value read and patch exactly as with their own.
func resourcesID(r corev1.ResourceRequirements) string {
	var b strings.Builder
	for _, list := range []corev1.ResourceList{r.Requests, r.Limits} {
		for _, name := range slices.Sorted(maps.Keys(list)) {
			q := list[name]
			b.WriteString(string(name))
			b.WriteByte('=')
			b.WriteString(q.String())
			b.WriteByte(',')
		}
		b.WriteByte(';')
	}
	return b.String()
}

// internContainers returns containers equal to slim (what slimContainers keeps: names, images,
// restart policies and interned resources), shared with the pods that have the same ones (the
// proxies of a MeshService's pods on one version).
func internContainers(slim []corev1.Container) []corev1.Container {
	if len(slim) == 0 {
		return nil
	}
	var id strings.Builder
	for _, c := range slim {
		id.WriteString(c.Name)
		id.WriteByte(0)
		id.WriteString(c.Image)
		id.WriteByte(0)
		if c.RestartPolicy != nil {
			id.WriteString(string(*c.RestartPolicy))
		}
		id.WriteByte(0)
		id.WriteString(resourcesID(c.Resources))
		if len(c.Resources.Claims) > 0 {
			return slim // not interned: its resources are not shared
		}
		id.WriteByte(1)
	}
	return containers.shared(id.String(), slim)
}
