package webhooks_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/events"

	"github.com/meshlift/meshlift/internal/capture"
	"github.com/meshlift/meshlift/internal/proxyconfig"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/webhooks"
)

func TestTheInjectorMarksPodsForCaptureAndRefusesMalformedExclusions(t *testing.T) {
	ctx := context.Background()
	ns, _ := meshed(t, "capture", nil)
	opts := sidecar.DefaultOptions()
	opts.CaptureMode, opts.CaptureOutbound = sidecar.CaptureModeCNI, true

	withProbe := func(probe corev1.ProbeHandler, annotations ...string) *corev1.Pod {
		pod := webPod(ns)
		pod.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
		pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: probe, PeriodSeconds: 5}
		pod.Annotations = map[string]string{}
		for i := 0; i+1 < len(annotations); i += 2 {
			pod.Annotations[annotations[i]] = annotations[i+1]
		}
		return pod
	}
	tcp := corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("http")}}
	grpc := corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 8080}}

	tests := []struct {
		name        string
		pod         *corev1.Pod
		wantInject  bool
		wantWarning string // a substring of the warnings; "" for none
		wantEvent   string // a substring of the InjectionSkipped event; "" for none
	}{
		{name: "marks the pod and rewrites its TCP probe of a named port", pod: withProbe(tcp), wantInject: true},
		{name: "keeps valid exclusions and leaves the probe of an excluded port alone",
			pod: withProbe(tcp, capture.AnnotationExcludeInboundPorts, "8080", capture.AnnotationExcludeOutboundCIDRs, "169.254.169.254"), wantInject: true},
		{name: "injects a pod with a gRPC probe of a captured port and warns that it will fail", pod: withProbe(grpc), wantInject: true,
			wantWarning: "is a gRPC probe of port 8080, which traffic capture redirects to the proxy"},
		{name: "admits a pod with malformed exclusions without a sidecar, with a warning and an event",
			pod:         withProbe(tcp, capture.AnnotationExcludeOutboundPorts, "5432;6379"),
			wantWarning: `the pod was admitted without a sidecar: traffic capture is on and the pod's annotations are malformed`,
			wantEvent:   `"5432;6379" is not a port number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recorder := events.NewFakeRecorder(10)
			injector := &webhooks.PodInjector{Reader: mgrCache, Recorder: recorder, Options: opts, OperatorNamespace: operatorNamespace}
			req := podCreation(t, tt.pod)
			resp := injector.Handle(ctx, req)
			if !resp.Allowed {
				t.Fatalf("the pod was refused: %v", resp.Result)
			}
			warnings := strings.Join(resp.Warnings, "\n")
			if tt.wantWarning == "" && warnings != "" || !strings.Contains(warnings, tt.wantWarning) {
				t.Errorf("warnings = %q, want %q", warnings, tt.wantWarning)
			}
			select {
			case event := <-recorder.Events:
				if tt.wantEvent == "" || !strings.Contains(event, webhooks.EventReasonInjectionSkipped) || !strings.Contains(event, tt.wantEvent) {
					t.Errorf("event %q, want one containing %q", event, tt.wantEvent)
				}
			default:
				if tt.wantEvent != "" {
					t.Errorf("no event, want an %s event saying %q", webhooks.EventReasonInjectionSkipped, tt.wantEvent)
				}
			}
			if !tt.wantInject {
				if len(resp.Patches) != 0 {
					t.Errorf("the pod was patched: %v", resp.Patches)
				}
				return
			}
			got := applyResponsePatch(t, req.Object.Raw, resp.Patches)
			if got.Annotations[capture.AnnotationCapture] != "inbound,outbound" {
				t.Errorf("%s = %q, want inbound,outbound", capture.AnnotationCapture, got.Annotations[capture.AnnotationCapture])
			}
			for key, value := range tt.pod.Annotations {
				if got.Annotations[key] != value {
					t.Errorf("annotation %s = %q, want the pod's own %q", key, got.Annotations[key], value)
				}
			}
			probe := got.Spec.Containers[0].ReadinessProbe
			excluded := tt.pod.Annotations[capture.AnnotationExcludeInboundPorts] == "8080"
			switch {
			case tt.pod.Spec.Containers[0].ReadinessProbe.TCPSocket != nil && !excluded:
				if probe.HTTPGet == nil || probe.HTTPGet.Port.IntValue() != proxyconfig.AppProbePort ||
					probe.HTTPGet.Path != proxyconfig.AppProbePath(tt.pod.Spec.Containers[0].Name, proxyconfig.ProbeReadiness) || probe.PeriodSeconds != 5 {
					t.Errorf("readiness probe = %+v, want an HTTP probe of the proxy's app-probe port every 5s", probe)
				}
				originals, err := proxyconfig.ParseOriginalProbes(got.Annotations[proxyconfig.OriginalProbesAnnotation])
				if err != nil {
					t.Fatal(err)
				}
				if original := originals[tt.pod.Spec.Containers[0].Name].Readiness; original == nil || original.TCPSocket == nil || original.TCPSocket.Port != 8080 {
					t.Errorf("original readiness probe = %+v, want tcpSocket 8080 (the named port resolved)", original)
				}
			default:
				if !equalJSON(t, probe, tt.pod.Spec.Containers[0].ReadinessProbe) {
					t.Errorf("readiness probe = %+v, want it unchanged", probe)
				}
				if _, ok := got.Annotations[proxyconfig.OriginalProbesAnnotation]; ok {
					t.Errorf("the pod got %s though no probe was rewritten", proxyconfig.OriginalProbesAnnotation)
				}
			}
		})
	}
}

func applyResponsePatch(t *testing.T, raw []byte, patch any) *corev1.Pod {
	t.Helper()
	ops, err := json.Marshal(patch)
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := jsonpatchapply.DecodePatch(ops)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := decoded.Apply(raw)
	if err != nil {
		t.Fatalf("the patch does not apply: %v", err)
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(patched, pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	return string(x) == string(y)
}

// TestAutoCaptureFollowsThePlugin: under --capture-mode=auto (the default), a pod is marked for
// capture, its probes rewritten, exactly while the injector is told meshlift-cni runs.
func TestAutoCaptureFollowsThePlugin(t *testing.T) {
	ctx := context.Background()
	ns, _ := meshed(t, "auto-capture", nil)
	opts := sidecar.DefaultOptions()
	opts.CaptureMode, opts.CaptureOutbound = sidecar.CaptureModeAuto, true
	installed := false
	injector := &webhooks.PodInjector{Reader: mgrCache, Options: opts, OperatorNamespace: operatorNamespace,
		CNIInstalled: func() bool { return installed }}
	for _, plugin := range []bool{false, true, false} {
		installed = plugin
		pod := webPod(ns)
		pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}}
		req := podCreation(t, pod)
		resp := injector.Handle(ctx, req)
		if !resp.Allowed || len(resp.Patches) == 0 {
			t.Fatalf("plugin installed %v: not injected: %v %v", plugin, resp.Result, resp.Warnings)
		}
		got := applyResponsePatch(t, req.Object.Raw, resp.Patches)
		marked := got.Annotations[capture.AnnotationCapture]
		rewritten := got.Spec.Containers[0].ReadinessProbe.HTTPGet != nil
		if plugin && (marked != "inbound,outbound" || !rewritten) {
			t.Errorf("with the plugin: %s = %q, probe rewritten %v; want inbound,outbound and rewritten", capture.AnnotationCapture, marked, rewritten)
		}
		if !plugin && (marked != "" || rewritten) {
			t.Errorf("without the plugin: %s = %q, probe rewritten %v; want neither", capture.AnnotationCapture, marked, rewritten)
		}
	}
	// Without a way to know, auto is none.
	injector.CNIInstalled = nil
	pod := webPod(ns)
	req := podCreation(t, pod)
	got := applyResponsePatch(t, req.Object.Raw, injector.Handle(ctx, req).Patches)
	if marked := got.Annotations[capture.AnnotationCapture]; marked != "" {
		t.Errorf("auto without a watcher marked the pod %q", marked)
	}
}
