package sidecar

import (
	"fmt"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/buildinfo"
	"github.com/meshlift/meshlift/internal/capture"
	"github.com/meshlift/meshlift/internal/proxyconfig"
)

// CaptureMode says who sets the traffic-capture rules of injected pods (docs/traffic.md).
type CaptureMode string

const (
	// CaptureModeNone injects no capture: pods are not marked, probes stay as they are. The default.
	CaptureModeNone CaptureMode = "none"
	// CaptureModeCNI marks pods for the chained CNI plugin meshlift-cni, which the cluster runs.
	CaptureModeCNI CaptureMode = "cni"
	// CaptureModeInitContainer marks pods and adds an init container (CaptureInitContainerName)
	// that sets the rules in the pod's network namespace, for clusters without the CNI plugin.
	CaptureModeInitContainer CaptureMode = "init-container"
	// CaptureModeAuto is CaptureModeCNI while the meshlift-cni DaemonSet has a ready pod, and
	// CaptureModeNone otherwise (the operator's default): the injector resolves it for each pod
	// (Resolve); Inject treats it as none.
	CaptureModeAuto CaptureMode = "auto"
)

// Resolve is the mode a pod is injected with: auto becomes cni when the plugin is installed,
// none otherwise; the other modes stay as they are.
func (m CaptureMode) Resolve(pluginInstalled bool) CaptureMode {
	if m != CaptureModeAuto {
		return m
	}
	if pluginInstalled {
		return CaptureModeCNI
	}
	return CaptureModeNone
}

// String makes *CaptureMode a flag.Value.
func (m CaptureMode) String() string { return string(m) }

// Set parses a flag value.
func (m *CaptureMode) Set(s string) error {
	switch CaptureMode(s) {
	case CaptureModeAuto, CaptureModeNone, CaptureModeCNI, CaptureModeInitContainer:
		*m = CaptureMode(s)
		return nil
	}
	return fmt.Errorf("must be %s, %s, %s or %s, not %q", CaptureModeAuto, CaptureModeNone, CaptureModeCNI, CaptureModeInitContainer, s)
}

// Enabled reports whether injected pods are marked for capture.
func (m CaptureMode) Enabled() bool { return m == CaptureModeCNI || m == CaptureModeInitContainer }

const (
	// CaptureInitContainerName is the init container that sets the capture rules in
	// init-container mode. It runs first, before the native sidecar proxies.
	CaptureInitContainerName = "meshlift-capture"
	// CaptureInitImageRepository is the image of meshlift-cni, whose "init" subcommand the
	// init container runs; DefaultOptions tags it with the operator's version.
	CaptureInitImageRepository = "meshlift/meshlift-cni"

	// SkipInvalidCaptureAnnotations: under capture, the pod's exclusion annotations
	// (meshlift.io/exclude-*) or its meshlift.io/original-probes do not parse. Injected, the pod
	// would never start: the CNI plugin and the init container refuse malformed annotations.
	SkipInvalidCaptureAnnotations = "InvalidCaptureAnnotations"
)

// CaptureOutbound reports whether pods of ms get outbound capture: spec.capture.outbound,
// true unless the MeshService opts out.
func CaptureOutbound(ms *meshv1alpha1.MeshService) bool {
	return ms.Spec.Capture == nil || ptr.Deref(ms.Spec.Capture.Outbound, true)
}

// captureResult is what injectCapture did to the pod: the annotations it sets, the init
// container it adds (in init-container mode) and the warnings for the client.
type captureResult struct {
	annotations   map[string]string
	initContainer *corev1.Container
	warnings      []string
}

// injectCapture marks out (a copy of the pod being injected) for capture under opts.CaptureMode
// and rewrites the probes of its application containers. It returns a Skip* reason and message
// when the pod cannot be captured as it is, and modifies out only when it returns no reason.
// Inbound is always captured: that is what makes STRICT hold for clients that dial the app's
// ports; a port that must stay reachable directly is excluded with an annotation.
func injectCapture(out *corev1.Pod, ms *meshv1alpha1.MeshService, opts Options) (warnings []string, reason, message string) {
	if !opts.CaptureMode.Enabled() {
		return nil, "", ""
	}
	result, reason, message := planCapture(out, ms, opts)
	if reason != "" {
		return nil, reason, message
	}
	for key, value := range result.annotations {
		out.Annotations[key] = value
	}
	if result.initContainer != nil {
		out.Spec.InitContainers = append([]corev1.Container{*result.initContainer}, out.Spec.InitContainers...)
	}
	return result.warnings, "", ""
}

