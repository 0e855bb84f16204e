package certmanager

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/repo"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// The backend runs in real managers against envtest's kube-apiserver with cert-manager's
// CertificateRequest CRD installed (testdata/crds, copied from the cert-manager module), as a
// user holding only the permissions of config/rbac/role.yaml. A goroutine plays cert-manager
// (testIssuer).

var env *testenv.Env

const (
	timeout     = 20 * time.Second
	trustDomain = "example.org"
	operator    = "operator"
)

func TestMain(m *testing.M) {
	if os.Getenv("MESHLIFT_TEST_LOG") == "debug" {
		ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true)))
	}
	withCertManagerCRDs := func(e *envtest.Environment, root string) {
		e.CRDDirectoryPaths = append(e.CRDDirectoryPaths,
			filepath.Join(root, "internal", "identity", "certmanager", "testdata", "crds", "cert-manager.io_certificaterequests.yaml"))
	}
	addCertManagerTypes := func(e *testenv.Env) (func(), error) {
		return func() {}, cmapi.AddToScheme(e.Scheme)
	}
	testenv.MainWith(m, &env, []testenv.Option{withCertManagerCRDs}, addCertManagerTypes)
}

// operatorNamespace creates a namespace where the operator user has the generated permissions:
// manager-role, and the Role of the cert-manager backend (config/rbac/ca-cert-manager).
func operatorNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := env.Namespace(t, prefix)
	clusterRules, namespacedRules := testenv.GeneratedRules(t)
	env.Grant(t, "manager", operator, ns, clusterRules, append(slices.Clone(namespacedRules), modeRules(t)...))
	return ns
}

// modeRules are the rules of config/rbac/ca-cert-manager/role.yaml, generated from the markers
// of this package.
func modeRules(t *testing.T) []rbacv1.PolicyRule {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "config", "rbac", "ca-cert-manager", "role.yaml"))
	if err != nil {
		t.Fatalf("the cert-manager backend's Role: %v (run `make manifests`)", err)
	}
	var role rbacv1.Role
	if err := utilyaml.Unmarshal(data, &role); err != nil {
		t.Fatal(err)
	}
	return role.Rules
}

// pinAnchor writes roots into the trust anchor ConfigMap of ns (creating it if needed) and
// returns the TrustAnchor naming it.
func pinAnchor(t *testing.T, ns string, roots ...*x509.Certificate) TrustAnchor {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: DefaultTrustAnchorName}}
	_, err := controllerutil.CreateOrUpdate(context.Background(), env.Client, cm, func() error {
		cm.Data = map[string]string{DefaultTrustAnchorKey: string(pemOf(roots...))}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return DefaultTrustAnchor()
}

func pemOf(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// startCA runs the backend in its own manager, as the operator user, until the test ends.
func startCA(t *testing.T, opts Options, holder *identity.Holder, tweaks ...func(*CA)) *CA {
	t.Helper()
	mgr, err := ctrl.NewManager(env.As(operator), ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{metav1.NamespaceDefault: {}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := New(opts, holder)
	if err != nil {
		t.Fatal(err)
	}
	for _, tweak := range tweaks {
		tweak(ca)
	}
	if err := ca.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager stopped with an error: %v", err)
		}
	})
	return ca
}

func waitForAuthority(t *testing.T, holder *identity.Holder, newerThan *identity.Authority) *identity.Authority {
	t.Helper()
	var authority *identity.Authority
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		authority = holder.Current()
		switch {
		case authority == nil:
			return false, "no Authority published"
		case authority == newerThan:
			return false, "the Authority has not been renewed"
		}
		return true, ""
	})
	return authority
}

func waitForReadyError(t *testing.T, ca *CA, want string) {
	t.Helper()
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		err := ca.Ready(nil)
		return err != nil && strings.Contains(err.Error(), want), fmt.Sprintf("Ready() = %v, want an error containing %q", err, want)
	})
}

func requestsOf(t *testing.T, ns string) []cmapi.CertificateRequest {
	t.Helper()
	list := &cmapi.CertificateRequestList{}
	if err := env.Client.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func decodeCerts(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return certs
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, cert)
	}
}

// verifyLeaf signs a workload leaf with authority and verifies the chain it presents against
// bundle, as a peer does.
func verifyLeaf(t *testing.T, authority *identity.Authority, bundle []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := identity.SPIFFEID(trustDomain, "shop", "cart")
	leaf, err := authority.SignWorkload(&key.PublicKey, id, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	chain := decodeCerts(t, leaf.ChainPEM)
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		t.Fatal("the bundle holds no certificate")
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("a leaf signed with the intermediate does not verify against the bundle: %v", err)
	}
	if chain[0].URIs[0].String() != id {
		t.Errorf("the leaf is for %v", chain[0].URIs)
	}
}

