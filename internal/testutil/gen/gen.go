// Package gen builds API objects for tests: gen.Pod("a", gen.SetLabels(...)). Builders keep
// fixtures short and make the one field a test is about stand out.
package gen

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
)

// Namespace is the namespace builders use unless told otherwise.
const Namespace = "default"

// ObjectOption changes the metadata of any object.
type ObjectOption func(*metav1.ObjectMeta)

// SetNamespace sets the namespace.
func SetNamespace(ns string) ObjectOption {
	return func(m *metav1.ObjectMeta) { m.Namespace = ns }
}

// SetLabels adds labels, given as key, value, key, value...
func SetLabels(kv ...string) ObjectOption {
	return func(m *metav1.ObjectMeta) {
		if m.Labels == nil {
			m.Labels = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m.Labels[kv[i]] = kv[i+1]
		}
	}
}

// SetAnnotations adds annotations, given as key, value, key, value...
func SetAnnotations(kv ...string) ObjectOption {
	return func(m *metav1.ObjectMeta) {
		if m.Annotations == nil {
			m.Annotations = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m.Annotations[kv[i]] = kv[i+1]
		}
	}
}

// SetCreated sets the creation timestamp.
func SetCreated(t time.Time) ObjectOption {
	return func(m *metav1.ObjectMeta) { m.CreationTimestamp = metav1.NewTime(t) }
}

// SidecarVersionOption changes a SidecarVersion.
type SidecarVersionOption func(*meshv1alpha1.SidecarVersion)

// SidecarVersion returns a hot-upgrade capable SidecarVersion named name with version semver.
func SidecarVersion(name, semver string, opts ...SidecarVersionOption) *meshv1alpha1.SidecarVersion {
	v := &meshv1alpha1.SidecarVersion{
		TypeMeta:   metav1.TypeMeta{APIVersion: meshv1alpha1.GroupVersion.String(), Kind: "SidecarVersion"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: meshv1alpha1.SidecarVersionSpec{
			Version:    semver,
			Image:      "meshlift/meshlift-proxy:" + semver,
			IdleImage:  "meshlift/meshlift-idle:" + semver,
			HotUpgrade: &meshv1alpha1.HotUpgradeSpec{Protocol: "1"},
		},
	}
	for _, opt := range opts {
		opt(v)
	}
	return v
}

// AsDefault marks the SidecarVersion as the default.
func AsDefault() SidecarVersionOption {
	return func(v *meshv1alpha1.SidecarVersion) { v.Spec.Default = true }
}

// SidecarVersionMeta applies object options to a SidecarVersion.
func SidecarVersionMeta(opts ...ObjectOption) SidecarVersionOption {
	return func(v *meshv1alpha1.SidecarVersion) { applyMeta(&v.ObjectMeta, opts) }
}

// MeshServiceOption changes a MeshService.
type MeshServiceOption func(*meshv1alpha1.MeshService)

// MeshService returns a MeshService selecting pods labelled app=<name>, with one HTTP port.
func MeshService(name string, opts ...MeshServiceOption) *meshv1alpha1.MeshService {
	ms := &meshv1alpha1.MeshService{
		TypeMeta:   metav1.TypeMeta{APIVersion: meshv1alpha1.GroupVersion.String(), Kind: "MeshService"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace},
		Spec: meshv1alpha1.MeshServiceSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Ports:    []meshv1alpha1.MeshServicePort{{Name: "http", Port: 8080, Protocol: meshv1alpha1.ProtocolHTTP}},
		},
	}
	for _, opt := range opts {
		opt(ms)
	}
	return ms
}

// PinVersion sets spec.sidecar.version.
func PinVersion(version string) MeshServiceOption {
	return func(ms *meshv1alpha1.MeshService) { ms.Spec.Sidecar.Version = version }
}

// MeshServiceMeta applies object options to a MeshService.
func MeshServiceMeta(opts ...ObjectOption) MeshServiceOption {
	return func(ms *meshv1alpha1.MeshService) { applyMeta(&ms.ObjectMeta, opts) }
}

