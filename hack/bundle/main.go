// Command bundle generates the OLM registry+v1 bundle (bundle/ and bundle.Dockerfile) from the
// same sources as config/default, and the samples of config/samples, and the file-based catalog
// catalog/meshlift/catalog.yaml that serves it (docs/olm.md):
//
//	go run ./hack/bundle --version 0.1.0 --channels stable --default-channel stable \
//	  --image meshlift/meshlift-operator:0.1.0 --created-at 2026-12-01T00:00:00Z [--replaces meshlift.v0.0.9] [--skip-range RANGE] \
//	  [--bundle-image docker.io/meshlift/meshlift-operator-bundle:v0.1.0]
//
// It builds the kustomizations in-process; the conversion is internal/bundle. Running it twice
// changes nothing, and a test in internal/bundle fails when the committed bundle is stale.
//
// With "image" it packages the committed bundle/ as the bundle image instead, without Docker
// (internal/images), into <out>/bundle.tar:
//
//	go run ./hack/bundle image --out bin/images --image docker.io/meshlift/meshlift-operator-bundle:v0.1.0
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/meshlift/meshlift/internal/bundle"
	"github.com/meshlift/meshlift/internal/bundle/kustomize"
	"github.com/meshlift/meshlift/internal/images"
	"github.com/meshlift/meshlift/internal/repo"
)

func main() { repo.Main("bundle", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "image" {
		return buildImage(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("bundle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts bundle.Options
	var channels string
	fs.StringVar(&opts.Version, "version", "", "The operator's semantic version (no leading v).")
	fs.StringVar(&opts.Replaces, "replaces", "", "The CSV this one replaces, e.g. meshlift.v0.1.0 (none for the first release).")
	fs.StringVar(&opts.SkipRange, "skip-range", "", "The olm.skipRange annotation (default \">=0.0.0 <VERSION\").")
	fs.StringVar(&channels, "channels", "stable", "Comma-separated channels the bundle is in.")
	fs.StringVar(&opts.DefaultChannel, "default-channel", "", "The package's default channel (default: the first channel).")
	fs.StringVar(&opts.OperatorImage, "image", "", "The operator image (default meshlift/meshlift-operator:VERSION).")
	fs.StringVar(&opts.CreatedAt, "created-at", "", "The createdAt annotation (RFC 3339); required, so the output never depends on the clock.")
	fs.StringVar(&opts.BundleImage, "bundle-image", "", "The bundle image the catalog names (default docker.io/meshlift/meshlift-operator-bundle:vVERSION).")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return repo.ErrUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected arguments: %v\n", fs.Args())
		return repo.ErrUsage
	}
	opts.Channels = strings.Split(channels, ",")
	if opts.DefaultChannel == "" {
		opts.DefaultChannel = opts.Channels[0]
	}
	if opts.OperatorImage == "" {
		opts.OperatorImage = "meshlift/meshlift-operator:" + opts.Version
	}
	root, err := repo.ModuleRoot(ctx)
	if err != nil {
		return err
	}
	files, err := kustomize.GenerateBundle(root, opts)
	if err != nil {
		return err
	}
	if err := files.Write(root); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Wrote %d files of bundle %s (channels %s, default %s) into %s, %s and %s\n",
		len(files), bundle.CSVName(opts.Version), strings.Join(opts.Channels, ","), opts.DefaultChannel, bundle.Dir, bundle.Dockerfile, bundle.CatalogFile)
	return nil
}

// buildImage packages the committed bundle/ as the bundle image tarball <out>/bundle.tar.
func buildImage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bundle image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "bin/images", "Directory the tarball bundle.tar is written to.")
	ref := fs.String("image", "", "The bundle image's reference, with a tag (default: the catalog's bundle image).")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return repo.ErrUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected arguments: %v\n", fs.Args())
		return repo.ErrUsage
	}
	root, err := repo.ModuleRoot(ctx)
	if err != nil {
		return err
	}
	if *ref == "" {
		opts, err := bundle.OptionsOf(root)
		if err != nil {
			return err
		}
		*ref = cmp.Or(opts.BundleImage, bundle.DefaultBundleImage(opts.Version))
	}
	spec, err := bundle.ImageSpec(root, *ref)
	if err != nil {
		return err
	}
	img, err := images.Build(spec)
	if err != nil {
		return fmt.Errorf("failed to build the bundle image %s: %w", *ref, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("failed to compute the digest: %w", err)
	}
	tarball := filepath.Join(*out, "bundle.tar")
	if err := images.WriteTarball(tarball, *ref, img); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "bundle    %s %s (%d files) %s\n", *ref, tarball, len(spec.Files), digest)
	return nil
}
