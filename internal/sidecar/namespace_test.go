package sidecar_test

import (
	"strings"
	"testing"

	"github.com/meshlift/meshlift/internal/sidecar"
)

func TestExcludedNamespace(t *testing.T) {
	const operatorNamespace = "mesh-operators"
	tests := []struct {
		name        string
		namespace   string
		wantMessage string // "" when the namespace may be injected
	}{
		{"keeps kube-system out", "kube-system", "kube-system is a Kubernetes system namespace"},
		{"keeps kube-public out", "kube-public", "kube-public is a Kubernetes system namespace"},
		{"keeps kube-node-lease out", "kube-node-lease", "kube-node-lease is a Kubernetes system namespace"},
		{"keeps the operator's namespace out, whatever it is called", operatorNamespace, "mesh-operators is the operator's namespace"},
		{"lets an application namespace in", "shop", ""},
		{"lets the default namespace in", "default", ""},
		{"lets in meshlift-system when the operator runs elsewhere", "meshlift-system", ""},
		{"does not match on a prefix of a system namespace", "kube-system-apps", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reason, message := sidecar.ExcludedNamespace(tt.namespace, operatorNamespace)
			if tt.wantMessage == "" {
				if reason != "" {
					t.Fatalf("ExcludedNamespace(%q) = %s (%s), want it injectable", tt.namespace, reason, message)
				}
				return
			}
			if reason != sidecar.SkipExcludedNamespace || !strings.Contains(message, tt.wantMessage) {
				t.Fatalf("ExcludedNamespace(%q) = %q, %q; want %s and a message containing %q", tt.namespace, reason, message, sidecar.SkipExcludedNamespace, tt.wantMessage)
			}
		})
	}
}

func TestAnEmptyOperatorNamespaceExcludesNoOtherNamespace(t *testing.T) {
	if reason, _ := sidecar.ExcludedNamespace("", ""); reason != "" {
		t.Errorf("with no operator namespace, the empty namespace is excluded as the operator's (%s)", reason)
	}
	if reason, _ := sidecar.ExcludedNamespace("shop", ""); reason != "" {
		t.Errorf("with no operator namespace, shop is excluded (%s)", reason)
	}
}
