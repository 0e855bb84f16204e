package podcache

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/status"
	"github.com/meshlift/meshlift/internal/testutil/gen"
)

// fullPod is an injected pod with everything a cluster fills in: managed fields and kubectl's
// last applied configuration, an app container with environment, ports, probes, mounts and
// resources, an app init container that finished with a message, volumes, and the status a
// kubelet reports (image and container IDs, mounts, users, enacted resources, a crash loop with
// its messages, a pending resize).
func fullPod(t testing.TB) *corev1.Pod {
	t.Helper()
	pod := gen.Pod("web-1", gen.PodMeta(gen.SetNamespace("shop"), gen.SetLabels("app", "web", "pod-template-hash", "7d9f8c6b5"),
		gen.SetAnnotations(corev1.LastAppliedConfigAnnotation, `{"apiVersion":"v1","kind":"Pod"}`, "team", "shop",
			meshv1alpha1.EDSAckAnnotation("meshlift-0"), "true", "notmeshlift.io/x", "y")))
	pod.UID, pod.ResourceVersion, pod.Generation = "0d4f5a6e-1b2c-4d3e-8f9a-0b1c2d3e4f5a", "4711", 2
	pod.CreationTimestamp = metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	pod.DeletionTimestamp, pod.Finalizers = new(metav1.NewTime(time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC))), []string{"example.com/keep"}
	pod.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationUpdate,
		FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:spec":{}}`)}}}
	pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d9f8c6b5",
		UID: "3f1e9a52-8c1d-4a5e-9b7f-2d6c0e4a1b93", Controller: new(true), BlockOwnerDeletion: new(true)}}
	app := &pod.Spec.Containers[0]
	app.Env = []corev1.EnvVar{{Name: "A", Value: "b"}}
	app.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	app.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}}
	app.Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
	}
	app.VolumeMounts = []corev1.VolumeMount{{Name: "config", MountPath: "/etc/web"}}
	pod.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "shop/migrate:1", Args: []string{"--all"}}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "web-config"}}}}}
	pod.Spec.ServiceAccountName, pod.Spec.NodeName, pod.Spec.RestartPolicy = "web", "node-1", corev1.RestartPolicyAlways
	pod.Spec.Tolerations = []corev1.Toleration{{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists}}

	ms := gen.MeshService("web", gen.MeshServiceMeta(gen.SetNamespace("shop")))
	ms.Spec.Injection.ProxyReadinessGate = true
	version := gen.SidecarVersion("v1", "1.0.0")
	version.Spec.Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
	}
	out := sidecar.Inject(pod, ms, version, sidecar.DefaultOptions()).Pod

	started := metav1.NewTime(time.Date(2026, 1, 2, 3, 5, 0, 0, time.UTC))
	out.Status = corev1.PodStatus{
		ObservedGeneration: 2,
		Phase:              corev1.PodRunning,
		Message:            "the pod runs",
		Reason:             "Running",
		HostIP:             "192.168.0.10",
		HostIPs:            []corev1.HostIP{{IP: "192.168.0.10"}},
		PodIP:              "10.0.0.1",
		PodIPs:             []corev1.PodIP{{IP: "10.0.0.1"}},
		StartTime:          &started,
		QOSClass:           corev1.PodQOSBurstable,
	}
	for _, c := range []corev1.PodConditionType{corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled, meshv1alpha1.ReadinessGateProxyReady} {
		out.Status.Conditions = append(out.Status.Conditions, corev1.PodCondition{Type: c, Status: corev1.ConditionTrue, LastTransitionTime: started})
	}
	out.Status.Conditions = append(out.Status.Conditions, corev1.PodCondition{Type: corev1.PodResizePending, Status: corev1.ConditionTrue,
		Reason: corev1.PodReasonInfeasible, Message: "Node didn't have enough capacity: memory", LastTransitionTime: started})
	statusOf := func(c *corev1.Container, n int) corev1.ContainerStatus {
		return corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, Ready: true, Started: new(true), RestartCount: 1,
			ImageID:              "docker.io/" + c.Image + "@sha256:0123",
			ContainerID:          fmt.Sprintf("containerd://%064d", n),
			State:                corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Message: "the last log lines"}},
			Resources:            c.Resources.DeepCopy(),
			AllocatedResources:   c.Resources.Requests.DeepCopy(),
			VolumeMounts:         []corev1.VolumeMountStatus{{Name: "config", MountPath: "/etc/web"}},
			User:                 &corev1.ContainerUser{Linux: &corev1.LinuxContainerUser{UID: 65532, GID: 65532}},
		}
	}
	for i := range out.Spec.InitContainers {
		out.Status.InitContainerStatuses = append(out.Status.InitContainerStatuses, statusOf(&out.Spec.InitContainers[i], i))
	}
	for i := range out.Spec.Containers {
		out.Status.ContainerStatuses = append(out.Status.ContainerStatuses, statusOf(&out.Spec.Containers[i], 10+i))
	}
	for i := range out.Status.InitContainerStatuses {
		if s := &out.Status.InitContainerStatuses[i]; s.Name == "migrate" {
			s.Ready, s.State = false, corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				Reason: "Completed", Message: "migrated 12 tables", ContainerID: "containerd://0a", StartedAt: started, FinishedAt: started}}
		}
	}
	out.Status.ContainerStatuses[0].Ready = false
	out.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
		Reason: "CrashLoopBackOff", Message: "back-off 5m0s restarting failed container=web"}}
	return out
}

