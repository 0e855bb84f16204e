package caller_test

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/controlplane/caller"
	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/testutil/gen"
)

func boundUser(username, podName, podUID string) authenticationv1.UserInfo {
	user := authenticationv1.UserInfo{Username: username, Extra: map[string]authenticationv1.ExtraValue{}}
	if podName != "" {
		user.Extra[caller.ExtraPodName] = authenticationv1.ExtraValue{podName}
	}
	if podUID != "" {
		user.Extra[caller.ExtraPodUID] = authenticationv1.ExtraValue{podUID}
	}
	return user
}

func TestBindingFromUser(t *testing.T) {
	for _, tc := range []struct {
		name   string
		user   authenticationv1.UserInfo
		want   caller.Binding
		reason identity.Reason
	}{
		{
			name: "reads the service account and the bound pod",
			user: boundUser("system:serviceaccount:shop:web", "web-1", "u-1"),
			want: caller.Binding{Namespace: "shop", ServiceAccount: "web", PodName: "web-1", PodUID: "u-1"},
		},
		{name: "refuses a user that is not a service account", user: boundUser("alice", "web-1", "u-1"), reason: identity.ReasonUnboundToken},
		{name: "refuses a malformed service-account user name", user: boundUser("system:serviceaccount:shop", "web-1", "u-1"), reason: identity.ReasonUnboundToken},
		{name: "refuses a token that is not bound to a pod", user: boundUser("system:serviceaccount:shop:web", "", ""), reason: identity.ReasonUnboundToken},
		{name: "refuses a pod binding without a UID", user: boundUser("system:serviceaccount:shop:web", "web-1", ""), reason: identity.ReasonUnboundToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := caller.BindingFromUser(tc.user)
			if tc.reason != "" {
				wantRefusal(t, err, tc.reason, codes.Unauthenticated)
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("BindingFromUser() = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func injectedPod(opts ...gen.PodOption) *corev1.Pod {
	pod := gen.Pod("web-1", gen.PodMeta(gen.SetNamespace("shop"), gen.SetAnnotations(
		meshv1alpha1.AnnotationInjectionHash, "h1", meshv1alpha1.AnnotationMeshService, "web")), gen.SetServiceAccount("web"))
	pod.UID = "u-1"
	for _, opt := range opts {
		opt(pod)
	}
	return pod
}

func TestAdmit(t *testing.T) {
	binding := caller.Binding{Namespace: "shop", ServiceAccount: "web", PodName: "web-1", PodUID: "u-1"}
	terminating := metav1.Now()
	for _, tc := range []struct {
		name   string
		pod    *corev1.Pod
		reason identity.Reason
		code   codes.Code
	}{
		{name: "admits the injected pod the token is bound to", pod: injectedPod()},
		{name: "refuses when the pod does not exist", pod: nil, reason: identity.ReasonPodNotFound, code: codes.Unauthenticated},
		{name: "refuses when the pod was recreated under the same name", pod: injectedPod(func(p *corev1.Pod) { p.UID = "u-2" }),
			reason: identity.ReasonPodNotFound, code: codes.Unauthenticated},
		{name: "refuses a terminating pod", pod: injectedPod(func(p *corev1.Pod) { p.DeletionTimestamp = &terminating }),
			reason: identity.ReasonPodTerminating, code: codes.PermissionDenied},
		{name: "refuses a pod that was not injected", pod: injectedPod(func(p *corev1.Pod) { delete(p.Annotations, meshv1alpha1.AnnotationInjectionHash) }),
			reason: identity.ReasonNotInjected, code: codes.PermissionDenied},
		{name: "refuses a pod running under another service account", pod: injectedPod(gen.SetServiceAccount("admin")),
			reason: identity.ReasonWrongServiceAccount, code: codes.PermissionDenied},
		{name: "refuses a pod running under the default service account when the token is another's", pod: injectedPod(gen.SetServiceAccount("")),
			reason: identity.ReasonWrongServiceAccount, code: codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := caller.Admit(binding, tc.pod, "example.org")
			if tc.reason != "" {
				wantRefusal(t, err, tc.reason, tc.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := caller.Identity{SPIFFEID: "spiffe://example.org/ns/shop/sa/web", Pod: types.NamespacedName{Namespace: "shop", Name: "web-1"},
				PodUID: "u-1", ServiceAccount: "web", MeshService: "web"}
			if id != want {
				t.Fatalf("Admit() = %+v, want %+v", id, want)
			}
		})
	}
}

func node(fields map[string]*structpb.Value) *corev3.Node {
	return &corev3.Node{Id: "web-1.shop", Metadata: &structpb.Struct{Fields: fields}}
}

func str(s string) *structpb.Value { return structpb.NewStringValue(s) }

func TestParseAndCheckNode(t *testing.T) {
	id := caller.Identity{SPIFFEID: "spiffe://example.org/ns/shop/sa/web", Pod: types.NamespacedName{Namespace: "shop", Name: "web-1"}}
	for _, tc := range []struct {
		name   string
		node   *corev3.Node
		reason identity.Reason
		code   codes.Code
	}{
		{name: "accepts the caller's own pod", node: node(map[string]*structpb.Value{
			caller.MetaPodName: str("web-1"), caller.MetaPodNamespace: str("shop"), caller.MetaCSR: str("-----BEGIN CERTIFICATE REQUEST-----"),
			caller.MetaSlot: str("2"), "EXTRA": structpb.NewNumberValue(1),
		})},
		{name: "refuses a first request without a node", node: nil, reason: identity.ReasonMalformedRequest, code: codes.InvalidArgument},
		{name: "refuses a node that does not name its pod", node: node(map[string]*structpb.Value{caller.MetaPodName: str("web-1")}),
			reason: identity.ReasonMalformedRequest, code: codes.InvalidArgument},
		{name: "refuses a pod name that is not a string", node: node(map[string]*structpb.Value{
			caller.MetaPodName: structpb.NewBoolValue(true), caller.MetaPodNamespace: str("shop"),
		}), reason: identity.ReasonMalformedRequest, code: codes.InvalidArgument},
		{name: "refuses a huge CSR", node: node(map[string]*structpb.Value{
			caller.MetaPodName: str("web-1"), caller.MetaPodNamespace: str("shop"), caller.MetaCSR: str(string(make([]byte, identity.MaxCSRSize+1))),
		}), reason: identity.ReasonMalformedRequest, code: codes.InvalidArgument},
		{name: "refuses a node naming another pod", node: node(map[string]*structpb.Value{
			caller.MetaPodName: str("web-2"), caller.MetaPodNamespace: str("shop"),
		}), reason: identity.ReasonWrongPod, code: codes.PermissionDenied},
		{name: "refuses a node naming the same pod name in another namespace", node: node(map[string]*structpb.Value{
			caller.MetaPodName: str("web-1"), caller.MetaPodNamespace: str("bank"),
		}), reason: identity.ReasonWrongPod, code: codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := caller.ParseNode(tc.node)
			if err == nil {
				err = caller.CheckNode(n, id)
			}
			if tc.reason != "" {
				wantRefusal(t, err, tc.reason, tc.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n.Slot != "2" || string(n.CSR) != "-----BEGIN CERTIFICATE REQUEST-----" {
				t.Fatalf("ParseNode() = %+v", n)
			}
		})
	}
}
