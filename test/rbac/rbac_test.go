package rbac_test

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// unreachable are the permissions that the roles grant and a test run may not use, each with the
// path that needs it and why the test cannot be sure to drive it. Keys are permission.key().
var unreachable = map[string]string{
	// Leader election's recorder (client-go's record package) patches an Event instead of
	// creating another when the same event repeats within its correlation window; a replica
	// becomes leader once per run here.
	"patch core/events": "a repeated leader election event",
	// The same for the controllers' and the injector's recorder (events.k8s.io): it patches the
	// Event's series when the same event repeats, which a run here does only by chance.
	"patch events.k8s.io/events": "a repeated event (EventSeries)",
}

// TestTheCertManagerInstallsRolesAreExactlyWhatTheOperatorUses runs the operator with the roles
// of config/certmanager, the install where cert-manager provides the webhook certificate (the
// OLM bundle's permissions are the same roles: TestThePermissionsAreConfigRBACs in
// internal/bundle), drives every controller, the webhooks, the control plane's authentication and
// the metrics endpoint's, and checks the audit log: nothing refused, every permission used.
func TestTheCertManagerInstallsRolesAreExactlyWhatTheOperatorUses(t *testing.T) {
	c := startCluster(t, "certmanager", true)
	ctx := context.Background()

	// The operator's own Pod, which it annotates with its version. The injector leaves the
	// operator's namespace alone, and no kubelet runs it.
	self := gen.Pod("meshlift-operator-0", gen.PodMeta(gen.SetNamespace(operatorNamespace)))
	if err := c.client.Create(ctx, self); err != nil {
		t.Fatal(err)
	}

	webhooks := c.env.WebhookInstallOptions
	metrics := freeAddress(t)
	op := c.startOperator(t, []string{
		"--leader-elect", "--leader-election-namespace=" + operatorNamespace,
		"--webhook-cert-mode=cert-manager", "--webhook-cert-dir=" + webhooks.LocalServingCertDir,
		"--webhook-port=" + strconv.Itoa(webhooks.LocalServingPort),
		"--metrics-bind-address=" + metrics, "--control-plane-bind-address=" + freeAddress(t),
		"--replica-name=" + self.Name,
	}, "POD_NAME="+self.Name)
	op.waitReady(t)

	testenv.Eventually(t, time.Minute, func(ctx context.Context) (bool, string) {
		pod := &corev1.Pod{}
		if err := c.client.Get(ctx, client.ObjectKeyFromObject(self), pod); err != nil {
			return false, err.Error()
		}
		return pod.Annotations[meshv1alpha1.AnnotationOperatorVersion] != "", "the operator did not annotate its Pod with its version"
	})

	// A meshed namespace with two injected pods, whose proxies the readiness gate follows.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	if err := c.client.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	resources := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
	}
	withResources := func(v *meshv1alpha1.SidecarVersion) { v.Spec.Resources = resources }
	v1 := gen.SidecarVersion("v1", "1.0.0", withResources)
	v2 := gen.SidecarVersion("v2", "2.0.0", withResources)
	for _, obj := range []client.Object{v1, v2,
		gen.MeshService("web", gen.PinVersion(v1.Name), gen.MeshServiceMeta(gen.SetNamespace(ns.Name)),
			func(ms *meshv1alpha1.MeshService) {
				ms.Spec.Injection.ProxyReadinessGate = true
				// envtest runs no proxy that could answer /ready: the old slots retire once
				// this budget and its grace (rollout.RetireGrace) end.
				ms.Spec.Drain = &meshv1alpha1.DrainSpec{MaxDuration: &metav1.Duration{Duration: time.Second}}
			}),
	} {
		if err := c.client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	k := &kubelet{c: c.client, ns: ns.Name}
	for i := range 2 {
		pod := gen.Pod("web-"+strconv.Itoa(i), gen.PodMeta(gen.SetNamespace(ns.Name), gen.SetLabels("app", "web")))
		if err := c.client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		if !sidecar.IsInjected(pod) {
			t.Fatalf("pod %s was admitted without the sidecar: the operator's injector did not answer", pod.Name)
		}
	}
	k.sync(t)

	// The trust bundle is published in the namespace, and an edit of it is undone.
	bundle := &corev1.ConfigMap{}
	testenv.Eventually(t, time.Minute, func(ctx context.Context) (bool, string) {
		err := c.client.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: sidecar.CARootConfigMap}, bundle)
		return err == nil, fmt.Sprintf("no trust bundle ConfigMap: %v", err)
	})
	published := bundle.Data[sidecar.CARootKey]
	bundle.Data[sidecar.CARootKey] = "edited"
	if err := c.client.Update(ctx, bundle); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, func(ctx context.Context) (bool, string) {
		if err := c.client.Get(ctx, client.ObjectKeyFromObject(bundle), bundle); err != nil {
			return false, err.Error()
		}
		return bundle.Data[sidecar.CARootKey] == published, "the edited trust bundle was not repaired"
	})

	// A hot upgrade to v2, through to completion: slot images patched, the idle slot resized,
	// the readiness gate followed, plan and MeshService statuses written, events recorded.
	plan := gen.UpgradePlan("to-v2", v2.Name, []string{"web"}, gen.UpgradePlanMeta(gen.SetNamespace(ns.Name)))
	if err := c.client.Create(ctx, plan); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 3*time.Minute, func(ctx context.Context) (bool, string) {
		k.sync(t)
		if err := c.client.Get(ctx, client.ObjectKeyFromObject(plan), plan); err != nil {
			return false, err.Error()
		}
		return plan.Status.Phase == meshv1alpha1.PhaseSucceeded, fmt.Sprintf("plan %s, counts %+v", plan.Status.Phase, plan.Status.Counts)
	})

	// A Recreate plan back to v1 evicts the pods (no controller recreates them in envtest, so
	// the plan waits; the evictions are what it is run for). The finished plan goes first: the
	// older plan of a MeshService wins.
	if err := c.client.Delete(ctx, plan); err != nil {
		t.Fatal(err)
	}
	recreate := gen.UpgradePlan("back-to-v1", v1.Name, []string{"web"}, gen.UpgradePlanMeta(gen.SetNamespace(ns.Name)),
		func(p *meshv1alpha1.UpgradePlan) { p.Spec.Strategy.Type = meshv1alpha1.StrategyRecreate })
	if err := c.client.Create(ctx, recreate); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) (bool, string) {
		k.sync(t)
		pods := &corev1.PodList{}
		if err := c.client.List(ctx, pods, client.InNamespace(ns.Name)); err != nil {
			return false, err.Error()
		}
		if err := c.client.Get(ctx, client.ObjectKeyFromObject(recreate), recreate); err != nil {
			return false, err.Error()
		}
		return len(pods.Items) < 2, fmt.Sprintf("%d pods left, none evicted; plan %s, conditions %+v", len(pods.Items), recreate.Status.Phase, recreate.Status.Conditions)
	})

	// A scrape of the metrics endpoint makes the operator authenticate and authorize the
	// scraper (TokenReview, SubjectAccessReview).
	scrapeMetrics(t, c, metrics)

	// Stopping releases the leader election Lease.
	op.stop()

	requests := c.operatorRequests(t)
	logRequests(t, requests)
	c.checkRequests(t, requests, unreachable, nil)
	for _, r := range requests {
		if r.group == admissionregistrationv1.GroupName || (r.resource == "secrets" && r.name != "meshlift-ca") {
			t.Errorf("with certificates from cert-manager the operator touches no webhook configuration and no Secret but its CA's, yet it sent %s", r)
		}
	}
}

