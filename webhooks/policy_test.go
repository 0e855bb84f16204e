package webhooks_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/bundle/kustomize"
	"github.com/meshlift/meshlift/internal/repo"
	"github.com/meshlift/meshlift/internal/rollout"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// The ValidatingAdmissionPolicy of config/policy, as config/default renders it, runs in the real
// kube-apiserver; the operator's service account is impersonated, with RBAC that lets it write
// pods in every way, so what stops it is the policy alone.

// policyMessagePrefix starts every message of the policy.
const policyMessagePrefix = "meshlift operator policy:"

var (
	policyOnce      sync.Once
	policyUser      string
	policyInstalled error
)

// defaultObjects builds config/default as `kubectl apply -k config/default` would apply it.
func defaultObjects(t *testing.T, dir ...string) []*unstructured.Unstructured {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kustomize.Build(filepath.Join(append([]string{root, "config"}, dir...)...))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func findObject(t *testing.T, objs []*unstructured.Unstructured, kind string, into runtime.Object) {
	t.Helper()
	for _, obj := range objs {
		if obj.GetKind() == kind {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, into); err != nil {
				t.Fatalf("%s %s: %v", kind, obj.GetName(), err)
			}
			return
		}
	}
	t.Fatalf("no %s", kind)
}

// The policy config/default installs names the service account config/default runs the
// operator as, whatever namespace and prefix the kustomization gives it.
func TestThePolicyNamesTheOperatorsServiceAccount(t *testing.T) {
	objs := defaultObjects(t, "default")
	sa := &corev1.ServiceAccount{}
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	findObject(t, objs, "ServiceAccount", sa)
	findObject(t, objs, "ValidatingAdmissionPolicy", policy)
	findObject(t, objs, "ValidatingAdmissionPolicyBinding", binding)
	want := fmt.Sprintf("request.userInfo.username == 'system:serviceaccount:' + '%s' + ':' + '%s'", sa.Namespace, sa.Name)
	if len(policy.Spec.MatchConditions) != 1 || policy.Spec.MatchConditions[0].Expression != want {
		t.Errorf("matchConditions = %+v, want the one expression %s", policy.Spec.MatchConditions, want)
	}
	if sa.Namespace != operatorNamespace || sa.Name != "meshlift-controller-manager" {
		t.Errorf("service account %s/%s, want %s/meshlift-controller-manager", sa.Namespace, sa.Name, operatorNamespace)
	}
	if binding.Spec.PolicyName != policy.Name {
		t.Errorf("the binding names policy %q, the policy is %q", binding.Spec.PolicyName, policy.Name)
	}
	// docs/olm.md installs config/policy/olm next to an OLM install: the same names.
	olmPolicy := &admissionregistrationv1.ValidatingAdmissionPolicy{}
	olmBinding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	olm := defaultObjects(t, "policy", "olm")
	findObject(t, olm, "ValidatingAdmissionPolicy", olmPolicy)
	findObject(t, olm, "ValidatingAdmissionPolicyBinding", olmBinding)
	if olmPolicy.Name != policy.Name || olmBinding.Spec.PolicyName != policy.Name || olmPolicy.Spec.MatchConditions[0].Expression != want {
		t.Errorf("config/policy/olm renders %s (binding to %s, %s), want config/default's %s", olmPolicy.Name,
			olmBinding.Spec.PolicyName, olmPolicy.Spec.MatchConditions[0].Expression, policy.Name)
	}
}

// installPodWritePolicy creates config/default's policy and binding once for the package and
// returns the operator's user name.
func installPodWritePolicy(t *testing.T) string {
	t.Helper()
	policyOnce.Do(func() {
		objs := defaultObjects(t, "default")
		sa := &corev1.ServiceAccount{}
		policy := &admissionregistrationv1.ValidatingAdmissionPolicy{}
		binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
		findObject(t, objs, "ServiceAccount", sa)
		findObject(t, objs, "ValidatingAdmissionPolicy", policy)
		findObject(t, objs, "ValidatingAdmissionPolicyBinding", binding)
		policyUser = "system:serviceaccount:" + sa.Namespace + ":" + sa.Name
		for _, obj := range []client.Object{policy, binding} {
			if err := env.Client.Create(context.Background(), obj); err != nil {
				policyInstalled = fmt.Errorf("failed to create %T %s: %w", obj, obj.GetName(), err)
				return
			}
		}
	})
	if policyInstalled != nil {
		t.Fatal(policyInstalled)
	}
	return policyUser
}

