package images

import (
	"archive/tar"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// layerEntry is what the tests check about one entry of the image's layer.
type layerEntry struct {
	typeflag byte
	mode     int64
	content  string
}

func TestBuildAndWriteTarball(t *testing.T) {
	tests := []struct {
		name        string
		files       map[string]string // Dest → content; written to a temporary Source
		mode        int64
		spec        Spec
		wantEntries map[string]layerEntry
	}{
		{
			name:  "puts a binary at the root with mode 0755 and the given entrypoint, user and env",
			files: map[string]string{"/meshlift-demo": "#!demo binary"},
			spec: Spec{
				Ref:        "meshlift/meshlift-demo:dev",
				Entrypoint: []string{"/meshlift-demo"},
				Cmd:        []string{"serve"},
				Env:        []string{"MESHLIFT_DEMO=1"},
				User:       "65532:65532",
			},
			wantEntries: map[string]layerEntry{
				"meshlift-demo": {typeflag: tar.TypeReg, mode: 0o755, content: "#!demo binary"},
			},
		},
		{
			name:  "creates the parent directories of a nested file",
			files: map[string]string{"/usr/local/bin/meshlift-idle": "idle"},
			spec: Spec{
				Ref:        "registry.example.com:5000/meshlift/meshlift-idle:v1.2.3",
				Entrypoint: []string{"/usr/local/bin/meshlift-idle"},
				User:       "65532",
				WorkingDir: "/usr/local",
			},
			wantEntries: map[string]layerEntry{
				"usr/":                        {typeflag: tar.TypeDir, mode: 0o755},
				"usr/local/":                  {typeflag: tar.TypeDir, mode: 0o755},
				"usr/local/bin/":              {typeflag: tar.TypeDir, mode: 0o755},
				"usr/local/bin/meshlift-idle": {typeflag: tar.TypeReg, mode: 0o755, content: "idle"},
			},
		},
		{
			name:  "keeps an explicit file mode",
			files: map[string]string{"/etc/meshlift/config": "listen: :8080"},
			mode:  0o444,
			spec: Spec{
				Ref: "meshlift/meshlift-config:dev",
				Cmd: []string{"/bin/true"},
			},
			wantEntries: map[string]layerEntry{
				"etc/":                {typeflag: tar.TypeDir, mode: 0o755},
				"etc/meshlift/":       {typeflag: tar.TypeDir, mode: 0o755},
				"etc/meshlift/config": {typeflag: tar.TypeReg, mode: 0o444, content: "listen: :8080"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			spec := tt.spec
			for dest, content := range tt.files {
				source := filepath.Join(dir, filepath.Base(dest))
				if err := os.WriteFile(source, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
				spec.Files = append(spec.Files, File{Source: source, Dest: dest, Mode: tt.mode})
			}

			img, err := Build(spec)
			if err != nil {
				t.Fatalf("Build() error = %v", err)
			}
			tarPath := filepath.Join(dir, "out", "image.tar")
			if err := WriteTarball(tarPath, spec.Ref, img); err != nil {
				t.Fatalf("WriteTarball() error = %v", err)
			}

			// The manifest carries the tag exactly as given, like `docker save`.
			manifest, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(tarPath) })
			if err != nil {
				t.Fatalf("LoadManifest() error = %v", err)
			}
			if len(manifest) != 1 || !slices.Equal(manifest[0].RepoTags, []string{spec.Ref}) {
				t.Fatalf("manifest.json = %+v, want one image tagged %s", manifest, spec.Ref)
			}

			tag, err := name.NewTag(spec.Ref)
			if err != nil {
				t.Fatal(err)
			}
			loaded, err := tarball.ImageFromPath(tarPath, &tag)
			if err != nil {
				t.Fatalf("ImageFromPath() error = %v", err)
			}
			wantDigest, err := img.Digest()
			if err != nil {
				t.Fatal(err)
			}
			gotDigest, err := loaded.Digest()
			if err != nil {
				t.Fatal(err)
			}
			if gotDigest != wantDigest {
				t.Errorf("digest read back = %s, built = %s", gotDigest, wantDigest)
			}

			configFile, err := loaded.ConfigFile()
			if err != nil {
				t.Fatalf("ConfigFile() error = %v", err)
			}
			if configFile.OS != "linux" || configFile.Architecture != runtime.GOARCH {
				t.Errorf("platform = %s/%s, want linux/%s", configFile.OS, configFile.Architecture, runtime.GOARCH)
			}
			if !slices.Equal(configFile.Config.Entrypoint, spec.Entrypoint) {
				t.Errorf("entrypoint = %q, want %q", configFile.Config.Entrypoint, spec.Entrypoint)
			}
			if !slices.Equal(configFile.Config.Cmd, spec.Cmd) {
				t.Errorf("cmd = %q, want %q", configFile.Config.Cmd, spec.Cmd)
			}
			if !slices.Equal(configFile.Config.Env, spec.Env) {
				t.Errorf("env = %q, want %q", configFile.Config.Env, spec.Env)
			}
			if configFile.Config.User != spec.User {
				t.Errorf("user = %q, want %q", configFile.Config.User, spec.User)
			}
			if configFile.Config.WorkingDir != spec.WorkingDir {
				t.Errorf("workingDir = %q, want %q", configFile.Config.WorkingDir, spec.WorkingDir)
			}

			layers, err := loaded.Layers()
			if err != nil {
				t.Fatal(err)
			}
			if len(layers) != 1 {
				t.Fatalf("image has %d layers, want 1", len(layers))
			}
			got := readLayer(t, layers[0])
			for entryName, want := range tt.wantEntries {
				entry, ok := got[entryName]
				if !ok {
					t.Errorf("layer has no %s; it has %v", entryName, keys(got))
					continue
				}
				if entry != want {
					t.Errorf("layer entry %s = %+v, want %+v", entryName, entry, want)
				}
			}
			if len(got) != len(tt.wantEntries) {
				t.Errorf("layer has entries %v, want exactly %v", keys(got), keys(tt.wantEntries))
			}

			rebuilt, err := Build(spec)
			if err != nil {
				t.Fatalf("second Build() error = %v", err)
			}
			rebuiltDigest, err := rebuilt.Digest()
			if err != nil {
				t.Fatal(err)
			}
			if rebuiltDigest != wantDigest {
				t.Errorf("building twice gave digests %s and %s, want the same", wantDigest, rebuiltDigest)
			}
		})
	}
}

func TestBuildDigest(t *testing.T) {
	dir := t.TempDir()
	source := filepath.Join(dir, "binary")
	if err := os.WriteFile(source, []byte("v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	base := Spec{
		Ref:        "meshlift/meshlift-idle:dev",
		Files:      []File{{Source: source, Dest: "/meshlift-idle"}},
		Entrypoint: []string{"/meshlift-idle"},
		User:       "65532",
	}
	digestOf := func(spec Spec) v1.Hash {
		t.Helper()
		img, err := Build(spec)
		if err != nil {
			t.Fatalf("Build() error = %v", err)
		}
		digest, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return digest
	}
	baseDigest := digestOf(base)

	retagged := base
	retagged.Ref = "meshlift/meshlift-idle:v2"
	if got := digestOf(retagged); got != baseDigest {
		t.Errorf("the same image under another tag has digest %s, want %s", got, baseDigest)
	}

	// A file touched later (different mtime, same content) gives the same image.
	if err := os.Chtimes(source, epoch.AddDate(30, 0, 0), epoch.AddDate(30, 0, 0)); err != nil {
		t.Fatal(err)
	}
	if got := digestOf(base); got != baseDigest {
		t.Errorf("touching the binary changed the digest to %s, want %s", got, baseDigest)
	}

	if err := os.WriteFile(source, []byte("v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := digestOf(base); got == baseDigest {
		t.Errorf("a changed binary kept the digest %s", got)
	}

	otherUser := base
	otherUser.User = "0"
	if got := digestOf(otherUser); got == digestOf(base) {
		t.Errorf("a different user kept the digest %s", got)
	}
}

// TestAFilesOnlyImageCarriesItsLabelsAndRunsNothing is the shape of an OLM bundle image: FROM
// scratch, files with their own modes, labels, no entrypoint or cmd.
func TestAFilesOnlyImageCarriesItsLabelsAndRunsNothing(t *testing.T) {
	dir := t.TempDir()
	source := filepath.Join(dir, "annotations.yaml")
	if err := os.WriteFile(source, []byte("annotations: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"operators.operatorframework.io.bundle.package.v1": "meshlift", "b": "2"}
	spec := Spec{
		Ref:       "example.com/meshlift/bundle:v0.1.0",
		Files:     []File{{Source: source, Dest: "/metadata/annotations.yaml", Mode: 0o644}},
		Labels:    labels,
		FilesOnly: true,
	}
	img, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	configFile, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(configFile.Config.Labels, labels) {
		t.Errorf("labels = %v, want %v", configFile.Config.Labels, labels)
	}
	if len(configFile.Config.Entrypoint) > 0 || len(configFile.Config.Cmd) > 0 {
		t.Errorf("entrypoint %q, cmd %q, want neither", configFile.Config.Entrypoint, configFile.Config.Cmd)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d (%v), want 1", len(layers), err)
	}
	first, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	relabelled := spec
	relabelled.Labels = map[string]string{"operators.operatorframework.io.bundle.package.v1": "meshlift", "b": "3"}
	again, err := Build(relabelled)
	if err != nil {
		t.Fatal(err)
	}
	if digest, _ := again.Digest(); digest == first {
		t.Errorf("another label kept the digest %s", digest)
	}
}

func TestBuildRejectsInvalidSpecs(t *testing.T) {
	dir := t.TempDir()
	binary := filepath.Join(dir, "binary")
	if err := os.WriteFile(binary, []byte("binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		spec    Spec
		wantErr string
	}{
		{
			name:    "an invalid reference is refused",
			spec:    Spec{Ref: "Meshlift/UPPER CASE:dev", Files: []File{{Source: binary, Dest: "/app"}}, Entrypoint: []string{"/app"}},
			wantErr: "invalid image reference",
		},
		{
			name:    "an image without files is refused",
			spec:    Spec{Ref: "meshlift/x:dev", Entrypoint: []string{"/app"}},
			wantErr: "no files",
		},
		{
			name:    "an image with nothing to run is refused",
			spec:    Spec{Ref: "meshlift/x:dev", Files: []File{{Source: binary, Dest: "/app"}}},
			wantErr: "neither an entrypoint nor a cmd",
		},
		{
			name:    "an image that only carries files but has an entrypoint is refused",
			spec:    Spec{Ref: "meshlift/x:dev", Files: []File{{Source: binary, Dest: "/app"}}, Entrypoint: []string{"/app"}, FilesOnly: true},
			wantErr: "only carries files but has an entrypoint",
		},
		{
			name:    "a relative destination is refused",
			spec:    Spec{Ref: "meshlift/x:dev", Files: []File{{Source: binary, Dest: "app"}}, Entrypoint: []string{"/app"}},
			wantErr: "not an absolute path",
		},
		{
			name:    "a destination that escapes through dot-dot is refused",
			spec:    Spec{Ref: "meshlift/x:dev", Files: []File{{Source: binary, Dest: "/bin/../app"}}, Entrypoint: []string{"/app"}},
			wantErr: "not a clean path",
		},
		{
			name: "two files with the same destination are refused",
			spec: Spec{Ref: "meshlift/x:dev", Files: []File{
				{Source: binary, Dest: "/app"}, {Source: binary, Dest: "/app"},
			}, Entrypoint: []string{"/app"}},
			wantErr: "two files have the destination /app",
		},
		{
			name: "a file that is also another file's directory is refused",
			spec: Spec{Ref: "meshlift/x:dev", Files: []File{
				{Source: binary, Dest: "/app"}, {Source: binary, Dest: "/app/config"},
			}, Entrypoint: []string{"/app"}},
			wantErr: "both a file and the parent directory",
		},
		{
			name:    "a missing source file is refused",
			spec:    Spec{Ref: "meshlift/x:dev", Files: []File{{Source: filepath.Join(dir, "missing"), Dest: "/app"}}, Entrypoint: []string{"/app"}},
			wantErr: "failed to open",
		},
		{
			name:    "a directory as source is refused",
			spec:    Spec{Ref: "meshlift/x:dev", Files: []File{{Source: dir, Dest: "/app"}}, Entrypoint: []string{"/app"}},
			wantErr: "is not a regular file",
		},
		{
			name:    "a mode with file type bits is refused",
			spec:    Spec{Ref: "meshlift/x:dev", Files: []File{{Source: binary, Dest: "/app", Mode: 0o100755}}, Entrypoint: []string{"/app"}},
			wantErr: "beyond the permission bits",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(tt.spec)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Build() error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestWriteTarballRefusesAnInvalidReference(t *testing.T) {
	dir := t.TempDir()
	binary := filepath.Join(dir, "binary")
	if err := os.WriteFile(binary, []byte("binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	img, err := Build(Spec{Ref: "meshlift/x:dev", Files: []File{{Source: binary, Dest: "/app"}}, Entrypoint: []string{"/app"}})
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(dir, "x.tar")
	err = WriteTarball(tarPath, "not a reference", img)
	if err == nil || !strings.Contains(err.Error(), "invalid image reference") {
		t.Fatalf("WriteTarball() error = %v, want an invalid reference error", err)
	}
	if _, statErr := os.Stat(tarPath); !errors.Is(statErr, os.ErrNotExist) {
		t.Errorf("WriteTarball left %s behind after failing (stat: %v)", tarPath, statErr)
	}
}

// readLayer returns the entries of an uncompressed layer by name.
func readLayer(t *testing.T, layer v1.Layer) map[string]layerEntry {
	t.Helper()
	rc, err := layer.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	entries := map[string]layerEntry{}
	tr := tar.NewReader(rc)
	for {
		header, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return entries
		}
		if err != nil {
			t.Fatalf("reading the layer: %v", err)
		}
		if !header.ModTime.Equal(epoch) {
			t.Errorf("layer entry %s has mtime %s, want %s", header.Name, header.ModTime, epoch)
		}
		if header.Uid != 0 || header.Gid != 0 {
			t.Errorf("layer entry %s is owned by %d:%d, want 0:0", header.Name, header.Uid, header.Gid)
		}
		content, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		entries[header.Name] = layerEntry{typeflag: header.Typeflag, mode: header.Mode, content: string(content)}
	}
}

func keys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
