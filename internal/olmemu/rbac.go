package olmemu

import (
	"fmt"

	"github.com/operator-framework/api/pkg/operators/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// rbacForClusterServiceVersion mirrors pkg/controller/registry/resolver/rbac.go
// RBACForClusterServiceVersion and the order in which steps.go NewServiceAccountStepResources
// turns it into steps: per ServiceAccount, the ServiceAccount (unless "default"), its Roles,
// RoleBindings, ClusterRoles and ClusterRoleBindings. OLM keeps the ServiceAccounts in a map (so
// their order is random when there are several); here they come in order of first mention.
// Not mirrored: the owner references to the CSV.
func rbacForClusterServiceVersion(csv *v1alpha1.ClusterServiceVersion) ([]client.Object, error) {
	type perms struct {
		sa                    *corev1.ServiceAccount
		roles, clusterRoles   []client.Object
		bindings, clusterRBss []client.Object
	}
	bySA := map[string]*perms{}
	var order []string
	get := func(name string) *perms {
		if p, ok := bySA[name]; ok {
			return p
		}
		sa := &corev1.ServiceAccount{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}}
		// OLM names the namespace only when the ServiceAccount first appears in permissions; the
		// InstallPlan creates it in the CSV's namespace either way.
		sa.Name, sa.Namespace = name, csv.Namespace
		bySA[name] = &perms{sa: sa}
		order = append(order, name)
		return bySA[name]
	}
	strategy := csv.Spec.InstallStrategy.StrategySpec

	// Resolve Permissions
	for _, permission := range strategy.Permissions {
		p := get(permission.ServiceAccountName)
		name, err := generateName(fmt.Sprintf("%s-%s", csv.Name, permission.ServiceAccountName), struct {
			Name       string                                 `json:"name,omitempty"`
			Permission v1alpha1.StrategyDeploymentPermissions `json:"permission"`
		}{Name: csv.Name, Permission: permission})
		if err != nil {
			return nil, err
		}
		role := &rbacv1.Role{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: csv.Namespace, Labels: ownerLabels(csv)},
			Rules:      permission.Rules,
		}
		hash, err := policyRuleHash(permission.Rules)
		if err != nil {
			return nil, err
		}
		role.Labels[PermissionsHashLabel] = hash
		p.roles = append(p.roles, role)

		binding := &rbacv1.RoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: role.Name, Namespace: csv.Namespace, Labels: ownerLabels(csv)},
			RoleRef:    rbacv1.RoleRef{Kind: "Role", Name: role.Name, APIGroup: rbacv1.GroupName},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: permission.ServiceAccountName, Namespace: csv.Namespace}},
		}
		if hash, err = roleRefAndSubjectsHash(binding.RoleRef, binding.Subjects); err != nil {
			return nil, err
		}
		binding.Labels[PermissionsHashLabel] = hash
		p.bindings = append(p.bindings, binding)
	}

	// Resolve ClusterPermissions
	for _, permission := range strategy.ClusterPermissions {
		p := get(permission.ServiceAccountName)
		name, err := generateName(csv.Name, struct {
			Name       string                                 `json:"name,omitempty"`
			Namespace  string                                 `json:"namespace,omitempty"`
			Permission v1alpha1.StrategyDeploymentPermissions `json:"permission"`
		}{Name: csv.Name, Namespace: csv.Namespace, Permission: permission})
		if err != nil {
			return nil, err
		}
		role := &rbacv1.ClusterRole{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: ownerLabels(csv)},
			Rules:      permission.Rules,
		}
		hash, err := policyRuleHash(permission.Rules)
		if err != nil {
			return nil, err
		}
		role.Labels[PermissionsHashLabel] = hash
		p.clusterRoles = append(p.clusterRoles, role)

		// OLM sets a namespace on the (cluster-scoped) ClusterRoleBinding; the API server drops
		// it, and so does this emulation.
		binding := &rbacv1.ClusterRoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: role.Name, Labels: ownerLabels(csv)},
			RoleRef:    rbacv1.RoleRef{Kind: "ClusterRole", Name: role.Name, APIGroup: rbacv1.GroupName},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: permission.ServiceAccountName, Namespace: csv.Namespace}},
		}
		if hash, err = roleRefAndSubjectsHash(binding.RoleRef, binding.Subjects); err != nil {
			return nil, err
		}
		binding.Labels[PermissionsHashLabel] = hash
		p.clusterRBss = append(p.clusterRBss, binding)
	}

	var out []client.Object
	for _, name := range order {
		p := bySA[name]
		if name != "default" {
			out = append(out, p.sa)
		}
		out = append(out, p.roles...)
		out = append(out, p.bindings...)
		out = append(out, p.clusterRoles...)
		out = append(out, p.clusterRBss...)
	}
	return out, nil
}
