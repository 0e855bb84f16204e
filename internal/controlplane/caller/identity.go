package caller

import (
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/identity"
)

// Keys of a TokenReview's user.extra for a token bound to a pod.
const (
	ExtraPodName = "authentication.kubernetes.io/pod-name"
	ExtraPodUID  = "authentication.kubernetes.io/pod-uid"
)

const serviceAccountUserPrefix = "system:serviceaccount:"

// Binding is what the API server vouches for: the token's service account and the pod it is
// bound to.
type Binding struct {
	Namespace      string
	ServiceAccount string
	PodName        string
	PodUID         types.UID
}

// Pod is the pod the token is bound to.
func (b Binding) Pod() types.NamespacedName {
	return types.NamespacedName{Namespace: b.Namespace, Name: b.PodName}
}

// BindingFromUser reads the user of an authenticated TokenReview: a service account whose token
// is bound to a pod.
func BindingFromUser(user authenticationv1.UserInfo) (Binding, error) {
	rest, ok := strings.CutPrefix(user.Username, serviceAccountUserPrefix)
	namespace, name, split := strings.Cut(rest, ":")
	if !ok || !split || namespace == "" || name == "" || strings.Contains(name, ":") {
		return Binding{}, identity.Refuse(identity.ReasonUnboundToken,
			"the token belongs to %q, not to a service account: send the pod's projected service-account token", user.Username)
	}
	podName, podUID := user.Extra[ExtraPodName], user.Extra[ExtraPodUID]
	if len(podName) != 1 || len(podUID) != 1 || podName[0] == "" || podUID[0] == "" {
		return Binding{}, identity.Refuse(identity.ReasonUnboundToken,
			"the token of service account %s/%s is not bound to a pod: send the projected token the kubelet mounts into the pod", namespace, name)
	}
	return Binding{Namespace: namespace, ServiceAccount: name, PodName: podName[0], PodUID: types.UID(podUID[0])}, nil
}

// Identity is who a caller is, once admitted. Nothing in its requests can change it.
type Identity struct {
	// SPIFFEID is spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
	SPIFFEID       string
	Pod            types.NamespacedName
	PodUID         types.UID
	ServiceAccount string
	// MeshService is the MeshService the pod was injected for, in the pod's namespace ("" if
	// the pod does not say).
	MeshService string
}

// MeshServiceKey is the caller's MeshService.
func (id Identity) MeshServiceKey() types.NamespacedName {
	return types.NamespacedName{Namespace: id.Pod.Namespace, Name: id.MeshService}
}

// Admit decides whether the caller whose token carries binding gets an identity: the pod (nil
// when it does not exist) must be the token's pod (same UID), not be terminating, be injected
// and run under the token's service account.
func Admit(binding Binding, pod *corev1.Pod, trustDomain string) (Identity, error) {
	if err := StillBound(binding.Pod(), binding.PodUID, pod); err != nil {
		return Identity{}, err
	}
	if pod.DeletionTimestamp != nil {
		return Identity{}, identity.Refuse(identity.ReasonPodTerminating,
			"pod %s/%s is terminating: a terminating pod cannot open a new stream", pod.Namespace, pod.Name)
	}
	if pod.Annotations[meshv1alpha1.AnnotationInjectionHash] == "" {
		return Identity{}, identity.Refuse(identity.ReasonNotInjected,
			"pod %s/%s was not injected by meshlift (no %s annotation): only meshed pods get a mesh identity",
			pod.Namespace, pod.Name, meshv1alpha1.AnnotationInjectionHash)
	}
	if sa := serviceAccountOf(pod); sa != binding.ServiceAccount {
		return Identity{}, identity.Refuse(identity.ReasonWrongServiceAccount,
			"pod %s/%s runs as service account %s, the token belongs to %s", pod.Namespace, pod.Name, sa, binding.ServiceAccount)
	}
	return Identity{
		SPIFFEID:       identity.SPIFFEID(trustDomain, pod.Namespace, binding.ServiceAccount),
		Pod:            binding.Pod(),
		PodUID:         binding.PodUID,
		ServiceAccount: binding.ServiceAccount,
		MeshService:    pod.Annotations[meshv1alpha1.AnnotationMeshService],
	}, nil
}

// StillBound checks that pod (nil when it does not exist) is the pod key with UID uid: an
// identity ends with its pod. A pod recreated under the same name is another pod.
func StillBound(key types.NamespacedName, uid types.UID, pod *corev1.Pod) error {
	if pod == nil {
		return identity.Refuse(identity.ReasonPodNotFound,
			"the token is bound to pod %s (UID %s), which does not exist: a token stops working with its pod", key, uid)
	}
	if pod.UID != uid {
		return identity.Refuse(identity.ReasonPodNotFound,
			"the token is bound to pod %s with UID %s, but that pod now has UID %s: the token outlived the pod it was issued for", key, uid, pod.UID)
	}
	return nil
}

// CheckNode checks that the node a caller sent names the pod of its identity.
func CheckNode(node Node, id Identity) error {
	if node.PodName != id.Pod.Name || node.PodNamespace != id.Pod.Namespace {
		return identity.Refuse(identity.ReasonWrongPod,
			"node.metadata names pod %s/%s, but the token is bound to pod %s", node.PodNamespace, node.PodName, id.Pod)
	}
	return nil
}

func serviceAccountOf(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName == "" {
		return "default"
	}
	return pod.Spec.ServiceAccountName
}