// podWrite is one write of a pod; pod is the pod as last read.
type podWrite func(ctx context.Context, c client.Client, pod *corev1.Pod) error

func mergePatch(patch string) podWrite {
	return func(ctx context.Context, c client.Client, pod *corev1.Pod) error {
		return c.Patch(ctx, pod, client.RawPatch(types.MergePatchType, []byte(patch)))
	}
}

// strategic changes a copy of the pod and patches the difference, as the operator's
// controllers do.
func strategic(subresource string, change func(pod *corev1.Pod)) podWrite {
	return func(ctx context.Context, c client.Client, pod *corev1.Pod) error {
		modified := pod.DeepCopy()
		change(modified)
		patch := client.StrategicMergeFrom(pod)
		if subresource == "" {
			return c.Patch(ctx, modified, patch)
		}
		return c.SubResource(subresource).Patch(ctx, modified, patch)
	}
}

// rolloutAction applies a rollout action the way controllers/upgradeplan_controller.go does:
// Action.ApplyPatch as one strategic merge patch with optimistic locking, then Action.ApplyResize
// through pods/resize.
func rolloutAction(action func(pod *corev1.Pod) *rollout.Action) podWrite {
	return func(ctx context.Context, c client.Client, pod *corev1.Pod) error {
		a := action(pod)
		if a.State != nil || len(a.Annotations) > 0 || len(a.Images) > 0 {
			modified, err := a.ApplyPatch(pod)
			if err != nil {
				return err
			}
			if err := c.Patch(ctx, modified, client.StrategicMergeFrom(pod, client.MergeFromWithOptimisticLock{})); err != nil {
				return err
			}
			pod = modified
		}
		if a.Resize != nil {
			modified, err := a.ApplyResize(pod)
			if err != nil {
				return err
			}
			return c.SubResource("resize").Patch(ctx, modified, client.StrategicMergeFrom(pod))
		}
		return nil
	}
}

func appContainer(pod *corev1.Pod) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == "app" { // gen.Pod's

			return &pod.Spec.Containers[i]
		}
	}
	panic("the pod has no container app")
}

