package preflight_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/plugin/preflight"
	"github.com/meshlift/meshlift/internal/testutil/gen"
)

func forbidden(resource, name string) error {
	return apierrors.NewForbidden(schema.GroupResource{Resource: resource}, name,
		errors.New(`User "dev" cannot get resource "`+resource+`"`))
}

func notFound(resource, name string) error {
	return apierrors.NewNotFound(schema.GroupResource{Resource: resource}, name)
}

// withOperator replaces the operator's Deployment and the settings read from it.
func withOperator(in *preflight.Input, deploy *appsv1.Deployment) {
	in.Deployments = found(&appsv1.DeploymentList{Items: []appsv1.Deployment{*deploy}})
	in.Settings = preflight.SettingsFor("meshlift-system", deploy)
}

func byID(t *testing.T, r preflight.Report, id string) preflight.Result {
	t.Helper()
	for _, res := range r.Results {
		if res.ID == id {
			return res
		}
	}
	t.Fatalf("no result %q in %+v", id, r.Results)
	return preflight.Result{}
}

func TestAHealthyInstallationPassesEveryCheck(t *testing.T) {
	r := preflight.Run(healthy(newCerts(t)))
	for _, res := range r.Results {
		if res.Status != preflight.StatusOK {
			t.Errorf("%s: %s %q (hint %q), want ok", res.ID, res.Status, res.Description, res.Hint)
		}
		if res.Hint != "" {
			t.Errorf("%s is ok but has a hint: %q", res.ID, res.Hint)
		}
	}
	wantIDs := []string{
		"crd.upgradeplans.mesh.meshlift.io", "crd.meshservices.mesh.meshlift.io", "crd.sidecarversions.mesh.meshlift.io",
		"operator.available",
		"webhooks.mutating", "webhooks.validating", "webhooks.serving-certificate",
		"control-plane.endpoints",
		"trust-bundle.ca", "trust-bundle.configmaps",
		"sidecar-versions.default",
	}
	var ids []string
	for _, res := range r.Results {
		ids = append(ids, res.ID)
	}
	if strings.Join(ids, " ") != strings.Join(wantIDs, " ") {
		t.Errorf("results %v, want %v", ids, wantIDs)
	}
	if r.Status != preflight.StatusOK || r.OK != len(wantIDs) || r.Warnings != 0 || r.Errors != 0 {
		t.Errorf("report %s with %d ok, %d warnings, %d errors; want ok with %d ok", r.Status, r.OK, r.Warnings, r.Errors, len(wantIDs))
	}
	for _, want := range []string{
		"verifies the serving certificate for meshlift-webhook-service.meshlift-system.svc",
	} {
		if d := byID(t, r, "webhooks.mutating").Description; !strings.Contains(d, want) {
			t.Errorf("webhooks.mutating says %q, want it to mention %q", d, want)
		}
	}
}

