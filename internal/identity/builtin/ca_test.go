package builtin

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// The CA runs in real managers against envtest's kube-apiserver, as a user holding only the
// permissions of config/rbac/role.yaml, and with a manager cache that sees no Secret of the
// operator's namespace (as main.go may restrict it).

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
	testenv.Main(m, &env)
}

// operatorNamespace creates a namespace where the operator user has the generated permissions.
func operatorNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := env.Namespace(t, prefix)
	clusterRules, namespacedRules := testenv.GeneratedRules(t)
	env.Grant(t, "manager", operator, ns, clusterRules, namespacedRules)
	return ns
}

// startReplica runs a CA in its own manager, as the operator user, until the test ends.
func startReplica(t *testing.T, ns string, holder *identity.Holder) *CA {
	t.Helper()
	return startReplicaAs(t, env.As(operator), Options{Namespace: ns, TrustDomain: trustDomain}, holder)
}

func startReplicaAs(t *testing.T, cfg *rest.Config, opts Options, holder *identity.Holder) *CA {
	t.Helper()
	ca, _ := runReplica(t, cfg, opts, holder)
	return ca
}

// runReplica is startReplicaAs that also returns a func that stops the replica (its manager)
// before the test ends, as when its pod is deleted.
func runReplica(t *testing.T, cfg *rest.Config, opts Options, holder *identity.Holder) (*CA, func()) {
	t.Helper()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// The manager's cache sees only the default namespace: the CA must not depend on it.
		Cache: cache.Options{DefaultNamespaces: map[string]cache.Config{metav1.NamespaceDefault: {}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := New(opts, holder)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("manager stopped with an error: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return ca, stop
}

// waitForBundle waits until holder publishes an Authority whose bundle is want (any when nil).
func waitForBundle(t *testing.T, holder *identity.Holder, want []byte) *identity.Authority {
	t.Helper()
	var authority *identity.Authority
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		authority = holder.Current()
		switch {
		case authority == nil:
			return false, "no Authority published"
		case want != nil && !bytes.Equal(authority.TrustBundle(), want):
			return false, "the published bundle is " + identity.BundleFingerprint(authority.TrustBundle()) + ", want " + identity.BundleFingerprint(want)
		}
		return true, ""
	})
	return authority
}

func getSecret(t *testing.T, ns string) *corev1.Secret {
	t.Helper()
	secret := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: DefaultSecretName}, secret); err != nil {
		t.Fatal(err)
	}
	return secret
}

func createSecret(t *testing.T, ns string, data map[string][]byte) *corev1.Secret {
	t.Helper()
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: DefaultSecretName}, Data: data}
	if err := env.Client.Create(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	return secret
}

func rootData(t *testing.T) map[string][]byte {
	t.Helper()
	data, err := newSecretData(trustDomain, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// verifiesLeaf signs a workload leaf with authority and verifies it with the roots of bundle.
func verifiesLeaf(t *testing.T, authority *identity.Authority, bundle []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := authority.SignWorkload(&key.PublicKey, identity.SPIFFEID(trustDomain, "shop", "cart"), time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		t.Fatal("the bundle holds no certificate")
	}
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("a leaf of the published CA does not verify with the bundle: %v", err)
	}
}

// signLeaf signs a workload leaf with authority.
func signLeaf(t *testing.T, authority *identity.Authority) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := authority.SignWorkload(&key.PublicKey, identity.SPIFFEID(trustDomain, "shop", "cart"), time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return leaf.Cert
}

// verifiesWith checks that leaf verifies, as a proxy verifies a peer, with the roots of bundle.
func verifiesWith(t *testing.T, leaf *x509.Certificate, bundle []byte) {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		t.Fatal("the bundle holds no certificate")
	}
	if _, err := identity.VerifyPeer(roots, []*x509.Certificate{leaf}, trustDomain, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("a leaf issued before does not verify with the bundle: %v", err)
	}
}

