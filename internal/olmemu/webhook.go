package olmemu

import (
	"crypto/sha256"
	"fmt"

	operatorsv1 "github.com/operator-framework/api/pkg/operators/v1"
	"github.com/operator-framework/api/pkg/operators/v1alpha1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// WebhookName is the name the emulation gives the configuration of a webhookdefinition:
// generateName, "-", and five characters. OLM creates it with metadata.generateName
// (webhook.go createOrUpdate{Mutating,Validating}Webhook), so the API server picks five random
// characters; server-side apply needs a name, so here they are derived from the namespace, the
// CSV and generateName, from the API server's alphabet, and stay the same from one Apply to the
// next (OLM finds its configuration again by its labels instead).
func WebhookName(namespace, csvName, generateName string) string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789" // k8s.io/apimachinery/pkg/util/rand
	sum := sha256.Sum256([]byte(namespace + "/" + csvName + "/" + generateName))
	suffix := make([]byte, 5)
	for i := range suffix {
		suffix[i] = alphabet[int(sum[i])%len(alphabet)]
	}
	return generateName + "-" + string(suffix)
}

// webhookFor mirrors webhook.go createOrUpdateWebhook for a webhook that does not exist yet:
// the namespaceSelector is the OperatorGroup's NamespaceLabelSelector (nil, "select everything",
// for AllNamespaces), the single webhook is WebhookDescription.GetMutatingWebhook or
// GetValidatingWebhook (Service <deployment>-service in the CSV's namespace, port containerPort,
// the CSV's path, rules, policies and timeouts unchanged, caBundle the CA), and the labels are
// the owner's plus addWebhookLabels'. OLM also sets metadata.namespace on these cluster-scoped
// objects, which the API server ignores; so does this emulation. Conversion webhooks are not
// emulated.
func webhookFor(csv *v1alpha1.ClusterServiceVersion, og *operatorsv1.OperatorGroup, desc v1alpha1.WebhookDescription, caPEM []byte) (client.Object, error) {
	selector, err := og.NamespaceLabelSelector()
	if err != nil {
		return nil, err
	}
	if err := validWebhookRules(desc.Rules); err != nil {
		return nil, fmt.Errorf("webhook %s: %w", desc.GenerateName, err)
	}
	if len(caPEM) == 0 {
		return nil, fmt.Errorf("webhook %s: no CA for Deployment %s", desc.GenerateName, desc.DeploymentName)
	}
	labels := ownerLabels(csv)
	hash, err := deepHashObject(&desc) // addWebhookLabels
	if err != nil {
		return nil, err
	}
	labels[WebhookDescLabel] = desc.GenerateName
	labels[WebhookHashLabel] = hash
	labels[ManagedLabel] = "true"
	meta := metav1.ObjectMeta{Name: WebhookName(csv.Namespace, csv.Name, desc.GenerateName), Labels: labels}

	switch desc.Type {
	case v1alpha1.MutatingAdmissionWebhook:
		return &admissionregistrationv1.MutatingWebhookConfiguration{
			TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
			ObjectMeta: meta,
			Webhooks:   []admissionregistrationv1.MutatingWebhook{desc.GetMutatingWebhook(csv.Namespace, selector, caPEM)},
		}, nil
	case v1alpha1.ValidatingAdmissionWebhook:
		return &admissionregistrationv1.ValidatingWebhookConfiguration{
			TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingWebhookConfiguration"},
			ObjectMeta: meta,
			Webhooks:   []admissionregistrationv1.ValidatingWebhook{desc.GetValidatingWebhook(csv.Namespace, selector, caPEM)},
		}, nil
	}
	return nil, fmt.Errorf("webhook %s: type %q is not emulated", desc.GenerateName, desc.Type)
}

// validWebhookRules mirrors webhook.go ValidWebhookRules, which OLM checks before installing a
// CSV: no rule may match every API group, OLM's group, or the webhook configurations themselves.
func validWebhookRules(rules []admissionregistrationv1.RuleWithOperations) error {
	for _, rule := range rules {
		groups := map[string]bool{}
		for _, g := range rule.APIGroups {
			groups[g] = true
		}
		if groups["*"] {
			return fmt.Errorf("webhook rules cannot include all groups")
		}
		if groups["operators.coreos.com"] {
			return fmt.Errorf("webhook rules cannot include the OLM group")
		}
		if groups["admissionregistration.k8s.io"] {
			for _, r := range rule.Resources {
				if r == "*" || r == "MutatingWebhookConfiguration" || r == "ValidatingWebhookConfiguration" {
					return fmt.Errorf("webhook rules cannot include MutatingWebhookConfiguration or ValidatingWebhookConfiguration resources")
				}
			}
		}
	}
	return nil
}