// reads are the fields of a cached pod the operator reads (the controllers, the control plane,
// the rollout planner) and what it derives from them: Slim must keep every one.
var reads = []struct {
	field string
	read  func(*corev1.Pod) any
}{
	{"metadata.name", func(p *corev1.Pod) any { return p.Name }},
	{"metadata.namespace", func(p *corev1.Pod) any { return p.Namespace }},
	{"metadata.uid", func(p *corev1.Pod) any { return p.UID }},
	{"metadata.resourceVersion", func(p *corev1.Pod) any { return p.ResourceVersion }},
	{"metadata.generation", func(p *corev1.Pod) any { return p.Generation }},
	{"metadata.creationTimestamp", func(p *corev1.Pod) any { return p.CreationTimestamp }},
	{"metadata.deletionTimestamp", func(p *corev1.Pod) any { return p.DeletionTimestamp }},
	{"metadata.finalizers", func(p *corev1.Pod) any { return p.Finalizers }},
	{"metadata.labels", func(p *corev1.Pod) any { return p.Labels }},
	{"the annotations of the meshlift.io domain and its subdomains", func(p *corev1.Pod) any {
		a := map[string]string{}
		for k, v := range p.Annotations {
			if strings.HasPrefix(k, "meshlift.io/") || strings.Contains(k, ".meshlift.io/") {
				a[k] = v
			}
		}
		return a
	}},
	{"metadata.ownerReferences", func(p *corev1.Pod) any { return p.OwnerReferences }},
	{"spec.serviceAccountName", func(p *corev1.Pod) any { return p.Spec.ServiceAccountName }},
	{"spec.nodeName", func(p *corev1.Pod) any { return p.Spec.NodeName }},
	{"spec.readinessGates", func(p *corev1.Pod) any { return p.Spec.ReadinessGates }},
	{"spec.hostNetwork", func(p *corev1.Pod) any { return p.Spec.HostNetwork }},
	{"spec.restartPolicy", func(p *corev1.Pod) any { return p.Spec.RestartPolicy }},
	{"the proxy containers' name, image, resources and restart policy", func(p *corev1.Pod) any {
		var proxies []any
		for slot := range 3 {
			if c := sidecar.Container(p, slot); c != nil {
				proxies = append(proxies, []any{c.Name, c.Image, c.Resources, c.RestartPolicy})
			}
		}
		return proxies
	}},
	{"status.observedGeneration", func(p *corev1.Pod) any { return p.Status.ObservedGeneration }},
	{"status.phase", func(p *corev1.Pod) any { return p.Status.Phase }},
	{"the Ready, proxy readiness, PodResizePending and PodResizeInProgress conditions", func(p *corev1.Pod) any {
		var kept []corev1.PodCondition
		for _, c := range p.Status.Conditions {
			switch c.Type {
			case corev1.PodReady, meshv1alpha1.ReadinessGateProxyReady, corev1.PodResizePending, corev1.PodResizeInProgress:
				kept = append(kept, c)
			}
		}
		return kept
	}},
	{"status.podIP", func(p *corev1.Pod) any { return p.Status.PodIP }},
	{"the proxy container statuses' name, image, readiness, restart count, started flag and state but its messages", func(p *corev1.Pod) any {
		var out []any
		for _, statuses := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
			for _, s := range statuses {
				if !strings.HasPrefix(s.Name, sidecar.ContainerName) {
					continue
				}
				state := s.State.DeepCopy()
				if state.Waiting != nil {
					state.Waiting.Message = ""
				}
				if state.Terminated != nil {
					state.Terminated.Message, state.Terminated.ContainerID = "", ""
				}
				out = append(out, []any{s.Name, s.Image, s.Ready, s.RestartCount, s.Started, state})
			}
		}
		return out
	}},
	{"the resources the proxy containers' statuses report", func(p *corev1.Pod) any {
		var out []any
		for _, statuses := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
			for _, s := range statuses {
				if strings.HasPrefix(s.Name, sidecar.ContainerName) {
					out = append(out, s.Resources)
				}
			}
		}
		return out
	}},
	{"sidecar.Version, ActiveSlot, IdleSlot and ActiveContainerName", func(p *corev1.Pod) any {
		return []any{sidecar.Version(p), sidecar.ActiveSlot(p), sidecar.IdleSlot(p), sidecar.ActiveContainerName(p)}
	}},
	{"sidecar.ProxyReady, HotUpgradeCapable, HasProxyReadinessGate and ProxyReadyCondition", func(p *corev1.Pod) any {
		return []any{sidecar.ProxyReady(p), sidecar.HotUpgradeCapable(p), sidecar.HasProxyReadinessGate(p), sidecar.ProxyReadyCondition(p)}
	}},
	{"status.Counted and sidecar.PodReady", func(p *corev1.Pod) any { return []any{status.Counted(p), sidecar.PodReady(p)} }},
	{"the controller owner", func(p *corev1.Pod) any { return metav1.GetControllerOf(p) }},
}