func TestTheIssuerSignsAnIntermediateThatSignsVerifiableLeaves(t *testing.T) {
	tests := []struct {
		name string
		kind string
		// issuerCA returns the issuer's CA Secret and the root peers should end up trusting.
		issuerCA func(t *testing.T) (issuer *testIssuer, root *x509.Certificate)
		// wantChain is the number of certificates in status.certificate.
		wantChain int
		accept    Risks
	}{
		{
			name: "an Issuer whose CA is a self-signed root",
			kind: cmapi.IssuerKind,
			issuerCA: func(t *testing.T) (*testIssuer, *x509.Certificate) {
				root, key := newCA(t, "root", nil, nil)
				return &testIssuer{caCerts: []*x509.Certificate{root}, caKey: key}, root
			},
			wantChain: 1,
		},
		{
			name: "a ClusterIssuer whose CA is an intermediate of an offline root",
			kind: cmapi.ClusterIssuerKind,
			issuerCA: func(t *testing.T) (*testIssuer, *x509.Certificate) {
				root, rootKey := newCA(t, "offline root", nil, nil)
				issuing, issuingKey := newCA(t, "issuing CA", root, rootKey)
				return &testIssuer{caCerts: []*x509.Certificate{issuing, root}, caKey: issuingKey}, root
			},
			wantChain: 2,
			accept:    Risks{RiskClusterIssuer},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := operatorNamespace(t, "issued")
			issuer, root := tt.issuerCA(t)
			issuer.name = "mesh-ca"
			issuer.run(t, ns)
			holder := identity.NewHolder()
			ca := startCA(t, Options{
				Namespace: ns, TrustDomain: trustDomain, Replica: "operator-0",
				IssuerRef:   cmmeta.IssuerReference{Name: issuer.name, Kind: tt.kind},
				TrustAnchor: pinAnchor(t, ns, root), AcceptRisks: tt.accept,
			}, holder)
			authority := waitForAuthority(t, holder, nil)

			requests := requestsOf(t, ns)
			if len(requests) != 1 {
				t.Fatalf("%d CertificateRequests, want 1", len(requests))
			}
			cr := requests[0]
			wantLabels := map[string]string{identity.LabelPartOf: identity.PartOf, LabelComponent: Component, LabelReplica: "operator-0"}
			switch {
			case !cr.Spec.IsCA || !slices.Equal(cr.Spec.Usages, []cmapi.KeyUsage{cmapi.UsageCertSign, cmapi.UsageDigitalSignature}):
				t.Errorf("the request has isCA %v and usages %v", cr.Spec.IsCA, cr.Spec.Usages)
			case cr.Spec.Duration == nil || cr.Spec.Duration.Duration != DefaultDuration:
				t.Errorf("the request asks for duration %v, want %v", cr.Spec.Duration, DefaultDuration)
			case cr.Spec.IssuerRef != (cmmeta.IssuerReference{Name: issuer.name, Kind: tt.kind, Group: "cert-manager.io"}):
				t.Errorf("the request names issuer %+v", cr.Spec.IssuerRef)
			case !labelsInclude(cr.Labels, wantLabels):
				t.Errorf("the request has labels %v, want %v", cr.Labels, wantLabels)
			}
			if chain := decodeCerts(t, cr.Status.Certificate); len(chain) != tt.wantChain {
				t.Errorf("status.certificate holds %d certificates, want %d", len(chain), tt.wantChain)
			}

			signer := authority.Signer()
			switch {
			case !signer.IsCA || len(signer.URIs) != 1 || signer.URIs[0].String() != "spiffe://"+trustDomain:
				t.Errorf("the intermediate has isCA %v and URIs %v, want a CA for spiffe://%s", signer.IsCA, signer.URIs, trustDomain)
			case signer.NotAfter.Sub(signer.NotBefore) != DefaultDuration:
				t.Errorf("the intermediate lives %s, want %s", signer.NotAfter.Sub(signer.NotBefore), DefaultDuration)
			case signer.CheckSignatureFrom(issuer.caCerts[0]) != nil:
				t.Error("the intermediate is not signed by the issuer's CA")
			}
			if !bytes.Equal(authority.TrustBundle(), pemOf(root)) {
				t.Error("the trust bundle is not the pinned trust anchor")
			}
			if bundle := decodeCerts(t, authority.TrustBundle()); len(bundle) != 1 || !bundle[0].Equal(root) {
				t.Error("the trust bundle is not the issuer's root")
			}
			verifyLeaf(t, authority, authority.TrustBundle())
			if err := ca.Ready(nil); err != nil {
				t.Errorf("Ready() = %v once the intermediate is published", err)
			}

			// Leaves are signed locally: signing many more asks cert-manager for nothing.
			for range 50 {
				key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				if _, err := authority.SignWorkload(&key.PublicKey, identity.SPIFFEID(trustDomain, "ns", "sa"), time.Hour, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			if n := len(requestsOf(t, ns)); n != 1 || issuer.issued.Load() != 1 {
				t.Errorf("%d CertificateRequests and %d issued after signing leaves, want 1", n, issuer.issued.Load())
			}
		})
	}
}

func labelsInclude(got, want map[string]string) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func TestAFailedIssuanceIsAnErrorThatSaysWhatToFix(t *testing.T) {
	tests := []struct {
		name    string
		issuer  func(*testIssuer)
		wantErr string
		// pinned is the trust anchor: the issuer's root, another root, or nothing (status.ca).
		pinned func(issuerRoot *x509.Certificate) *x509.Certificate
	}{
		{"a denied request", func(i *testIssuer) { i.deny = true }, "was denied (test.meshlift.io: denied by the test approver); an approver", nil},
		{"an issuer that does not return its CA, with no trust anchor", func(i *testIssuer) { i.omitCA = true }, "without its CA in status.ca, and no trust anchor is pinned", nil},
		{"an issuer whose CA is not the pinned one", func(*testIssuer) {}, "is not an intermediate CA of the pinned trust anchor", func(*x509.Certificate) *x509.Certificate {
			other, _ := newCA(t, "another root", nil, nil)
			return other
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := operatorNamespace(t, "failed")
			root, key := newCA(t, "root", nil, nil)
			issuer := &testIssuer{name: "mesh-ca", caCerts: []*x509.Certificate{root}, caKey: key}
			tt.issuer(issuer)
			issuer.run(t, ns)
			holder := identity.NewHolder()
			retryFast := func(ca *CA) { ca.firstBackoff = 50 * time.Millisecond }
			opts := Options{Namespace: ns, TrustDomain: trustDomain, IssuerRef: cmmeta.IssuerReference{Name: issuer.name}, AcceptRisks: Risks{RiskIssuerCA}}
			if tt.pinned != nil {
				opts.TrustAnchor = pinAnchor(t, ns, tt.pinned(root))
			}
			ca := startCA(t, opts, holder, retryFast)
			waitForReadyError(t, ca, tt.wantErr)

			// Retries create new requests; the old ones are cleaned up all the same.
			testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
				return issuer.answered.Load() > DefaultKeepRequests+2, fmt.Sprintf("%d requests answered", issuer.answered.Load())
			})
			testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
				n := len(requestsOf(t, ns))
				return n <= DefaultKeepRequests, fmt.Sprintf("%d CertificateRequests, want at most %d", n, DefaultKeepRequests)
			})
			if holder.Current() != nil {
				t.Error("an Authority was published")
			}
		})
	}
}

