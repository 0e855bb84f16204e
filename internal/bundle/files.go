package bundle

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// Write writes files under root and removes every other file under root/bundle and
// root/catalog/meshlift, so an object dropped from config/default leaves the bundle too.
func (f Files) Write(root string) error {
	existing, err := listBundle(root)
	if err != nil {
		return err
	}
	for _, name := range existing {
		if _, ok := f[name]; !ok {
			if err := os.Remove(filepath.Join(root, filepath.FromSlash(name))); err != nil {
				return err
			}
		}
	}
	for _, name := range f.Paths() {
		target := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		if current, err := os.ReadFile(target); err == nil && bytes.Equal(current, f[name]) {
			continue
		}
		if err := os.WriteFile(target, f[name], 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Diff lists how the files under root differ from f: changed, missing and extra files.
func (f Files) Diff(root string) ([]string, error) {
	existing, err := listBundle(root)
	if err != nil {
		return nil, err
	}
	var diffs []string
	for _, name := range existing {
		if _, ok := f[name]; !ok {
			diffs = append(diffs, name+": not generated any more")
		}
	}
	for _, name := range f.Paths() {
		current, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(name)))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			diffs = append(diffs, name+": missing")
		case err != nil:
			return nil, err
		case !bytes.Equal(current, f[name]):
			diffs = append(diffs, name+": differs")
		}
	}
	slices.Sort(diffs)
	return diffs, nil
}

// listBundle lists the files under root/bundle and root/catalog/meshlift, and
// root/bundle.Dockerfile, as slash paths.
func listBundle(root string) ([]string, error) {
	var names []string
	for _, dir := range []string{Dir, CatalogDir} {
		dirNames, err := listFiles(root, dir)
		if err != nil {
			return nil, err
		}
		names = append(names, dirNames...)
	}
	if _, err := os.Stat(filepath.Join(root, Dockerfile)); err == nil {
		names = append(names, Dockerfile)
	}
	return names, nil
}

// listFiles lists the files under root/dir (a slash path), as slash paths relative to root.
func listFiles(root, dir string) ([]string, error) {
	var names []string
	err := filepath.WalkDir(filepath.Join(root, filepath.FromSlash(dir)), func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		names = append(names, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return names, nil
}

// OptionsOf reads the options a committed bundle under root was generated with, so it can be
// generated again from the current sources and compared.
func OptionsOf(root string) (Options, error) {
	var csv struct {
		Metadata struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec struct {
			Version  string `json:"version"`
			Replaces string `json:"replaces"`
		} `json:"spec"`
	}
	if err := readYAML(filepath.Join(root, Dir, "manifests", Package+".clusterserviceversion.yaml"), &csv); err != nil {
		return Options{}, err
	}
	var meta struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := readYAML(filepath.Join(root, Dir, "metadata", "annotations.yaml"), &meta); err != nil {
		return Options{}, err
	}
	channels := meta.Annotations["operators.operatorframework.io.bundle.channels.v1"]
	bundleImage, err := catalogBundleImage(filepath.Join(root, filepath.FromSlash(CatalogFile)))
	if err != nil {
		return Options{}, err
	}
	return Options{
		Version:        csv.Spec.Version,
		Replaces:       csv.Spec.Replaces,
		SkipRange:      csv.Metadata.Annotations["olm.skipRange"],
		Channels:       strings.Split(channels, ","),
		DefaultChannel: meta.Annotations["operators.operatorframework.io.bundle.channel.default.v1"],
		OperatorImage:  csv.Metadata.Annotations["containerImage"],
		CreatedAt:      csv.Metadata.Annotations["createdAt"],
		BundleImage:    bundleImage,
	}, nil
}

// catalogBundleImage is the image of the olm.bundle in the catalog file, or "" when there is no
// catalog yet (it is then generated with the default).
func catalogBundleImage(file string) (string, error) {
	docs, err := ReadCatalog(file)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	for _, doc := range docs {
		if doc.Schema == SchemaBundle {
			var b CatalogBundle
			if err := yaml.Unmarshal(doc.Raw, &b); err != nil {
				return "", fmt.Errorf("%s: %w", CatalogFile, err)
			}
			return b.Image, nil
		}
	}
	return "", nil
}

func readYAML(name string, into any) error {
	data, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(data, into); err != nil {
		return fmt.Errorf("%s: %w", path.Base(name), err)
	}
	return nil
}
