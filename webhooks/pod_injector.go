// Package webhooks holds Meshlift's admission webhooks: the pod injector (mutating) and the
// admission of the Meshlift kinds where CEL cannot decide alone. Handlers are thin: they gather
// objects from the cache and call the pure packages (internal/sidecar, internal/versions).
package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/go-logr/logr"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/versions"
)

// PodInjectorPath is where the injector is served; config/webhook points the API server at it.
const PodInjectorPath = "/inject-v1-pod"

// EventReasonInjectionSkipped is the Warning event on a MeshService whose pod got no sidecar.
const EventReasonInjectionSkipped = "InjectionSkipped"

// PodInjector injects the sidecar into pods that a MeshService selects.
type PodInjector struct {
	// Reader reads MeshServices, UpgradePlans and SidecarVersions (the manager's cache).
	Reader client.Reader
	// Recorder records events on MeshServices (never for dry-run requests).
	Recorder events.EventRecorder
	// Options are the injection settings.
	Options sidecar.Options
	// OperatorNamespace is the operator's own namespace. Its pods, like those of Kubernetes'
	// system namespaces, are never injected, even when the webhook configuration's
	// namespaceSelector lets the request through (OLM replaces it with the OperatorGroup's).
	OperatorNamespace string
	// CNIInstalled resolves Options.CaptureMode auto for each pod: cni while it says the
	// meshlift-cni plugin runs in the cluster, none otherwise (and when it is nil).
	CNIInstalled func() bool
}

// Handle admits every pod. Pods a MeshService selects get the sidecar as a JSON patch; a pod
// that cannot get one is admitted unchanged with a warning that says why.
func (h *PodInjector) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" {
		return admission.Allowed("").WithWarnings(fmt.Sprintf("meshlift injector: ignoring a %s, it only injects Pods", req.Kind.Kind))
	}
	if len(req.Object.Raw) == 0 {
		return admission.Errored(http.StatusBadRequest, errors.New("meshlift injector: the request carries no pod"))
	}
	// Case-sensitive, as the API server decodes: the patch's paths must be the pod's own keys.
	pod := &corev1.Pod{}
	if err := utiljson.Unmarshal(req.Object.Raw, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("meshlift injector: cannot decode the pod: %w", err))
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	log := ctrl.LoggerFrom(ctx).WithValues("pod", podName(pod), "namespace", pod.Namespace)
	// The request's namespace is the one the pod is created in; the pod's own is checked too so
	// that a request whose two disagree is never injected either.
	for _, namespace := range []string{req.Namespace, pod.Namespace} {
		if reason, message := sidecar.ExcludedNamespace(namespace, h.OperatorNamespace); reason != "" {
			log.V(1).Info("Not injecting a pod of an excluded namespace", "reason", reason)
			return admission.Allowed(message)
		}
	}

	meshServices := &meshv1alpha1.MeshServiceList{}
	if err := h.Reader.List(ctx, meshServices, client.InNamespace(pod.Namespace)); err != nil {
		return h.admitWithout(log, "cannot list MeshServices", err)
	}
	ms, others := sidecar.SelectMeshService(pod, meshServices.Items)
	if ms == nil {
		return admission.Allowed("no MeshService selects the pod")
	}
	var warnings []string
	if len(others) > 0 {
		warnings = append(warnings, fmt.Sprintf("meshlift: MeshServices %s and %s both select this pod; it is injected for %s, the oldest",
			ms.Name, strings.Join(others, ", "), ms.Name))
	}
	if reason, message := sidecar.Precheck(pod); reason != "" {
		if reason == sidecar.SkipOptedOut || reason == sidecar.SkipAlreadyInjected {
			return admission.Allowed(message).WithWarnings(warnings...)
		}
		return h.skip(ms, pod, req, message, warnings)
	}

	plans := &meshv1alpha1.UpgradePlanList{}
	if err := h.Reader.List(ctx, plans, client.InNamespace(pod.Namespace)); err != nil {
		return h.admitWithout(log, "cannot list UpgradePlans", err)
	}
	sidecarVersions := &meshv1alpha1.SidecarVersionList{}
	if err := h.Reader.List(ctx, sidecarVersions); err != nil {
		return h.admitWithout(log, "cannot list SidecarVersions", err)
	}
	resolution, err := versions.Resolve(ms, plans.Items, sidecarVersions.Items)
	if err != nil {
		return h.skip(ms, pod, req, "no sidecar version resolves: "+err.Error(), warnings)
	}
	version := findVersion(sidecarVersions.Items, resolution.Version)
	if version == nil { // Resolve checked it exists; the cache cannot lose it in between, but never panic
		return h.admitWithout(log, "lost SidecarVersion "+resolution.Version, errors.New("not found"))
	}

	opts := h.Options
	opts.CaptureMode = opts.CaptureMode.Resolve(h.CNIInstalled != nil && h.CNIInstalled())
	result := sidecar.Inject(pod, ms, version, opts)
	if result.Skipped != "" {
		return h.skip(ms, pod, req, result.Message, warnings)
	}
	// Only what injection owns is patched: a diff against the re-encoded pod would remove the
	// fields our Go types do not know (those of a newer API server).
	patch, err := sidecar.InjectionPatch(req.Object.Raw, pod, result.Pod)
	if err != nil {
		return h.admitWithout(log, "cannot compute the injection patch", err)
	}
	log.V(1).Info("Injecting sidecar", "meshService", ms.Name, "version", version.Name, "source", resolution.Source,
		"captureMode", opts.CaptureMode)
	return patched(patch).WithWarnings(append(warnings, result.Warnings...)...)
}

// patched admits the pod with patch.
func patched(patch []jsonpatch.Operation) admission.Response {
	resp := admission.Response{Patches: patch, AdmissionResponse: admissionv1.AdmissionResponse{Allowed: true}}
	if len(patch) > 0 {
		resp.PatchType = ptr.To(admissionv1.PatchTypeJSONPatch)
	}
	return resp
}

// skip admits the pod without a sidecar, warns the client and records why on the MeshService.
func (h *PodInjector) skip(ms *meshv1alpha1.MeshService, pod *corev1.Pod, req admission.Request, message string, warnings []string) admission.Response {
	if !ptr.Deref(req.DryRun, false) && h.Recorder != nil {
		h.Recorder.Eventf(ms, nil, corev1.EventTypeWarning, EventReasonInjectionSkipped, "Inject",
			"Pod %s was admitted without a sidecar: %s", podName(pod), message)
	}
	warnings = append(warnings, "meshlift: the pod was admitted without a sidecar: "+message)
	return admission.Allowed("admitted without a sidecar").WithWarnings(warnings...)
}

// admitWithout admits the pod unchanged after an internal failure; injecting must never block
// pod creation.
func (h *PodInjector) admitWithout(log logr.Logger, what string, err error) admission.Response {
	log.Error(err, "Admitting pod without a sidecar after an internal error", "step", what)
	return admission.Allowed("admitted without a sidecar").WithWarnings(
		fmt.Sprintf("meshlift: the pod was admitted without a sidecar because the injector %s: %v", what, err))
}

func findVersion(items []meshv1alpha1.SidecarVersion, name string) *meshv1alpha1.SidecarVersion {
	for i := range items {
		if items[i].Name == name {
			return &items[i]
		}
	}
	return nil
}

func podName(pod *corev1.Pod) string {
	if pod.Name != "" {
		return pod.Name
	}
	return pod.GenerateName + "*"
}