// TestTheDefaultInstallsWebhookCertificateRolesAreExactlyWhatTheOperatorUses runs the operator
// with the roles of config/default, where it manages its own webhook certificates, until it has
// issued them, injected caBundle and repaired a broken Secret, and checks the audit log: nothing
// refused, every permission of the webhook-certificates roles used. (The other roles are
// config/certmanager's, which the test above checks.)
func TestTheDefaultInstallsWebhookCertificateRolesAreExactlyWhatTheOperatorUses(t *testing.T) {
	c := startCluster(t, "default", false)
	ctx := context.Background()

	// The webhook configurations config/default installs, by name; their one webhook matches
	// nothing, so the API server never calls it (there is no webhook Service in envtest).
	ignore := admissionregistrationv1.Ignore
	none := admissionregistrationv1.SideEffectClassNone
	rules := []admissionregistrationv1.RuleWithOperations{{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
		Rule:       admissionregistrationv1.Rule{APIGroups: []string{"rbac-test.meshlift.io"}, APIVersions: []string{"v1"}, Resources: []string{"nothing"}},
	}}
	clientConfig := admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://127.0.0.1:1/unused")}
	mutating := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "meshlift-mutating-webhook-configuration"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "inject.pods.meshlift.io", ClientConfig: clientConfig, Rules: rules,
			FailurePolicy: &ignore, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}}},
	}
	validating := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "meshlift-validating-webhook-configuration"},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{Name: "upgradeplans.mesh.meshlift.io", ClientConfig: clientConfig, Rules: rules,
			FailurePolicy: &ignore, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}}},
	}
	for _, obj := range []client.Object{mutating, validating} {
		if err := c.client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}

	op := c.startOperator(t, []string{
		"--leader-elect=false", "--metrics-bind-address=0", "--control-plane-bind-address=0",
		"--webhook-port=" + strings.TrimPrefix(freeAddress(t), "127.0.0.1:"),
	})
	op.waitReady(t)

	secret := &corev1.Secret{}
	key := client.ObjectKey{Namespace: operatorNamespace, Name: "meshlift-webhook-certs"}
	injected := func(ctx context.Context) (bool, string) {
		if err := c.client.Get(ctx, client.ObjectKeyFromObject(mutating), mutating); err != nil {
			return false, err.Error()
		}
		if err := c.client.Get(ctx, client.ObjectKeyFromObject(validating), validating); err != nil {
			return false, err.Error()
		}
		if err := c.client.Get(ctx, key, secret); err != nil {
			return false, err.Error()
		}
		ca := secret.Data["ca.crt"]
		return len(ca) > 0 && string(mutating.Webhooks[0].ClientConfig.CABundle) == string(ca) &&
			string(validating.Webhooks[0].ClientConfig.CABundle) == string(ca), "caBundle is not the Secret's CA"
	}
	testenv.Eventually(t, time.Minute, injected)

	// A broken serving certificate is replaced (an update of the Secret).
	secret.Data["tls.crt"] = []byte("not a certificate")
	if err := c.client.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, func(ctx context.Context) (bool, string) {
		if err := c.client.Get(ctx, key, secret); err != nil {
			return false, err.Error()
		}
		block, _ := pem.Decode(secret.Data["tls.crt"])
		return block != nil, "the broken serving certificate was not replaced"
	})
	testenv.Eventually(t, time.Minute, injected)
	op.stop()

	requests := c.operatorRequests(t)
	logRequests(t, requests)
	c.checkRequests(t, requests, unreachable, func(p permission) bool {
		return strings.HasSuffix(p.role, "-webhook-certificates")
	})
}

