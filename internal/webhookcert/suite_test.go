package webhookcert_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/meshlift/meshlift/internal/testutil/testenv"
	"github.com/meshlift/meshlift/internal/webhookcert"
	"github.com/meshlift/meshlift/internal/webhookcert/pki"
)

// Each test runs one or more Managers, each in its own controller-runtime manager (a "replica"),
// against envtest's kube-apiserver.

var env *testenv.Env

const (
	timeout     = 30 * time.Second
	serviceName = "webhook-service"
	secretName  = "webhook-certs"
	// checkInterval is short so that a replica that would rewrite what it should leave alone
	// gets many chances to do it while a test watches.
	checkInterval = 100 * time.Millisecond
)

func TestMain(m *testing.M) {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapLevel())))
	testenv.Main(m, &env)
}

// zapLevel keeps the managers quiet unless MESHLIFT_TEST_LOG=debug asks for their logs.
func zapLevel() zapcore.Level {
	if os.Getenv("MESHLIFT_TEST_LOG") == "debug" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel
}

// startReplica runs a Manager with opts in a manager of its own until the test ends.
func startReplica(t *testing.T, opts webhookcert.Options) *webhookcert.Manager {
	t.Helper()
	return startReplicaAs(t, env.Config, opts)
}

// startReplicaAs is startReplica with the API server credentials of cfg.
func startReplicaAs(t *testing.T, cfg *rest.Config, opts webhookcert.Options) *webhookcert.Manager {
	t.Helper()
	return runReplica(t, cfg, opts, nil)
}

// startServingReplica is startReplica with a controller-runtime webhook server that serves the
// Manager's certificate, wired as main.go does; it returns the server's address.
func startServingReplica(t *testing.T, opts webhookcert.Options) (*webhookcert.Manager, string) {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := listener.Addr().(*net.TCPAddr).Port
	_ = listener.Close()
	certs := runReplica(t, env.Config, opts, func(configureTLS func(*tls.Config)) webhook.Server {
		return webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port, TLSOpts: []func(*tls.Config){configureTLS}})
	})
	return certs, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// runReplica runs a Manager with opts in a manager of its own until the test ends, with the
// webhook server newServer returns for the Manager's ConfigureTLS (none when nil).
func runReplica(t *testing.T, cfg *rest.Config, opts webhookcert.Options, newServer func(configureTLS func(*tls.Config)) webhook.Server) *webhookcert.Manager {
	t.Helper()
	certs, err := webhookcert.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	mgrOpts := ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	}
	if newServer != nil {
		mgrOpts.WebhookServer = newServer(certs.ConfigureTLS)
	}
	mgr, err := ctrl.NewManager(cfg, mgrOpts)
	if err != nil {
		t.Fatal(err)
	}
	if newServer != nil {
		// The manager runs its webhook server once somebody asks for it (webhooks.Setup does).
		mgr.GetWebhookServer()
	}
	if err := certs.SetupWithManager(mgr); err != nil {
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
	return certs
}

// selfManaged are the options of a replica for the test namespace ns.
func selfManaged(ns string, configs webhookConfigurations, now func() time.Time) webhookcert.Options {
	return webhookcert.Options{
		Mode:                           webhookcert.SelfManaged,
		Namespace:                      ns,
		SecretName:                     secretName,
		ServiceName:                    serviceName,
		MutatingWebhookConfiguration:   configs.mutating,
		ValidatingWebhookConfiguration: configs.validating,
		Now:                            now,
		CheckInterval:                  checkInterval,
	}
}

func service(ns string) pki.Service { return pki.Service{Namespace: ns, Name: serviceName} }

// clock is a test clock the Managers issue and check certificates with.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// webhookConfigurations names one MutatingWebhookConfiguration and one
// ValidatingWebhookConfiguration created for a test.
type webhookConfigurations struct {
	mutating, validating string
}