func deleteSecret(t *testing.T, ns string) {
	t.Helper()
	if err := env.Client.Delete(context.Background(), getSecret(t, ns)); err != nil {
		t.Fatal(err)
	}
}

// waitForSecret waits until the CA Secret exists and returns it.
func waitForSecret(t *testing.T, ns string) *corev1.Secret {
	t.Helper()
	var secret *corev1.Secret
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		secret = &corev1.Secret{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: DefaultSecretName}, secret); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	return secret
}

func TestTheFirstReplicaCreatesTheSecretAndPublishesItsRoot(t *testing.T) {
	ns := operatorNamespace(t, "first")
	holder := identity.NewHolder()
	ca := startReplica(t, ns, holder)
	authority := waitForBundle(t, holder, nil)

	secret := getSecret(t, ns)
	if secret.Type != corev1.SecretTypeOpaque || secret.Labels[identity.LabelPartOf] != identity.PartOf {
		t.Errorf("the Secret has type %q and labels %v, want Opaque and %s=%s", secret.Type, secret.Labels, identity.LabelPartOf, identity.PartOf)
	}
	if !bytes.Equal(authority.TrustBundle(), secret.Data[CertKey]) {
		t.Error("the published bundle is not the Secret's ca.crt")
	}
	root := authority.Signer()
	key, ok := root.PublicKey.(*ecdsa.PublicKey)
	switch {
	case !ok || key.Curve != elliptic.P256():
		t.Errorf("the root's key is a %T, want ECDSA P-256", root.PublicKey)
	case !root.IsCA || root.CheckSignatureFrom(root) != nil:
		t.Error("the root is not a self-signed CA")
	case len(root.URIs) != 1 || root.URIs[0].String() != "spiffe://"+trustDomain:
		t.Errorf("the root's URI SANs are %v, want spiffe://%s", root.URIs, trustDomain)
	case root.NotAfter.Sub(root.NotBefore) < DefaultLifetime:
		t.Errorf("the root lives %s, want %s", root.NotAfter.Sub(root.NotBefore), DefaultLifetime)
	}
	verifiesLeaf(t, authority, secret.Data[CertKey])
	if err := ca.Ready(nil); err != nil {
		t.Errorf("Ready() = %v once the CA is published", err)
	}
}

func TestReplicasStartingTogetherEndWithTheSameCA(t *testing.T) {
	ns := operatorNamespace(t, "together")
	holders := make([]*identity.Holder, 3)
	for i := range holders {
		holders[i] = identity.NewHolder()
		startReplica(t, ns, holders[i])
	}
	first := waitForBundle(t, holders[0], nil)
	for i, holder := range holders {
		authority := waitForBundle(t, holder, first.TrustBundle())
		if !authority.Signer().Equal(first.Signer()) {
			t.Errorf("replica %d signs with another root", i)
		}
	}
	if secret := getSecret(t, ns); !bytes.Equal(secret.Data[CertKey], first.TrustBundle()) {
		t.Error("the replicas publish a root that is not the Secret's")
	}
}

