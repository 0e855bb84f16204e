package sidecar

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/capture"
	"github.com/meshlift/meshlift/internal/proxyconfig"
)

// The pod contract (ARCHITECTURE.md section 4). The proxy reads the same paths.
const (
	// InboundPort is the proxy's inbound listener.
	InboundPort = 15006
	// AdminPortBase is slot 1's admin port (slot N: AdminPortBase+N-1); a single-slot proxy uses it too.
	AdminPortBase = 15000

	RunVolume     = "meshlift-run"
	RunDir        = "/var/run/meshlift"
	HandoffSocket = RunDir + "/handoff.sock"
	TokenVolume   = "meshlift-token"
	TokenDir      = "/var/run/secrets/meshlift"
	TokenFile     = TokenDir + "/token"
	TokenAudience = "meshlift"
	// CAFile is the trust bundle the proxy verifies the control plane with: the ConfigMap
	// CARootConfigMap (key ca.crt), projected next to the token. Optional, so a pod starts
	// before the operator has published it; kubelet adds the file when it appears.
	CAFile          = TokenDir + "/ca.crt"
	CARootConfigMap = "meshlift-ca-root"
	CARootKey       = "ca.crt"
	PodInfoVolume   = "meshlift-podinfo"
	PodInfoDir      = "/etc/meshlift/podinfo"
	AnnotationFile  = PodInfoDir + "/annotations"

	// EnvSlot tells a slot container which slot it is; everything else is shared by both slots.
	EnvSlot = "MESHLIFT_SLOT"

	// defaultContainerAnnotation tells kubectl which container `kubectl logs/exec` pick.
	defaultContainerAnnotation = "kubectl.kubernetes.io/default-container"
)

// AdminPort is the admin (and probe) port of a slot; 0 means the single proxy container.
func AdminPort(slot int) int32 {
	if slot <= 1 {
		return AdminPortBase
	}
	return AdminPortBase + int32(slot) - 1
}

// SlotContainerName is the container of a slot ("meshlift-proxy-1"); slot 0 is the single proxy.
func SlotContainerName(slot int) string {
	if slot == 0 {
		return ContainerName
	}
	return SlotContainerPrefix + strconv.Itoa(slot)
}

// Options are the operator's injection settings.
type Options struct {
	// ControlPlaneAddress is where proxies reach the operator's SDS/EDS server (host:port).
	ControlPlaneAddress string
	// TrustDomain of the SPIFFE identities.
	TrustDomain string
	// NativeSidecar and HoldApplicationUntilProxyStarts apply when the MeshService does not say.
	NativeSidecar                   bool
	HoldApplicationUntilProxyStarts bool
	// IdleResources are the idle slot's resources; the rollout resizes the slot up before it
	// becomes active. FullIdleResources gives the idle slot the version's resources instead, for
	// clusters without in-place resize.
	IdleResources     corev1.ResourceRequirements
	FullIdleResources bool
	// TokenExpirationSeconds of the projected service account token the proxy authenticates with.
	TokenExpirationSeconds int64
	// CaptureMode says who sets the traffic-capture rules of injected pods; CaptureModeNone (the
	// default) marks no pod and leaves probes alone. Not part of the injection hash unless
	// capture is on, so pods injected without capture keep their hash.
	CaptureMode CaptureMode `json:"-"`
	// CaptureInitImage is the meshlift-cni image the capture init container runs
	// (CaptureModeInitContainer only).
	CaptureInitImage string `json:"-"`
	// CaptureOutbound marks pods for outbound capture too (unless their MeshService opts out).
	// Off by default: the proxy does not serve captured outbound connections (port 15007) yet,
	// and a pod marked for it would have every outbound TCP connection refused.
	CaptureOutbound bool `json:"-"`
}

// DefaultOptions are the documented defaults (docs/injection.md).
func DefaultOptions() Options {
	return Options{
		ControlPlaneAddress:             "meshlift-control-plane.meshlift-system.svc:15012",
		TrustDomain:                     "cluster.local",
		NativeSidecar:                   true,
		HoldApplicationUntilProxyStarts: true,
		IdleResources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1m"), corev1.ResourceMemory: resource.MustParse("8Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")},
		},
		TokenExpirationSeconds: 3600,
		CaptureMode:            CaptureModeNone,
		CaptureInitImage:       defaultCaptureInitImage(),
	}
}

