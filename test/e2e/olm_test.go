//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/olmemu"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

const (
	olmNamespace = "meshlift-olm"
	// olmControlPlaneIP is the emulated install's fixed control-plane ClusterIP (the local
	// cluster has no DNS; config/local gives meshlift-system 10.96.0.20).
	olmControlPlaneIP = "10.96.0.21"
)

// TestTheOperatorWorksInstalledTheWayOLMInstallsIt stops the normally installed operator and
// removes its webhook configurations, installs bundle/ into meshlift-olm the way OLM does
// (internal/olmemu: OLM's RBAC, webhook Service, serving-certificate Secret and mounts, webhook
// configurations with OLM's CA and no namespaceSelector), and runs the demo on it: injected pods
// with certificates, and a hot upgrade under load with no failed request. The operator must
// not touch the webhook configurations OLM owns, and must not inject its own namespace although
// the webhook is called for every namespace. At the end the emulated install is removed and the
// original operator restored.
func TestTheOperatorWorksInstalledTheWayOLMInstallsIt(t *testing.T) {
	ctx := context.Background()

	// 1. Take the normally installed operator out of the way, and put it back at the end.
	key := client.ObjectKey{Namespace: operatorNamespace, Name: "meshlift-controller-manager"}
	deploy := &appsv1.Deployment{}
	if err := k8s.Get(ctx, key, deploy); err != nil {
		t.Fatal(err)
	}
	replicas := ptr.Deref(deploy.Spec.Replicas, 1)
	mutating := &admissionregistrationv1.MutatingWebhookConfiguration{}
	validating := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: "meshlift-mutating-webhook-configuration"}, mutating); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Get(ctx, client.ObjectKey{Name: "meshlift-validating-webhook-configuration"}, validating); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, saved := range []client.Object{mutating, validating} {
			obj := saved.DeepCopyObject().(client.Object)
			obj.SetResourceVersion("")
			obj.SetUID("")
			obj.SetCreationTimestamp(metav1.Time{})
			obj.SetManagedFields(nil)
			if err := k8s.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Errorf("restoring %s: %v", obj.GetName(), err)
			}
		}
		scaleOperator(t, replicas)
		waitAvailable(t, key, replicas)
		waitForTheInjector(t)
	})
	scaleOperator(t, 0)
	waitForNoOperatorPod(t)
	for _, obj := range []client.Object{mutating.DeepCopy(), validating.DeepCopy()} {
		if err := k8s.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}

	// 2. Install the bundle into meshlift-olm the way OLM does, adapted for the local cluster.
	createFreshNamespace(t, olmNamespace)
	checkClusterIPFree(t, olmControlPlaneIP)
	bundle, err := olmemu.LoadBundle(filepath.Join("..", "..", "bundle", "manifests"))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := olmemu.IssueCertificates(bundle.CSV, olmNamespace, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	objs, err := olmemu.Install(bundle, olmemu.Options{Namespace: olmNamespace, Certificates: certs})
	if err != nil {
		t.Fatal(err)
	}
	if err := olmemu.AdaptForLocalCluster(objs, olmemu.LocalCluster{
		Deployment: "meshlift-controller-manager", Container: "manager",
		Image: "meshlift/meshlift-operator:dev", PullPolicy: corev1.PullIfNotPresent,
		ControlPlaneService: "meshlift-control-plane", ControlPlaneIP: olmControlPlaneIP,
	}); err != nil {
		t.Fatal(err)
	}
	inst, err := olmemu.Apply(ctx, k8s, objs)
	t.Cleanup(func() {
		// Runs before the restore above (cleanups run last-registered first).
		if inst != nil {
			if err := inst.Uninstall(context.Background(), k8s); err != nil {
				t.Errorf("uninstalling: %v", err)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	olmKey := client.ObjectKey{Namespace: olmNamespace, Name: "meshlift-controller-manager"}
	// As many replicas as the CSV's Deployment asks for (config/manager: 2).
	waitAvailable(t, olmKey, ptr.Deref(bundle.CSV.Spec.InstallStrategy.StrategySpec.DeploymentSpecs[0].Spec.Replicas, 1))
	// The webhook configurations as the emulated OLM wrote them.
	caPEM := certs["meshlift-controller-manager"].CABundle
	written := map[string]string{}
	for _, desc := range bundle.CSV.Spec.WebhookDefinitions {
		name := olmemu.WebhookName(olmNamespace, bundle.CSV.Name, desc.GenerateName)
		rv, selector, ca := webhookState(t, string(desc.Type), name)
		if !bytes.Equal(ca, caPEM) {
			t.Errorf("%s: caBundle is not the emulated OLM CA", name)
		}
		if selector != nil && (len(selector.MatchLabels) != 0 || len(selector.MatchExpressions) != 0) {
			t.Errorf("%s: namespaceSelector %v, want every namespace", name, selector)
		}
		written[name] = rv
	}
	waitForTheInjector(t)

	// 3. The demo: injected pods with certificates, then a hot upgrade under load.
	a := newMeshedApp(t, "e2e-olm", 3, func(ns string) *meshv1alpha1.SidecarVersion { return releasedVersion(ns+"-v2", "2.0.0") })
	loader := a.startLoad(t, "client", 90*time.Second)
	_, took := a.upgrade(t, meshv1alpha1.StrategyHotUpgrade, nil, meshv1alpha1.PhaseSucceeded)
	t.Logf("HotUpgrade under the OLM-installed operator: 3 pods in %s", took.Round(time.Second))
	if r := loadResult(t, loader); r.Failed != 0 || r.OK == 0 {
		t.Errorf("requests failed during the hot upgrade: %+v", r)
	}
	a.checkPods(t, 3, a.to, 2)

	// 4. The operator's own namespace is not injected, though the webhook sees every namespace.
	version := idleOnlyVersion(olmNamespace + "-proxy")
	if err := k8s.Create(ctx, version); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), version) })
	if err := k8s.Create(ctx, gen.MeshService("web", gen.PinVersion(version.Name), gen.MeshServiceMeta(gen.SetNamespace(olmNamespace)))); err != nil {
		t.Fatal(err)
	}
	// The same MeshService elsewhere gets its pods injected: the cache has caught up.
	ns, _ := webMeshService(t, "e2e-olm-web")
	testenv.Eventually(t, time.Minute, func(ctx context.Context) (bool, string) {
		pod := webPodIn(ns)
		if err := k8s.Create(ctx, pod, client.DryRunAll); err != nil {
			return false, err.Error()
		}
		return sidecar.IsInjected(pod), "a dry-run pod outside the operator's namespace is not injected yet"
	})
	pod := webPodIn(olmNamespace)
	if err := k8s.Create(ctx, pod, client.DryRunAll); err != nil {
		t.Fatal(err)
	}
	if sidecar.IsInjected(pod) {
		t.Errorf("a pod in the operator's namespace %s was injected", olmNamespace)
	}

	// 5. In external mode the operator wrote nothing into OLM's webhook configurations.
	for _, desc := range bundle.CSV.Spec.WebhookDefinitions {
		name := olmemu.WebhookName(olmNamespace, bundle.CSV.Name, desc.GenerateName)
		rv, _, ca := webhookState(t, string(desc.Type), name)
		if rv != written[name] || !bytes.Equal(ca, caPEM) {
			t.Errorf("%s changed: resourceVersion %s (was %s), caBundle is the OLM CA: %v", name, rv, written[name], bytes.Equal(ca, caPEM))
		}
	}
}

