package webhooks

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
)

// Options configure the webhooks.
type Options struct {
	// Injection settings of the pod injector.
	Injection sidecar.Options
	// OperatorNamespace is the operator's namespace: the injector never injects its pods, nor
	// those of Kubernetes' system namespaces (sidecar.ExcludedNamespace). Required.
	OperatorNamespace string
	// Recorder records the injector's events.
	Recorder events.EventRecorder
	// CNIInstalled says whether the meshlift-cni plugin runs (cniready.Watcher.Ready), for
	// Injection.CaptureMode auto; nil: it does not.
	CNIInstalled func() bool
}

// Setup registers every webhook with the manager's webhook server. main.go and the envtest
// suites both call it. It also registers the informers the webhooks read, so they start and sync
// with the manager instead of on the first admission request (which would then wait for them).
func Setup(ctx context.Context, mgr ctrl.Manager, opts Options) error {
	if opts.OperatorNamespace == "" {
		return errors.New("the webhooks need the operator's namespace, whose pods the injector must never inject")
	}
	for _, obj := range []client.Object{&meshv1alpha1.MeshService{}, &meshv1alpha1.UpgradePlan{}, &meshv1alpha1.SidecarVersion{}} {
		if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
			return fmt.Errorf("failed to register the informer of %T for the webhooks: %w", obj, err)
		}
	}
	server := mgr.GetWebhookServer()
	reader := mgr.GetClient()
	server.Register(PodInjectorPath, &webhook.Admission{Handler: &PodInjector{
		Reader:            reader,
		Recorder:          opts.Recorder,
		Options:           opts.Injection,
		OperatorNamespace: opts.OperatorNamespace,
		CNIInstalled:      opts.CNIInstalled,
	}})
	scheme := mgr.GetScheme()
	server.Register(UpgradePlanValidatorPath, admission.WithValidator[*meshv1alpha1.UpgradePlan](scheme, &UpgradePlanValidator{Reader: reader}))
	server.Register(MeshServiceValidatorPath, admission.WithValidator[*meshv1alpha1.MeshService](scheme, &MeshServiceValidator{Reader: reader}))
	server.Register(SidecarVersionValidatorPath, admission.WithValidator[*meshv1alpha1.SidecarVersion](scheme, &SidecarVersionValidator{Reader: reader}))
	return nil
}