// createWebhookConfigurations creates both configurations, with two webhooks each, pointing at
// the test Service with caBundle set to caBundle. The rules match a resource nobody creates, so
// the API server never calls them.
func createWebhookConfigurations(t *testing.T, ns string, caBundle []byte) webhookConfigurations {
	t.Helper()
	ctx := context.Background()
	configs := webhookConfigurations{mutating: ns + "-mutating", validating: ns + "-validating"}
	clientConfig := func(path string) admissionregistrationv1.WebhookClientConfig {
		return admissionregistrationv1.WebhookClientConfig{
			Service:  &admissionregistrationv1.ServiceReference{Namespace: ns, Name: serviceName, Path: ptr.To(path), Port: ptr.To[int32](443)},
			CABundle: caBundle,
		}
	}
	rules := []admissionregistrationv1.RuleWithOperations{{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
		Rule:       admissionregistrationv1.Rule{APIGroups: []string{"test.meshlift.io"}, APIVersions: []string{"v1"}, Resources: []string{"widgets"}},
	}}
	sideEffects := ptr.To(admissionregistrationv1.SideEffectClassNone)
	ignore := ptr.To(admissionregistrationv1.Ignore)
	mutating := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: configs.mutating}}
	validating := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: configs.validating}}
	for _, name := range []string{"first.test.meshlift.io", "second.test.meshlift.io"} {
		mutating.Webhooks = append(mutating.Webhooks, admissionregistrationv1.MutatingWebhook{
			Name: name, ClientConfig: clientConfig("/mutate"), Rules: rules, SideEffects: sideEffects,
			FailurePolicy: ignore, AdmissionReviewVersions: []string{"v1"},
		})
		validating.Webhooks = append(validating.Webhooks, admissionregistrationv1.ValidatingWebhook{
			Name: name, ClientConfig: clientConfig("/validate"), Rules: rules, SideEffects: sideEffects,
			FailurePolicy: ignore, AdmissionReviewVersions: []string{"v1"},
		})
	}
	for _, obj := range []client.Object{mutating, validating} {
		if err := env.Client.Create(ctx, obj); err != nil {
			t.Fatalf("failed to create %s: %v", obj.GetName(), err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), obj) })
	}
	return configs
}

// caBundles reads the caBundle of every webhook of both configurations.
func (c webhookConfigurations) caBundles(ctx context.Context) ([][]byte, error) {
	mutating := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: c.mutating}, mutating); err != nil {
		return nil, err
	}
	validating := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: c.validating}, validating); err != nil {
		return nil, err
	}
	var bundles [][]byte
	for _, w := range mutating.Webhooks {
		bundles = append(bundles, w.ClientConfig.CABundle)
	}
	for _, w := range validating.Webhooks {
		bundles = append(bundles, w.ClientConfig.CABundle)
	}
	return bundles, nil
}

// resourceVersions of both configurations, to tell whether anything wrote them.
func (c webhookConfigurations) resourceVersions(ctx context.Context) (string, error) {
	mutating := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: c.mutating}, mutating); err != nil {
		return "", err
	}
	validating := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: c.validating}, validating); err != nil {
		return "", err
	}
	return mutating.ResourceVersion + "/" + validating.ResourceVersion, nil
}

// waitForCABundle waits until every webhook of both configurations has caBundle want.
func waitForCABundle(t *testing.T, configs webhookConfigurations, want []byte) {
	t.Helper()
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		bundles, err := configs.caBundles(ctx)
		if err != nil {
			return false, err.Error()
		}
		for i, got := range bundles {
			if !bytes.Equal(got, want) {
				return false, fmt.Sprintf("webhook %d has a caBundle of %d bytes, want the Secret's ca.crt (%d bytes)", i, len(got), len(want))
			}
		}
		return true, ""
	})
}

