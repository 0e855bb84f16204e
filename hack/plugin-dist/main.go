// Command plugin-dist builds the release of the kubectl plugin kubectl-meshlift for krew: it
// cross-compiles the plugin (CGO_ENABLED=0, -trimpath) for linux and darwin on amd64 and arm64,
// packs each binary with the repository's LICENSE into a reproducible
// kubectl-meshlift_<version>_<os>_<arch>.tar.gz, and writes the krew manifest meshlift.yaml that
// names them, all into one directory:
//
//	go run ./hack/plugin-dist --version v1.2.3 --out dist [--ldflags FLAGS] [--base-url URL] [--pkg PKG]
//	go run ./hack/plugin-dist --verify dist
//
// With --verify it builds nothing and checks that the directory's manifest is one krew accepts
// and matches the archives it names (digests, the binary inside, its platform). Archiving and the
// manifest live in internal/krew; this command compiles and reports.
//
// A --version that is not a semantic version (such as the `git describe` output 42b9926-dirty
// of an untagged build) still names the archives and the release URL, while the manifest's
// spec.version becomes v0.0.0-dev+42b9926-dirty, which krew accepts and any release outranks.
// Such a release is for trying the plugin out, not for the krew index.
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
	"strings"

	"github.com/meshlift/meshlift/internal/krew"
	"github.com/meshlift/meshlift/internal/repo"
)

// versionVariable is the variable the plugin reports its version from.
const versionVariable = "github.com/meshlift/meshlift/internal/buildinfo.Version"

// licenseFiles are the names a license may have at the module root, in order of preference.
var licenseFiles = []string{"LICENSE", "LICENSE.md", "LICENSE.txt", "COPYING"}

// options are the command-line options.
type options struct {
	version string
	out     string
	ldflags string
	pkg     string
	baseURL string
	verify  string
}