func TestARequestNobodyAnswersIsReportedAsWaiting(t *testing.T) {
	ns := operatorNamespace(t, "waiting")
	holder := identity.NewHolder()
	root, _ := newCA(t, "root", nil, nil)
	ca := startCA(t, Options{Namespace: ns, TrustDomain: trustDomain, IssuerRef: cmmeta.IssuerReference{Name: "nobody"}, TrustAnchor: pinAnchor(t, ns, root)}, holder)
	waitForReadyError(t, ca, "is waiting for approval")
	time.Sleep(500 * time.Millisecond)
	if n := len(requestsOf(t, ns)); n != 1 {
		t.Errorf("%d CertificateRequests while the first one waits, want 1", n)
	}
}

func TestTheIntermediateIsRenewedAndOldRequestsAreCleanedUp(t *testing.T) {
	ns := operatorNamespace(t, "renewal")
	root, key := newCA(t, "root", nil, nil)
	issuer := &testIssuer{name: "mesh-ca", caCerts: []*x509.Certificate{root}, caKey: key}
	issuer.run(t, ns)

	// A request of a replica that is gone, whose certificate has expired by the time the
	// backend cleans up.
	gone := &cmapi.CertificateRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "meshlift-ca-gone", Labels: map[string]string{
			identity.LabelPartOf: identity.PartOf, LabelComponent: Component, LabelReplica: "operator-gone",
		}},
		Spec: cmapi.CertificateRequestSpec{Request: []byte("x"), IssuerRef: cmmeta.IssuerReference{Name: "elsewhere"}},
	}
	if err := env.Client.Create(context.Background(), gone); err != nil {
		t.Fatal(err)
	}

	holder := identity.NewHolder()
	const lifetime = 3 * time.Second
	startCA(t, Options{
		Namespace: ns, TrustDomain: trustDomain, Replica: "operator-0", KeepRequests: 2, Duration: lifetime,
		IssuerRef: cmmeta.IssuerReference{Name: issuer.name}, TrustAnchor: pinAnchor(t, ns, root),
	}, holder)

	var previous *identity.Authority
	for renewal := range 4 {
		authority := waitForAuthority(t, holder, previous)
		signer := authority.Signer()
		if previous != nil {
			if signer.Equal(previous.Signer()) {
				t.Fatalf("renewal %d published the same intermediate", renewal)
			}
			// Renewal happens at two thirds of the lifetime, before the old one expires.
			if time.Now().After(previous.Signer().NotAfter) {
				t.Errorf("renewal %d came after the previous intermediate expired", renewal)
			}
			// Leaves of the old intermediate still verify: the bundle did not change.
			verifyLeaf(t, previous, authority.TrustBundle())
		}
		verifyLeaf(t, authority, authority.TrustBundle())
		previous = authority
	}

	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		var names []string
		for _, cr := range requestsOf(t, ns) {
			names = append(names, cr.Name+"("+cr.Labels[LabelReplica]+")")
		}
		if len(names) > 2 {
			return false, fmt.Sprintf("CertificateRequests %v, want at most the 2 newest of operator-0", names)
		}
		return true, ""
	})
}
