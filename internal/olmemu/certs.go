package olmemu

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/operator-framework/api/pkg/operators/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshlift/meshlift/internal/webhookcert/pki"
)

// ServiceName is the webhook Service of a Deployment: certresources.go ServiceName.
func ServiceName(deploymentName string) string { return deploymentName + "-service" }

// SecretName is the serving-certificate Secret of a Service: certresources.go SecretName.
func SecretName(serviceName string) string { return serviceName + "-cert" }

// IssueCertificates issues, with internal/webhookcert/pki, a CA and a serving certificate for
// the webhook Service of every Deployment that a webhookdefinition of csv names, installed in
// namespace. OLM (certresources.go installCertRequirements) makes one CA per install, signs one
// serving pair per Deployment for HostnamesForService (<service>.<ns>, .svc, .svc.cluster.local)
// valid 2 years, organization "Red Hat, Inc."; pki makes one CA per Deployment, for the same
// names plus the bare Service name, with its own lifetimes. The API server verifies
// <service>.<ns>.svc, which both cover.
func IssueCertificates(csv *v1alpha1.ClusterServiceVersion, namespace string, now time.Time) (map[string]pki.Bundle, error) {
	out := map[string]pki.Bundle{}
	for _, w := range csv.Spec.WebhookDefinitions {
		if _, ok := out[w.DeploymentName]; ok {
			continue
		}
		b, err := pki.Issue(pki.Service{Namespace: namespace, Name: ServiceName(w.DeploymentName)}, now)
		if err != nil {
			return nil, err
		}
		out[w.DeploymentName] = b
	}
	return out, nil
}

// servicePort mirrors certresources.go webhookDescriptionWithCAPEM.getServicePort: named after
// the container port (443 by default), targetPort the CSV's targetPort or else the container port.
func servicePort(w v1alpha1.WebhookDescription) corev1.ServicePort {
	containerPort := 443
	if w.ContainerPort > 0 {
		containerPort = int(w.ContainerPort)
	}
	targetPort := intstr.FromInt(containerPort)
	if w.TargetPort != nil {
		targetPort = *w.TargetPort
	}
	return corev1.ServicePort{Name: strconv.Itoa(containerPort), Port: int32(containerPort), TargetPort: targetPort}
}

// servicePorts mirrors certresources.go getServicePorts: each distinct port once, in order.
func servicePorts(descs []v1alpha1.WebhookDescription) []corev1.ServicePort {
	result := []corev1.ServicePort{}
	for _, d := range descs {
		p := servicePort(d)
		found := false
		for _, q := range result {
			if q == p {
				found = true
				break
			}
		}
		if !found {
			result = append(result, p)
		}
	}
	return result
}

