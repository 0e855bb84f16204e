package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/meshlift/meshlift/internal/repo"
)

func TestImageTable(t *testing.T) {
	tests := []struct {
		name           string
		wantPkg        string
		wantRef        string
		wantEntrypoint []string
		wantCmd        []string
	}{
		{name: "operator", wantPkg: ".", wantRef: "meshlift/meshlift-operator:v1.2.3", wantEntrypoint: []string{"/meshlift"}},
		{name: "proxy", wantPkg: "./cmd/meshlift-proxy", wantRef: "meshlift/meshlift-proxy:v1.2.3", wantEntrypoint: []string{"/meshlift-proxy"}},
		{name: "idle", wantPkg: "./cmd/meshlift-idle", wantRef: "meshlift/meshlift-idle:v1.2.3", wantEntrypoint: []string{"/meshlift-idle"}},
		{name: "demo", wantPkg: "./cmd/meshlift-demo", wantRef: "meshlift/meshlift-demo:v1.2.3", wantEntrypoint: []string{"/meshlift-demo"}, wantCmd: []string{"serve"}},
		{name: "cni", wantPkg: "./cmd/meshlift-cni", wantRef: "meshlift/meshlift-cni:v1.2.3", wantEntrypoint: []string{"/meshlift-cni"}},
	}
	if len(knownImages) != len(tests) {
		t.Fatalf("knownImages has %d images, the test expects %d", len(knownImages), len(tests))
	}
	for i, tt := range tests {
		t.Run("the "+tt.name+" image runs its binary as the non-root user", func(t *testing.T) {
			img := knownImages[i]
			if img.name != tt.name || img.pkg != tt.wantPkg {
				t.Fatalf("image %d is %q from %q, want %q from %q", i, img.name, img.pkg, tt.name, tt.wantPkg)
			}
			spec := img.spec("v1.2.3", "/tmp/binary")
			if spec.Ref != tt.wantRef {
				t.Errorf("ref = %q, want %q", spec.Ref, tt.wantRef)
			}
			if !slices.Equal(spec.Entrypoint, tt.wantEntrypoint) || !slices.Equal(spec.Cmd, tt.wantCmd) {
				t.Errorf("entrypoint %q cmd %q, want %q %q", spec.Entrypoint, spec.Cmd, tt.wantEntrypoint, tt.wantCmd)
			}
			if spec.User != "65532:65532" {
				t.Errorf("user = %q, want 65532:65532", spec.User)
			}
			if len(spec.Files) != 1 || spec.Files[0].Dest != tt.wantEntrypoint[0] || spec.Files[0].Mode != 0o755 {
				t.Errorf("files = %+v, want the binary at %s with mode 0755", spec.Files, tt.wantEntrypoint[0])
			}
		})
	}
}