// dropped are the big fields no reader reads: Slim must drop every one.
var dropped = []struct {
	field string
	kept  func(*corev1.Pod) bool
}{
	{"metadata.managedFields", func(p *corev1.Pod) bool { return p.ManagedFields != nil }},
	{"other annotations (kubectl's last applied configuration, and others)", func(p *corev1.Pod) bool {
		_, applied := p.Annotations[corev1.LastAppliedConfigAnnotation]
		_, team := p.Annotations["team"]
		return applied || team
	}},
	{"spec.volumes", func(p *corev1.Pod) bool { return p.Spec.Volumes != nil }},
	{"spec.tolerations", func(p *corev1.Pod) bool { return p.Spec.Tolerations != nil }},
	{"the app containers", func(p *corev1.Pod) bool {
		for _, containers := range [][]corev1.Container{p.Spec.Containers, p.Spec.InitContainers} {
			for _, c := range containers {
				if !strings.HasPrefix(c.Name, sidecar.ContainerName) {
					return true
				}
			}
		}
		return false
	}},
	{"the proxy containers' args, environment, ports, probes, mounts and security context", func(p *corev1.Pod) bool {
		for slot := range 3 {
			if c := sidecar.Container(p, slot); c != nil &&
				(c.Args != nil || c.Env != nil || c.Ports != nil || c.ReadinessProbe != nil || c.StartupProbe != nil || c.VolumeMounts != nil || c.SecurityContext != nil) {
				return true
			}
		}
		return false
	}},
	{"status.message and reason, host IPs, pod IPs, start time and QoS class", func(p *corev1.Pod) bool {
		s := p.Status
		return s.Message != "" || s.Reason != "" || s.HostIP != "" || s.HostIPs != nil || s.PodIPs != nil || s.StartTime != nil || s.QOSClass != ""
	}},
	{"the container statuses' image and container IDs, last state, allocated resources, mounts and users", func(p *corev1.Pod) bool {
		for _, statuses := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
			for _, s := range statuses {
				if s.ImageID != "" || s.ContainerID != "" || s.LastTerminationState != (corev1.ContainerState{}) || s.AllocatedResources != nil ||
					s.VolumeMounts != nil || s.User != nil {
					return true
				}
			}
		}
		return false
	}},
	{"the app containers' statuses", func(p *corev1.Pod) bool {
		for _, statuses := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
			for _, s := range statuses {
				if !strings.HasPrefix(s.Name, sidecar.ContainerName) {
					return true
				}
			}
		}
		return false
	}},
	{"the other conditions (Initialized, ContainersReady, PodScheduled)", func(p *corev1.Pod) bool {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodInitialized || c.Type == corev1.ContainersReady || c.Type == corev1.PodScheduled {
				return true
			}
		}
		return false
	}},
	{"the messages of container states", func(p *corev1.Pod) bool {
		for _, statuses := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
			for _, s := range statuses {
				if s.State.Waiting != nil && s.State.Waiting.Message != "" || s.State.Terminated != nil && s.State.Terminated.Message != "" {
					return true
				}
			}
		}
		return false
	}},
}

