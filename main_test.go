package main

import (
	"strings"
	"testing"

	"github.com/meshlift/meshlift/internal/webhookcert"
)

func TestCheckWebhookCertFlags(t *testing.T) {
	tests := []struct {
		name    string
		mode    webhookcert.Mode
		set     []string
		wantErr []string // substrings of the error; none when nil
	}{
		{name: "external mode runs with its own flags", mode: webhookcert.External,
			set: []string{"webhook-cert-mode", "webhook-cert-dir", "namespace", "webhook-port"}},
		{name: "external mode refuses a self-managed Secret name", mode: webhookcert.External,
			set: []string{"webhook-cert-mode", "webhook-secret-name"}, wantErr: []string{"--webhook-cert-mode=external", "--webhook-secret-name"}},
		{name: "external mode names every flag it refuses", mode: webhookcert.External,
			set:     []string{"webhook-service-name", "mutating-webhook-configuration", "validating-webhook-configuration"},
			wantErr: []string{"--webhook-service-name", "--mutating-webhook-configuration", "--validating-webhook-configuration"}},
		{name: "self-managed mode takes them all", mode: webhookcert.SelfManaged,
			set: []string{"webhook-secret-name", "webhook-service-name", "mutating-webhook-configuration", "validating-webhook-configuration"}},
		{name: "cert-manager mode ignores them, as it always has", mode: webhookcert.CertManager,
			set: []string{"webhook-secret-name", "mutating-webhook-configuration"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set := map[string]bool{}
			for _, name := range tt.set {
				set[name] = true
			}
			err := checkWebhookCertFlags(tt.mode, set)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("checkWebhookCertFlags() = %v, want no error", err)
				}
				return
			}
			if err == nil {
				t.Fatal("checkWebhookCertFlags() = nil, want an error")
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %s", err, want)
				}
			}
		})
	}
}
