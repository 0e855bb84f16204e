package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshlift/meshlift/controllers"
	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

func trustBundleKey(ns string) client.ObjectKey {
	return client.ObjectKey{Namespace: ns, Name: controllers.TrustBundleConfigMap}
}

func getTrustBundle(ctx context.Context, ns string) (*corev1.ConfigMap, error) {
	cm := &corev1.ConfigMap{}
	return cm, env.Client.Get(ctx, trustBundleKey(ns), cm)
}

// waitForTrustBundle waits until the namespace's ConfigMap holds the current CA's bundle and
// the label, and returns it.
func waitForTrustBundle(t *testing.T, ns string) *corev1.ConfigMap {
	t.Helper()
	var cm *corev1.ConfigMap
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		var err error
		if cm, err = getTrustBundle(ctx, ns); err != nil {
			return false, err.Error()
		}
		want := string(mesh.Current().TrustBundle())
		switch {
		case cm.Data[controllers.TrustBundleKey] != want:
			return false, "ca.crt is not the current trust bundle " + identity.BundleFingerprint([]byte(want))
		case cm.Labels[identity.LabelPartOf] != identity.PartOf:
			return false, fmt.Sprintf("labels are %v", cm.Labels)
		}
		return true, ""
	})
	return cm
}

// consistentlyNoTrustBundle checks for a while that the namespace gets no ConfigMap.
func consistentlyNoTrustBundle(t *testing.T, ns string) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if _, err := getTrustBundle(context.Background(), ns); err == nil {
			t.Fatalf("namespace %s got a trust bundle ConfigMap", ns)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rotateCA publishes a new CA, as a backend does when it renews or replaces it.
func rotateCA(t *testing.T) {
	t.Helper()
	authority, err := newAuthority()
	if err != nil {
		t.Fatal(err)
	}
	mesh.Set(authority)
}

func TestTheTrustBundleIsPublishedInMeshedNamespacesOnly(t *testing.T) {
	meshed, unmeshed := env.Namespace(t, "bundle-meshed"), env.Namespace(t, "bundle-unmeshed")
	create(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: unmeshed, Name: "plain"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}})
	consistentlyNoTrustBundle(t, meshed)

	create(t, gen.MeshService("web", gen.MeshServiceMeta(gen.SetNamespace(meshed))))
	waitForTrustBundle(t, meshed)
	consistentlyNoTrustBundle(t, unmeshed)
}

func TestTheTrustBundleFollowsTheCA(t *testing.T) {
	first, second := env.Namespace(t, "bundle-follow"), env.Namespace(t, "bundle-follow")
	create(t, gen.MeshService("web", gen.MeshServiceMeta(gen.SetNamespace(first))))
	create(t, gen.MeshService("api", gen.MeshServiceMeta(gen.SetNamespace(second))))
	waitForTrustBundle(t, first)
	waitForTrustBundle(t, second)

	rotateCA(t)
	waitForTrustBundle(t, first)
	waitForTrustBundle(t, second)
}

func TestTheTrustBundleIsRepaired(t *testing.T) {
	ns := env.Namespace(t, "bundle-repair")
	create(t, gen.MeshService("web", gen.MeshServiceMeta(gen.SetNamespace(ns))))
	waitForTrustBundle(t, ns)

	edits := []struct {
		name string
		edit func(*corev1.ConfigMap)
	}{
		{"an edited bundle is restored", func(cm *corev1.ConfigMap) { cm.Data[controllers.TrustBundleKey] = "not a bundle" }},
		{"a removed label is restored", func(cm *corev1.ConfigMap) { delete(cm.Labels, identity.LabelPartOf) }},
		{"a removed key is restored and other keys are left", func(cm *corev1.ConfigMap) { cm.Data = map[string]string{"note": "mine"} }},
	}
	for _, tt := range edits {
		t.Run(tt.name, func(t *testing.T) {
			update(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: controllers.TrustBundleConfigMap}}, func(cm *corev1.ConfigMap) {
				tt.edit(cm)
			})
			waitForTrustBundle(t, ns)
		})
	}
	if cm := waitForTrustBundle(t, ns); cm.Data["note"] != "mine" {
		t.Error("a key the operator does not own was removed")
	}

	t.Run("a deleted ConfigMap is created again", func(t *testing.T) {
		cm, err := getTrustBundle(context.Background(), ns)
		if err != nil {
			t.Fatal(err)
		}
		if err := env.Client.Delete(context.Background(), cm); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
			recreated, err := getTrustBundle(ctx, ns)
			if err != nil {
				return false, err.Error()
			}
			return recreated.UID != cm.UID, "the ConfigMap has not been recreated"
		})
		waitForTrustBundle(t, ns)
	})
}

func TestATrustBundleOutlivesTheLastMeshServiceAndStaysCurrent(t *testing.T) {
	ns := env.Namespace(t, "bundle-left")
	ms := gen.MeshService("web", gen.MeshServiceMeta(gen.SetNamespace(ns)))
	create(t, ms)
	waitForTrustBundle(t, ns)

	if err := env.Client.Delete(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	// Pods of the namespace may still mount it: it stays, and follows the CA.
	rotateCA(t)
	waitForTrustBundle(t, ns)
}

func TestAForeignConfigMapInAnUnmeshedNamespaceIsLeftAlone(t *testing.T) {
	ns := env.Namespace(t, "bundle-foreign")
	foreign := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: controllers.TrustBundleConfigMap},
		Data:       map[string]string{controllers.TrustBundleKey: "someone else's"},
	}
	create(t, foreign)
	rotateCA(t)
	time.Sleep(time.Second)
	cm, err := getTrustBundle(context.Background(), ns)
	if err != nil {
		t.Fatal(err)
	}
	if cm.ResourceVersion != foreign.ResourceVersion {
		t.Errorf("the foreign ConfigMap was changed: %v, labels %v", cm.Data, cm.Labels)
	}
}