// Skip reasons: the pod is admitted unchanged.
const (
	SkipOptedOut        = "OptedOut"
	SkipAlreadyInjected = "AlreadyInjected"
	SkipHostNetwork     = "HostNetwork"
	SkipPortConflict    = "PortConflict"
	SkipNameConflict    = "NameConflict"
	// SkipReservedVolume: a container of the pod mounts a volume the sidecar reserves
	// (ReservedVolumes). Injected, it would share the proxy's run directory (the handoff socket
	// that hands the inbound listeners over), its token or its pod info.
	SkipReservedVolume = "ReservedVolume"
	// SkipExcludedNamespace: the pod's namespace is never injected (ExcludedNamespace).
	SkipExcludedNamespace = "ExcludedNamespace"
)

// SystemNamespaces are Kubernetes' own namespaces. Their pods are never injected: a sidecar
// there could keep the cluster's own components from starting, and they are not the
// application's to mesh.
var SystemNamespaces = []string{metav1.NamespaceSystem, metav1.NamespacePublic, corev1.NamespaceNodeLease}

// ExcludedNamespace says whether the pods of namespace are never injected, whatever
// MeshService selects them: the SystemNamespaces and the operator's own namespace (the operator
// must never depend on its own injector to start). The injector checks it itself rather than
// relying on its webhook configuration's namespaceSelector, which OLM replaces with the
// OperatorGroup's. It returns SkipExcludedNamespace and a message, or "" when the namespace may
// be injected.
func ExcludedNamespace(namespace, operatorNamespace string) (reason, message string) {
	switch {
	case slices.Contains(SystemNamespaces, namespace):
		return SkipExcludedNamespace, fmt.Sprintf("%s is a Kubernetes system namespace, whose pods are never injected", namespace)
	case namespace == operatorNamespace && operatorNamespace != "":
		return SkipExcludedNamespace, fmt.Sprintf("%s is the operator's namespace, whose pods are never injected", namespace)
	}
	return "", ""
}

// Result of an injection.
type Result struct {
	// Pod is the injected pod, or an unchanged copy when Skipped is set.
	Pod *corev1.Pod
	// Skipped is a Skip* reason when the pod was not injected, and Message says why in words.
	Skipped string
	Message string
	// Warnings are for the client: the pod is injected, but something in it will not work as
	// the user may expect (a gRPC probe of a captured port, for instance).
	Warnings []string
}

// Inject returns pod with the sidecar of version for the MeshService ms, as the pod contract
// describes. It never modifies its arguments. Injecting an injected pod returns it unchanged.
func Inject(pod *corev1.Pod, ms *meshv1alpha1.MeshService, version *meshv1alpha1.SidecarVersion, opts Options) Result {
	out := pod.DeepCopy()
	if reason, message := Precheck(pod); reason != "" {
		return Result{Pod: out, Skipped: reason, Message: message}
	}

	native := ptr.Deref(ms.Spec.Injection.NativeSidecar, opts.NativeSidecar)
	hold := native && ptr.Deref(ms.Spec.Injection.HoldApplicationUntilProxyStarts, opts.HoldApplicationUntilProxyStarts)
	hot := version.HotUpgradeCapable()

	var proxies []corev1.Container
	if hot {
		active := proxyContainer(1, version.Spec.Image, version.Spec.Resources, ms, version, opts, native, hold)
		idleResources := opts.IdleResources
		if opts.FullIdleResources {
			idleResources = version.Spec.Resources
		}
		idle := proxyContainer(2, version.Spec.IdleImage, idleResources, ms, version, opts, native, hold)
		proxies = []corev1.Container{active, idle}
	} else {
		proxies = []corev1.Container{proxyContainer(0, version.Spec.Image, version.Spec.Resources, ms, version, opts, native, hold)}
	}

	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	if _, ok := out.Annotations[defaultContainerAnnotation]; !ok && len(out.Spec.Containers) > 0 {
		out.Annotations[defaultContainerAnnotation] = out.Spec.Containers[0].Name
	}
	if native {
		// First, so that the application's own init containers can already use the mesh.
		out.Spec.InitContainers = append(proxies, out.Spec.InitContainers...)
	} else {
		out.Spec.Containers = append(out.Spec.Containers, proxies...)
	}
	// After the proxies, so that the capture init container goes first of all: the rules are
	// in place before any other container starts.
	warnings, reason, message := injectCapture(out, ms, opts)
	if reason != "" {
		return Result{Pod: pod.DeepCopy(), Skipped: reason, Message: message}
	}
	out.Spec.Volumes = append(out.Spec.Volumes, volumes(opts)...)
	if out.Spec.ServiceAccountName == "" {
		// The projected token needs it, and the identity is the service account's. The
		// ServiceAccount admission plugin sets the same value when it runs before us.
		out.Spec.ServiceAccountName = "default"
	}
	if ms.Spec.Injection.ProxyReadinessGate {
		out.Spec.ReadinessGates = append(out.Spec.ReadinessGates, corev1.PodReadinessGate{ConditionType: meshv1alpha1.ReadinessGateProxyReady})
	}

	out.Annotations[meshv1alpha1.AnnotationVersion] = version.Name
	out.Annotations[meshv1alpha1.AnnotationMeshService] = ms.Name
	if hot {
		out.Annotations[meshv1alpha1.AnnotationActiveSlot] = "1"
	}
	if budget := DrainBudget(ms, version); budget != "" {
		out.Annotations[proxyconfig.DrainMaxDurationAnnotation] = budget
	}
	out.Annotations[meshv1alpha1.AnnotationInjectionHash] = injectionHash(ms, version, opts)
	return Result{Pod: out, Warnings: warnings}
}