func containerNames(containers []corev1.Container) []string {
	var names []string
	for _, c := range containers {
		names = append(names, c.Name)
	}
	return names
}

func TestSlimKeepsWhatTheOperatorReadsAndDropsTheRest(t *testing.T) {
	for _, native := range []bool{true, false} {
		t.Run(fmt.Sprintf("native sidecars %t", native), func(t *testing.T) {
			full := fullPod(t)
			if !native {
				// The proxies as regular containers, after the app container.
				full.Spec.Containers = append(full.Spec.Containers, full.Spec.InitContainers[:2]...)
				full.Spec.InitContainers = full.Spec.InitContainers[2:]
				full.Status.ContainerStatuses = append(full.Status.ContainerStatuses, full.Status.InitContainerStatuses[:2]...)
				full.Status.InitContainerStatuses = full.Status.InitContainerStatuses[2:]
			}
			if sidecar.Container(full, 1) == nil || sidecar.Container(full, 2) == nil {
				t.Fatalf("the fixture has no hot-upgrade slots: %v, %v", containerNames(full.Spec.InitContainers), containerNames(full.Spec.Containers))
			}
			slim := full.DeepCopy()
			if _, err := Transform(slim); err != nil {
				t.Fatal(err)
			}
			for _, r := range reads {
				if got, want := r.read(slim), r.read(full); !equality.Semantic.DeepEqual(got, want) {
					t.Errorf("%s: got %+v, want %+v", r.field, got, want)
				}
			}
			for _, d := range dropped {
				if d.kept(slim) {
					t.Errorf("%s: kept", d.field)
				}
				if !d.kept(full) {
					t.Errorf("%s: not in the fixture, so the test proves nothing", d.field)
				}
			}
			again := slim.DeepCopy()
			Slim(again)
			if !equality.Semantic.DeepEqual(again, slim) {
				t.Error("a second Slim changed the pod")
			}
		})
	}
}

func TestPodsOfAWorkloadShareWhatTheyHaveInCommon(t *testing.T) {
	first, second := fullPod(t), fullPod(t)
	second.Name, second.UID = "web-2", "6e1f0a7e-4b8d-4e2f-9a3c-5d7e8f9a0b1c"
	Slim(first)
	Slim(second)
	same := func(a, b any) bool { return reflect.ValueOf(a).Pointer() == reflect.ValueOf(b).Pointer() }
	for what, shared := range map[string]bool{
		"labels":                 same(first.Labels, second.Labels),
		"owner references":       same(first.OwnerReferences, second.OwnerReferences),
		"proxy containers":       same(first.Spec.InitContainers, second.Spec.InitContainers),
		"idle resources":         same(sidecar.Container(first, 2).Resources.Requests, sidecar.Container(second, 2).Resources.Requests),
		"enacted idle resources": same(first.Status.InitContainerStatuses[1].Resources.Limits, second.Status.InitContainerStatuses[1].Resources.Limits),
	} {
		if !shared {
			t.Errorf("two pods of a workload hold two copies of their %s", what)
		}
	}
	// What the cache hands out is a deep copy: changing it leaves the other pods alone.
	changed := first.DeepCopy()
	sidecar.Container(changed, 2).Resources.Requests[corev1.ResourceCPU] = resource.MustParse("2")
	sidecar.Container(changed, 2).Image = "meshlift/meshlift-proxy:2.0.0"
	changed.Labels["app"] = "other"
	if c := sidecar.Container(second, 2); c.Image == "meshlift/meshlift-proxy:2.0.0" || c.Resources.Requests.Cpu().String() != "1m" || second.Labels["app"] != "web" {
		t.Error("changing a copy of one pod changed another pod")
	}
}