// TestADeletedSecretComesBackWithTheRootEveryReplicaHolds: replicas sharing one root each
// hold it in memory; when the Secret is deleted whichever recreates it writes that root, every
// replica keeps signing with it, and leaves issued before still verify with the new Secret's
// bundle. No replica mints a new root while it holds one.
func TestADeletedSecretComesBackWithTheRootEveryReplicaHolds(t *testing.T) {
	ns := operatorNamespace(t, "deleted")
	holders := []*identity.Holder{identity.NewHolder(), identity.NewHolder()}
	for _, holder := range holders {
		startReplica(t, ns, holder)
	}
	first := waitForBundle(t, holders[0], nil)
	for _, holder := range holders {
		waitForBundle(t, holder, first.TrustBundle())
	}
	issued := signLeaf(t, first)
	original := getSecret(t, ns)

	for round := range 3 {
		deleteSecret(t, ns)
		recreated := waitForSecret(t, ns)
		if recreated.UID == original.UID {
			t.Fatalf("round %d: the Secret was not deleted", round)
		}
		if !bytes.Equal(recreated.Data[CertKey], original.Data[CertKey]) || !bytes.Equal(recreated.Data[KeyKey], original.Data[KeyKey]) {
			t.Fatalf("round %d: the Secret came back with another root or key", round)
		}
		if recreated.Labels[identity.LabelPartOf] != identity.PartOf {
			t.Errorf("round %d: the recreated Secret has labels %v", round, recreated.Labels)
		}
		verifiesWith(t, issued, recreated.Data[CertKey])
		original = recreated
	}
	// Let any late sync run; nothing may change the root.
	time.Sleep(time.Second)
	for i, holder := range holders {
		if authority := holder.Current(); !authority.Signer().Equal(first.Signer()) || !bytes.Equal(authority.TrustBundle(), first.TrustBundle()) {
			t.Errorf("replica %d now publishes another CA", i)
		}
	}
	if secret := getSecret(t, ns); !bytes.Equal(secret.Data[CertKey], first.TrustBundle()) {
		t.Error("the Secret ends with another root")
	}
	// Each restoration is a Warning event on the Secret.
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		list := &eventsv1.EventList{}
		if err := env.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		for _, e := range list.Items {
			if e.Reason == "CASecretRestored" && e.Type == corev1.EventTypeWarning && e.Regarding.Name == DefaultSecretName {
				return true, ""
			}
		}
		return false, fmt.Sprintf("no CASecretRestored event among %d events", len(list.Items))
	})
}

// losingReader reads through the API server, but just after finding no Secret the first time,
// another replica creates one: the replica using it loses the race to create.
type losingReader struct {
	client.Reader
	once   sync.Once
	winner func(context.Context) error
}

func (r *losingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	err := r.Reader.Get(ctx, key, obj, opts...)
	if apierrors.IsNotFound(err) {
		r.once.Do(func() {
			if winErr := r.winner(ctx); winErr != nil {
				err = fmt.Errorf("the winning replica failed: %w", winErr)
			}
		})
	}
	return err
}

func TestAReplicaThatLosesTheRaceToCreateAdoptsTheWinnersCA(t *testing.T) {
	ns := env.Namespace(t, "race")
	winner := rootData(t)
	holder := identity.NewHolder()
	ca, err := New(Options{Namespace: ns, TrustDomain: trustDomain}, holder)
	if err != nil {
		t.Fatal(err)
	}
	ca.reader = &losingReader{Reader: env.Client, winner: func(ctx context.Context) error {
		return env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: DefaultSecretName}, Data: winner})
	}}
	ca.writer = env.Client
	if err := ca.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if authority := holder.Current(); authority == nil || !bytes.Equal(authority.TrustBundle(), winner[CertKey]) {
		t.Fatal("the losing replica does not publish the winner's CA")
	}
	if secret := getSecret(t, ns); !bytes.Equal(secret.Data[KeyKey], winner[KeyKey]) {
		t.Error("the winner's Secret was overwritten")
	}
}

func TestAMalformedSecretIsReportedAndNeverOverwritten(t *testing.T) {
	valid := rootData(t)
	tests := []struct {
		name    string
		data    map[string][]byte
		wantErr string
	}{
		{"a Secret without a key", map[string][]byte{CertKey: valid[CertKey]}, "ca.key is missing"},
		{"a Secret whose certificate is not PEM", map[string][]byte{CertKey: []byte("garbage"), KeyKey: valid[KeyKey]}, "ca.crt holds no PEM certificate"},
		{"a Secret whose key belongs to another root", map[string][]byte{CertKey: valid[CertKey], KeyKey: rootData(t)[KeyKey]}, "no certificate of ca.crt belongs to the key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := env.Namespace(t, "malformed")
			created := createSecret(t, ns, tt.data)
			holder := identity.NewHolder()
			ca, err := New(Options{Namespace: ns, TrustDomain: trustDomain}, holder)
			if err != nil {
				t.Fatal(err)
			}
			ca.reader, ca.writer = env.Client, env.Client
			err = ca.sync(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "malformed") ||
				!strings.Contains(err.Error(), ns+"/"+DefaultSecretName) {
				t.Fatalf("sync() = %v, want an error naming the Secret and saying %q", err, tt.wantErr)
			}
			if holder.Current() != nil {
				t.Error("a malformed Secret was published")
			}
			if secret := getSecret(t, ns); secret.ResourceVersion != created.ResourceVersion {
				t.Error("the malformed Secret was rewritten")
			}
		})
	}
}