// scrapeMetrics GETs /metrics with a token of the operator's ServiceAccount (any token the API
// server accepts does), which makes the operator review the token and the access.
func scrapeMetrics(t *testing.T, c *cluster, address string) {
	t.Helper()
	ctx := context.Background()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: serviceAccount}}
	token := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}
	if err := c.client.SubResource("token").Create(ctx, sa, token); err != nil {
		t.Fatal(err)
	}
	// The metrics endpoint serves a self-signed certificate; what is tested is what the operator
	// asks the API server, not the endpoint's identity.
	httpClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // see above
	testenv.Eventually(t, time.Minute, func(ctx context.Context) (bool, string) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+address+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token.Status.Token)
		resp, err := httpClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		_ = resp.Body.Close()
		// 200 or 403 (the ServiceAccount may not read metrics): either way the operator asked.
		return resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusForbidden, resp.Status
	})
}

// kubelet plays the kubelet for the pods of a namespace (envtest has none): every container runs
// its spec image and is ready, and the pod is Ready once every readiness gate is true.
type kubelet struct {
	c  client.Client
	ns string
}

func (k *kubelet) sync(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	pods := &corev1.PodList{}
	if err := k.c.List(ctx, pods, client.InNamespace(k.ns)); err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	for i := range pods.Items {
		pod := &pods.Items[i]
		statuses := func(containers []corev1.Container, previous []corev1.ContainerStatus) []corev1.ContainerStatus {
			var out []corev1.ContainerStatus
			for _, c := range containers {
				s := corev1.ContainerStatus{Name: c.Name, Image: c.Image, Ready: true,
					State:     corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
					Resources: c.Resources.DeepCopy()}
				for _, p := range previous {
					if p.Name == c.Name {
						s.RestartCount = p.RestartCount
						if p.Image != c.Image {
							s.RestartCount++
						}
					}
				}
				out = append(out, s)
			}
			return out
		}
		pod.Status.Phase = corev1.PodRunning
		pod.Status.InitContainerStatuses = statuses(pod.Spec.InitContainers, pod.Status.InitContainerStatuses)
		pod.Status.ContainerStatuses = statuses(pod.Spec.Containers, pod.Status.ContainerStatuses)
		// The operator owns the readiness gate's condition; the kubelet keeps it.
		ready := corev1.ConditionTrue
		var conditions []corev1.PodCondition
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodReady {
				continue
			}
			conditions = append(conditions, c)
		}
		for _, gate := range pod.Spec.ReadinessGates {
			found := false
			for _, c := range conditions {
				found = found || (c.Type == gate.ConditionType && c.Status == corev1.ConditionTrue)
			}
			if !found {
				ready = corev1.ConditionFalse
			}
		}
		pod.Status.Conditions = append(conditions, corev1.PodCondition{Type: corev1.PodReady, Status: ready, LastTransitionTime: now})
		// A conflict means the operator wrote the status first: the next sync catches up.
		if err := k.c.Status().Update(ctx, pod); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
}
