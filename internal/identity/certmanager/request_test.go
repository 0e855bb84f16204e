package certmanager

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"slices"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshlift/meshlift/internal/identity"
)

func TestCertManagerAcceptsTheCSRAsAnIntermediateCA(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, err := newCSR(key, "example.org")
	if err != nil {
		t.Fatal(err)
	}
	cr := &cmapi.CertificateRequest{Spec: cmapi.CertificateRequestSpec{
		Request: csrPEM, IsCA: true, Usages: intermediateUsages, Duration: &metav1.Duration{Duration: time.Hour},
	}}
	// What cert-manager's CA issuer does with the request; it fails if the usages or the basic
	// constraints of the CSR disagree with the spec.
	tmpl, err := pki.CertificateTemplateFromCertificateRequest(cr)
	if err != nil {
		t.Fatalf("cert-manager refuses the request: %v", err)
	}
	if !tmpl.IsCA || tmpl.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageDigitalSignature || len(tmpl.ExtKeyUsage) != 0 {
		t.Errorf("template isCA=%v keyUsage=%v extKeyUsage=%v, want a CA that signs certificates", tmpl.IsCA, tmpl.KeyUsage, tmpl.ExtKeyUsage)
	}
	if len(tmpl.URIs) != 1 || tmpl.URIs[0].String() != "spiffe://example.org" || len(tmpl.DNSNames) != 0 {
		t.Errorf("template SANs %v %v, want only spiffe://example.org", tmpl.URIs, tmpl.DNSNames)
	}
	if !key.PublicKey.Equal(tmpl.PublicKey) {
		t.Error("the template is not for the intermediate's key")
	}
}

func withCondition(conditionType cmapi.CertificateRequestConditionType, status cmmeta.ConditionStatus, reason, message string) func(*cmapi.CertificateRequest) {
	return func(cr *cmapi.CertificateRequest) {
		cr.Status.Conditions = append(cr.Status.Conditions, cmapi.CertificateRequestCondition{Type: conditionType, Status: status, Reason: reason, Message: message})
	}
}

func TestStateOfACertificateRequest(t *testing.T) {
	issued := func(cr *cmapi.CertificateRequest) { cr.Status.Certificate = []byte("cert") }
	tests := []struct {
		name        string
		changes     []func(*cmapi.CertificateRequest)
		wantIssued  bool
		wantWaiting string
		wantErr     string
	}{
		{name: "a new request waits for approval", wantWaiting: "approval"},
		{
			name:        "an approved request waits for the issuer",
			changes:     []func(*cmapi.CertificateRequest){withCondition(cmapi.CertificateRequestConditionApproved, cmmeta.ConditionTrue, "cert-manager.io", "")},
			wantWaiting: "the issuer",
		},
		{
			name: "a pending request says what it waits for",
			changes: []func(*cmapi.CertificateRequest){
				withCondition(cmapi.CertificateRequestConditionApproved, cmmeta.ConditionTrue, "cert-manager.io", ""),
				withCondition(cmapi.CertificateRequestConditionReady, cmmeta.ConditionFalse, cmapi.CertificateRequestReasonPending, "Referenced issuer does not exist"),
			},
			wantWaiting: "Pending: Referenced issuer does not exist",
		},
		{
			name: "a ready request with its certificate is issued",
			changes: []func(*cmapi.CertificateRequest){
				withCondition(cmapi.CertificateRequestConditionReady, cmmeta.ConditionTrue, cmapi.CertificateRequestReasonIssued, ""), issued,
			},
			wantIssued: true,
		},
		{
			name: "a denied request is an error naming the approver",
			changes: []func(*cmapi.CertificateRequest){
				withCondition(cmapi.CertificateRequestConditionDenied, cmmeta.ConditionTrue, "policy", "not allowed"),
				withCondition(cmapi.CertificateRequestConditionReady, cmmeta.ConditionFalse, cmapi.CertificateRequestReasonDenied, "denied"),
			},
			wantErr: "was denied (policy: not allowed); an approver",
		},
		{
			name:    "an invalid request is an error",
			changes: []func(*cmapi.CertificateRequest){withCondition(cmapi.CertificateRequestConditionInvalidRequest, cmmeta.ConditionTrue, "BadCSR", "no")},
			wantErr: "as invalid (BadCSR: no)",
		},
		{
			name:    "a failed request is an error",
			changes: []func(*cmapi.CertificateRequest){withCondition(cmapi.CertificateRequestConditionReady, cmmeta.ConditionFalse, cmapi.CertificateRequestReasonFailed, "signing failed")},
			wantErr: "failed to issue CertificateRequest ns/cr: signing failed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cr := &cmapi.CertificateRequest{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cr"}}
			cr.Spec.IssuerRef = cmmeta.IssuerReference{Name: "mesh", Kind: cmapi.ClusterIssuerKind}
			for _, change := range tt.changes {
				change(cr)
			}
			state := stateOf(cr)
			if state.Issued != tt.wantIssued || state.Waiting != tt.wantWaiting {
				t.Errorf("state = issued %v, waiting %q; want issued %v, waiting %q", state.Issued, state.Waiting, tt.wantIssued, tt.wantWaiting)
			}
			switch {
			case tt.wantErr == "" && state.Err != nil:
				t.Errorf("unexpected error: %v", state.Err)
			case tt.wantErr != "" && (state.Err == nil || !strings.Contains(state.Err.Error(), tt.wantErr)):
				t.Errorf("error = %v, want one containing %q", state.Err, tt.wantErr)
			}
		})
	}
}