func TestFixingAMalformedSecretPublishesIt(t *testing.T) {
	ns := operatorNamespace(t, "fix")
	secret := createSecret(t, ns, map[string][]byte{CertKey: []byte("garbage")})
	holder := identity.NewHolder()
	ca := startReplica(t, ns, holder)
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		err := ca.Ready(nil)
		return err != nil && strings.Contains(err.Error(), "ca.key is missing"), fmt.Sprintf("Ready() = %v", err)
	})

	fixed := rootData(t)
	secret.Data = fixed
	if err := env.Client.Update(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	// The replica backs off after failing, at most 5 minutes; the watch wakes it at once.
	waitForBundle(t, holder, fixed[CertKey])
	if err := ca.Ready(nil); err != nil {
		t.Errorf("Ready() = %v once the fixed Secret is published", err)
	}
}

func TestAReplacedCAIsPublished(t *testing.T) {
	ns := operatorNamespace(t, "replaced")
	holder := identity.NewHolder()
	ca := startReplica(t, ns, holder)
	first := waitForBundle(t, holder, nil)

	t.Run("a new root written into the Secret is published", func(t *testing.T) {
		secret := getSecret(t, ns)
		replacement := rootData(t)
		secret.Data = replacement
		if err := env.Client.Update(context.Background(), secret); err != nil {
			t.Fatal(err)
		}
		authority := waitForBundle(t, holder, replacement[CertKey])
		verifiesLeaf(t, authority, replacement[CertKey])
	})

	t.Run("a deleted Secret is created again with the root in memory", func(t *testing.T) {
		before := holder.Current()
		issued := signLeaf(t, before)
		deleteSecret(t, ns)
		recreated := waitForSecret(t, ns)
		if !bytes.Equal(recreated.Data[CertKey], before.TrustBundle()) {
			t.Error("the recreated Secret holds another ca.crt than the CA in memory")
		}
		authority := waitForBundle(t, holder, before.TrustBundle())
		if !authority.Signer().Equal(before.Signer()) {
			t.Error("the replica signs with another root after the Secret was recreated")
		}
		verifiesWith(t, issued, recreated.Data[CertKey])
		if first.Signer().Equal(before.Signer()) {
			t.Error("the test did not replace the first root")
		}
	})

	t.Run("a Secret edited into garbage keeps the loaded root signing", func(t *testing.T) {
		loaded := holder.Current()
		secret := getSecret(t, ns)
		secret.Data[KeyKey] = []byte("garbage")
		if err := env.Client.Update(context.Background(), secret); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if holder.Current() != loaded {
			t.Error("the loaded CA was replaced by a malformed one")
		}
		if err := ca.Ready(nil); err != nil {
			t.Errorf("Ready() = %v: a loaded CA stays ready", err)
		}
		if got := getSecret(t, ns); !bytes.Equal(got.Data[KeyKey], []byte("garbage")) {
			t.Error("the edited Secret was overwritten")
		}
	})
}

// getRecord returns the record ConfigMap of ns.
func getRecord(t *testing.T, ns string) *corev1.ConfigMap {
	t.Helper()
	record := &corev1.ConfigMap{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: RecordName}, record); err != nil {
		t.Fatal(err)
	}
	return record
}