// waitForSecret waits until the Secret exists and check accepts it.
func waitForSecret(t *testing.T, ns string, check func(*corev1.Secret) error) *corev1.Secret {
	t.Helper()
	var secret *corev1.Secret
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		secret = &corev1.Secret{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: secretName}, secret); err != nil {
			return false, err.Error()
		}
		if err := check(secret); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	return secret
}

func secretExists(*corev1.Secret) error { return nil }

// waitReady waits until the Manager has loaded a serving certificate.
func waitReady(t *testing.T, certs *webhookcert.Manager) {
	t.Helper()
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		if err := certs.Ready(nil); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

// waitServing waits until the Manager serves want.
func waitServing(t *testing.T, certs *webhookcert.Manager, want *x509.Certificate, who string) {
	t.Helper()
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		served, err := servedCertificate(certs)
		if err != nil {
			return false, err.Error()
		}
		if !served.Equal(want) {
			return false, fmt.Sprintf("%s serves certificate %s, want %s", who, served.SerialNumber.Text(16), want.SerialNumber.Text(16))
		}
		return true, ""
	})
}

// waitNotReadyBecause waits until Ready fails with an error that mentions reason.
func waitNotReadyBecause(t *testing.T, certs *webhookcert.Manager, reason string) {
	t.Helper()
	testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
		err := certs.Ready(nil)
		if err == nil {
			return false, "the Manager is ready"
		}
		if !strings.Contains(err.Error(), reason) {
			return false, fmt.Sprintf("Ready() = %v, want an error mentioning %q", err, reason)
		}
		return true, ""
	})
}

// consistently fails the test if check fails at any time during d.
func consistently(t *testing.T, d time.Duration, check func(ctx context.Context) error) {
	t.Helper()
	ctx := context.Background()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err := check(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// verifyServing checks certPEM against caBundle for every DNS name of svc, as the API server does.
func verifyServing(caBundle, certPEM []byte, svc pki.Service, now time.Time) error {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caBundle) {
		return errors.New("the CA bundle holds no certificate")
	}
	cert, err := parseCertificate(certPEM)
	if err != nil {
		return err
	}
	for _, name := range svc.DNSNames() {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, CurrentTime: now}); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

func parseCertificate(certPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

func countCertificates(data []byte) int {
	n := 0
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		n++
	}
	return n
}

// handshake serves certs.GetCertificate on a local TLS listener and connects to it the way the
// API server calls a webhook: trusting only caBundle and verifying serverName at now. It returns
// the certificate the server presented.
func handshake(certs *webhookcert.Manager, caBundle []byte, serverName string, now func() time.Time) (*x509.Certificate, error) {
	listener, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: certs.GetCertificate, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	defer listener.Close()
	served := make(chan error, 1)
	go func() {
		conn, err := listener.Accept()
		if err != nil {
			served <- err
			return
		}
		defer conn.Close()
		served <- conn.(*tls.Conn).Handshake()
	}()
	presented, err := dialWebhook(listener.Addr().String(), caBundle, serverName, now)
	if err != nil {
		return nil, err
	}
	if err := <-served; err != nil {
		return nil, fmt.Errorf("the server side of the handshake failed: %w", err)
	}
	return presented, nil
}

// dialWebhook connects to the TLS server at addr the way the API server calls a webhook:
// trusting only caBundle and verifying serverName at now. It returns the certificate the server
// presented.
func dialWebhook(addr string, caBundle []byte, serverName string, now func() time.Time) (*x509.Certificate, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caBundle) {
		return nil, errors.New("the CA bundle holds no certificate")
	}
	dialer := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		Config:    &tls.Config{RootCAs: roots, ServerName: serverName, Time: now, MinVersion: tls.VersionTLS12},
	}
	conn, err := dialer.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("the TLS handshake failed: %w", err)
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// servedCertificate is the leaf certificate GetCertificate returns now.
func servedCertificate(certs *webhookcert.Manager) (*x509.Certificate, error) {
	cert, err := certs.GetCertificate(nil)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(cert.Certificate[0])
}