func TestTheIntermediateIsRenewedAtTwoThirdsOfItsLifetime(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cert := &x509.Certificate{NotBefore: start, NotAfter: start.Add(30 * 24 * time.Hour)}
	if got, want := renewalTime(cert), start.Add(20*24*time.Hour); !got.Equal(want) {
		t.Errorf("renewal at %v, want %v", got, want)
	}
}

func TestWhichCertificateRequestsAreCleanedUp(t *testing.T) {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	request := func(name, replica string, age time.Duration) cmapi.CertificateRequest {
		return cmapi.CertificateRequest{ObjectMeta: metav1.ObjectMeta{
			Name: name, Labels: map[string]string{LabelReplica: replica}, CreationTimestamp: metav1.NewTime(now.Add(-age)),
		}}
	}
	const day = 24 * time.Hour
	tests := []struct {
		name     string
		requests []cmapi.CertificateRequest
		current  string
		want     []string
	}{
		{
			name:     "a replica keeps its newest requests and deletes the rest",
			requests: []cmapi.CertificateRequest{request("a", "me", 60*day), request("b", "me", 40*day), request("c", "me", 20*day), request("d", "me", 0)},
			current:  "d",
			want:     []string{"a", "b"},
		},
		{
			name:     "the request in use is kept even if its clock says it is older",
			requests: []cmapi.CertificateRequest{request("old-current", "me", 10*day), request("x", "me", 0), request("y", "me", time.Hour)},
			current:  "old-current",
			want:     []string{"y"},
		},
		{
			name:     "another replica's requests are deleted only once their certificates have expired",
			requests: []cmapi.CertificateRequest{request("gone", "other", 31*day), request("alive", "other", 5*day), request("mine", "me", 0)},
			current:  "mine",
			want:     []string{"gone"},
		},
		{name: "nothing is deleted when there is nothing to spare", requests: []cmapi.CertificateRequest{request("mine", "me", 0)}, current: "mine"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := requestsToDelete(tt.requests, "me", tt.current, 2, 30*day, now)
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("deleted %v, want %v", got, tt.want)
			}
		})
	}
}

func TestOptionsAreValidated(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"no namespace", Options{IssuerRef: cmmeta.IssuerReference{Name: "x"}}, "namespace"},
		{"no issuer name", Options{Namespace: "ns"}, "name of the issuer"},
		{"a cert-manager kind that is not an issuer", Options{Namespace: "ns", IssuerRef: cmmeta.IssuerReference{Name: "x", Kind: "Certificate"}}, `not "Certificate"`},
		{"a trust anchor of another kind", Options{Namespace: "ns", IssuerRef: cmmeta.IssuerReference{Name: "x"}, TrustAnchor: TrustAnchor{Kind: "Pod", Name: "a"}}, `not "Pod"`},
		{"a trust anchor with an invalid name", Options{Namespace: "ns", IssuerRef: cmmeta.IssuerReference{Name: "x"}, TrustAnchor: TrustAnchor{Kind: KindSecret, Name: "A_b"}}, `name "A_b" is invalid`},
	}
	for _, tt := range tests {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			_, err := New(tt.opts, identity.NewHolder())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
	ca, err := New(Options{Namespace: "ns", IssuerRef: cmmeta.IssuerReference{Name: "x"}, Replica: strings.Repeat("pod", 30), TrustAnchor: DefaultTrustAnchor()}, identity.NewHolder())
	if err != nil {
		t.Fatal(err)
	}
	if ref := ca.opts.IssuerRef; ref.Kind != cmapi.IssuerKind || ref.Group != "cert-manager.io" {
		t.Errorf("issuerRef defaults to %+v, want kind Issuer in group cert-manager.io", ref)
	}
	if len(ca.opts.Replica) > 63 {
		t.Errorf("replica label %q is not a valid label value", ca.opts.Replica)
	}
}