// waitForRecord waits until the record of ns records bundle.
func waitForRecord(t *testing.T, ns string, bundle []byte) *corev1.ConfigMap {
	t.Helper()
	record := &corev1.ConfigMap{}
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: RecordName}, record); err != nil {
			return false, err.Error()
		}
		return record.Annotations[AnnotationCABundle] == identity.BundleFingerprint(bundle) && record.Data[CertKey] == string(bundle),
			fmt.Sprintf("the record has annotations %v", record.Annotations)
	})
	return record
}

// waitForMissingRoot waits until ca reports that it refuses to mint a new root.
func waitForMissingRoot(t *testing.T, ca *CA) error {
	t.Helper()
	var err error
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		err = ca.Ready(nil)
		var missing *MissingRootError
		return errors.As(err, &missing), fmt.Sprintf("Ready() = %v, want a MissingRootError", err)
	})
	return err
}

func TestAFreshInstallationMintsOneRootAndRecordsIt(t *testing.T) {
	ns := operatorNamespace(t, "record")
	holder := identity.NewHolder()
	startReplica(t, ns, holder)
	authority := waitForBundle(t, holder, nil)
	record := waitForRecord(t, ns, authority.TrustBundle())
	if got := record.Annotations[AnnotationCASecret]; got != ns+"/"+DefaultSecretName {
		t.Errorf("the record names the Secret %q, want %s/%s", got, ns, DefaultSecretName)
	}
	// The record is not a trust bundle of a meshed namespace: no trust bundle controller, of
	// this installation or another, takes it as its own.
	if _, ok := record.Labels[identity.LabelPartOf]; ok {
		t.Errorf("the record has labels %v, want no %s", record.Labels, identity.LabelPartOf)
	}

	// A deleted record comes back at the next sync.
	if err := env.Client.Delete(context.Background(), record); err != nil {
		t.Fatal(err)
	}
	secret := getSecret(t, ns)
	secret.Annotations = map[string]string{"test": "wake the CA"}
	if err := env.Client.Update(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	waitForRecord(t, ns, authority.TrustBundle())
}

// TestAReplicaWithoutTheCAMintsNoNewRootOnceTheInstallationHadOne: the Secret is deleted while
// no replica runs (or every replica restarts before it is restored); a new replica, with no CA
// in memory, refuses to mint a root that no running proxy trusts, says how to restore, and
// loads the Secret once it is restored from a backup.
func TestAReplicaWithoutTheCAMintsNoNewRootOnceTheInstallationHadOne(t *testing.T) {
	ns := operatorNamespace(t, "no-remint")
	first := identity.NewHolder()
	_, stop := runReplica(t, env.As(operator), Options{Namespace: ns, TrustDomain: trustDomain}, first)
	original := waitForBundle(t, first, nil)
	waitForRecord(t, ns, original.TrustBundle())
	backup := getSecret(t, ns).Data
	stop()
	deleteSecret(t, ns)

	holder := identity.NewHolder()
	ca := startReplica(t, ns, holder)
	err := waitForMissingRoot(t, ca)
	for _, want := range []string{ns + "/" + DefaultSecretName + " is missing", identity.BundleFingerprint(original.TrustBundle()),
		"restore the Secret from a backup", "--ca-allow-new-root"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error says %q; want it to say %q", err, want)
		}
	}
	// It keeps refusing: no Secret, nothing published.
	time.Sleep(2 * time.Second)
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: DefaultSecretName}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("reading the Secret: %v, want NotFound: a replica without the CA created it", err)
	}
	if holder.Current() != nil {
		t.Fatal("a replica without the CA published one")
	}
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		list := &eventsv1.EventList{}
		if err := env.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		for _, e := range list.Items {
			if e.Reason == "CASecretMissing" && e.Type == corev1.EventTypeWarning && e.Regarding.Name == RecordName {
				return true, ""
			}
		}
		return false, fmt.Sprintf("no CASecretMissing event among %d events", len(list.Items))
	})

	// The admin restores the Secret from the backup: the replica loads the original root.
	createSecret(t, ns, backup)
	authority := waitForBundle(t, holder, original.TrustBundle())
	verifiesWith(t, signLeaf(t, original), authority.TrustBundle())
	if err := ca.Ready(nil); err != nil {
		t.Errorf("Ready() = %v once the Secret is restored", err)
	}
}