func main() { repo.Main("plugin-dist", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	if opts.verify != "" {
		return verify(opts.verify, stdout, stderr)
	}
	return release(ctx, opts, stdout, stderr)
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("plugin-dist", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = fmt.Fprintf(stderr, "Usage: go run ./hack/plugin-dist --version VERSION [--out DIR] [--ldflags FLAGS] [--base-url URL] [--pkg PKG]\n"+
			"       go run ./hack/plugin-dist --verify DIR\n\n"+
			"Builds kubectl-meshlift for %s into reproducible archives and writes the krew\n"+
			"manifest DIR/%s naming them; or, with --verify, checks such a directory.\n\n",
			targetNames(), krew.ManifestFile)
		fs.PrintDefaults()
	}
	var opts options
	fs.StringVar(&opts.version, "version", "", "Version of the release: names the archives, is the tag in their URLs and, if semantic, the manifest's version.")
	fs.StringVar(&opts.out, "out", "dist", "Directory the archives and the manifest are written to.")
	fs.StringVar(&opts.ldflags, "ldflags", "", "Linker flags for go build (default: -s -w -X "+versionVariable+"=VERSION).")
	fs.StringVar(&opts.pkg, "pkg", "./cmd/kubectl-meshlift", "Main package of the plugin, relative to the module root.")
	fs.StringVar(&opts.baseURL, "base-url", krew.DefaultBaseURL, "Archives are downloaded from BASE-URL/VERSION/ARCHIVE.")
	fs.StringVar(&opts.verify, "verify", "", "Verify the manifest in this directory against its archives instead of building.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return options{}, err
		}
		return options{}, repo.ErrUsage
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if opts.verify != "" {
		if opts.version != "" {
			return options{}, errors.New("--verify checks an existing directory: it takes no --version")
		}
		return opts, nil
	}
	if opts.version == "" {
		return options{}, errors.New("--version is required (or --verify DIR)")
	}
	if err := krew.CheckReleaseVersion(opts.version); err != nil {
		return options{}, err
	}
	if opts.out == "" {
		return options{}, errors.New("--out must not be empty")
	}
	if opts.ldflags == "" {
		opts.ldflags = "-s -w -X " + versionVariable + "=" + opts.version
	}
	return opts, nil
}

// verify checks dir's manifest against its archives and prints what it checked.
func verify(dir string, stdout, stderr io.Writer) error {
	manifest, warnings, err := krew.VerifyDir(dir)
	for _, warning := range warnings {
		_, _ = fmt.Fprintf(stderr, "warning: %s\n", warning)
	}
	if err != nil {
		return err
	}
	_, _ = fmt.Fprintf(stdout, "%s: plugin %s %s, %d platforms, every archive present with its sha256 and an executable %s for its platform\n",
		filepath.Join(dir, krew.ManifestFile), manifest.Metadata.Name, manifest.Spec.Version, len(manifest.Spec.Platforms), krew.BinaryName)
	return nil
}

// release builds the plugin for every target and writes the archives and the manifest.
func release(ctx context.Context, opts options, stdout, stderr io.Writer) error {
	moduleRoot, err := repo.ModuleRoot(ctx)
	if err != nil {
		return err
	}
	extras, err := archiveExtras(moduleRoot, stderr)
	if err != nil {
		return err
	}
	binDir, err := os.MkdirTemp("", "meshlift-plugin-dist-")
	if err != nil {
		return fmt.Errorf("failed to create a directory for the binaries: %w", err)
	}
	defer func() { _ = os.RemoveAll(binDir) }()

	binaries := map[krew.Target]string{}
	for _, target := range krew.Targets {
		binaryPath := filepath.Join(binDir, target.OS+"_"+target.Arch, krew.BinaryName)
		_, _ = fmt.Fprintf(stdout, "building %s for %s\n", opts.pkg, target)
		if err := goBuild(ctx, moduleRoot, target, opts.pkg, opts.ldflags, binaryPath); err != nil {
			return fmt.Errorf("%s: %w", target, err)
		}
		binaries[target] = binaryPath
	}

	manifest, err := krew.WriteRelease(opts.out, krew.Release{
		Version:  opts.version,
		BaseURL:  opts.baseURL,
		Binaries: binaries,
		Extras:   extras,
	})
	if err != nil {
		return err
	}
	for _, platform := range manifest.Spec.Platforms {
		archivePath := filepath.Join(opts.out, filepath.Base(platform.URI))
		info, err := os.Stat(archivePath)
		if err != nil {
			return fmt.Errorf("failed to stat the archive: %w", err)
		}
		_, _ = fmt.Fprintf(stdout, "%-62s %8s sha256:%s\n", archivePath, repo.HumanSize(info.Size()), platform.SHA256)
	}
	_, _ = fmt.Fprintf(stdout, "%s: plugin %s %s\n", filepath.Join(opts.out, krew.ManifestFile), manifest.Metadata.Name, manifest.Spec.Version)
	if krew.IsDevVersion(manifest.Spec.Version) {
		_, _ = fmt.Fprintf(stderr, "note: %q is not a semantic version, so the manifest says %s: fine for trying the plugin out "+
			"(kubectl krew install --manifest=%s --archive=ARCHIVE), not for the krew index\n",
			opts.version, manifest.Spec.Version, filepath.Join(opts.out, krew.ManifestFile))
	}
	return nil
}

// archiveExtras are the files packed next to the binary: the module's license, or, when it has
// none, its README.md, and a warning, since the krew index requires a license in every archive.
func archiveExtras(moduleRoot string, stderr io.Writer) ([]krew.File, error) {
	for _, name := range licenseFiles {
		content, err := os.ReadFile(filepath.Join(moduleRoot, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("failed to read the license: %w", err)
		}
		return []krew.File{{Name: name, Content: content}}, nil
	}
	_, _ = fmt.Fprintf(stderr, "warning: no license file (%s) at %s: the archives get README.md instead, and the krew index will not take them until there is one\n",
		strings.Join(licenseFiles, ", "), moduleRoot)
	content, err := os.ReadFile(filepath.Join(moduleRoot, "README.md"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read README.md: %w", err)
	}
	return []krew.File{{Name: "README.md", Content: content}}, nil
}

// goBuild compiles pkg (relative to the module root) for target into binaryPath, statically and
// without local paths, so that the same sources and flags give the same binary on any machine.
func goBuild(ctx context.Context, moduleRoot string, target krew.Target, pkg, ldflags, binaryPath string) error {
	args := []string{"build", "-trimpath", "-ldflags", ldflags, "-o", binaryPath, pkg}
	build := exec.CommandContext(ctx, "go", args...)
	build.Dir = moduleRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+target.OS, "GOARCH="+target.Arch)
	var buildOutput bytes.Buffer
	build.Stdout = &buildOutput
	build.Stderr = &buildOutput
	if err := build.Run(); err != nil {
		return fmt.Errorf("GOOS=%s GOARCH=%s CGO_ENABLED=0 %s failed: %w\n%s",
			target.OS, target.Arch, repo.GoCommandLine(args), err, strings.TrimSpace(buildOutput.String()))
	}
	return nil
}

func targetNames() string {
	names := make([]string, 0, len(krew.Targets))
	for _, target := range krew.Targets {
		names = append(names, target.String())
	}
	return strings.Join(names, ", ")
}
