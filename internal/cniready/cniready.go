// Package cniready tells the injector whether the chained CNI plugin meshlift-cni runs in the
// cluster, for --capture-mode=auto (docs/traffic.md): it reads the plugin's DaemonSet in the
// operator's namespace every few seconds. Every replica runs it (every replica serves the
// injector), with one GET per period: no informer, and only `get` on that one DaemonSet.
package cniready

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DefaultDaemonSet is the plugin's DaemonSet as config/cni names it.
const DefaultDaemonSet = "meshlift-cni"

// DefaultInterval is how often the DaemonSet is read.
const DefaultInterval = 5 * time.Second

// +kubebuilder:rbac:groups=apps,namespace=system,resources=daemonsets,resourceNames=meshlift-cni,verbs=get

// Watcher knows whether the plugin's DaemonSet has a ready pod.
type Watcher struct {
	// Reader reads the DaemonSet (the manager's API reader: no cache).
	Reader   client.Reader
	Key      types.NamespacedName
	Interval time.Duration
	Log      logr.Logger

	ready   atomic.Bool
	checked atomic.Bool
	last    string // what was last logged, so only changes are
}

// State is what the DaemonSet's status says.
type State struct {
	Found          bool
	Desired, Ready int32
}

// Installed is the rule of --capture-mode=auto: the plugin counts as installed once its DaemonSet
// has at least one ready pod, which has chained the plugin into its node's CNI configuration (its
// readiness probe says so). Not every node: a DaemonSet rolling out, or a node that just joined,
// would otherwise turn capture off for the pods of every node.
func Installed(s State) bool { return s.Found && s.Ready > 0 }

// Ready reports whether the plugin counts as installed (false until the first read).
func (w *Watcher) Ready() bool { return w.ready.Load() }

// Checked is a readyz check: an error until the DaemonSet was read once (found or not), so a
// replica does not inject pods before it knows whether to capture their traffic.
func (w *Watcher) Checked(_ *http.Request) error {
	if !w.checked.Load() {
		return errors.New("the meshlift-cni DaemonSet was not read yet")
	}
	return nil
}

// NeedLeaderElection: every replica serves the injector.
func (w *Watcher) NeedLeaderElection() bool { return false }

// Start reads the DaemonSet every Interval until ctx ends.
func (w *Watcher) Start(ctx context.Context) error {
	interval := w.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	for {
		w.check(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

func (w *Watcher) check(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	state, err := w.read(ctx)
	if err != nil {
		// Keep what was known: a failed read says nothing about the plugin.
		w.Log.Error(err, "Failed to read the meshlift-cni DaemonSet; keeping the capture decision", "daemonSet", w.Key.String(), "installed", w.ready.Load())
		return
	}
	installed := Installed(state)
	w.ready.Store(installed)
	w.checked.Store(true)
	summary := fmt.Sprintf("%v/%v/%d", installed, state.Found, state.Ready)
	if summary == w.last {
		return
	}
	w.last = summary
	if installed {
		w.Log.Info("meshlift-cni runs in the cluster: injecting pods with traffic capture (--capture-mode=auto)",
			"daemonSet", w.Key.String(), "ready", state.Ready, "desired", state.Desired)
	} else {
		w.Log.Info("meshlift-cni is not running: injecting pods without traffic capture (--capture-mode=auto); install config/cni to capture",
			"daemonSet", w.Key.String(), "found", state.Found, "ready", state.Ready, "desired", state.Desired)
	}
}

func (w *Watcher) read(ctx context.Context) (State, error) {
	ds := &appsv1.DaemonSet{}
	if err := w.Reader.Get(ctx, w.Key, ds); err != nil {
		if apierrors.IsNotFound(err) {
			return State{}, nil
		}
		return State{}, fmt.Errorf("reading DaemonSet %s: %w", w.Key, err)
	}
	return State{Found: true, Desired: ds.Status.DesiredNumberScheduled, Ready: ds.Status.NumberReady}, nil
}
