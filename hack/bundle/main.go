// Command bundle generates the OLM registry+v1 bundle (bundle/ and bundle.Dockerfile) from the
// same sources as config/default, and the samples of config/samples (docs/olm.md):
//
//	go run ./hack/bundle --version 0.1.0 --channels stable --default-channel stable \
//	  --image meshlift/meshlift-operator:0.1.0 --created-at 2026-12-01T00:00:00Z [--replaces meshlift.v0.0.9] [--skip-range RANGE]
//
// It builds the kustomizations in-process; the conversion is internal/bundle. Running it twice
// changes nothing, and a test in internal/bundle fails when the committed bundle is stale.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/meshlift/meshlift/internal/bundle"
	"github.com/meshlift/meshlift/internal/bundle/kustomize"
	"github.com/meshlift/meshlift/internal/repo"
)

func main() { repo.Main("bundle", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
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
	fmt.Fprintf(stdout, "Wrote %d files of bundle %s (channels %s, default %s) into %s and %s\n",
		len(files), bundle.CSVName(opts.Version), strings.Join(opts.Channels, ","), opts.DefaultChannel, bundle.Dir, bundle.Dockerfile)
	return nil
}
