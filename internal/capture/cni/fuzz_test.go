package cni

import (
	"encoding/json"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
)

// FuzzDecodeMeshServiceList checks the plugin's decoder of what the API server returns against
// the API package's own types: whatever the bytes, it does not panic; a list that both decode
// has the same names, creation times, deletion, selectors and modes in both; and a list the API
// types decode, of kind MeshServiceList with named items, the plugin decodes too. (The plugin
// may accept lists the API types refuse for a field it does not read.)
func FuzzDecodeMeshServiceList(f *testing.F) {
	for _, seed := range []string{
		`{"kind":"MeshServiceList","apiVersion":"mesh.meshlift.io/v1alpha1","metadata":{"resourceVersion":"1"},"items":[]}`,
		`{"kind":"MeshServiceList","items":[{"metadata":{"name":"web","namespace":"shop","creationTimestamp":"2026-01-02T03:04:05Z"},` +
			`"spec":{"selector":{"matchLabels":{"app":"web"}},"mtls":{"mode":"STRICT"}}}]}`,
		`{"kind":"MeshServiceList","items":[{"metadata":{"name":"a","deletionTimestamp":"2026-01-02T03:04:05Z"},` +
			`"spec":{"selector":{"matchExpressions":[{"key":"tier","operator":"In","values":["front"]}]},"mtls":{}}}]}`,
		`{"kind":"Status","status":"Failure","code":403}`,
		`{"kind":"MeshServiceList","items":[{"metadata":{"name":"a","creationTimestamp":null},"spec":{"mtls":{"mode":"PERMISSIVE"}}}]}`,
		`null`, `[]`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := DecodeMeshServiceList(data)
		var want meshv1alpha1.MeshServiceList
		if json.Unmarshal(data, &want) != nil {
			return
		}
		if err != nil {
			if want.Kind == meshServiceListKind && !slices.ContainsFunc(want.Items, func(ms meshv1alpha1.MeshService) bool { return ms.Name == "" }) {
				t.Fatalf("the API types decode %q, the plugin does not: %v", data, err)
			}
			return
		}
		if len(got) != len(want.Items) {
			t.Fatalf("the plugin decoded %d MeshServices, the API types %d", len(got), len(want.Items))
		}
		for i, ms := range want.Items {
			g := got[i]
			if g.Name != ms.Name || !g.CreationTimestamp.Equal(ms.CreationTimestamp.Time) || g.Deleting != (ms.DeletionTimestamp != nil) ||
				g.MTLSMode != string(ms.Spec.MTLS.Mode) || !equality.Semantic.DeepEqual(g.Selector, ms.Spec.Selector) {
				t.Fatalf("item %d: the plugin decoded %+v, the API types %+v", i, g, ms)
			}
		}
	})
}