// webhookState returns the resourceVersion, the namespaceSelector and the caBundle of the single
// webhook of a configuration of type (MutatingAdmissionWebhook or ValidatingAdmissionWebhook).
func webhookState(t testing.TB, typ, name string) (string, *metav1.LabelSelector, []byte) {
	t.Helper()
	if typ == "MutatingAdmissionWebhook" {
		m := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, m); err != nil {
			t.Fatal(err)
		}
		if len(m.Webhooks) != 1 {
			t.Fatalf("%s has %d webhooks", name, len(m.Webhooks))
		}
		return m.ResourceVersion, m.Webhooks[0].NamespaceSelector, m.Webhooks[0].ClientConfig.CABundle
	}
	v := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, v); err != nil {
		t.Fatal(err)
	}
	if len(v.Webhooks) != 1 {
		t.Fatalf("%s has %d webhooks", name, len(v.Webhooks))
	}
	return v.ResourceVersion, v.Webhooks[0].NamespaceSelector, v.Webhooks[0].ClientConfig.CABundle
}

// waitAvailable waits until the Deployment has rolled out want available replicas.
func waitAvailable(t testing.TB, key client.ObjectKey, want int32) {
	t.Helper()
	testenv.Eventually(t, 3*time.Minute, func(ctx context.Context) (bool, string) {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, key, d); err != nil {
			return false, err.Error()
		}
		s := d.Status
		return s.ObservedGeneration >= d.Generation && s.AvailableReplicas == want && s.UpdatedReplicas == want && s.Replicas == want,
			fmt.Sprintf("deployment %s status %+v", key, s)
	})
}

// createFreshNamespace creates the namespace name, first waiting for a leftover one (from an
// interrupted run) to be deleted, and deletes it at the end.
func createFreshNamespace(t testing.TB, name string) {
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8s.Delete(ctx, ns.DeepCopy()); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	testenv.Eventually(t, 3*time.Minute, func(ctx context.Context) (bool, string) {
		err := k8s.Create(ctx, ns.DeepCopy())
		return err == nil, fmt.Sprintf("creating namespace %s: %v", name, err)
	})
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns.DeepCopy()) })
}

// checkClusterIPFree fails the test when a Service outside the emulated install already has ip.
func checkClusterIPFree(t testing.TB, ip string) {
	t.Helper()
	services := &corev1.ServiceList{}
	if err := k8s.List(context.Background(), services); err != nil {
		t.Fatal(err)
	}
	for _, s := range services.Items {
		if s.Spec.ClusterIP == ip && s.Namespace != olmNamespace {
			t.Fatalf("the ClusterIP %s the emulated install needs is taken by Service %s/%s", ip, s.Namespace, s.Name)
		}
	}
}
