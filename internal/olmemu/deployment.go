package olmemu

import (
	"github.com/operator-framework/api/pkg/operators/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// OperatorConditionEnv is the variable OLM adds to every container: the CSV's name
// (deployment.go deploymentForSpec, inject.InjectEnvIntoDeployment).
const OperatorConditionEnv = "OPERATOR_CONDITION_NAME"

// deploymentForSpec mirrors pkg/controller/install/deployment.go deploymentForSpec, given the
// spec certRequirementsForDeployment returned: the pod template's annotations merged with the
// CSV's (which include the OperatorGroup's olm.operatorGroup, olm.operatorNamespace and
// olm.targetNamespaces), the CSV's deployment label plus olm.managed and the owner labels,
// OPERATOR_CONDITION_NAME in every container, revisionHistoryLimit 1, and the
// olm.deployment-spec-hash label. Not mirrored: the owner reference to the CSV, and the
// Subscription's spec.config overrides (the initializers; an emulated install has no
// Subscription).
func deploymentForSpec(csv *v1alpha1.ClusterServiceVersion, d v1alpha1.StrategyDeploymentSpec) (*appsv1.Deployment, error) {
	dep := &appsv1.Deployment{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		Spec:     *d.Spec.DeepCopy(),
	}
	dep.Name, dep.Namespace = d.Name, csv.Namespace

	// Merge annotations (to avoid losing info from pod template)
	annotations := map[string]string{}
	for k, v := range dep.Spec.Template.GetAnnotations() {
		annotations[k] = v
	}
	for k, v := range csv.GetAnnotations() { // templateAnnotations comes from CSV.Annotations
		annotations[k] = v
	}
	dep.Spec.Template.SetAnnotations(annotations)

	// Set custom labels before CSV owner labels
	labels := map[string]string{}
	for k, v := range d.Label {
		labels[k] = v
	}
	labels[ManagedLabel] = "true"
	for k, v := range ownerLabels(csv) { // ownerutil.AddOwnerLabelsForKind
		labels[k] = v
	}
	dep.Labels = labels

	for i := range dep.Spec.Template.Spec.Containers {
		c := &dep.Spec.Template.Spec.Containers[i]
		c.Env = mergeEnvVars(c.Env, []corev1.EnvVar{{Name: OperatorConditionEnv, Value: csv.Name}})
	}

	// OLM does not support Rollbacks.
	dep.Spec.RevisionHistoryLimit = ptr.To(int32(1))

	hash, err := deepHashObject(&dep.Spec)
	if err != nil {
		return nil, err
	}
	dep.Labels[DeploymentSpecHashLabel] = hash
	return dep, nil
}

// mergeEnvVars mirrors pkg/controller/operators/olm/overrides/inject/inject.go mergeEnvVars: the
// container's variables in their order, overridden by the new ones, then the new ones it lacked.
func mergeEnvVars(containerEnvVars, newEnvVars []corev1.EnvVar) []corev1.EnvVar {
	merged := map[string]corev1.EnvVar{}
	for _, e := range containerEnvVars {
		merged[e.Name] = e
	}
	for _, e := range newEnvVars {
		merged[e.Name] = e
	}
	out := make([]corev1.EnvVar, 0, len(merged))
	for _, e := range containerEnvVars {
		out = append(out, merged[e.Name])
		delete(merged, e.Name)
	}
	for _, e := range newEnvVars {
		if v, ok := merged[e.Name]; ok {
			out = append(out, v)
			delete(merged, e.Name)
		}
	}
	return out
}
