// Package images owns how Meshlift's container images are assembled without a Docker engine or a
// registry: a single-layer image holding static binaries (or only files and labels, as an OLM
// bundle image does), built reproducibly from files on disk,
// and written as a `docker save`-style tarball that `ctr -n k8s.io images import` loads into a
// local containerd. It knows nothing about Kubernetes or about which binaries go into which image
// (hack/images decides that).
package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// DefaultFileMode is the mode of a File that does not set one: executable by everyone, so the
// image runs under any non-root user.
const DefaultFileMode int64 = 0o755

// dirMode is the mode of the parent directories the layer creates for its files.
const dirMode int64 = 0o755

// epoch is the timestamp of every file in the layer and of the image config, so that building
// the same files twice gives the same digest (as with SOURCE_DATE_EPOCH=0).
var epoch = time.Unix(0, 0).UTC()

// File is one file copied from disk into the image.
type File struct {
	// Source is the path of the file on disk.
	Source string
	// Dest is the absolute path of the file in the image, e.g. "/meshlift".
	Dest string
	// Mode is the file's permission bits in the image; 0 means DefaultFileMode.
	Mode int64
}

// Spec describes a single-layer image.
type Spec struct {
	// Ref is the image reference the image is meant to be tagged as, e.g.
	// "meshlift/meshlift-demo:dev". Build only validates it: the digest does not depend on it.
	Ref string
	// Files are the files of the image's only layer.
	Files []File
	// Entrypoint, Cmd, Env, User and WorkingDir go into the image config as they are.
	Entrypoint []string
	Cmd        []string
	Env        []string
	// User is a numeric "uid" or "uid:gid", e.g. "65532:65532" (the images have no /etc/passwd).
	User       string
	WorkingDir string
	// Labels go into the image config, e.g. the annotations of an OLM bundle.
	Labels map[string]string
	// FilesOnly says the image only carries files and runs nothing (an OLM bundle image, FROM
	// scratch with COPY and LABEL only): it must have neither an entrypoint nor a cmd.
	FilesOnly bool
}

// Build assembles the image described by spec on top of an empty base (FROM scratch): one
// gzip-compressed tar layer with the files (and their parent directories) and a
// linux/runtime.GOARCH config. The
// result depends only on the spec and the files' contents, not on when or where it was built.
func Build(spec Spec) (v1.Image, error) {
	if _, err := name.NewTag(spec.Ref); err != nil {
		return nil, fmt.Errorf("invalid image reference %q: %w", spec.Ref, err)
	}
	hasCommand := len(spec.Entrypoint) > 0 || len(spec.Cmd) > 0
	if !hasCommand && !spec.FilesOnly {
		return nil, fmt.Errorf("image %s has neither an entrypoint nor a cmd", spec.Ref)
	}
	if hasCommand && spec.FilesOnly {
		return nil, fmt.Errorf("image %s only carries files but has an entrypoint or a cmd", spec.Ref)
	}
	comment := "static binaries"
	if spec.FilesOnly {
		comment = "files"
	}
	compressedLayer, err := layerTarGzip(spec.Files)
	if err != nil {
		return nil, fmt.Errorf("failed to build the layer of image %s: %w", spec.Ref, err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(compressedLayer)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("failed to read back the layer of image %s: %w", spec.Ref, err)
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: epoch},
			CreatedBy: "meshlift internal/images: " + strings.Join(destinations(spec.Files), " "),
			Comment:   comment,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("failed to add the layer to image %s: %w", spec.Ref, err)
	}
	configFile, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("failed to read the config of image %s: %w", spec.Ref, err)
	}
	configFile = configFile.DeepCopy()
	configFile.Created = v1.Time{Time: epoch}
	configFile.OS = "linux"
	configFile.Architecture = runtime.GOARCH
	configFile.Config = v1.Config{
		Entrypoint: spec.Entrypoint,
		Cmd:        spec.Cmd,
		Env:        spec.Env,
		User:       spec.User,
		WorkingDir: spec.WorkingDir,
		Labels:     spec.Labels,
	}
	img, err = mutate.ConfigFile(img, configFile)
	if err != nil {
		return nil, fmt.Errorf("failed to set the config of image %s: %w", spec.Ref, err)
	}
	return img, nil
}

