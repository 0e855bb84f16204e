//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
)

// operatorServiceAccount is the operator's identity as config/default installs it.
const operatorServiceAccount = "system:serviceaccount:" + operatorNamespace + ":meshlift-controller-manager"

// asOperator returns a client that acts as the operator's service account (the e2e kubeconfig
// is the cluster's admin, who may impersonate it): whatever the operator's own RBAC allows it,
// and whatever config/policy refuses it.
func asOperator(t *testing.T) client.Client {
	t.Helper()
	impersonated := rest.CopyConfig(cfg)
	impersonated.Impersonate = rest.ImpersonationConfig{
		UserName: operatorServiceAccount,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + operatorNamespace, "system:authenticated"},
	}
	c, err := client.New(impersonated, client.Options{Scheme: k8s.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTheOperatorMayNotRewriteApplicationContainers hot-upgrades a MeshService with the policy of
// config/policy installed (the operator's own pod writes pass it), then patches an application
// container's image as the operator's service account: the API server refuses it with the
// policy's message. The cluster's admin may still make the same change (a dry run here).
func TestTheOperatorMayNotRewriteApplicationContainers(t *testing.T) {
	ctx := context.Background()
	for _, obj := range []client.Object{&admissionregistrationv1.ValidatingAdmissionPolicy{}, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}} {
		if err := k8s.Get(ctx, client.ObjectKey{Name: "meshlift-operator-pod-writes"}, obj); err != nil {
			t.Fatalf("config/default's pod-write policy is not installed: %v", err)
		}
	}

	a := newMeshedApp(t, "e2e-policy", 2, func(ns string) *meshv1alpha1.SidecarVersion { return releasedVersion(ns+"-v2", "2.0.0") })
	a.upgrade(t, meshv1alpha1.StrategyHotUpgrade, nil, meshv1alpha1.PhaseSucceeded)
	a.checkPods(t, 2, a.to, 2)

	pods, err := runningPods(ctx, a.ns, "demo")
	if err != nil || len(pods) == 0 {
		t.Fatalf("no running demo pod (%v)", err)
	}
	pod := &pods[0]
	patch := client.RawPatch(types.StrategicMergePatchType,
		[]byte(`{"spec":{"containers":[{"name":"demo","image":"attacker.example.com/demo:evil"}]}}`))
	err = asOperator(t).Patch(ctx, pod.DeepCopy(), patch)
	if err == nil || !strings.Contains(err.Error(), "meshlift operator policy") || !strings.Contains(err.Error(), "never an application container") {
		t.Fatalf("patching the application's image as %s returned %v, want the policy's refusal", operatorServiceAccount, err)
	}
	if err := k8s.Patch(ctx, pod.DeepCopy(), patch, client.DryRunAll); err != nil {
		t.Errorf("the same patch by the cluster's admin was refused: %v", err)
	}

	after := &corev1.Pod{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), after); err != nil {
		t.Fatal(err)
	}
	for _, c := range after.Spec.Containers {
		if c.Name == "demo" && c.Image != "meshlift/meshlift-demo:dev" {
			t.Errorf("the application container runs %s", c.Image)
		}
	}
}