// DrainBudget is the value of the meshlift.io/drain-max-duration annotation for pods of ms
// running version: the MeshService's spec.drain.maxDuration, else the SidecarVersion's, else ""
// (the pod keeps an annotation of its own, or the proxy's default applies).
func DrainBudget(ms *meshv1alpha1.MeshService, version *meshv1alpha1.SidecarVersion) string {
	for _, drain := range []*meshv1alpha1.DrainSpec{msDrain(ms), versionDrain(version)} {
		if drain != nil && drain.MaxDuration != nil {
			return drain.MaxDuration.Duration.String()
		}
	}
	return ""
}

func msDrain(ms *meshv1alpha1.MeshService) *meshv1alpha1.DrainSpec {
	if ms == nil {
		return nil
	}
	return ms.Spec.Drain
}

func versionDrain(version *meshv1alpha1.SidecarVersion) *meshv1alpha1.DrainSpec {
	if version == nil {
		return nil
	}
	return version.Spec.Drain
}

// Precheck says whether a pod must be left alone, before any version is looked at: it opted out,
// is already injected, uses the host network, has a container that mounts a volume the sidecar
// reserves, or has a container, volume or port the sidecar needs. It returns a Skip* reason and a
// message, or "" when the pod can be injected.
func Precheck(pod *corev1.Pod) (reason, message string) {
	switch {
	case OptedOut(pod):
		return SkipOptedOut, fmt.Sprintf("the pod opted out with %s: \"false\"", meshv1alpha1.AnnotationInject)
	case pod.Annotations[meshv1alpha1.AnnotationInjectionHash] != "":
		return SkipAlreadyInjected, "the pod already carries a sidecar"
	case pod.Spec.HostNetwork:
		return SkipHostNetwork, "the pod uses the host network, where the proxy's ports would collide with other pods"
	}
	if container, volume := reservedVolumeMount(pod); volume != "" {
		return SkipReservedVolume, fmt.Sprintf("container %s mounts volume %s, which only the sidecar may mount (it reserves %s): "+
			"give the pod's own volume another name and mount that", container, volume, strings.Join(ReservedVolumes(), ", "))
	}
	if name := conflictingName(pod); name != "" {
		return SkipNameConflict, fmt.Sprintf("the pod already has a container or volume named %s, which the sidecar needs", name)
	}
	if port := conflictingPort(pod); port != 0 {
		return SkipPortConflict, fmt.Sprintf("a container of the pod declares port %d, which the proxy needs (15000-15099 is reserved)", port)
	}
	return "", ""
}

