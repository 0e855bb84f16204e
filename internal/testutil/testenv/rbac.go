package testenv

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshlift/meshlift/internal/repo"
)

// GeneratedRules reads the rules of the ClusterRole and of the Role named manager-role in
// config/rbac/role.yaml (generated from the +kubebuilder:rbac markers by `make manifests`), so
// tests can run code with exactly the permissions the operator's ServiceAccount gets.
func GeneratedRules(t testing.TB) (clusterRules, namespacedRules []rbacv1.PolicyRule) {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var role struct {
			Kind  string              `json:"kind"`
			Rules []rbacv1.PolicyRule `json:"rules"`
		}
		if err := decoder.Decode(&role); err != nil {
			break
		}
		switch role.Kind {
		case "ClusterRole":
			clusterRules = role.Rules
		case "Role":
			namespacedRules = role.Rules
		}
	}
	if clusterRules == nil || namespacedRules == nil {
		t.Fatal("config/rbac/role.yaml holds no ClusterRole or no Role: run `make manifests`")
	}
	return clusterRules, namespacedRules
}

// Grant binds clusterRules cluster-wide and namespacedRules in ns to user until the test ends;
// roleName tells the roles of one test apart.
func (e *Env) Grant(t testing.TB, roleName, user, ns string, clusterRules, namespacedRules []rbacv1.PolicyRule) {
	t.Helper()
	ctx := context.Background()
	name := ns + "-" + roleName
	subjects := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}
	objects := []client.Object{
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: clusterRules},
		&rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
			Subjects:   subjects,
		},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Rules: namespacedRules},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
			Subjects:   subjects,
		},
	}
	for _, obj := range objects {
		if err := e.Client.Create(ctx, obj); err != nil {
			t.Fatalf("failed to create %T %s: %v", obj, obj.GetName(), err)
		}
		t.Cleanup(func() { _ = e.Client.Delete(context.Background(), obj) })
	}
}

// As returns credentials that act as user (the test's admin may impersonate anyone).
func (e *Env) As(user string) *rest.Config {
	cfg := rest.CopyConfig(e.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	return cfg
}