func TestEachProblemYieldsItsLineAndHint(t *testing.T) {
	c := newCerts(t)
	otherCA := newCA(t, "someone-else", now.Add(-day), now.Add(3650*day))
	tests := []struct {
		name  string
		spoil func(in *preflight.Input)
		// id is the result that reports the problem.
		id         string
		wantStatus preflight.Status
		// wantLine and wantHint are substrings of the description and the hint.
		wantLine, wantHint string
	}{
		{
			name: "a CRD that is not installed is an error that says how to install it",
			spoil: func(in *preflight.Input) {
				in.CRDs["meshservices.mesh.meshlift.io"] = failed[apiextensionsv1.CustomResourceDefinition](notFound("customresourcedefinitions", "meshservices.mesh.meshlift.io"))
			},
			id: "crd.meshservices.mesh.meshlift.io", wantStatus: preflight.StatusError,
			wantLine: "CRD meshservices.mesh.meshlift.io is not installed", wantHint: "kubectl apply -k config/default",
		},
		{
			name: "a CRD that is not Established is an error pointing at its conditions",
			spoil: func(in *preflight.Input) {
				c := crd("upgradeplans.mesh.meshlift.io")
				c.Status.Conditions[1].Status = apiextensionsv1.ConditionFalse
				in.CRDs[c.Name] = found(c)
			},
			id: "crd.upgradeplans.mesh.meshlift.io", wantStatus: preflight.StatusError,
			wantLine: "is not Established", wantHint: "kubectl get crd upgradeplans.mesh.meshlift.io -o jsonpath='{.status.conditions}'",
		},
		{
			name: "a CRD that does not serve v1alpha1 is an error naming what it serves",
			spoil: func(in *preflight.Input) {
				c := crd("sidecarversions.mesh.meshlift.io")
				c.Spec.Versions = []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1alpha1", Served: false}, {Name: "v1beta1", Served: true, Storage: true}}
				in.CRDs[c.Name] = found(c)
			},
			id: "crd.sidecarversions.mesh.meshlift.io", wantStatus: preflight.StatusError,
			wantLine: "does not serve v1alpha1 (it serves v1beta1)", wantHint: "another Meshlift release",
		},
		{
			name: "a CRD the caller may not read is a warning",
			spoil: func(in *preflight.Input) {
				in.CRDs["meshservices.mesh.meshlift.io"] = failed[apiextensionsv1.CustomResourceDefinition](forbidden("customresourcedefinitions", "meshservices.mesh.meshlift.io"))
			},
			id: "crd.meshservices.mesh.meshlift.io", wantStatus: preflight.StatusWarning,
			wantLine: "cannot read CRD meshservices.mesh.meshlift.io (forbidden)", wantHint: "kubectl auth can-i get customresourcedefinitions",
		},
		{
			name: "an operator scaled to 0 has no ready replica and the hint scales it up",
			spoil: func(in *preflight.Input) {
				d := operatorDeployment(0)
				d.Spec.Replicas = ptr.To[int32](0)
				withOperator(in, d)
			},
			id: "operator.available", wantStatus: preflight.StatusError,
			wantLine: "operator has no ready replica: Deployment meshlift-system/meshlift-controller-manager is scaled to 0",
			wantHint: "kubectl -n meshlift-system scale deployment meshlift-controller-manager --replicas=1",
		},
		{
			name:  "an operator without an available replica is an error with the commands that show why",
			spoil: func(in *preflight.Input) { withOperator(in, operatorDeployment(0)) },
			id:    "operator.available", wantStatus: preflight.StatusError,
			wantLine: "operator has no ready replica: Deployment meshlift-system/meshlift-controller-manager has 0 of 1 replicas available",
			wantHint: "kubectl -n meshlift-system get pods -l app.kubernetes.io/name=meshlift,control-plane=controller-manager\n" +
				"kubectl -n meshlift-system describe deployment meshlift-controller-manager\n" +
				"kubectl -n meshlift-system logs deployment/meshlift-controller-manager -c manager",
		},
		{
			name: "an operator with fewer available replicas than it wants is a warning",
			spoil: func(in *preflight.Input) {
				d := operatorDeployment(1)
				d.Spec.Replicas = ptr.To[int32](3)
				withOperator(in, d)
			},
			id: "operator.available", wantStatus: preflight.StatusWarning,
			wantLine: "operator is degraded: Deployment meshlift-system/meshlift-controller-manager has 1 of 3 replicas available",
			wantHint: "kubectl -n meshlift-system get pods",
		},
		{
			name:  "no operator in the namespace is an error that mentions --operator-namespace",
			spoil: func(in *preflight.Input) { in.Deployments = found(&appsv1.DeploymentList{}) },
			id:    "operator.available", wantStatus: preflight.StatusError,
			wantLine: "operator not found: no Deployment meshlift-controller-manager", wantHint: "--operator-namespace",
		},
		{
			name: "the operator is found by its pods' labels under another name",
			spoil: func(in *preflight.Input) {
				d := operatorDeployment(0)
				d.Name = "mesh-operator"
				withOperator(in, d)
			},
			id: "operator.available", wantStatus: preflight.StatusError,
			wantLine: "Deployment meshlift-system/mesh-operator has 0 of 1 replicas available",
			wantHint: "logs deployment/mesh-operator -c manager",
		},
		{
			name: "Deployments the caller may not list are a warning",
			spoil: func(in *preflight.Input) {
				in.Deployments = failed[appsv1.DeploymentList](forbidden("deployments", ""))
			},
			id: "operator.available", wantStatus: preflight.StatusWarning,
			wantLine: "cannot read the Deployments of meshlift-system (forbidden)", wantHint: "kubectl auth can-i list deployments -n meshlift-system",
		},
		{
			name: "a missing pod injector configuration is an error",
			spoil: func(in *preflight.Input) {
				in.MutatingWebhookConfiguration = failed[admissionregistrationv1.MutatingWebhookConfiguration](notFound("mutatingwebhookconfigurations", "meshlift-mutating-webhook-configuration"))
			},
			id: "webhooks.mutating", wantStatus: preflight.StatusError,
			wantLine: "MutatingWebhookConfiguration meshlift-mutating-webhook-configuration not found: pods get no sidecar",
			wantHint: "kubectl apply -k config/default",
		},
		{
			name: "a webhook without caBundle is an error that says who writes it",
			spoil: func(in *preflight.Input) {
				v := validating(c.webhookCA.pem)
				v.Webhooks[1].ClientConfig.CABundle = nil
				in.ValidatingWebhookConfiguration = found(v)
			},
			id: "webhooks.validating", wantStatus: preflight.StatusError,
			wantLine: "webhook meshservices.mesh.meshlift.io has no caBundle", wantHint: "the operator writes caBundle",
		},
		{
			name: "a caBundle that is not PEM is an error",
			spoil: func(in *preflight.Input) {
				in.MutatingWebhookConfiguration = found(mutating([]byte("not a certificate")))
			},
			id: "webhooks.mutating", wantStatus: preflight.StatusError,
			wantLine: "the caBundle of webhook inject.pods.meshlift.io holds no PEM certificate",
		},
		{
			name:  "a caBundle of another CA does not verify the serving certificate",
			spoil: func(in *preflight.Input) { in.MutatingWebhookConfiguration = found(mutating(otherCA.pem)) },
			id:    "webhooks.mutating", wantStatus: preflight.StatusError,
			wantLine: "the caBundle of webhook inject.pods.meshlift.io does not verify the serving certificate for meshlift-webhook-service.meshlift-system.svc: x509: certificate signed by unknown authority",
			wantHint: "kubectl -n meshlift-system logs deployment/meshlift-controller-manager -c manager",
		},
		{
			name: "a serving certificate for another Service does not verify",
			spoil: func(in *preflight.Input) {
				in.WebhookSecret.Object.Data["tls.crt"] = c.webhookCA.serve(t, []string{"other.meshlift-system.svc"}, now.Add(-day), now.Add(300*day))
			},
			id: "webhooks.validating", wantStatus: preflight.StatusError,
			wantLine: "does not verify the serving certificate for meshlift-webhook-service.meshlift-system.svc: x509: certificate is valid for other.meshlift-system.svc",
		},
		{
			name: "a serving certificate that expires in 3 days is a warning with the thresholds",
			spoil: func(in *preflight.Input) {
				in.WebhookSecret.Object.Data["tls.crt"] = c.webhookCA.serve(t, webhookDNSNames, now.Add(-362*day), now.Add(3*day))
			},
			id: "webhooks.serving-certificate", wantStatus: preflight.StatusWarning,
			wantLine: "webhook serving certificate (Secret meshlift-system/meshlift-webhook-certs): the serving certificate expires in 3d (2026-12-09T21:00:00Z)",
			wantHint: "this warns 7 days before expiry",
		},
		{
			name: "a short-lived serving certificate warns only in the last sixth of its lifetime",
			spoil: func(in *preflight.Input) {
				in.WebhookSecret.Object.Data["tls.crt"] = c.webhookCA.serve(t, webhookDNSNames, now.Add(-19*day), now.Add(5*day))
			},
			id: "webhooks.serving-certificate", wantStatus: preflight.StatusOK,
			wantLine: "is valid for 5d more",
		},
		{
			name: "an expired serving certificate is an error",
			spoil: func(in *preflight.Input) {
				in.WebhookSecret.Object.Data["tls.crt"] = c.webhookCA.serve(t, webhookDNSNames, now.Add(-366*day), now.Add(-day))
			},
			id: "webhooks.serving-certificate", wantStatus: preflight.StatusError,
			wantLine: "the serving certificate expired at 2026-12-05T21:00:00Z", wantHint: "tls.crt",
		},
		{
			name: "a webhook CA that expires before the serving certificate warns about the CA",
			spoil: func(in *preflight.Input) {
				ca := newCA(t, "short-ca", now.Add(-3650*day), now.Add(2*day))
				in.WebhookSecret.Object.Data["tls.crt"] = ca.serve(t, webhookDNSNames, now.Add(-day), now.Add(300*day))
				in.MutatingWebhookConfiguration = found(mutating(ca.pem))
				in.ValidatingWebhookConfiguration = found(validating(ca.pem))
			},
			id: "webhooks.serving-certificate", wantStatus: preflight.StatusWarning,
			wantLine: `CA "short-ca" of the serving certificate expires in 2d`,
		},
		{
			name: "a webhook Secret the caller may not read is a warning, not an error",
			spoil: func(in *preflight.Input) {
				in.WebhookSecret = failed[corev1.Secret](forbidden("secrets", "meshlift-webhook-certs"))
			},
			id: "webhooks.serving-certificate", wantStatus: preflight.StatusWarning,
			wantLine: "cannot read Secret meshlift-system/meshlift-webhook-certs (forbidden): the webhook serving certificate and caBundle are not checked",
			wantHint: "kubectl auth can-i get secrets -n meshlift-system",
		},
		{
			name: "without the serving certificate the webhook configurations only say caBundle is set",
			spoil: func(in *preflight.Input) {
				in.WebhookSecret = failed[corev1.Secret](forbidden("secrets", "meshlift-webhook-certs"))
			},
			id: "webhooks.validating", wantStatus: preflight.StatusOK,
			wantLine: "3 webhooks have a caBundle (not verified: no serving certificate to verify)",
		},
		{
			name: "a missing self-managed webhook Secret is an error pointing at the operator",
			spoil: func(in *preflight.Input) {
				in.WebhookSecret = failed[corev1.Secret](notFound("secrets", "meshlift-webhook-certs"))
			},
			id: "webhooks.serving-certificate", wantStatus: preflight.StatusError,
			wantLine: "webhook serving certificate Secret meshlift-system/meshlift-webhook-certs not found", wantHint: "the operator creates it",
		},
		{
			name: "a missing cert-manager webhook Secret is an error pointing at cert-manager",
			spoil: func(in *preflight.Input) {
				withOperator(in, operatorDeployment(1, "--webhook-cert-mode=cert-manager"))
				in.WebhookSecret = failed[corev1.Secret](notFound("secrets", "meshlift-webhook-server-cert"))
			},
			id: "webhooks.serving-certificate", wantStatus: preflight.StatusError,
			wantLine: "Secret meshlift-system/meshlift-webhook-server-cert not found", wantHint: "kubectl -n meshlift-system get certificates,certificaterequests",
		},
		{
			name:  "webhooks turned off are a warning",
			spoil: func(in *preflight.Input) { withOperator(in, operatorDeployment(1, "--enable-webhooks=false")) },
			id:    "webhooks.enabled", wantStatus: preflight.StatusWarning,
			wantLine: "--enable-webhooks=false",
		},
		{
			name: "a missing control-plane Service is an error naming the address proxies dial",
			spoil: func(in *preflight.Input) {
				in.ControlPlaneService = failed[corev1.Service](notFound("services", "meshlift-control-plane"))
			},
			id: "control-plane.endpoints", wantStatus: preflight.StatusError,
			wantLine: "control-plane Service meshlift-system/meshlift-control-plane not found: proxies (which dial meshlift-control-plane.meshlift-system.svc:15012)",
			wantHint: "config/manager/control_plane_service.yaml",
		},
		{
			name: "a control-plane Service without a ready endpoint is an error",
			spoil: func(in *preflight.Input) {
				in.ControlPlaneEndpointSlices = found(&discoveryv1.EndpointSliceList{Items: []discoveryv1.EndpointSlice{endpointSlice("meshlift-control-plane", ptr.To(false), ptr.To(false))}})
			},
			id: "control-plane.endpoints", wantStatus: preflight.StatusError,
			wantLine: "control-plane Service meshlift-system/meshlift-control-plane has no ready endpoint",
			wantHint: "kubectl -n meshlift-system get endpointslices -l kubernetes.io/service-name=meshlift-control-plane",
		},
		{
			name: "EndpointSlices of another Service do not count",
			spoil: func(in *preflight.Input) {
				in.ControlPlaneEndpointSlices = found(&discoveryv1.EndpointSliceList{Items: []discoveryv1.EndpointSlice{endpointSlice("other", ptr.To(true))}})
			},
			id: "control-plane.endpoints", wantStatus: preflight.StatusError,
			wantLine: "has no ready endpoint",
		},
		{
			name: "an endpoint without a ready condition counts as ready",
			spoil: func(in *preflight.Input) {
				in.ControlPlaneEndpointSlices = found(&discoveryv1.EndpointSliceList{Items: []discoveryv1.EndpointSlice{endpointSlice("meshlift-control-plane", nil, ptr.To(false), ptr.To(true))}})
			},
			id: "control-plane.endpoints", wantStatus: preflight.StatusOK,
			wantLine: "control-plane Service meshlift-system/meshlift-control-plane has 2 ready endpoints",
		},
		{
			name: "a control-plane Service without the port proxies dial is an error",
			spoil: func(in *preflight.Input) {
				in.ControlPlaneService.Object.Spec.Ports[0].Port = 443
			},
			id: "control-plane.endpoints", wantStatus: preflight.StatusError,
			wantLine: "has no port 15012, the port proxies dial",
		},
		{
			name: "a missing mesh CA Secret is an error",
			spoil: func(in *preflight.Input) {
				in.CASecret = failed[corev1.Secret](notFound("secrets", "meshlift-ca"))
			},
			id: "trust-bundle.ca", wantStatus: preflight.StatusError,
			wantLine: "mesh CA Secret meshlift-system/meshlift-ca not found", wantHint: "the operator creates it when it starts (--ca-backend=builtin)",
		},
		{
			name: "a mesh CA that expires in 10 days is a warning with the threshold",
			spoil: func(in *preflight.Input) {
				ca := newCA(t, "old-root", now.Add(-3640*day), now.Add(10*day))
				in.CASecret.Object.Data["ca.crt"] = ca.pem
				in.TrustBundles = found(&corev1.ConfigMapList{Items: []corev1.ConfigMap{trustBundle("shop", ca.pem)}})
			},
			id: "trust-bundle.ca", wantStatus: preflight.StatusWarning,
			wantLine: `mesh CA "old-root" (Secret meshlift-system/meshlift-ca) expires in 10d (2026-12-16T21:00:00Z)`,
			wantHint: "this warns 30 days before the CA expires",
		},
		{
			name: "an expired mesh CA is an error",
			spoil: func(in *preflight.Input) {
				ca := newCA(t, "dead-root", now.Add(-3650*day), now.Add(-time.Hour))
				in.CASecret.Object.Data["ca.crt"] = ca.pem
				in.TrustBundles = found(&corev1.ConfigMapList{Items: []corev1.ConfigMap{trustBundle("shop", ca.pem)}})
			},
			id: "trust-bundle.ca", wantStatus: preflight.StatusError,
			wantLine: `mesh CA "dead-root" (Secret meshlift-system/meshlift-ca) expired at 2026-12-06T20:00:00Z`,
		},
		{
			name: "a bundle is as good as the CA of it that expires last",
			spoil: func(in *preflight.Input) {
				old := newCA(t, "old-root", now.Add(-3640*day), now.Add(10*day))
				bundle := append(append([]byte{}, c.meshCA.pem...), old.pem...)
				in.CASecret.Object.Data["ca.crt"] = bundle
				in.TrustBundles = found(&corev1.ConfigMapList{Items: []corev1.ConfigMap{trustBundle("shop", bundle)}})
			},
			id: "trust-bundle.ca", wantStatus: preflight.StatusOK,
			wantLine: `mesh CA "meshlift-mesh-ca"`,
		},
		{
			name: "a mesh CA Secret the caller may not read is checked in the published bundle",
			spoil: func(in *preflight.Input) {
				in.CASecret = failed[corev1.Secret](forbidden("secrets", "meshlift-ca"))
			},
			id: "trust-bundle.ca", wantStatus: preflight.StatusOK,
			wantLine: `mesh CA "meshlift-mesh-ca" (ConfigMap shop/meshlift-ca-root) is valid`,
		},
		{
			name: "a mesh CA Secret the caller may not read, and no published bundle, is a warning",
			spoil: func(in *preflight.Input) {
				in.CASecret = failed[corev1.Secret](forbidden("secrets", "meshlift-ca"))
				in.TrustBundles = found(&corev1.ConfigMapList{})
				in.MeshServices = found(&metav1.PartialObjectMetadataList{})
			},
			id: "trust-bundle.ca", wantStatus: preflight.StatusWarning,
			wantLine: "cannot read the mesh CA", wantHint: "kubectl auth can-i get secrets -n meshlift-system",
		},
		{
			name: "a namespace with MeshServices but no trust bundle is an error",
			spoil: func(in *preflight.Input) {
				in.MeshServices.Object.Items = append(in.MeshServices.Object.Items, meshServiceIn("payments", "api"), meshServiceIn("payments", "db"))
			},
			id: "trust-bundle.configmaps", wantStatus: preflight.StatusError,
			wantLine: "trust bundle ConfigMap meshlift-ca-root is missing in 1 namespace with MeshServices (payments)",
			wantHint: "the trust-bundle controller",
		},
		{
			name: "a trust bundle without PEM is an error",
			spoil: func(in *preflight.Input) {
				in.TrustBundles = found(&corev1.ConfigMapList{Items: []corev1.ConfigMap{trustBundle("shop", []byte("edited"))}})
			},
			id: "trust-bundle.configmaps", wantStatus: preflight.StatusError,
			wantLine: "holds no PEM certificate under ca.crt in 1 namespace (shop)",
		},
		{
			name: "a trust bundle that differs from the CA Secret is a warning",
			spoil: func(in *preflight.Input) {
				in.TrustBundles = found(&corev1.ConfigMapList{Items: []corev1.ConfigMap{trustBundle("shop", otherCA.pem)}})
			},
			id: "trust-bundle.configmaps", wantStatus: preflight.StatusWarning,
			wantLine: "differs from the mesh CA in 1 namespace (shop)", wantHint: "rewrites it within seconds",
		},
		{
			name: "with the cert-manager CA backend the CA is read from the published bundle",
			spoil: func(in *preflight.Input) {
				withOperator(in, operatorDeployment(1, "--ca-backend=cert-manager", "--ca-issuer-name=corp-ca"))
				in.CASecret = preflight.Got[corev1.Secret]{}
				ca := newCA(t, "corp-root", now.Add(-day), now.Add(20*day))
				in.TrustBundles = found(&corev1.ConfigMapList{Items: []corev1.ConfigMap{trustBundle("shop", ca.pem)}})
			},
			id: "trust-bundle.ca", wantStatus: preflight.StatusWarning,
			wantLine: `mesh CA "corp-root" (ConfigMap shop/meshlift-ca-root) expires in 20d`, wantHint: "renew it there",
		},
		{
			name: "no default SidecarVersion is a warning saying MeshServices then need spec.sidecar.version",
			spoil: func(in *preflight.Input) {
				in.SidecarVersions.Object.Items[0].Spec.Default = false
			},
			id: "sidecar-versions.default", wantStatus: preflight.StatusWarning,
			wantLine: "no SidecarVersion is the default (spec.default: true; 2 SidecarVersions exist)",
			wantHint: "MeshServices then need spec.sidecar.version",
		},
		{
			name: "no SidecarVersion at all is a warning pointing at the sample",
			spoil: func(in *preflight.Input) {
				in.SidecarVersions = found(&meshv1alpha1.SidecarVersionList{})
			},
			id: "sidecar-versions.default", wantStatus: preflight.StatusWarning,
			wantLine: "no SidecarVersion exists", wantHint: "config/samples/mesh_v1alpha1_sidecarversion.yaml",
		},
		{
			name: "two default SidecarVersions are a DefaultConflict error",
			spoil: func(in *preflight.Input) {
				in.SidecarVersions.Object.Items[1].Spec.Default = true
			},
			id: "sidecar-versions.default", wantStatus: preflight.StatusError,
			wantLine: "DefaultConflict: 2 SidecarVersions claim spec.default (proxy-v1, proxy-v2)",
			wantHint: "unset it on all but one",
		},
		{
			name: "a default SidecarVersion being deleted does not count",
			spoil: func(in *preflight.Input) {
				v := gen.SidecarVersion("proxy-v0", "0.9.0", gen.AsDefault())
				v.DeletionTimestamp = &metav1.Time{Time: now}
				in.SidecarVersions.Object.Items = append(in.SidecarVersions.Object.Items, *v)
			},
			id: "sidecar-versions.default", wantStatus: preflight.StatusOK,
			wantLine: "SidecarVersion proxy-v1 (1.0.0) is the default",
		},
		{
			name: "SidecarVersions without their CRD are an error",
			spoil: func(in *preflight.Input) {
				in.SidecarVersions = failed[meshv1alpha1.SidecarVersionList](&meta.NoKindMatchError{GroupKind: schema.GroupKind{Group: "mesh.meshlift.io", Kind: "SidecarVersion"}})
			},
			id: "sidecar-versions.default", wantStatus: preflight.StatusError,
			wantLine: "cannot read the SidecarVersions: its CRD is not installed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := healthy(c)
			tt.spoil(&in)
			r := preflight.Run(in)
			got := byID(t, r, tt.id)
			if got.Status != tt.wantStatus {
				t.Errorf("status %s, want %s (%q)", got.Status, tt.wantStatus, got.Description)
			}
			if !strings.Contains(got.Description, tt.wantLine) {
				t.Errorf("line %q\nwant it to contain %q", got.Description, tt.wantLine)
			}
			if !strings.Contains(got.Hint, tt.wantHint) {
				t.Errorf("hint %q\nwant it to contain %q", got.Hint, tt.wantHint)
			}
			if tt.wantStatus != preflight.StatusOK && got.Hint == "" {
				t.Errorf("a %s without a hint", got.Status)
			}
			// The problem is reported once, where it belongs: every other check still passes
			// unless it depends on the same object.
			if got.Status != preflight.StatusOK && r.Status == preflight.StatusOK {
				t.Errorf("report status ok with a %s result", got.Status)
			}
		})
	}
}

func TestWarningsAloneDoNotFailTheReport(t *testing.T) {
	r := preflight.Summarize([]preflight.Result{
		{ID: "a", Status: preflight.StatusOK}, {ID: "b", Status: preflight.StatusWarning}, {ID: "c", Status: preflight.StatusWarning},
	})
	if r.Status != preflight.StatusWarning || r.OK != 1 || r.Warnings != 2 || r.Errors != 0 {
		t.Errorf("got %+v", r)
	}
	r = preflight.Summarize([]preflight.Result{{ID: "a", Status: preflight.StatusWarning}, {ID: "b", Status: preflight.StatusError}})
	if r.Status != preflight.StatusError || r.Errors != 1 {
		t.Errorf("got %+v", r)
	}
}