// WriteTarball writes img tagged as ref to path as a `docker save`-style tarball (manifest.json,
// config and gzip-compressed layers), which both `docker load` and
// `ctr -n k8s.io images import --all-platforms` accept. The file is written next to path and
// renamed into place, so a reader never sees a partial tarball.
func WriteTarball(path string, ref string, img v1.Image) (err error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("invalid image reference %q: %w", ref, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("failed to create the directory of %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("failed to create a temporary file for %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tarball.Write(tag, img, tmp); err != nil {
		return fmt.Errorf("failed to write image %s to %s: %w", ref, path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("failed to set the mode of %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("failed to write image %s to %s: %w", ref, path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("failed to move the tarball of image %s into place: %w", ref, err)
	}
	return nil
}

// layerTarGzip returns the gzip-compressed tar stream of the layer: the parent directories of
// every file first, then the files, all owned by root with the epoch as timestamp.
func layerTarGzip(files []File) ([]byte, error) {
	if len(files) == 0 {
		return nil, errors.New("no files")
	}
	entries := make(map[string]File, len(files))
	dirs := map[string]bool{}
	for _, file := range files {
		dest, err := layerPath(file.Dest)
		if err != nil {
			return nil, err
		}
		if _, ok := entries[dest]; ok {
			return nil, fmt.Errorf("two files have the destination %s", file.Dest)
		}
		entries[dest] = file
		for dir := path.Dir(dest); dir != "."; dir = path.Dir(dir) {
			dirs[dir] = true
		}
	}
	for dest := range entries {
		if dirs[dest] {
			return nil, fmt.Errorf("destination /%s is both a file and the parent directory of another file", dest)
		}
	}

	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf) // The gzip header carries no name or time, so the bytes are reproducible.
	tw := tar.NewWriter(gz)
	for _, dir := range slices.Sorted(maps.Keys(dirs)) {
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeDir,
			Name:     dir + "/",
			Mode:     dirMode,
			ModTime:  epoch,
		}); err != nil {
			return nil, fmt.Errorf("failed to write directory /%s: %w", dir, err)
		}
	}
	for _, dest := range slices.Sorted(maps.Keys(entries)) {
		if err := writeFile(tw, dest, entries[dest]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("failed to finish the layer tar: %w", err)
	}
	if err := gz.Close(); err != nil {
		return nil, fmt.Errorf("failed to finish compressing the layer: %w", err)
	}
	return buf.Bytes(), nil
}

// writeFile copies one file from disk into the layer at dest.
func writeFile(tw *tar.Writer, dest string, file File) error {
	source, err := os.Open(file.Source)
	if err != nil {
		return fmt.Errorf("failed to open %s for %s: %w", file.Source, file.Dest, err)
	}
	defer func() { _ = source.Close() }()
	info, err := source.Stat()
	if err != nil {
		return fmt.Errorf("failed to stat %s: %w", file.Source, err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s (for %s) is not a regular file", file.Source, file.Dest)
	}
	mode := file.Mode
	if mode == 0 {
		mode = DefaultFileMode
	}
	if mode&^0o7777 != 0 {
		return fmt.Errorf("mode %#o of %s has bits beyond the permission bits", mode, file.Dest)
	}
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     dest,
		Mode:     mode,
		Size:     info.Size(),
		ModTime:  epoch,
	}); err != nil {
		return fmt.Errorf("failed to write the header of %s: %w", file.Dest, err)
	}
	written, err := io.Copy(tw, source)
	if err != nil {
		return fmt.Errorf("failed to copy %s to %s: %w", file.Source, file.Dest, err)
	}
	if written != info.Size() {
		return fmt.Errorf("%s changed size while it was copied to %s", file.Source, file.Dest)
	}
	return nil
}

// layerPath turns an absolute destination into the relative name a layer tar uses.
func layerPath(dest string) (string, error) {
	if !path.IsAbs(dest) {
		return "", fmt.Errorf("destination %q is not an absolute path", dest)
	}
	if path.Clean(dest) != dest || dest == "/" {
		return "", fmt.Errorf("destination %q is not a clean path to a file", dest)
	}
	return strings.TrimPrefix(dest, "/"), nil
}

// destinations lists the files' destinations for the layer's history entry.
func destinations(files []File) []string {
	dests := make([]string, 0, len(files))
	for _, file := range files {
		dests = append(dests, file.Dest)
	}
	slices.Sort(dests)
	return dests
}