// certRequirementsForDeployment mirrors certresources.go installCertRequirementsForDeployment:
// it returns, in OLM's order, the Service <deployment>-service, the Secret
// <deployment>-service-cert, the Role and RoleBinding that let the Deployment's ServiceAccount
// get that Secret, the ClusterRoleBinding to system:auth-delegator and the RoleBinding to
// extension-apiserver-authentication-reader in kube-system; and the Deployment spec with the
// certificate volumes and the olmcahash annotation (AddDefaultCertVolumeAndVolumeMounts,
// SetCAAnnotation), and the CA PEM for the webhooks' caBundle.
func certRequirementsForDeployment(csv *v1alpha1.ClusterServiceVersion, d v1alpha1.StrategyDeploymentSpec, cert pki.Bundle) ([]client.Object, appsv1.DeploymentSpec, []byte, error) {
	depSpec := *d.Spec.DeepCopy()
	ns := csv.Namespace
	if depSpec.Selector == nil {
		return nil, depSpec, nil, fmt.Errorf("deployment %s has no selector", d.Name)
	}
	if len(cert.Cert) == 0 || len(cert.Key) == 0 || len(cert.CABundle) == 0 {
		return nil, depSpec, nil, fmt.Errorf("the certificate for Deployment %s is incomplete", d.Name)
	}
	managed := func() map[string]string { return map[string]string{ManagedLabel: "true"} }

	// apply Service (OLM: server-side apply, field manager olm.install, with a non-blocking owner
	// reference to the CSV, not mirrored).
	serviceName := ServiceName(d.Name)
	svc := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: serviceName, Namespace: ns, Labels: managed()},
		Spec: corev1.ServiceSpec{
			Ports:    servicePorts(webhooksFor(csv, d.Name)),
			Selector: depSpec.Selector.MatchLabels,
		},
	}

	// Create Secret for serving cert; the CA PEM and its hash (certs.PEMSHA256: hex sha256).
	caPEM := cert.CABundle
	sum := sha256.Sum256(caPEM)
	caHash := hex.EncodeToString(sum[:])
	secret := &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name: SecretName(serviceName), Namespace: ns,
			Annotations: map[string]string{CAHashAnnotation: caHash},
			Labels:      managed(),
		},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": cert.Cert, "tls.key": cert.Key, CAKey: caPEM},
	}

	// create Role and RoleBinding to allow the deployment to mount the Secret
	secretRole := &rbacv1.Role{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
		ObjectMeta: metav1.ObjectMeta{Name: secret.Name, Namespace: ns, Labels: managed()},
		Rules: []rbacv1.PolicyRule{{
			Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{secret.Name},
		}},
	}
	if depSpec.Template.Spec.ServiceAccountName == "" {
		depSpec.Template.Spec.ServiceAccountName = "default"
	}
	sa := depSpec.Template.Spec.ServiceAccountName
	saSubject := []rbacv1.Subject{{Kind: "ServiceAccount", APIGroup: "", Name: sa, Namespace: ns}}
	secretRoleBinding := &rbacv1.RoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: secret.Name, Namespace: ns, Labels: managed()},
		Subjects:   saSubject,
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: secretRole.Name},
	}

	// apply ClusterRoleBinding to system:auth-delegator Role (labels: olm.managed and the owner's)
	crbLabels := managed()
	for k, v := range ownerLabels(csv) {
		crbLabels[k] = v
	}
	authDelegator := &rbacv1.ClusterRoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: serviceName + "-system:auth-delegator", Labels: crbLabels},
		Subjects:   saSubject,
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:auth-delegator"},
	}

	// Apply RoleBinding to extension-apiserver-authentication-reader Role in kube-system.
	authReader := &rbacv1.RoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: serviceName + "-auth-reader", Namespace: "kube-system", Labels: managed()},
		Subjects:   saSubject,
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "extension-apiserver-authentication-reader"},
	}

	addDefaultCertVolumeAndVolumeMounts(&depSpec, secret.Name)
	// Setting the olm hash label forces a rollout (SetCAAnnotation).
	if depSpec.Template.Annotations == nil {
		depSpec.Template.Annotations = map[string]string{}
	}
	depSpec.Template.Annotations[CAHashAnnotation] = caHash

	return []client.Object{svc, secret, secretRole, secretRoleBinding, authDelegator, authReader}, depSpec, caPEM, nil
}

// addDefaultCertVolumeAndVolumeMounts mirrors certresources.go AddDefaultCertVolumeAndVolumeMounts:
// the Secret as volume apiservice-cert (apiserver.crt/.key) at /apiserver.local.config/certificates
// and as volume webhook-cert (tls.crt/.key) at /tmp/k8s-webhook-server/serving-certs, in every
// container.
func addDefaultCertVolumeAndVolumeMounts(depSpec *appsv1.DeploymentSpec, secretName string) {
	volume := corev1.Volume{
		Name: "apiservice-cert",
		VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: secretName,
			Items:      []corev1.KeyToPath{{Key: "tls.crt", Path: "apiserver.crt"}, {Key: "tls.key", Path: "apiserver.key"}},
		}},
	}
	addCertVolumeAndVolumeMount(depSpec, volume, corev1.VolumeMount{Name: volume.Name, MountPath: APIServiceCertMountPath})

	volume = corev1.Volume{
		Name: "webhook-cert",
		VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: secretName,
			Items:      []corev1.KeyToPath{{Key: "tls.crt", Path: "tls.crt"}, {Key: "tls.key", Path: "tls.key"}},
		}},
	}
	addCertVolumeAndVolumeMount(depSpec, volume, corev1.VolumeMount{Name: volume.Name, MountPath: WebhookCertMountPath})
}

// addCertVolumeAndVolumeMount mirrors certresources.go addCertVolumeAndVolumeMount: replace a
// volume of the same name or append it; in each container (not init containers), keep a mount of
// the same name, replace one at the same path, or append.
func addCertVolumeAndVolumeMount(depSpec *appsv1.DeploymentSpec, volume corev1.Volume, volumeMount corev1.VolumeMount) {
	replaced := false
	for i, v := range depSpec.Template.Spec.Volumes {
		if v.Name == volume.Name {
			depSpec.Template.Spec.Volumes[i] = volume
			replaced = true
			break
		}
	}
	if !replaced {
		depSpec.Template.Spec.Volumes = append(depSpec.Template.Spec.Volumes, volume)
	}
	for i, container := range depSpec.Template.Spec.Containers {
		found := false
		for j, m := range container.VolumeMounts {
			if m.Name == volumeMount.Name {
				found = true
				break
			}
			if m.MountPath == volumeMount.MountPath {
				container.VolumeMounts[j] = volumeMount
				found = true
				break
			}
		}
		if !found {
			container.VolumeMounts = append(container.VolumeMounts, volumeMount)
		}
		depSpec.Template.Spec.Containers[i] = container
	}
}