// proxyContainer renders one proxy container; slot 0 is the single container of a version that
// cannot hot-upgrade. Both slots are identical but for image, resources and MESHLIFT_SLOT:
// only image and (through pods/resize) resources can change in place, and the slot's admin port
// comes from MESHLIFT_SLOT, so no command, args or probe has to differ.
func proxyContainer(slot int, image string, resources corev1.ResourceRequirements, ms *meshv1alpha1.MeshService,
	version *meshv1alpha1.SidecarVersion, opts Options, native, hold bool) corev1.Container {
	adminPort := AdminPort(slot)
	probe := func(failureThreshold int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/ready", Port: intstr.FromInt32(adminPort),
			}},
			PeriodSeconds: 1, TimeoutSeconds: 1, FailureThreshold: failureThreshold, SuccessThreshold: 1,
		}
	}
	c := corev1.Container{
		Name:            SlotContainerName(slot),
		Image:           image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Args:            ProxyArgs(ms, version, opts),
		Env:             proxyEnv(slot, ms, version, opts),
		Ports:           []corev1.ContainerPort{{Name: "ml-admin-" + strconv.Itoa(max(slot, 1)), ContainerPort: adminPort, Protocol: corev1.ProtocolTCP}},
		Resources:       *resources.DeepCopy(),
		ReadinessProbe:  probe(3),
		VolumeMounts: []corev1.VolumeMount{
			{Name: RunVolume, MountPath: RunDir},
			{Name: TokenVolume, MountPath: TokenDir, ReadOnly: true},
			{Name: PodInfoVolume, MountPath: PodInfoDir, ReadOnly: true},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To(int64(capture.DefaultProxyUID)),
			RunAsGroup:               ptr.To(int64(capture.DefaultProxyUID)),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	if native {
		c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
		if hold {
			// The kubelet starts the next containers only once this probe passed: the application
			// never sees the proxy's listeners missing.
			c.StartupProbe = probe(300)
		}
	}
	return c
}

// ProxyArgs are the proxy's arguments, rendered from the MeshService; both slots share them.
func ProxyArgs(ms *meshv1alpha1.MeshService, version *meshv1alpha1.SidecarVersion, opts Options) []string {
	mode := ms.Spec.MTLS.Mode
	if mode == "" {
		mode = meshv1alpha1.MTLSStrict
	}
	args := []string{
		"--meshservice=" + ms.Name,
		"--control-plane=" + opts.ControlPlaneAddress,
		"--inbound-port=" + strconv.Itoa(InboundPort),
		"--mtls-mode=" + string(mode),
	}
	for _, p := range ms.Spec.Ports {
		protocol := p.Protocol
		if protocol == "" {
			protocol = meshv1alpha1.ProtocolTCP
		}
		args = append(args, fmt.Sprintf("--port=%s:%d:%s", p.Name, p.Port, protocol))
	}
	for _, u := range ms.Spec.Upstreams {
		args = append(args, fmt.Sprintf("--upstream=%s:%s:%d", qualify(u.MeshService, ms.Namespace), u.Port, u.LocalPort))
	}
	return append(args, version.Spec.Args...)
}

func proxyEnv(slot int, ms *meshv1alpha1.MeshService, version *meshv1alpha1.SidecarVersion, opts Options) []corev1.EnvVar {
	fieldRef := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}
	}
	env := []corev1.EnvVar{
		{Name: EnvSlot, Value: strconv.Itoa(slot)},
		{Name: "MESHLIFT_POD_NAME", ValueFrom: fieldRef("metadata.name")},
		{Name: "MESHLIFT_POD_NAMESPACE", ValueFrom: fieldRef("metadata.namespace")},
		{Name: "MESHLIFT_POD_IP", ValueFrom: fieldRef("status.podIP")},
		{Name: "MESHLIFT_SERVICE_ACCOUNT", ValueFrom: fieldRef("spec.serviceAccountName")},
		{Name: "MESHLIFT_TRUST_DOMAIN", Value: opts.TrustDomain},
		{Name: "MESHLIFT_TOKEN_FILE", Value: TokenFile},
		{Name: "MESHLIFT_CA_FILE", Value: CAFile},
		{Name: "MESHLIFT_ANNOTATIONS_FILE", Value: AnnotationFile},
		{Name: "MESHLIFT_HANDOFF_SOCKET", Value: HandoffSocket},
	}
	return append(env, version.Spec.Env...)
}

// volumes are the same for both layouts: a single proxy also reads its token and annotations,
// and keeps its run directory for the drain on shutdown.
func volumes(opts Options) []corev1.Volume {
	run := corev1.Volume{Name: RunVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
		Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(resource.MustParse("1Mi")),
	}}}
	token := corev1.Volume{Name: TokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: TokenAudience, ExpirationSeconds: ptr.To(opts.TokenExpirationSeconds), Path: "token",
			}},
			{ConfigMap: &corev1.ConfigMapProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: CARootConfigMap},
				Items:                []corev1.KeyToPath{{Key: CARootKey, Path: CARootKey}},
				Optional:             ptr.To(true),
			}},
		},
	}}}
	podInfo := corev1.Volume{Name: PodInfoVolume, VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
		Items: []corev1.DownwardAPIVolumeFile{{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.annotations"}}},
	}}}
	return []corev1.Volume{run, token, podInfo}
}