// The rollout controller patches pods with strategic merge patches between a cached pod and its
// modified copy (annotations and images; then the resize subresource): with slim pods they must
// carry the change and nothing the cache dropped, and applied to the full pod they must change
// only that.
func TestPatchesBetweenSlimPodsCarryOnlyTheChange(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*corev1.Pod)
	}{
		{"swapping a slot", func(p *corev1.Pod) {
			p.Annotations[meshv1alpha1.AnnotationActiveSlot] = "2"
			sidecar.Container(p, 2).Image = "meshlift/meshlift-proxy:2.0.0"
		}},
		{"resizing the idle slot", func(p *corev1.Pod) {
			sidecar.Container(p, 2).Resources = corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
			}
		}},
		{"setting the proxy readiness condition", func(p *corev1.Pod) {
			for i := range p.Status.Conditions {
				if p.Status.Conditions[i].Type == meshv1alpha1.ReadinessGateProxyReady {
					p.Status.Conditions[i].Status = corev1.ConditionFalse
				}
			}
		}},
	} {
		for layout, full := range filterFixtures(t) {
			if sidecar.Container(full, 2) == nil {
				continue
			}
			t.Run(tc.name+" with "+layout, func(t *testing.T) {
				slim := full.DeepCopy()
				Slim(slim)
				modified := slim.DeepCopy()
				tc.change(modified)
				patch, err := strategicpatch.CreateTwoWayMergePatch(mustJSON(t, slim), mustJSON(t, modified), corev1.Pod{})
				if err != nil {
					t.Fatal(err)
				}
				patched, err := strategicpatch.StrategicMergePatch(mustJSON(t, full), patch, corev1.Pod{})
				if err != nil {
					t.Fatal(err)
				}
				want := full.DeepCopy()
				tc.change(want)
				if !bytes.Equal(normalJSON(t, patched), mustJSON(t, want)) {
					t.Errorf("patch %s turned the full pod into\n%s\nwant\n%s", patch, normalJSON(t, patched), mustJSON(t, want))
				}
			})
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// normalJSON is a pod's JSON re-encoded from its Go type, so that it compares with mustJSON's.
func normalJSON(t *testing.T, raw []byte) []byte {
	t.Helper()
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		t.Fatal(err)
	}
	return mustJSON(t, &pod)
}

func TestSlimEndpointSliceKeepsWhatDrainsRead(t *testing.T) {
	ready, serving := true, false
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "web-abcde", Namespace: "shop", Labels: map[string]string{discoveryv1.LabelServiceName: "web"},
			Annotations:     map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-02T03:04:05Z"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: "web"}},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager"}}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(8080))}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "web-1", UID: "uid-1"}, NodeName: new("node-1"), Zone: new("a")},
			{Addresses: []string{"10.0.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}},
			{Addresses: []string{"192.168.0.1"}, TargetRef: &corev1.ObjectReference{Kind: "Node", Name: "node-1"}},
		},
	}
	if _, err := Transform(slice); err != nil {
		t.Fatal(err)
	}
	want := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-abcde", Namespace: "shop", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "web-1", UID: "uid-1"}}},
	}
	if !equality.Semantic.DeepEqual(slice, want) {
		t.Errorf("got %+v\nwant %+v", slice, want)
	}
}

func TestTransformPassesOtherObjects(t *testing.T) {
	cm := &corev1.ConfigMap{Data: map[string]string{"a": "b"}}
	got, err := Transform(cm)
	if err != nil || got.(*corev1.ConfigMap).Data["a"] != "b" {
		t.Errorf("got %v, %v", got, err)
	}
}

// BenchmarkCachedPod reports what one pod costs the cache (cached-B/pod): fullPod as the API
// server encodes it, filtered by FilterTransport, decoded and slimmed; and what that allocates
// (B/op).
func BenchmarkCachedPod(b *testing.B) {
	encoded := encode(b, fullPod(b))
	// What is held is measured on up to 10,000 pods, the benchmark's cluster.
	held := make([]any, 0, min(b.N, 10_000))
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		filtered, err := filterObject(nil, encoded)
		if err != nil {
			b.Fatal(err)
		}
		obj, _, err := podSerializer.Decode(filtered, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		slim, _ := Transform(obj)
		if len(held) < cap(held) {
			held = append(held, slim)
		}
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(len(held)), "cached-B/pod")
	runtime.KeepAlive(held)
}
