package bundle_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/meshlift/meshlift/internal/bundle"
	"github.com/meshlift/meshlift/internal/images"
)

const testBundleImage = "example.com/meshlift/meshlift-operator-bundle:v0.1.0"

// TestTheBundleImageCarriesTheBundle builds the bundle image from the committed bundle/ into a
// tarball, reads it back and compares it with bundle/ and annotations.yaml, as `docker build -f
// bundle.Dockerfile .` would have it.
func TestTheBundleImageCarriesTheBundle(t *testing.T) {
	r := root(t)
	spec, err := bundle.ImageSpec(r, testBundleImage)
	if err != nil {
		t.Fatal(err)
	}
	img, err := images.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "bundle.tar")
	if err := images.WriteTarball(path, testBundleImage, img); err != nil {
		t.Fatal(err)
	}
	loaded, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatal(err)
	}

	configFile, err := loaded.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if want := readAnnotations(t, r); !maps.Equal(configFile.Config.Labels, want) {
		t.Errorf("labels = %v, want annotations.yaml's %v", configFile.Config.Labels, want)
	}
	if len(configFile.Config.Entrypoint) > 0 || len(configFile.Config.Cmd) > 0 || len(configFile.Config.Env) > 0 {
		t.Errorf("config %+v runs something; a bundle image (FROM scratch) does not", configFile.Config)
	}

	layers, err := loaded.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1 (FROM scratch, no base)", len(layers))
	}
	content, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = content.Close() }()
	inImage := map[string][]byte{}
	reader := tar.NewReader(content)
	for {
		header, err := reader.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if header.Typeflag != tar.TypeReg {
			continue
		}
		if header.Mode != 0o644 || header.Uid != 0 || header.Gid != 0 {
			t.Errorf("%s: mode %#o owner %d:%d, want 0644 root:root", header.Name, header.Mode, header.Uid, header.Gid)
		}
		data, err := io.ReadAll(reader)
		if err != nil {
			t.Fatal(err)
		}
		inImage["/"+header.Name] = data
	}

	// Every file of bundle/ is at its path relative to bundle/, with the same bytes.
	onDisk := map[string][]byte{}
	bundleDir := filepath.Join(r, bundle.Dir)
	err = filepath.WalkDir(bundleDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(bundleDir, p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		onDisk["/"+filepath.ToSlash(rel)] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := slices.Sorted(maps.Keys(inImage)), slices.Sorted(maps.Keys(onDisk)); !slices.Equal(got, want) {
		t.Fatalf("files in the image %q, want bundle/'s %q", got, want)
	}
	for name, data := range onDisk {
		if !bytes.Equal(inImage[name], data) {
			t.Errorf("%s differs from bundle%s", name, name)
		}
	}
	for _, dir := range []string{"/manifests/", "/metadata/", "/tests/scorecard/"} {
		if !slices.ContainsFunc(slices.Collect(maps.Keys(inImage)), func(name string) bool { return strings.HasPrefix(name, dir) }) {
			t.Errorf("no file under %s", dir)
		}
	}
}

// TestTheBundleImageIsReproducible builds the same bundle twice, into two tarballs: the same
// digest and the same bytes.
func TestTheBundleImageIsReproducible(t *testing.T) {
	r := root(t)
	dir := t.TempDir()
	var digests []string
	var tarballs [][]byte
	for i := range 2 {
		spec, err := bundle.ImageSpec(r, testBundleImage)
		if err != nil {
			t.Fatal(err)
		}
		img, err := images.Build(spec)
		if err != nil {
			t.Fatal(err)
		}
		digest, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, string(rune('a'+i))+".tar")
		if err := images.WriteTarball(path, testBundleImage, img); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, digest.String())
		tarballs = append(tarballs, data)
	}
	if digests[0] != digests[1] {
		t.Errorf("digests %s and %s, want the same", digests[0], digests[1])
	}
	if !bytes.Equal(tarballs[0], tarballs[1]) {
		t.Error("the two tarballs differ")
	}
}

func TestTheBundleImageNeedsABundle(t *testing.T) {
	if _, err := bundle.ImageSpec(t.TempDir(), testBundleImage); err == nil || !strings.Contains(err.Error(), "run make bundle") {
		t.Errorf("err = %v, want one that says to run make bundle", err)
	}
}
