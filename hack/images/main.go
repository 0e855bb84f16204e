// Command images builds Meshlift's container images without a Docker engine or a registry: it
// compiles each image's static binary with `go build`, packages it with internal/images and
// writes <out>/<name>.tar, a `docker save`-style tarball for
// `ctr -n k8s.io images import --all-platforms <out>/<name>.tar`.
//
//	go run ./hack/images --out bin/images --tag dev [operator|proxy|idle|demo ...]
//
// With no names it builds every image. It prints one line per image: name, ref, tarball, size,
// digest (of the manifest, as a registry would serve it) and image ID (the config's digest).
// `ctr images import` writes its own manifest, so `ctr images ls` shows another digest; the
// image ID is what stays the same and what `crictl images` shows.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"

	"github.com/meshlift/meshlift/internal/images"
	"github.com/meshlift/meshlift/internal/repo"
)

// nonRootUser is the uid:gid every image runs as, the same as distroless's "nonroot" user, so
// images built here and with the Dockerfile behave the same under runAsNonRoot.
const nonRootUser = "65532:65532"

// image is one image this command knows how to build.
type image struct {
	// name selects the image on the command line and names its tarball.
	name string
	// pkg is the main package to build, relative to the module root.
	pkg string
	// binary is where the binary goes in the image; it is also the entrypoint.
	binary string
	// repository is the image reference without the tag.
	repository string
	// cmd is the image's default arguments.
	cmd []string
}

// knownImages are the images in build order. Adding an image is one entry here.
var knownImages = []image{
	{name: "operator", pkg: ".", binary: "/meshlift", repository: "meshlift/meshlift-operator"},
	{name: "proxy", pkg: "./cmd/meshlift-proxy", binary: "/meshlift-proxy", repository: "meshlift/meshlift-proxy"},
	{name: "idle", pkg: "./cmd/meshlift-idle", binary: "/meshlift-idle", repository: "meshlift/meshlift-idle"},
	{name: "demo", pkg: "./cmd/meshlift-demo", binary: "/meshlift-demo", repository: "meshlift/meshlift-demo", cmd: []string{"serve"}},
	{name: "cni", pkg: "./cmd/meshlift-cni", binary: "/meshlift-cni", repository: "meshlift/meshlift-cni"},
}

func (img image) ref(tag string) string { return img.repository + ":" + tag }

func (img image) spec(tag, binaryPath string) images.Spec {
	return images.Spec{
		Ref:        img.ref(tag),
		Files:      []images.File{{Source: binaryPath, Dest: img.binary, Mode: images.DefaultFileMode}},
		Entrypoint: []string{img.binary},
		Cmd:        img.cmd,
		User:       nonRootUser,
	}
}

// options are the command-line options.
type options struct {
	out   string
	tag   string
	names []string
}

func main() { repo.Main("images", run) }

// validTag is the grammar of an image tag (OCI distribution spec).
var validTag = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	selected, err := selectImages(opts.names)
	if err != nil {
		return err
	}
	moduleRoot, err := repo.ModuleRoot(ctx)
	if err != nil {
		return err
	}
	binDir, err := os.MkdirTemp("", "meshlift-images-")
	if err != nil {
		return fmt.Errorf("failed to create a directory for the binaries: %w", err)
	}
	defer func() { _ = os.RemoveAll(binDir) }()

	// Build every selected image even when one fails, and say which ones failed and why.
	var failures []error
	for _, img := range selected {
		result, err := buildImage(ctx, img, opts, moduleRoot, binDir)
		if err != nil {
			failures = append(failures, fmt.Errorf("image %s (%s): %w", img.name, img.ref(opts.tag), err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		_, _ = fmt.Fprintf(stdout, "%-9s %-36s %s %8s %s %s\n", img.name, result.ref, result.tarball, repo.HumanSize(result.size), result.digest, result.id)
	}
	if len(failures) > 0 {
		return fmt.Errorf("%d of %d images failed:\n%w", len(failures), len(selected), errors.Join(failures...))
	}
	return nil
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = fmt.Fprintf(stderr, "Usage: go run ./hack/images [--out DIR] [--tag TAG] [IMAGE...]\n\n"+
			"Builds static binaries and packages them as docker-save tarballs DIR/IMAGE.tar for\n"+
			"`ctr -n k8s.io images import --all-platforms DIR/IMAGE.tar`. IMAGE is one of %s (default: all).\n\n",
			strings.Join(imageNames(), ", "))
		fs.PrintDefaults()
	}
	var opts options
	fs.StringVar(&opts.out, "out", "bin/images", "Directory the tarballs are written to.")
	fs.StringVar(&opts.tag, "tag", "dev", "Tag of every image; also the version compiled into the binaries.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return options{}, err
		}
		return options{}, repo.ErrUsage
	}
	opts.names = fs.Args()
	if !validTag.MatchString(opts.tag) {
		return options{}, fmt.Errorf("invalid --tag %q: a tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'", opts.tag)
	}
	if opts.out == "" {
		return options{}, errors.New("--out must not be empty")
	}
	return opts, nil
}