func TestANewRootIsMintedInPlaceOfTheRecordedOneOnlyWhenAllowed(t *testing.T) {
	ns := operatorNamespace(t, "allow-remint")
	first := identity.NewHolder()
	_, stop := runReplica(t, env.As(operator), Options{Namespace: ns, TrustDomain: trustDomain}, first)
	original := waitForBundle(t, first, nil)
	waitForRecord(t, ns, original.TrustBundle())
	stop()
	deleteSecret(t, ns)

	refusing := startReplica(t, ns, identity.NewHolder())
	waitForMissingRoot(t, refusing)

	holder := identity.NewHolder()
	startReplicaAs(t, env.As(operator), Options{Namespace: ns, TrustDomain: trustDomain, AllowNewRoot: true}, holder)
	minted := waitForBundle(t, holder, nil)
	if bytes.Equal(minted.TrustBundle(), original.TrustBundle()) {
		t.Fatal("the allowed replica published the deleted root")
	}
	if secret := getSecret(t, ns); !bytes.Equal(secret.Data[CertKey], minted.TrustBundle()) {
		t.Error("the new root is not the Secret's")
	}
	waitForRecord(t, ns, minted.TrustBundle())
	// The replica that refused loads the new Secret.
	waitForBundle(t, refusing.holder, minted.TrustBundle())
}

// TestAnotherInstallationIsNotMistakenForThisOne: an operator installed in a second namespace
// (as an OLM test does next to the regular one) finds the records of the first installation in
// the cluster, with its Secret missing, and still mints its own root on its first start.
func TestAnotherInstallationIsNotMistakenForThisOne(t *testing.T) {
	firstNS := operatorNamespace(t, "install-a")
	firstHolder := identity.NewHolder()
	_, stop := runReplica(t, env.As(operator), Options{Namespace: firstNS, TrustDomain: trustDomain}, firstHolder)
	firstRoot := waitForBundle(t, firstHolder, nil)
	firstRecord := waitForRecord(t, firstNS, firstRoot.TrustBundle())
	stop()
	deleteSecret(t, firstNS)

	secondNS := operatorNamespace(t, "install-b")
	secondHolder := identity.NewHolder()
	ca := startReplica(t, secondNS, secondHolder)
	secondRoot := waitForBundle(t, secondHolder, nil)
	if bytes.Equal(secondRoot.TrustBundle(), firstRoot.TrustBundle()) {
		t.Fatal("the second installation publishes the first one's root")
	}
	if err := ca.Ready(nil); err != nil {
		t.Errorf("Ready() = %v", err)
	}
	waitForRecord(t, secondNS, secondRoot.TrustBundle())
	if record := getRecord(t, firstNS); record.ResourceVersion != firstRecord.ResourceVersion {
		t.Error("the second installation changed the first one's record")
	}
	// Even with the Secret name of the first installation's record, in its own namespace.
	thirdNS := operatorNamespace(t, "install-c")
	record := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: thirdNS, Name: RecordName,
		Annotations: map[string]string{AnnotationCASecret: firstNS + "/" + DefaultSecretName, AnnotationCABundle: "copied"}}}
	if err := env.Client.Create(context.Background(), record); err != nil {
		t.Fatal(err)
	}
	thirdHolder := identity.NewHolder()
	startReplica(t, thirdNS, thirdHolder)
	waitForRecord(t, thirdNS, waitForBundle(t, thirdHolder, nil).TrustBundle())
}
