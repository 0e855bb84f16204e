package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/zapr"
	"go.uber.org/zap"

	"github.com/meshlift/meshlift/internal/capture/install"
)

// serviceAccountDir is where the DaemonSet's service-account token and CA are mounted.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// runInstall is "meshlift-cni install": the DaemonSet's installer (install.Run) until SIGTERM,
// then the node is put back as it was.
func runInstall(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshlift-cni install", flag.ContinueOnError)
	fs.SetOutput(stderr)
	self, _ := os.Executable()
	var opts install.Options
	var excluded, readyAddr, saDir string
	var interval time.Duration
	fs.StringVar(&opts.BinDir, "bin-dir", "/host/cni/bin", "The node's CNI binary directory, as mounted in this container.")
	fs.StringVar(&opts.ConfDir, "conf-dir", "/host/cni/net.d", "The node's CNI configuration directory, as mounted in this container.")
	fs.StringVar(&opts.HostConfDir, "host-conf-dir", "/etc/cni/net.d", "The same directory as the node sees it (the plugin reads its kubeconfig there).")
	fs.StringVar(&opts.Binary, "binary", self, "The plugin binary to install.")
	fs.StringVar(&excluded, "exclude-namespaces", "kube-system", "Comma-separated namespaces whose pods start without capture when the plugin cannot read them ($POD_NAMESPACE, the installer's own, is added).")
	fs.StringVar(&readyAddr, "ready-address", ":15098", "Address of /ready (200 once the plugin is installed); empty: none.")
	fs.StringVar(&saDir, "service-account-dir", serviceAccountDir, "Where the service account's token and ca.crt are mounted.")
	fs.DurationVar(&interval, "interval", install.DefaultInterval, "How often the node's configuration is checked.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	opts.ExcludeNamespaces = []string{}
	for _, ns := range strings.Split(excluded, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			opts.ExcludeNamespaces = append(opts.ExcludeNamespaces, ns)
		}
	}
	// The installer's own pods must start while the plugin cannot read pods (its kubeconfig
	// holds the token of an installer pod that is gone): a replacement installer writes a new one.
	if own := os.Getenv("POD_NAMESPACE"); own != "" && !slices.Contains(opts.ExcludeNamespaces, own) {
		opts.ExcludeNamespaces = append(opts.ExcludeNamespaces, own)
	}
	opts.CAFile, opts.TokenFile = filepath.Join(saDir, "ca.crt"), filepath.Join(saDir, "token")
	if host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"); host != "" && port != "" {
		opts.APIServer = "https://" + net.JoinHostPort(host, port)
	}
	if interval <= 0 {
		_, _ = fmt.Fprintln(stderr, "meshlift-cni install: --interval must be positive")
		return 2
	}
	zl, err := zap.NewProduction()
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "meshlift-cni install: %v\n", err)
		return 1
	}
	log := zapr.NewLogger(zl)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := install.Run(ctx, opts, interval, readyAddr, log); err != nil && !errors.Is(err, context.Canceled) {
		log.Error(err, "The installer stopped")
		return 1
	}
	return 0
}
