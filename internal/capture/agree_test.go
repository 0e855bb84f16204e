package capture_test

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshlift/meshlift/internal/capture"
	"github.com/meshlift/meshlift/internal/proxy"
	"github.com/meshlift/meshlift/internal/proxyconfig"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
)

// TestDefaultsAgreeWithTheInjector: the capture rules and the injector name the same proxy ports and
// user (an external test: the injector imports this package).
func TestDefaultsAgreeWithTheInjector(t *testing.T) {
	if capture.DefaultInboundPort != sidecar.InboundPort {
		t.Errorf("capture.DefaultInboundPort = %d, the injector's proxy listens on sidecar.InboundPort = %d", capture.DefaultInboundPort, sidecar.InboundPort)
	}
	for slot, port := range map[int]uint16{1: capture.DefaultConfig().ProxyPorts[0], 2: capture.DefaultConfig().ProxyPorts[1]} {
		if int32(port) != sidecar.AdminPort(slot) {
			t.Errorf("admin port of slot %d = %d, the injector says %d", slot, port, sidecar.AdminPort(slot))
		}
	}
	injected := sidecar.Inject(gen.Pod("web"), gen.MeshService("web"), gen.SidecarVersion("v1", "1.0.0"), sidecar.DefaultOptions()).Pod
	proxies := 0
	for _, containers := range [][]corev1.Container{injected.Spec.InitContainers, injected.Spec.Containers} {
		for _, c := range containers {
			if !strings.HasPrefix(c.Name, sidecar.ContainerName) {
				continue
			}
			proxies++
			if c.SecurityContext == nil || c.SecurityContext.RunAsUser == nil || *c.SecurityContext.RunAsUser != int64(capture.DefaultProxyUID) {
				t.Errorf("proxy container %s does not run as capture.DefaultProxyUID %d: %+v", c.Name, capture.DefaultProxyUID, c.SecurityContext)
			}
		}
	}
	if proxies == 0 {
		t.Fatalf("the injected pod has no proxy container named %s*", sidecar.ContainerName)
	}
}

// TestTheProxyReadsOutboundCaptureAsTheRulesDo: the proxy opens its outbound capture listener
// exactly for the pods whose annotation makes the plugin redirect outbound connections.
func TestTheProxyReadsOutboundCaptureAsTheRulesDo(t *testing.T) {
	for _, value := range []string{"", "none", "inbound", "outbound", "inbound,outbound", " outbound , inbound ", "inbound, outbound", "outbound,outbound"} {
		annotations := map[string]string{capture.AnnotationCapture: value}
		c, err := capture.ParseAnnotations(annotations)
		if err != nil {
			continue // the plugin fails the pod's sandbox: no proxy runs
		}
		if got := proxyconfig.CapturesOutbound(annotations); got != c.Outbound {
			t.Errorf("%q: the proxy captures outbound = %v, the rules redirect outbound = %v", value, got, c.Outbound)
		}
	}
	if proxy.OutboundCapturePort != int(capture.DefaultOutboundPort) {
		t.Errorf("the proxy's capture listeners are on %d, the rules redirect to %d", proxy.OutboundCapturePort, capture.DefaultOutboundPort)
	}
	if proxyconfig.CaptureAnnotation != capture.AnnotationCapture {
		t.Errorf("proxyconfig.CaptureAnnotation = %q, capture.AnnotationCapture = %q", proxyconfig.CaptureAnnotation, capture.AnnotationCapture)
	}
}