// injectionHash digests everything that shaped the injected layout, so the rollout controller
// can tell a pod injected with other settings.
func injectionHash(ms *meshv1alpha1.MeshService, version *meshv1alpha1.SidecarVersion, opts Options) string {
	// The capture settings count only when capture is on: a pod injected without capture has
	// the hash it had before capture existed.
	type captureSettings struct {
		Mode      CaptureMode
		InitImage string `json:",omitempty"`
		Outbound  bool   `json:",omitempty"`
	}
	var captureHash *captureSettings
	if opts.CaptureMode.Enabled() {
		captureHash = &captureSettings{Mode: opts.CaptureMode, Outbound: opts.CaptureOutbound}
		if opts.CaptureMode == CaptureModeInitContainer {
			captureHash.InitImage = opts.CaptureInitImage
		}
	}
	data, _ := json.Marshal(struct {
		MeshService meshv1alpha1.MeshServiceSpec
		Version     string
		Spec        meshv1alpha1.SidecarVersionSpec
		Options     Options
		Capture     *captureSettings `json:",omitempty"`
	}{ms.Spec, version.Name, version.Spec, opts, captureHash})
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

// qualify turns an upstream "name" into "name.namespace"; "name.namespace" stays as it is.
func qualify(meshService, namespace string) string {
	if strings.Contains(meshService, ".") {
		return meshService
	}
	return meshService + "." + namespace
}

// ReservedVolumes are the names of the volumes the injector adds: no container of the
// application may mount them, nor may the pod declare them.
func ReservedVolumes() []string { return []string{RunVolume, TokenVolume, PodInfoVolume} }

// reservedVolumeMount returns a container of the pod (init, regular or ephemeral) that mounts a
// reserved volume, and the volume. Such a mount needs no volume of the pod's own to be valid once
// injected: the injector would add the volume and hand the container the proxy's handoff socket
// (or its token), whatever UID the container runs as.
func reservedVolumeMount(pod *corev1.Pod) (container, volume string) {
	reserved := ReservedVolumes()
	check := func(name string, mounts []corev1.VolumeMount, devices []corev1.VolumeDevice) (string, string) {
		for _, m := range mounts {
			if slices.Contains(reserved, m.Name) {
				return name, m.Name
			}
		}
		for _, d := range devices {
			if slices.Contains(reserved, d.Name) {
				return name, d.Name
			}
		}
		return "", ""
	}
	for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
		if container, volume := check(c.Name, c.VolumeMounts, c.VolumeDevices); volume != "" {
			return container, volume
		}
	}
	for _, c := range pod.Spec.EphemeralContainers {
		if container, volume := check(c.Name, c.VolumeMounts, c.VolumeDevices); volume != "" {
			return container, volume
		}
	}
	return "", ""
}

// conflictingName returns a container or volume name of the pod that the sidecar needs.
func conflictingName(pod *corev1.Pod) string {
	reserved := append([]string{ContainerName, SlotContainerName(1), SlotContainerName(2)}, ReservedVolumes()...)
	for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
		if slices.Contains(reserved, c.Name) {
			return c.Name
		}
	}
	for _, v := range pod.Spec.Volumes {
		if slices.Contains(reserved, v.Name) {
			return v.Name
		}
	}
	return ""
}

// conflictingPort returns a port in the proxy's reserved range that a container declares.
func conflictingPort(pod *corev1.Pod) int32 {
	for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
		for _, p := range c.Ports {
			if p.ContainerPort >= 15000 && p.ContainerPort <= 15099 {
				return p.ContainerPort
			}
		}
	}
	return 0
}

// SelectMeshService picks the MeshService a pod is injected for among those of its namespace
// whose selector matches it: the oldest (then by name). The others are returned so the caller
// can warn about the overlap.
func SelectMeshService(pod *corev1.Pod, candidates []meshv1alpha1.MeshService) (selected *meshv1alpha1.MeshService, others []string) {
	var matching []*meshv1alpha1.MeshService
	for i := range candidates {
		ms := &candidates[i]
		if ms.Namespace != pod.Namespace || ms.DeletionTimestamp != nil {
			continue
		}
		selector, err := metav1.LabelSelectorAsSelector(&ms.Spec.Selector)
		if err != nil || selector.Empty() || !selector.Matches(labels.Set(pod.Labels)) {
			continue
		}
		matching = append(matching, ms)
	}
	if len(matching) == 0 {
		return nil, nil
	}
	slices.SortFunc(matching, func(a, b *meshv1alpha1.MeshService) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	for _, ms := range matching[1:] {
		others = append(others, ms.Name)
	}
	return matching[0], others
}
