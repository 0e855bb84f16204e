// Package kustomize builds a kustomization of config/ in-process, with the kustomize library
// that go.mod already carries (no bin/kustomize needed), into unstructured objects.
package kustomize

import (
	"fmt"
	"path/filepath"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshlift/meshlift/internal/bundle"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Build runs `kustomize build dir` and returns its objects in kustomize's output order.
func Build(dir string) ([]*unstructured.Unstructured, error) {
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("failed to build the kustomization %s: %w", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, res := range resources.Resources() {
		// Through JSON, so numbers are int64 and float64 as everywhere in apimachinery.
		data, err := res.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("kustomization %s: %w", dir, err)
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(data); err != nil {
			return nil, fmt.Errorf("kustomization %s: %s %s: %w", dir, res.GetKind(), res.GetName(), err)
		}
		out = append(out, obj)
	}
	return out, nil
}

// GenerateBundle builds config/default and config/samples of the repository at root and
// converts them into the bundle's files.
func GenerateBundle(root string, opts bundle.Options) (bundle.Files, error) {
	objects, err := Build(filepath.Join(root, "config", "default"))
	if err != nil {
		return nil, err
	}
	samples, err := Build(filepath.Join(root, "config", "samples"))
	if err != nil {
		return nil, err
	}
	return bundle.Generate(objects, samples, opts)
}
