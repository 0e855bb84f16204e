package controllers

import (
	"context"
	"fmt"

	discoveryv1 "k8s.io/api/discovery/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/rollout"
)

// Options configure the controllers.
type Options struct {
	// TrustDomain of the SPIFFE IDs the controllers report.
	TrustDomain string
	// CA publishes the mesh CA (filled by a backend of internal/identity). When set, the trust
	// bundle controller publishes its bundle in every meshed namespace; when nil it does not run.
	CA *identity.Holder
	// Rollout are the rollout settings of the UpgradePlan controller (zero: rollout.DefaultOptions).
	Rollout *rollout.Options
	// ControlPlane, when set, makes InPlace upgrades wait for the control-plane replicas to
	// acknowledge each drain (nil: they wait Rollout.DrainDuration).
	ControlPlane *ControlPlaneReplicas
	// RetireProber reads the old proxies of hot-upgraded pods (nil: HTTPRetireProber, which
	// asks each slot's /ready at the pod's IP).
	RetireProber RetireProber
	// RepairUninjectedPods runs the repair controller (RepairReconciler), which evicts the pods
	// a STRICT MeshService selects that were created without a sidecar while the injector was
	// unavailable (the operator's --repair-uninjected-pods, on by default there).
	RepairUninjectedPods bool
	// Repair configures the repair controller.
	Repair RepairOptions
}

// Setup registers the cache indexes and every controller with the manager. main.go and the
// envtest suites both call it, so the tests run the controllers exactly as wired in production.
func Setup(ctx context.Context, mgr ctrl.Manager, opts Options) error {
	if err := SetupIndexes(ctx, mgr); err != nil {
		return err
	}
	if err := (&SidecarVersionReconciler{Client: mgr.GetClient(), Pods: mgr.GetCache()}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("failed to set up the SidecarVersion controller: %w", err)
	}
	if err := (&MeshServiceReconciler{
		Client:      mgr.GetClient(),
		Pods:        mgr.GetCache(),
		Recorder:    mgr.GetEventRecorder("meshlift-meshservice"),
		TrustDomain: opts.TrustDomain,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("failed to set up the MeshService controller: %w", err)
	}
	if err := (&ProxyReadinessReconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("failed to set up the proxy readiness controller: %w", err)
	}
	rolloutOpts := rollout.DefaultOptions()
	if opts.Rollout != nil {
		rolloutOpts = *opts.Rollout
	}
	plans := NewUpgradePlanReconciler(mgr.GetClient(), mgr.GetEventRecorder("meshlift-rollout"), rolloutOpts)
	plans.ControlPlane = opts.ControlPlane
	if opts.RetireProber != nil {
		plans.Prober = opts.RetireProber
	}
	if opts.ControlPlane != nil {
		// InPlace drains read EndpointSlices (drainInput): their informer starts and syncs with
		// the manager, so that a plan does not wait for it and the operator's memory does not
		// grow when the first one starts (internal/podcache keeps what drains read of them).
		if _, err := mgr.GetCache().GetInformer(ctx, &discoveryv1.EndpointSlice{}); err != nil {
			return fmt.Errorf("failed to register the EndpointSlice informer for InPlace drains: %w", err)
		}
	}
	if err := plans.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("failed to set up the UpgradePlan controller: %w", err)
	}
	if opts.RepairUninjectedPods {
		if err := SetupRepair(mgr, opts.Repair); err != nil {
			return err
		}
	}
	if opts.CA != nil {
		if err := NewTrustBundleReconciler(mgr.GetClient(), opts.CA).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("failed to set up the trust bundle controller: %w", err)
		}
	}
	return nil
}

// SetupRepair registers the repair controller with the manager (Setup does when
// Options.RepairUninjectedPods is set).
func SetupRepair(mgr ctrl.Manager, opts RepairOptions) error {
	if err := (&RepairReconciler{
		Client:    mgr.GetClient(),
		Pods:      mgr.GetCache(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("meshlift-repair"),
		Options:   opts,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("failed to set up the repair controller: %w", err)
	}
	return nil
}
