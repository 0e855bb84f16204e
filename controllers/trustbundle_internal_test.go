package controllers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshlift/meshlift/internal/identity"
)

func TestWhatATrustBundleConfigMapNeeds(t *testing.T) {
	const bundle = "BUNDLE"
	configMap := func(labelled bool, data string) *corev1.ConfigMap {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: TrustBundleConfigMap}, Data: map[string]string{TrustBundleKey: data}}
		if labelled {
			cm.Labels = map[string]string{identity.LabelPartOf: identity.PartOf}
		}
		return cm
	}
	tests := []struct {
		name     string
		existing *corev1.ConfigMap
		meshed   bool
		want     trustBundleAction
	}{
		{"a meshed namespace without one gets one", nil, true, trustBundleCreate},
		{"an unmeshed namespace without one gets none", nil, false, trustBundleNone},
		{"a current one is left as it is", configMap(true, bundle), true, trustBundleNone},
		{"a stale one in a meshed namespace is updated", configMap(true, "OLD"), true, trustBundleUpdate},
		{"one without the label in a meshed namespace is taken back", configMap(false, bundle), true, trustBundleUpdate},
		{"a stale one of ours in a namespace no longer meshed is updated", configMap(true, "OLD"), false, trustBundleUpdate},
		{"someone else's in an unmeshed namespace is left alone", configMap(false, "OLD"), false, trustBundleNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := trustBundleChange(tt.existing, tt.meshed, bundle); got != tt.want {
				t.Errorf("trustBundleChange() = %d, want %d", got, tt.want)
			}
		})
	}
}