// planCapture decides what injectCapture does, with the probes of pod rewritten in place.
func planCapture(pod *corev1.Pod, ms *meshv1alpha1.MeshService, opts Options) (captureResult, string, string) {
	directions := capture.Config{Inbound: true, Outbound: opts.CaptureOutbound && CaptureOutbound(ms)}.Annotations()[capture.AnnotationCapture]
	// The user's exclusions stay as they are, but they must parse: the CNI plugin and the init
	// container refuse a pod whose annotations do not, and that pod would never start.
	annotations := make(map[string]string, len(pod.Annotations)+1)
	for key, value := range pod.Annotations {
		annotations[key] = value
	}
	annotations[capture.AnnotationCapture] = directions
	config, err := capture.ParseAnnotations(annotations)
	if err != nil {
		return captureResult{}, SkipInvalidCaptureAnnotations, fmt.Sprintf("traffic capture is on and the pod's annotations are malformed, "+
			"so the pod could not start with its traffic captured: %v", err)
	}
	originals, err := proxyconfig.ParseOriginalProbes(pod.Annotations[proxyconfig.OriginalProbesAnnotation])
	if err != nil {
		return captureResult{}, SkipInvalidCaptureAnnotations, fmt.Sprintf("traffic capture is on and %v: "+
			"remove the annotation from the pod template, the injector writes it", err)
	}
	if opts.CaptureMode == CaptureModeInitContainer && hasContainerNamed(pod, CaptureInitContainerName) {
		return captureResult{}, SkipNameConflict, fmt.Sprintf("the pod already has a container named %s, which the sidecar needs", CaptureInitContainerName)
	}

	result := captureResult{annotations: map[string]string{capture.AnnotationCapture: directions}}
	rewritten := false
	for _, containers := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range containers {
			c := &containers[i]
			if isSidecarContainer(c.Name) {
				continue
			}
			warnings, changed := rewriteProbes(c, config, originals)
			result.warnings = append(result.warnings, warnings...)
			rewritten = rewritten || changed
		}
	}
	if rewritten {
		encoded, err := originals.Encode()
		if err != nil {
			return captureResult{}, SkipInvalidCaptureAnnotations, fmt.Sprintf("traffic capture is on and the pod's probes cannot be rewritten: %v", err)
		}
		result.annotations[proxyconfig.OriginalProbesAnnotation] = encoded
	}
	if opts.CaptureMode == CaptureModeInitContainer {
		result.initContainer = ptr.To(captureInitContainer(opts))
	}
	return result, "", ""
}

// probeKinds are the probes of a container, by proxyconfig kind.
func probeKinds(c *corev1.Container) []struct {
	kind  string
	probe **corev1.Probe
} {
	return []struct {
		kind  string
		probe **corev1.Probe
	}{
		{proxyconfig.ProbeLiveness, &c.LivenessProbe},
		{proxyconfig.ProbeReadiness, &c.ReadinessProbe},
		{proxyconfig.ProbeStartup, &c.StartupProbe},
	}
}

// rewriteProbes rewrites the HTTP and TCP probes of container c whose port config captures, to
// ask the proxy's AppProbePort instead, and records each original in originals. A probe that
// already asks the proxy (its port, AppProbePort, is never captured) stays as it is, so a
// rewritten pod is never rewritten twice. gRPC probes cannot be rewritten (the proxy's listener
// speaks HTTP): a captured one gets a warning. Exec probes do not use the network.
func rewriteProbes(c *corev1.Container, config capture.Config, originals proxyconfig.OriginalProbes) (warnings []string, changed bool) {
	for _, p := range probeKinds(c) {
		probe := *p.probe
		if probe == nil {
			continue
		}
		switch {
		case probe.HTTPGet != nil:
			if probe.HTTPGet.Host != "" {
				// The kubelet connects to that host, not to the pod: capture never sees the probe.
				continue
			}
		case probe.TCPSocket != nil:
			if probe.TCPSocket.Host != "" {
				continue
			}
		case probe.GRPC != nil:
			if captured(config, int(probe.GRPC.Port)) {
				warnings = append(warnings, fmt.Sprintf("meshlift: the %s probe of container %s is a gRPC probe of port %d, which traffic capture "+
					"redirects to the proxy, so the kubelet's probe will fail; exclude the port with the annotation %s: \"%d\" "+
					"(or make it an HTTP or TCP probe, which the injector rewrites)",
					p.kind, c.Name, probe.GRPC.Port, capture.AnnotationExcludeInboundPorts, probe.GRPC.Port))
			}
			continue
		default: // exec
			continue
		}
		original, port, err := originalProbe(c, probe)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("meshlift: the %s probe of container %s was not rewritten for traffic capture: %v", p.kind, c.Name, err))
			continue
		}
		if !captured(config, port) {
			continue
		}
		probes := originals[c.Name]
		switch p.kind {
		case proxyconfig.ProbeLiveness:
			probes.Liveness = original
		case proxyconfig.ProbeReadiness:
			probes.Readiness = original
		case proxyconfig.ProbeStartup:
			probes.Startup = original
		}
		originals[c.Name] = probes
		*p.probe = rewrittenProbe(probe, c.Name, p.kind)
		changed = true
	}
	return warnings, changed
}