func TestThePolicyLetsTheOperatorWritePodsOnlyAsTheRolloutDoes(t *testing.T) {
	operator := installPodWritePolicy(t)
	ctx := context.Background()
	ns, version := meshed(t, "policy", nil)
	allVerbs := []string{"get", "update", "patch"}
	env.Grant(t, "policy", operator, ns, nil, []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Verbs: allVerbs,
		Resources: []string{"pods", "pods/resize", "pods/status", "pods/ephemeralcontainers"},
	}})
	operatorClient, err := client.New(env.As(operator), client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	newPod := func(t *testing.T) *corev1.Pod {
		t.Helper()
		pod := webPod(ns)
		// Requests of its own, so that resizing it keeps the pod's QoS class.
		appContainer(pod).Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}}
		pod.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: "busybox:1"}}
		if err := env.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		if !sidecar.IsInjected(pod) || sidecar.Container(pod, 2) == nil {
			t.Fatalf("the pod was not injected with two slots: %v", pod.Annotations)
		}
		return pod
	}
	v2Image, v2Idle := "meshlift/meshlift-proxy:2.0.0", "meshlift/meshlift-idle:2.0.0"
	swapSlot := func(pod *corev1.Pod) *rollout.Action {
		now := time.Now().UTC().Truncate(time.Second)
		return &rollout.Action{
			Pod: client.ObjectKeyFromObject(pod), UID: pod.UID, Kind: rollout.ActionSwapSlot,
			State: &rollout.PodState{Plan: "to-v2", From: version.Name, To: "proxy-v2", Strategy: meshv1alpha1.StrategyHotUpgrade,
				Phase: rollout.PodWaitingReady, Slot: 2, FromSlot: 1, FromImage: version.Spec.Image, IdleImage: version.Spec.IdleImage,
				ToImage: v2Image, ToIdleImage: v2Idle, StartedAt: now, PhaseSince: now, Attempt: 1},
			Images: []rollout.ImageChange{{Slot: 2, Container: sidecar.SlotContainerName(2), Image: v2Image}},
			Annotations: []rollout.AnnotationChange{
				{Key: meshv1alpha1.AnnotationActiveSlot, Value: "2"},
				{Key: meshv1alpha1.AnnotationVersion, Value: "proxy-v2"},
			},
		}
	}
	resizeSlot := func(pod *corev1.Pod) *rollout.Action {
		return &rollout.Action{Pod: client.ObjectKeyFromObject(pod), UID: pod.UID, Kind: rollout.ActionResizeSlotUp,
			Resize: &rollout.Resize{Slot: 2, Container: sidecar.SlotContainerName(2), Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
			}}}
	}
	retireSlot := func(pod *corev1.Pod) *rollout.Action {
		return &rollout.Action{Pod: client.ObjectKeyFromObject(pod), UID: pod.UID, Kind: rollout.ActionRetireSlot,
			Images: []rollout.ImageChange{{Slot: 1, Container: sidecar.SlotContainerName(1), Image: v2Idle}},
			Annotations: []rollout.AnnotationChange{
				{Key: meshv1alpha1.AnnotationUpgrade, Remove: true},
				{Key: meshv1alpha1.AnnotationEDSExcluded, Remove: true},
			}}
	}
	proxyReady := strategic("status", func(pod *corev1.Pod) {
		pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{
			Type: meshv1alpha1.ReadinessGateProxyReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()})
	})

	allowed := []struct {
		name  string
		write podWrite
	}{
		{"the rollout's resize of the idle slot", rolloutAction(resizeSlot)},
		{"the rollout's slot swap: image, upgrade state, active slot and version", rolloutAction(swapSlot)},
		{"the rollout's retirement of the old slot, its annotations removed", rolloutAction(retireSlot)},
		{"the proxy readiness condition", proxyReady},
		{"the control plane's certificate expiry, with the pod's UID", func(ctx context.Context, c client.Client, pod *corev1.Pod) error {
			return mergePatch(fmt.Sprintf(`{"metadata":{"uid":%q,"annotations":{%q:"2026-12-07T04:00:00Z"}}}`,
				pod.UID, meshv1alpha1.AnnotationCertificateNotAfter))(ctx, c, pod)
		}},
		{"the control plane's exclusion acknowledgement", mergePatch(fmt.Sprintf(`{"metadata":{"annotations":{%q:"true",%q:"true"}}}`,
			meshv1alpha1.AnnotationEDSExcluded, meshv1alpha1.EDSAckAnnotation("meshlift-controller-manager-0")))},
		{"the operator version annotation", mergePatch(fmt.Sprintf(`{"metadata":{"annotations":{%q:"v1.2.3"}}}`, meshv1alpha1.AnnotationOperatorVersion))},
	}
	t.Run("a whole hot upgrade passes", func(t *testing.T) {
		pod := newPod(t)
		waitForPolicy(t, operatorClient, pod)
		for _, step := range allowed {
			current := &corev1.Pod{}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), current); err != nil {
				t.Fatal(err)
			}
			if err := step.write(ctx, operatorClient, current); err != nil {
				t.Fatalf("%s was refused: %v", step.name, err)
			}
		}
		final := &corev1.Pod{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), final); err != nil {
			t.Fatal(err)
		}
		if sidecar.SlotImage(final, 2) != v2Image || sidecar.SlotImage(final, 1) != v2Idle || final.Annotations[meshv1alpha1.AnnotationActiveSlot] != "2" {
			t.Errorf("after the upgrade: slot images %q, %q, active slot %q", sidecar.SlotImage(final, 1), sidecar.SlotImage(final, 2),
				final.Annotations[meshv1alpha1.AnnotationActiveSlot])
		}
		if got := sidecar.Container(final, 2).Resources.Requests.Cpu().String(); got != "50m" {
			t.Errorf("slot 2 requests %s CPU after the resize, want 50m", got)
		}
	})

	refused := []struct {
		name        string
		write       podWrite
		wantMessage string
	}{
		{"patching an application container's image", strategic("", func(pod *corev1.Pod) { appContainer(pod).Image = "attacker/web:evil" }),
			"never an application container"},
		{"patching an application init container's image", strategic("", func(pod *corev1.Pod) {
			for i := range pod.Spec.InitContainers {
				if pod.Spec.InitContainers[i].Name == "setup" {
					pod.Spec.InitContainers[i].Image = "attacker/setup:evil"
				}
			}
		}), "never an application init container"},
		{"resizing an application container", strategic("resize", func(pod *corev1.Pod) {
			appContainer(pod).Resources.Requests[corev1.ResourceCPU] = resource.MustParse("1")
		}), "never an application container"},
		{"adding a label", mergePatch(`{"metadata":{"labels":{"app":"payments"}}}`), "may not change a pod's labels"},
		{"changing an annotation outside meshlift.io", mergePatch(`{"metadata":{"annotations":{"kubectl.kubernetes.io/default-container":"meshlift-proxy-1"}}}`),
			"may change only meshlift.io annotations"},
		{"removing an annotation outside meshlift.io", mergePatch(`{"metadata":{"annotations":{"kubectl.kubernetes.io/default-container":null}}}`),
			"may change only meshlift.io annotations"},
		{"an annotation that only looks like meshlift's", mergePatch(`{"metadata":{"annotations":{"evilmeshlift.io/x":"1"}}}`),
			"may change only meshlift.io annotations"},
		{"adding a finalizer", mergePatch(`{"metadata":{"finalizers":["example.com/hold"]}}`), "may not change a pod's metadata"},
		{"setting a deadline that kills the pod", mergePatch(`{"spec":{"activeDeadlineSeconds":1}}`), "may not change a pod's spec"},
		{"adding an ephemeral container that mounts the handoff socket", strategic("ephemeralcontainers", func(pod *corev1.Pod) {
			pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
				Name: "snoop", Image: "busybox", TerminationMessagePolicy: corev1.TerminationMessageReadFile, ImagePullPolicy: corev1.PullIfNotPresent,
				VolumeMounts: []corev1.VolumeMount{{Name: sidecar.RunVolume, MountPath: sidecar.RunDir}}}})
		}), "only directly, through pods/resize and through pods/status"},
		{"pointing the pod's IP elsewhere", strategic("status", func(pod *corev1.Pod) {
			pod.Status.PodIP, pod.Status.PodIPs = "10.0.0.66", []corev1.PodIP{{IP: "10.0.0.66"}}
		}), "may change only the meshlift.io/proxy-ready condition"},
		{"declaring the pod Ready", strategic("status", func(pod *corev1.Pod) {
			pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue})
		}), "may change only the meshlift.io/proxy-ready condition"},
	}
	for _, tt := range refused {
		t.Run("refuses "+tt.name+" by the operator, not by others", func(t *testing.T) {
			pod := newPod(t)
			waitForPolicy(t, operatorClient, pod)
			err := tt.write(ctx, operatorClient, pod.DeepCopy())
			if err == nil || !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), policyMessagePrefix) ||
				!strings.Contains(err.Error(), tt.wantMessage) {
				t.Fatalf("the operator's write returned %v, want the policy's refusal %q", err, tt.wantMessage)
			}
			if err := tt.write(ctx, env.Client, pod.DeepCopy()); err != nil {
				t.Errorf("the same write by another user was refused: %v", err)
			}
		})
	}

	// The API server itself refuses most changes of a container (only the image may change, and
	// resources through pods/resize); the policy refuses them too (its container rule compares
	// every field), for the day Kubernetes makes more of them mutable.
	t.Run("refuses an environment variable added to an application container", func(t *testing.T) {
		pod := newPod(t)
		err := strategic("", func(pod *corev1.Pod) {
			appContainer(pod).Env = append(appContainer(pod).Env, corev1.EnvVar{Name: "HTTPS_PROXY", Value: "http://attacker:3128"})
		})(ctx, operatorClient, pod.DeepCopy())
		if err == nil {
			t.Fatal("the operator added an environment variable to an application container")
		}
		t.Logf("refused: %v", err)
	})
}

// waitForPolicy waits until the API server enforces the policy: it takes a moment to load a
// new one. The probe is a dry-run write the policy refuses.
func waitForPolicy(t *testing.T, operatorClient client.Client, pod *corev1.Pod) {
	t.Helper()
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		probe := pod.DeepCopy()
		err := operatorClient.Patch(ctx, probe, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"probe":"1"}}}`)), client.DryRunAll)
		return err != nil && strings.Contains(err.Error(), policyMessagePrefix), fmt.Sprintf("a label patch by the operator returned %v", err)
	})
}
