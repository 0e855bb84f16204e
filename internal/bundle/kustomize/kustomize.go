// Package kustomize builds a kustomization of config/ in-process, with the kustomize library
// that go.mod already carries (no bin/kustomize needed), into unstructured objects.
package kustomize

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshlift/meshlift/internal/bundle"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Build runs `kustomize build dir` and returns its objects in kustomize's output order.
func Build(dir string) ([]*unstructured.Unstructured, error) {
	return build(filesys.MakeFsOnDisk(), dir)
}

// BuildFiles builds the YAML files of dir (*.yaml, in name order) as if a kustomization listed
// them as its resources: config/samples has no kustomization.yaml, so that
// `kubectl apply -f config/samples/` applies exactly the samples.
func BuildFiles(dir string) ([]*unstructured.Unstructured, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, fmt.Errorf("failed to list %s: %w", dir, err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no YAML files in %s", dir)
	}
	fs := filesys.MakeFsInMemory()
	kustomization := "resources:\n"
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("failed to read %s: %w", name, err)
		}
		base := filepath.Base(name)
		if err := fs.WriteFile("/in/"+base, data); err != nil {
			return nil, err
		}
		kustomization += "  - " + base + "\n"
	}
	if err := fs.WriteFile("/in/kustomization.yaml", []byte(kustomization)); err != nil {
		return nil, err
	}
	return build(fs, "/in")
}

func build(fs filesys.FileSystem, dir string) ([]*unstructured.Unstructured, error) {
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, dir)
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
	samples, err := BuildFiles(filepath.Join(root, "config", "samples"))
	if err != nil {
		return nil, err
	}
	// alm-examples lists them in the order a user creates them: versions, services, plans.
	order := map[string]int{"SidecarVersion": 0, "MeshService": 1, "UpgradePlan": 2}
	slices.SortStableFunc(samples, func(a, b *unstructured.Unstructured) int {
		return cmp.Compare(order[a.GetKind()], order[b.GetKind()])
	})
	return bundle.Generate(objects, samples, opts)
}
