// Package lameduck turns a termination signal into a delayed stop. When a replica of the operator
// is deleted, the kubelet sends SIGTERM at about the moment the replica leaves its Services'
// endpoints; the API server (webhooks) and kube-proxy (the control plane's ClusterIP) learn that a
// little later. A replica that stopped serving at once would refuse the calls still routed to it,
// and the injector's webhook fails open: a pod created then would run without a sidecar. So on
// the first signal the replica reports itself not ready and keeps serving for a delay; only then
// does the manager stop. A second signal stops at once.
package lameduck

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
)

// ErrShuttingDown is what Ready reports once a termination signal arrived.
var ErrShuttingDown = errors.New("shutting down: this replica no longer takes new work")

// Handler delays the stop that a termination signal asks for.
type Handler struct {
	// Delay is how long the replica keeps serving after the first signal.
	Delay time.Duration
	// Log receives a line when a signal arrives.
	Log logr.Logger
	// Exit ends the process on a second signal (os.Exit when nil).
	Exit func(code int)

	draining atomic.Bool
}

// Context returns a context that is cancelled Delay after the first SIGTERM or SIGINT.
func (h *Handler) Context(parent context.Context) context.Context {
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, os.Interrupt)
	return h.watch(parent, signals)
}

// watch is Context with the signals coming from a channel, so tests can send them.
func (h *Handler) watch(parent context.Context, signals <-chan os.Signal) context.Context {
	ctx, cancel := context.WithCancel(parent)
	exit := h.Exit
	if exit == nil {
		exit = os.Exit
	}
	go func() {
		var sig os.Signal
		select {
		case sig = <-signals:
		case <-ctx.Done():
			return
		}
		h.draining.Store(true)
		h.Log.Info("Termination signal received; serving on until the delay ends so that callers stop routing to this replica",
			"signal", sig.String(), "delay", h.Delay)
		timer := time.NewTimer(h.Delay)
		defer timer.Stop()
		select {
		case <-timer.C:
			h.Log.Info("Shutdown delay over; stopping")
			cancel()
		case sig = <-signals:
			h.Log.Info("Second termination signal received; exiting now", "signal", sig.String())
			exit(1)
			cancel()
		case <-ctx.Done():
		}
		// A signal during the graceful shutdown that follows ends the process at once.
		select {
		case sig = <-signals:
			h.Log.Info("Second termination signal received; exiting now", "signal", sig.String())
			exit(1)
		case <-parent.Done():
		}
	}()
	return ctx
}

// Draining reports whether a termination signal arrived.
func (h *Handler) Draining() bool { return h.draining.Load() }

// Ready is a readiness check: it fails once a termination signal arrived, so that the replica
// leaves its Services' endpoints even where the pod's deletion alone would not do it.
func (h *Handler) Ready(*http.Request) error {
	if h.draining.Load() {
		return ErrShuttingDown
	}
	return nil
}