// UpgradePlanOption changes an UpgradePlan.
type UpgradePlanOption func(*meshv1alpha1.UpgradePlan)

// UpgradePlan returns a plan of the MeshServices named meshServices to target.
func UpgradePlan(name, target string, meshServices []string, opts ...UpgradePlanOption) *meshv1alpha1.UpgradePlan {
	one := intstr.FromInt32(1)
	p := &meshv1alpha1.UpgradePlan{
		TypeMeta:   metav1.TypeMeta{APIVersion: meshv1alpha1.GroupVersion.String(), Kind: "UpgradePlan"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace},
		Spec: meshv1alpha1.UpgradePlanSpec{
			MeshServices:  meshServices,
			TargetVersion: target,
			Strategy:      meshv1alpha1.UpgradeStrategy{Type: meshv1alpha1.StrategyHotUpgrade, MaxUnavailable: &one},
		},
	}
	for _, opt := range opts {
		opt(p)
	}
	return p
}

// SelectMeshServices makes the plan select MeshServices by label instead of by name.
func SelectMeshServices(matchLabels map[string]string) UpgradePlanOption {
	return func(p *meshv1alpha1.UpgradePlan) {
		p.Spec.MeshServices = nil
		p.Spec.Selector = &metav1.LabelSelector{MatchLabels: matchLabels}
	}
}

// UpgradePlanMeta applies object options to an UpgradePlan.
func UpgradePlanMeta(opts ...ObjectOption) UpgradePlanOption {
	return func(p *meshv1alpha1.UpgradePlan) { applyMeta(&p.ObjectMeta, opts) }
}

// PodOption changes a Pod.
type PodOption func(*corev1.Pod)

// Pod returns a running-to-be pod with one application container.
func Pod(name string, opts ...PodOption) *corev1.Pod {
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "meshlift/demo:1"}},
		},
	}
	for _, opt := range opts {
		opt(pod)
	}
	return pod
}

// PodMeta applies object options to a Pod.
func PodMeta(opts ...ObjectOption) PodOption {
	return func(p *corev1.Pod) { applyMeta(&p.ObjectMeta, opts) }
}

// Injected gives the pod the two proxy slots of a hot-upgrade capable version, slot 1 active,
// and the annotations the webhook writes.
func Injected(meshService, version string) PodOption {
	return func(p *corev1.Pod) {
		PodMeta(SetAnnotations(
			meshv1alpha1.AnnotationMeshService, meshService,
			meshv1alpha1.AnnotationVersion, version,
			meshv1alpha1.AnnotationActiveSlot, "1",
		))(p)
		p.Spec.Containers = append(p.Spec.Containers,
			corev1.Container{Name: "meshlift-proxy-1", Image: "meshlift/meshlift-proxy:" + version},
			corev1.Container{Name: "meshlift-proxy-2", Image: "meshlift/meshlift-idle:" + version},
		)
	}
}

// SetServiceAccount sets the pod's service account.
func SetServiceAccount(name string) PodOption {
	return func(p *corev1.Pod) { p.Spec.ServiceAccountName = name }
}

// PodStatusOption changes a pod's status; tests apply it through the status subresource, since
// envtest has no kubelet.
type PodStatusOption func(*corev1.PodStatus)

// Ready makes the pod Running and Ready with every container ready.
func Ready(pod *corev1.Pod) PodStatusOption {
	return func(s *corev1.PodStatus) { setRunning(pod, s, true) }
}

// NotReady makes the pod Running but not Ready.
func NotReady(pod *corev1.Pod) PodStatusOption {
	return func(s *corev1.PodStatus) { setRunning(pod, s, false) }
}

func setRunning(pod *corev1.Pod, s *corev1.PodStatus, ready bool) {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	now := metav1.Now()
	s.Phase = corev1.PodRunning
	s.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status, LastTransitionTime: now}}
	s.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		s.ContainerStatuses = append(s.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, Ready: ready,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
}

func applyMeta(m *metav1.ObjectMeta, opts []ObjectOption) {
	for _, opt := range opts {
		opt(m)
	}
}