// selectImages returns the images named on the command line in build order, or all of them.
func selectImages(names []string) ([]image, error) {
	if len(names) == 0 {
		return knownImages, nil
	}
	wanted := map[string]bool{}
	for _, imageName := range names {
		if !slices.ContainsFunc(knownImages, func(img image) bool { return img.name == imageName }) {
			return nil, fmt.Errorf("unknown image %q (known images: %s)", imageName, strings.Join(imageNames(), ", "))
		}
		wanted[imageName] = true
	}
	var selected []image
	for _, img := range knownImages {
		if wanted[img.name] {
			selected = append(selected, img)
		}
	}
	return selected, nil
}

func imageNames() []string {
	names := make([]string, 0, len(knownImages))
	for _, img := range knownImages {
		names = append(names, img.name)
	}
	return names
}

// builtImage is what the command reports about one image.
type builtImage struct {
	ref     string
	tarball string
	size    int64
	digest  string
	id      string
}

// buildImage compiles img's binary into binDir, packages it and writes its tarball.
func buildImage(ctx context.Context, img image, opts options, moduleRoot, binDir string) (builtImage, error) {
	binaryPath := filepath.Join(binDir, img.name)
	if err := goBuild(ctx, moduleRoot, img.pkg, binaryPath, opts.tag); err != nil {
		return builtImage{}, err
	}
	built, err := images.Build(img.spec(opts.tag, binaryPath))
	if err != nil {
		return builtImage{}, fmt.Errorf("failed to package the binary: %w", err)
	}
	digest, err := built.Digest()
	if err != nil {
		return builtImage{}, fmt.Errorf("failed to compute the digest: %w", err)
	}
	id, err := built.ConfigName()
	if err != nil {
		return builtImage{}, fmt.Errorf("failed to compute the image ID: %w", err)
	}
	tarballPath := filepath.Join(opts.out, img.name+".tar")
	if err := images.WriteTarball(tarballPath, img.ref(opts.tag), built); err != nil {
		return builtImage{}, err
	}
	info, err := os.Stat(tarballPath)
	if err != nil {
		return builtImage{}, fmt.Errorf("failed to stat the tarball: %w", err)
	}
	return builtImage{ref: img.ref(opts.tag), tarball: tarballPath, size: info.Size(), digest: digest.String(), id: id.String()}, nil
}

// goBuild compiles pkg into a static, stripped linux binary for this machine's architecture
// (the architecture images.Build puts into the config).
func goBuild(ctx context.Context, moduleRoot, pkg, binaryPath, version string) error {
	args := goBuildArgs(pkg, binaryPath, version)
	build := exec.CommandContext(ctx, "go", args...)
	build.Dir = moduleRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	var buildOutput bytes.Buffer
	build.Stdout = &buildOutput
	build.Stderr = &buildOutput
	if err := build.Run(); err != nil {
		return fmt.Errorf("%s failed: %w\n%s", repo.GoCommandLine(args), err, strings.TrimSpace(buildOutput.String()))
	}
	return nil
}

func goBuildArgs(pkg, binaryPath, version string) []string {
	return []string{
		"build", "-trimpath",
		"-ldflags", "-s -w -X github.com/meshlift/meshlift/internal/buildinfo.Version=" + version,
		"-o", binaryPath, pkg,
	}
}