// TestUnsafeConfigurationsAreRefusedUnlessAccepted: New refuses an issuer of cluster scope and a
// trust bundle taken from status.ca, each with a message naming the fix, unless the admin
// accepted that risk explicitly.
func TestUnsafeConfigurationsAreRefusedUnlessAccepted(t *testing.T) {
	issuer := cmmeta.IssuerReference{Name: "mesh-ca"}
	clusterIssuer := cmmeta.IssuerReference{Name: "mesh-ca", Kind: cmapi.ClusterIssuerKind}
	externalCluster := cmmeta.IssuerReference{Name: "pca", Kind: "AWSPCAClusterIssuer", Group: "awspca.cert-manager.io"}
	externalNamespaced := cmmeta.IssuerReference{Name: "pca", Kind: "AWSPCAIssuer", Group: "awspca.cert-manager.io"}
	anchor := DefaultTrustAnchor()
	tests := []struct {
		name    string
		opts    Options
		wantErr []string // empty: accepted
	}{
		{"a dedicated Issuer and a pinned trust anchor", Options{IssuerRef: issuer, TrustAnchor: anchor}, nil},
		{"an external namespaced issuer and a pinned trust anchor", Options{IssuerRef: externalNamespaced, TrustAnchor: anchor}, nil},
		{"a ClusterIssuer", Options{IssuerRef: clusterIssuer, TrustAnchor: anchor},
			[]string{`ClusterIssuer "mesh-ca" serves every namespace`, "--ca-issuer-kind=Issuer", "--ca-i-understand-unsafe=cluster-issuer"}},
		{"an external cluster issuer", Options{IssuerRef: externalCluster, TrustAnchor: anchor},
			[]string{`AWSPCAClusterIssuer "pca" serves every namespace`}},
		{"a ClusterIssuer accepted", Options{IssuerRef: clusterIssuer, TrustAnchor: anchor, AcceptRisks: Risks{RiskClusterIssuer}}, nil},
		{"no trust anchor", Options{IssuerRef: issuer},
			[]string{"no trust anchor is pinned", "--ca-trust-anchor=configmap/<name>", "--ca-i-understand-unsafe=issuer-ca"}},
		{"no trust anchor accepted", Options{IssuerRef: issuer, AcceptRisks: Risks{RiskIssuerCA}}, nil},
		{"both, one accepted", Options{IssuerRef: clusterIssuer, AcceptRisks: Risks{RiskIssuerCA}},
			[]string{"serves every namespace"}},
		{"both accepted", Options{IssuerRef: clusterIssuer, AcceptRisks: Risks{RiskIssuerCA, RiskClusterIssuer}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Namespace = "meshlift-system"
			_, err := New(tt.opts, identity.NewHolder())
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("New() = %v, want it accepted", err)
				}
				return
			}
			if err == nil {
				t.Fatal("New() accepted an unsafe configuration")
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("New() = %v, want an error containing %q", err, want)
				}
			}
		})
	}
}

func TestTheFlagsParse(t *testing.T) {
	var anchor TrustAnchor
	for in, want := range map[string]TrustAnchor{
		"configmap/roots": {Kind: KindConfigMap, Name: "roots"},
		"ConfigMap/roots": {Kind: KindConfigMap, Name: "roots"},
		"secret/roots":    {Kind: KindSecret, Name: "roots"},
		"":                {},
	} {
		if err := anchor.Set(in); err != nil || anchor != want {
			t.Errorf("Set(%q) = %+v, %v; want %+v", in, anchor, err, want)
		}
		if in != "" && anchor.String() != strings.ToLower(in) {
			t.Errorf("String() = %q after Set(%q)", anchor.String(), in)
		}
	}
	for _, in := range []string{"roots", "pod/roots", "secret/", "secret/a/b"} {
		if err := anchor.Set(in); err == nil {
			t.Errorf("Set(%q) accepted", in)
		}
	}
	var risks Risks
	if err := risks.Set("cluster-issuer, issuer-ca"); err != nil || !risks.Has(RiskClusterIssuer) || !risks.Has(RiskIssuerCA) {
		t.Errorf("Set = %v, risks %v", err, risks)
	}
	if err := risks.Set("cluster-issuer"); err != nil || len(risks) != 2 || risks.String() != "cluster-issuer,issuer-ca" {
		t.Errorf("Set again = %v, risks %v", err, risks)
	}
	if err := risks.Set("everything"); err == nil {
		t.Error("an unknown risk was accepted")
	}
}