func TestSelectImages(t *testing.T) {
	tests := []struct {
		name      string
		names     []string
		wantNames []string
		wantErr   string
	}{
		{name: "no names select every image in build order", wantNames: []string{"operator", "proxy", "idle", "demo", "cni"}},
		{name: "names select those images in build order", names: []string{"demo", "idle"}, wantNames: []string{"idle", "demo"}},
		{name: "a repeated name builds the image once", names: []string{"idle", "idle"}, wantNames: []string{"idle"}},
		{name: "an unknown name is refused and the known ones are listed", names: []string{"idle", "envoy"}, wantErr: `unknown image "envoy" (known images: operator, proxy, idle, demo, cni)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			selected, err := selectImages(tt.names)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("selectImages() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("selectImages() error = %v", err)
			}
			var got []string
			for _, img := range selected {
				got = append(got, img.name)
			}
			if !slices.Equal(got, tt.wantNames) {
				t.Errorf("selected %q, want %q", got, tt.wantNames)
			}
		})
	}
}

func TestParseOptions(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    options
		wantErr string
	}{
		{name: "defaults write dev images to bin/images", want: options{out: "bin/images", tag: "dev"}},
		{
			name: "flags and names are taken as given",
			args: []string{"--out", "/tmp/x", "--tag", "v0.1.0-rc.1", "idle", "demo"},
			want: options{out: "/tmp/x", tag: "v0.1.0-rc.1", names: []string{"idle", "demo"}},
		},
		{name: "a tag with a colon is refused", args: []string{"--tag", "v1:2"}, wantErr: `invalid --tag "v1:2"`},
		{name: "a tag starting with a dot is refused", args: []string{"--tag", ".hidden"}, wantErr: `invalid --tag ".hidden"`},
		{name: "an empty tag is refused", args: []string{"--tag", ""}, wantErr: `invalid --tag ""`},
		{name: "an empty output directory is refused", args: []string{"--out", ""}, wantErr: "--out must not be empty"},
		{name: "an undefined flag is a usage error", args: []string{"--push"}, wantErr: repo.ErrUsage.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseOptions(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseOptions() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseOptions() error = %v", err)
			}
			if got.out != tt.want.out || got.tag != tt.want.tag || !slices.Equal(got.names, tt.want.names) {
				t.Errorf("parseOptions() = %+v, want %+v", got, tt.want)
			}
		})
	}
	if _, err := parseOptions([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("parseOptions(-h) error = %v, want flag.ErrHelp", err)
	}
}

func TestGoBuildArgsMakeAStrippedBinaryThatKnowsItsVersion(t *testing.T) {
	got := goBuildArgs("./cmd/meshlift-idle", "/tmp/out", "v1.2.3")
	want := []string{
		"build", "-trimpath",
		"-ldflags", "-s -w -X github.com/meshlift/meshlift/internal/buildinfo.Version=v1.2.3",
		"-o", "/tmp/out", "./cmd/meshlift-idle",
	}
	if !slices.Equal(got, want) {
		t.Errorf("goBuildArgs() = %q, want %q", got, want)
	}
}

// TestRunBuildsTheIdleImage builds the smallest real image end to end: go build, package, write,
// and reads the tarball back as containerd would see it.
func TestRunBuildsTheIdleImage(t *testing.T) {
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--out", out, "--tag", "test", "idle"}, &stdout, &stderr); err != nil {
		t.Fatalf("run() error = %v\nstderr: %s", err, stderr.String())
	}
	tarballPath := filepath.Join(out, "idle.tar")
	fields := strings.Fields(stdout.String())
	if len(fields) != 6 || fields[0] != "idle" || fields[1] != "meshlift/meshlift-idle:test" || fields[2] != tarballPath {
		t.Fatalf("output = %q, want one line: idle, ref, tarball, size, digest, image ID", stdout.String())
	}

	tag, err := name.NewTag("meshlift/meshlift-idle:test")
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(tarballPath, &tag)
	if err != nil {
		t.Fatalf("the tarball cannot be read back: %v", err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if digest.String() != fields[4] {
		t.Errorf("printed digest %s, tarball holds %s", fields[4], digest)
	}
	id, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if id.String() != fields[5] {
		t.Errorf("printed image ID %s, tarball holds %s", fields[5], id)
	}
	configFile, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(configFile.Config.Entrypoint, []string{"/meshlift-idle"}) || configFile.Config.User != "65532:65532" || configFile.OS != "linux" {
		t.Errorf("config = %+v (os %s), want entrypoint /meshlift-idle as 65532:65532 on linux", configFile.Config, configFile.OS)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d (%v), want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	tr := tar.NewReader(rc)
	header, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	magic := make([]byte, 4)
	if _, err := io.ReadFull(tr, magic); err != nil {
		t.Fatal(err)
	}
	if header.Name != "meshlift-idle" || header.Mode != 0o755 || string(magic) != "\x7fELF" {
		t.Errorf("layer holds %s (mode %#o, magic %q), want the meshlift-idle ELF binary with mode 0755", header.Name, header.Mode, magic)
	}

	// Go builds with -trimpath are reproducible, so the image is too.
	var again bytes.Buffer
	if err := run(context.Background(), []string{"--out", out, "--tag", "test", "idle"}, &again, &stderr); err != nil {
		t.Fatalf("second run() error = %v", err)
	}
	if again.String() != stdout.String() {
		t.Errorf("building twice printed\n%s\nand\n%s\nwant the same size and digest", stdout.String(), again.String())
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("the output directory holds %d entries, want only idle.tar", len(entries))
	}
}

func TestBuildImageSaysWhichImageFailedAndWhy(t *testing.T) {
	moduleRoot, err := repo.ModuleRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	broken := image{name: "broken", pkg: "./cmd/does-not-exist", binary: "/broken", repository: "meshlift/broken"}
	_, err = buildImage(context.Background(), broken, options{out: t.TempDir(), tag: "dev"}, moduleRoot, t.TempDir())
	if err == nil {
		t.Fatal("buildImage() of a missing package succeeded")
	}
	for _, want := range []string{"go build -trimpath -ldflags \"-s -w -X", "./cmd/does-not-exist", "failed: exit status 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}
