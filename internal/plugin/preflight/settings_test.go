package preflight_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/meshlift/meshlift/internal/identity/builtin"
	"github.com/meshlift/meshlift/internal/plugin/preflight"
	"github.com/meshlift/meshlift/internal/repo"
	"github.com/meshlift/meshlift/internal/webhookcert"
)

func TestSettingsFollowTheOperatorsFlags(t *testing.T) {
	withCertVolume := func(d *appsv1.Deployment) *appsv1.Deployment {
		d.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "webhook-certs", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "my-serving-cert"}}}}
		d.Spec.Template.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "webhook-certs", MountPath: "/certs/"}}
		return d
	}
	tests := []struct {
		name   string
		deploy *appsv1.Deployment
		check  func(t *testing.T, s preflight.Settings)
	}{
		{
			name:   "without a Deployment the defaults of config/default apply in the namespace checked",
			deploy: nil,
			check: func(t *testing.T, s preflight.Settings) {
				want := preflight.Settings{
					Namespace: "elsewhere", WebhookCertMode: "self-managed", WebhookServiceName: "meshlift-webhook-service",
					WebhookSecretName: "meshlift-webhook-certs", MutatingWebhookConfiguration: "meshlift-mutating-webhook-configuration",
					ValidatingWebhookConfiguration: "meshlift-validating-webhook-configuration",
					ControlPlaneAddress:            "meshlift-control-plane.meshlift-system.svc:15012", ControlPlaneService: "meshlift-control-plane",
					ControlPlaneNamespace: "meshlift-system", ControlPlanePort: 15012, CABackend: "builtin", CASecretName: "meshlift-ca",
				}
				if s != want {
					t.Errorf("got  %+v\nwant %+v", s, want)
				}
			},
		},
		{
			name:   "flags in either form override the defaults, the last one winning",
			deploy: operatorDeployment(1, "--webhook-secret-name", "certs-a", "-webhook-secret-name=certs-b", "--ca-secret-name=root", "--mutating-webhook-configuration="),
			check: func(t *testing.T, s preflight.Settings) {
				if s.WebhookSecretName != "certs-b" || s.CASecretName != "root" || s.MutatingWebhookConfiguration != "" || s.Deployment != "meshlift-controller-manager" {
					t.Errorf("got %+v", s)
				}
			},
		},
		{
			name:   "cert-manager mode reads the Secret mounted at --webhook-cert-dir",
			deploy: withCertVolume(operatorDeployment(1, "--webhook-cert-mode=cert-manager", "--webhook-cert-dir=/certs")),
			check: func(t *testing.T, s preflight.Settings) {
				if s.WebhookSecretName != "my-serving-cert" {
					t.Errorf("webhook Secret %q, want my-serving-cert", s.WebhookSecretName)
				}
			},
		},
		{
			name:   "cert-manager mode without a mounted Secret looks for config/certmanager's",
			deploy: operatorDeployment(1, "--webhook-cert-mode=cert-manager"),
			check: func(t *testing.T, s preflight.Settings) {
				if s.WebhookSecretName != "meshlift-webhook-server-cert" {
					t.Errorf("webhook Secret %q, want meshlift-webhook-server-cert", s.WebhookSecretName)
				}
			},
		},
		{
			name:   "external mode reads the Secret OLM mounts, or names OLM's Secret of the Deployment",
			deploy: operatorDeployment(1, "--webhook-cert-mode=external"),
			check: func(t *testing.T, s preflight.Settings) {
				if s.WebhookSecretName != "meshlift-controller-manager-service-cert" {
					t.Errorf("webhook Secret %q, want meshlift-controller-manager-service-cert", s.WebhookSecretName)
				}
			},
		},
		{
			name:   "the control-plane Service is the one --control-plane-address names",
			deploy: operatorDeployment(1, "--control-plane-address", "mesh-cp.infra.svc.cluster.local:9000"),
			check: func(t *testing.T, s preflight.Settings) {
				if s.ControlPlaneService != "mesh-cp" || s.ControlPlaneNamespace != "infra" || s.ControlPlanePort != 9000 {
					t.Errorf("got %s/%s:%d", s.ControlPlaneNamespace, s.ControlPlaneService, s.ControlPlanePort)
				}
			},
		},
		{
			name:   "an address that names no Service leaves config/manager's Service in the operator's namespace",
			deploy: operatorDeployment(1, "--control-plane-address=10.0.0.7:15012", "--namespace=mesh"),
			check: func(t *testing.T, s preflight.Settings) {
				if s.ControlPlaneService != "meshlift-control-plane" || s.ControlPlaneNamespace != "mesh" || s.Namespace != "mesh" {
					t.Errorf("got %+v", s)
				}
			},
		},
		{
			name:   "--control-plane-bind-address=0 and --enable-webhooks=false are seen",
			deploy: operatorDeployment(1, "--control-plane-bind-address=0", "--enable-webhooks=false"),
			check: func(t *testing.T, s preflight.Settings) {
				if !s.ControlPlaneDisabled || !s.WebhooksDisabled {
					t.Errorf("got %+v", s)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, preflight.SettingsFor("elsewhere", tt.deploy))
		})
	}
}

