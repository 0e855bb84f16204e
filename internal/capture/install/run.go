package install

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// DefaultInterval is how often Run checks the node's configuration: the network plugin may
// rewrite its configuration list (dropping the chained entry) and the token rotates.
const DefaultInterval = 5 * time.Second

// Run installs the plugin, keeps it installed (every interval it installs again, which changes
// nothing unless something else did) and uninstalls it when ctx ends (the DaemonSet's pod is
// deleted: the node is left as it was found). When readyAddr is set, it serves /ready there:
// 200 once the plugin is installed, 503 before and after.
func Run(ctx context.Context, opts Options, interval time.Duration, readyAddr string, log logr.Logger) error {
	var ready atomic.Bool
	if readyAddr != "" {
		ln, err := net.Listen("tcp", readyAddr)
		if err != nil {
			return err
		}
		srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if !ready.Load() {
				http.Error(w, "meshlift-cni is not installed on this node yet", http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("meshlift-cni is installed\n"))
		})}
		go func() { _ = srv.Serve(ln) }()
		defer func() { _ = srv.Close() }()
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	failing := false
	for {
		changed, err := Install(opts)
		switch {
		case err != nil:
			ready.Store(false)
			if !failing {
				log.Error(err, "Failed to install meshlift-cni; retrying", "confDir", opts.ConfDir, "binDir", opts.BinDir)
			}
			failing = true
		case changed:
			ready.Store(true)
			failing = false
			log.Info("Chained meshlift-cni into the node's CNI configuration", "confDir", opts.ConfDir, "binDir", opts.BinDir)
		default:
			ready.Store(true)
			if failing {
				log.Info("meshlift-cni is installed again", "confDir", opts.ConfDir)
			}
			failing = false
		}
		select {
		case <-ctx.Done():
			ready.Store(false)
			err := Uninstall(opts)
			if err != nil {
				log.Error(err, "Failed to uninstall meshlift-cni", "confDir", opts.ConfDir, "binDir", opts.BinDir)
			} else {
				log.Info("Took meshlift-cni out of the node's CNI configuration", "confDir", opts.ConfDir, "binDir", opts.BinDir)
			}
			return errors.Join(err, context.Cause(ctx))
		case <-ticker.C:
		}
	}
}