// captured reports whether inbound connections to port go to the proxy.
func captured(config capture.Config, port int) bool {
	if !config.Inbound || port < 1 || port > 65535 {
		return false
	}
	return !slices.Contains(config.ExcludeInboundPorts, uint16(port)) && !slices.Contains(config.ProxyPorts, uint16(port)) &&
		uint16(port) != config.InboundPort && uint16(port) != config.OutboundPort
}

// originalProbe is probe (HTTP or TCP) as the proxy runs it, with its named port resolved
// against the container's ports, and that port.
func originalProbe(c *corev1.Container, probe *corev1.Probe) (*proxyconfig.AppProbe, int, error) {
	original := &proxyconfig.AppProbe{TimeoutSeconds: probe.TimeoutSeconds}
	if probe.HTTPGet != nil {
		port, err := resolvePort(c, probe.HTTPGet.Port)
		if err != nil {
			return nil, 0, err
		}
		h := &proxyconfig.HTTPGetProbe{Path: probe.HTTPGet.Path, Port: port, Scheme: string(probe.HTTPGet.Scheme)}
		for _, header := range probe.HTTPGet.HTTPHeaders {
			h.Headers = append(h.Headers, proxyconfig.HTTPHeader{Name: header.Name, Value: header.Value})
		}
		original.HTTPGet = h
		return original, port, nil
	}
	port, err := resolvePort(c, probe.TCPSocket.Port)
	if err != nil {
		return nil, 0, err
	}
	original.TCPSocket = &proxyconfig.TCPSocketProbe{Port: port}
	return original, port, nil
}

// resolvePort is a probe's port as a number: a named port is looked up in the container's
// ports, as the kubelet does.
func resolvePort(c *corev1.Container, port intstr.IntOrString) (int, error) {
	if port.Type == intstr.Int {
		if port.IntVal < 1 || port.IntVal > 65535 {
			return 0, fmt.Errorf("port %d is not from 1 to 65535", port.IntVal)
		}
		return int(port.IntVal), nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
			return int(p.ContainerPort), nil
		}
	}
	if number, err := strconv.Atoi(port.StrVal); err == nil && number >= 1 && number <= 65535 {
		return number, nil
	}
	return 0, fmt.Errorf("its port %q is not the name of a TCP port of the container; name a declared port or use its number", port.StrVal)
}

// rewrittenProbe is probe asking the proxy's app-probe listener for container's probe of kind,
// with the original's timing.
func rewrittenProbe(probe *corev1.Probe, container, kind string) *corev1.Probe {
	out := probe.DeepCopy()
	out.ProbeHandler = corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Path:   proxyconfig.AppProbePath(container, kind),
		Port:   intstr.FromInt32(proxyconfig.AppProbePort),
		Scheme: corev1.URISchemeHTTP,
	}}
	return out
}

// captureInitContainer sets the capture rules in the pod's network namespace from the pod's
// annotations (meshlift-cni init) and exits; the pod does not start if it fails. It runs as
// root with NET_ADMIN alone, which nftables over netlink needs, and nothing else.
func captureInitContainer(opts Options) corev1.Container {
	return corev1.Container{
		Name:            CaptureInitContainerName,
		Image:           opts.CaptureInitImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Args:            []string{"init", "--annotations=" + AnnotationFile},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		VolumeMounts: []corev1.VolumeMount{{Name: PodInfoVolume, MountPath: PodInfoDir, ReadOnly: true}},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(false),
			RunAsUser:                ptr.To[int64](0),
			RunAsGroup:               ptr.To[int64](0),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN"},
				Drop: []corev1.Capability{"ALL"},
			},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// isSidecarContainer reports whether name is a container the injector adds.
func isSidecarContainer(name string) bool {
	return name == ContainerName || name == SlotContainerName(1) || name == SlotContainerName(2) || name == CaptureInitContainerName
}

func hasContainerNamed(pod *corev1.Pod, name string) bool {
	for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
		if c.Name == name {
			return true
		}
	}
	return false
}

// defaultCaptureInitImage is meshlift-cni of the operator's own version.
func defaultCaptureInitImage() string {
	return CaptureInitImageRepository + ":" + buildinfo.Version
}