func TestTheOperatorIsFoundByNameThenByItsPodsLabels(t *testing.T) {
	other := *operatorDeployment(1)
	other.Name, other.Spec.Template.Labels = "unrelated", map[string]string{"app": "x"}
	byLabels := *operatorDeployment(1)
	byLabels.Name = "z-operator"
	byLabelsFirst := *operatorDeployment(1)
	byLabelsFirst.Name = "a-operator"
	named := *operatorDeployment(1)

	if got := preflight.FindOperator([]appsv1.Deployment{other, byLabels, named}, operatorPodLabels); got == nil || got.Name != "meshlift-controller-manager" {
		t.Errorf("found %v, want meshlift-controller-manager", got)
	}
	if got := preflight.FindOperator([]appsv1.Deployment{other, byLabels, byLabelsFirst}, operatorPodLabels); got == nil || got.Name != "a-operator" {
		t.Errorf("found %v, want a-operator (the first by name)", got)
	}
	if got := preflight.FindOperator([]appsv1.Deployment{other}, operatorPodLabels); got != nil {
		t.Errorf("found %s, want none", got.Name)
	}
}

// The names check looks for by default are those the manifests create (config/default adds the
// prefix meshlift-) and the operator's defaults, so the docs can list them once.
func TestDefaultNamesAreThoseOfTheManifests(t *testing.T) {
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string][]string{} // kind -> names with the prefix of config/default
	for _, file := range []string{"config/manager/manager.yaml", "config/manager/control_plane_service.yaml", "config/webhook/manifests.yaml", "config/webhook/service.yaml"} {
		data, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var obj struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := decoder.Decode(&obj); err != nil {
				break
			}
			names[obj.Kind] = append(names[obj.Kind], "meshlift-"+obj.Metadata.Name)
		}
	}
	for _, want := range []struct{ kind, name string }{
		{"Deployment", preflight.OperatorDeployment},
		{"MutatingWebhookConfiguration", preflight.DefaultMutatingWebhookConfiguration},
		{"ValidatingWebhookConfiguration", preflight.DefaultValidatingWebhookConfiguration},
		{"Service", preflight.DefaultWebhookServiceName},
		{"Service", preflight.DefaultControlPlaneService},
	} {
		if !slices.Contains(names[want.kind], want.name) {
			t.Errorf("config/default creates no %s %s (it creates %v)", want.kind, want.name, names[want.kind])
		}
	}
	certificate, err := os.ReadFile(filepath.Join(root, "config", "certmanager", "certificate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(certificate, []byte("secretName: "+preflight.DefaultCertManagerWebhookSecretName+"\n")) {
		t.Errorf("config/certmanager/certificate.yaml writes no Secret %s", preflight.DefaultCertManagerWebhookSecretName)
	}
	if preflight.DefaultExternalWebhookCertDir != webhookcert.DefaultExternalCertDir || preflight.DefaultWebhookCertDir != webhookcert.DefaultCertManagerCertDir {
		t.Errorf("webhook certificate directories %q and %q, the operator's are %q and %q", preflight.DefaultExternalWebhookCertDir,
			preflight.DefaultWebhookCertDir, webhookcert.DefaultExternalCertDir, webhookcert.DefaultCertManagerCertDir)
	}
	if preflight.DefaultCASecretName != builtin.DefaultSecretName {
		t.Errorf("DefaultCASecretName %q, the built-in CA's is %q", preflight.DefaultCASecretName, builtin.DefaultSecretName)
	}
}
