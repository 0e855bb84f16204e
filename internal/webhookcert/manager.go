// Package webhookcert owns the TLS certificate the operator's webhook server serves and the
// caBundle the API server trusts it with.
//
// In self-managed mode (the default: no cert-manager needed) every replica runs a Manager that
// keeps a CA and a serving certificate in a Secret of the operator's namespace, renews them ahead
// of expiry, writes the CA bundle into the webhook configurations whenever it differs, and serves
// the Secret's certificate from memory (the root filesystem is read-only). In cert-manager and
// external modes someone else issues the certificate and owns caBundle (cert-manager and its CA
// injector; OLM, or whoever installed the operator): the Manager serves the key pair it finds in
// a directory, reloads it when the files change, and touches neither a Secret nor a webhook
// configuration. What to issue and when to renew is decided by the pure package pki.
package webhookcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshlift/meshlift/internal/webhookcert/pki"
)

// In self-managed mode the operator keeps its certificates in one Secret of its own namespace (a
// Role there, not access to every Secret of the cluster) and writes caBundle into its two
// webhook configurations, each by name: the names are the defaults of --webhook-secret-name,
// --mutating-webhook-configuration and --validating-webhook-configuration, which is what
// config/default names them. It creates the Secret (a create cannot be limited to a name), reads
// and watches it with a metadata.name field selector, and replaces it when renewing; it reads,
// watches and patches the webhook configurations the same way. `make manifests` generates these
// rules alone into config/rbac/webhook-certificates, which only the self-managed install binds:
// the cert-manager and external modes (config/certmanager, the OLM bundle) get none of them.
// +kubebuilder:rbac:groups="",namespace=system,resources=secrets,verbs=create
// +kubebuilder:rbac:groups="",namespace=system,resources=secrets,resourceNames=meshlift-webhook-certs,verbs=get;list;watch;update
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,resourceNames=meshlift-mutating-webhook-configuration,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,resourceNames=meshlift-validating-webhook-configuration,verbs=get;list;watch;patch

// Mode says who issues the webhook serving certificate.
type Mode string

const (
	// SelfManaged means the operator issues, stores, renews and injects its own certificates.
	SelfManaged Mode = "self-managed"
	// CertManager means cert-manager issues the certificate into a mounted Secret and injects
	// caBundle.
	CertManager Mode = "cert-manager"
	// External means someone else (OLM) mounts the certificate and writes caBundle; the operator
	// only serves the files.
	External Mode = "external"
)

// Where the certificate files are read from when --webhook-cert-dir is not given.
const (
	// DefaultCertManagerCertDir is where config/certmanager mounts cert-manager's Secret.
	DefaultCertManagerCertDir = "/etc/meshlift/webhook-certs"
	// DefaultExternalCertDir is where OLM mounts the serving certificate it issues (tls.crt and
	// tls.key of its Secret <deployment>-service-cert, volume "webhook-cert"): controller-runtime's
	// default webhook certificate directory.
	DefaultExternalCertDir = "/tmp/k8s-webhook-server/serving-certs"
)

// DefaultCertDir is the directory mode reads tls.crt and tls.key from by default; "" for
// self-managed, which reads no files.
func DefaultCertDir(mode Mode) string {
	switch mode {
	case CertManager:
		return DefaultCertManagerCertDir
	case External:
		return DefaultExternalCertDir
	}
	return ""
}

// servesFiles is true for the modes that serve a key pair from CertDir and write nothing.
func (m Mode) servesFiles() bool { return m == CertManager || m == External }

// String makes *Mode a flag.Value.
func (m Mode) String() string { return string(m) }

// Set parses a flag value.
func (m *Mode) Set(s string) error {
	switch Mode(s) {
	case SelfManaged, CertManager, External:
		*m = Mode(s)
		return nil
	}
	return fmt.Errorf("must be %s, %s or %s, not %q", SelfManaged, CertManager, External, s)
}

// DefaultCheckInterval is how often the self-managed mode checks when nothing wakes it earlier.
const DefaultCheckInterval = time.Hour

const (
	// certFile and keyFile are the names cert-manager and OLM (and any kubernetes.io/tls
	// Secret) use.
	certFile = pki.TLSCertKey
	keyFile  = pki.TLSKeyKey
	// maxBackoff bounds the wait before retrying after an error.
	maxBackoff = 5 * time.Minute
	// certManagerAnnotation marks Secrets written by cert-manager: the self-managed mode refuses
	// to rewrite them, so the two never fight over one Secret.
	certManagerAnnotation = "cert-manager.io/certificate-name"
)

// Options configure a Manager.
type Options struct {
	// Mode is who issues the certificate; SelfManaged when empty.
	Mode Mode
	// Namespace is the operator's namespace, where the Secret and the Service live.
	Namespace string
	// SecretName is the Secret holding the CA and the serving certificate (self-managed).
	SecretName string
	// ServiceName is the Service the API server calls the webhooks through; the serving
	// certificate is issued for its DNS names (self-managed).
	ServiceName string
	// MutatingWebhookConfiguration and ValidatingWebhookConfiguration are the webhook
	// configurations whose every webhook gets the CA bundle (self-managed). Either may be empty,
	// or absent from the cluster.
	MutatingWebhookConfiguration   string
	ValidatingWebhookConfiguration string
	// CertDir holds tls.crt and tls.key written by cert-manager or mounted by OLM (cert-manager
	// and external modes); see DefaultCertDir.
	CertDir string
	// Now is the clock certificates are issued and checked with; time.Now when nil.
	Now func() time.Time
	// CheckInterval is how often the Secret and the webhook configurations are checked even if
	// no watch event arrives; DefaultCheckInterval when zero. Renewals happen on time whatever
	// the interval: the next check is never later than the next renewal.
	CheckInterval time.Duration
}

// Manager provides the webhook server's certificate (GetCertificate) and, in self-managed mode,
// issues, stores, renews and injects it. It runs on every replica, leader or not: each one
// serves webhooks.
type Manager struct {
	opts    Options
	service pki.Service

	// reader reads from the API server, not from the manager's cache: the cache starts after
	// the runnables are added, and caching every Secret of the cluster to read one is what the
	// operator must not do. writer writes through the manager's client.
	reader client.Reader
	writer client.Client
	// watches is a private cache holding only the Secret and the two webhook configurations;
	// its events wake the sync loop.
	watches cache.Cache
	wake    chan struct{}

	serving atomic.Pointer[servingCertificate]

	mu      sync.Mutex
	lastErr error
}

// servingCertificate is the certificate being served and the PEM it was loaded from.
type servingCertificate struct {
	cert    *tls.Certificate
	certPEM []byte
	keyPEM  []byte
}

// New validates opts and returns a Manager. main.go creates it before the controller-runtime
// manager, whose webhook server needs GetCertificate, and adds it with SetupWithManager.
func New(opts Options) (*Manager, error) {
	if opts.Mode == "" {
		opts.Mode = SelfManaged
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = DefaultCheckInterval
	}
	switch opts.Mode {
	case SelfManaged:
		if opts.Namespace == "" || opts.SecretName == "" || opts.ServiceName == "" {
			return nil, errors.New("self-managed webhook certificates need the operator's namespace, a Secret name and the webhook Service name")
		}
	case CertManager:
		if opts.CertDir == "" {
			return nil, errors.New("webhook certificates from cert-manager need the directory the Secret is mounted in")
		}
	case External:
		if opts.CertDir == "" {
			return nil, errors.New("external webhook certificates need the directory they are mounted in")
		}
	default:
		return nil, fmt.Errorf("webhook certificate mode must be %s, %s or %s, not %q", SelfManaged, CertManager, External, opts.Mode)
	}
	return &Manager{
		opts:    opts,
		service: pki.Service{Namespace: opts.Namespace, Name: opts.ServiceName},
		wake:    make(chan struct{}, 1),
	}, nil
}

// SetupWithManager adds the Manager to mgr as a runnable that does not need leader election. In
// self-managed mode it reads and writes through mgr's clients and scheme, which must include
// client-go's types.
func (m *Manager) SetupWithManager(mgr ctrl.Manager) error {
	if m.opts.Mode == SelfManaged {
		m.reader = mgr.GetAPIReader()
		m.writer = mgr.GetClient()
		byName := func(name string) fields.Selector { return fields.OneTermEqualSelector("metadata.name", name) }
		byObject := map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Namespaces: map[string]cache.Config{m.opts.Namespace: {}}, Field: byName(m.opts.SecretName)},
		}
		if name := m.opts.MutatingWebhookConfiguration; name != "" {
			byObject[&admissionregistrationv1.MutatingWebhookConfiguration{}] = cache.ByObject{Field: byName(name)}
		}
		if name := m.opts.ValidatingWebhookConfiguration; name != "" {
			byObject[&admissionregistrationv1.ValidatingWebhookConfiguration{}] = cache.ByObject{Field: byName(name)}
		}
		watches, err := cache.New(mgr.GetConfig(), cache.Options{
			HTTPClient:       mgr.GetHTTPClient(),
			Scheme:           mgr.GetScheme(),
			Mapper:           mgr.GetRESTMapper(),
			ByObject:         byObject,
			DefaultTransform: cache.TransformStripManagedFields(),
		})
		if err != nil {
			return fmt.Errorf("failed to create the cache watching the webhook certificate Secret: %w", err)
		}
		m.watches = watches
	}
	if err := mgr.Add(m); err != nil {
		return fmt.Errorf("failed to add the webhook certificate manager: %w", err)
	}
	return nil
}

// NeedLeaderElection is false: every replica serves webhooks, so every replica needs the
// certificate. Replicas agree on one Secret through optimistic concurrency.
func (m *Manager) NeedLeaderElection() bool { return false }

// GetCertificate is the webhook server's tls.Config.GetCertificate.
func (m *Manager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if serving := m.serving.Load(); serving != nil {
		return serving.cert, nil
	}
	return nil, errors.New("no webhook serving certificate loaded yet")
}

// ConfigureTLS sets GetCertificate on the webhook server's TLS configuration; use it in
// webhook.Options.TLSOpts.
func (m *Manager) ConfigureTLS(c *tls.Config) { c.GetCertificate = m.GetCertificate }

// Ready is a healthz.Checker: it fails until a serving certificate is loaded, with the last
// error that kept it from loading.
func (m *Manager) Ready(*http.Request) error {
	if m.serving.Load() != nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lastErr != nil {
		return fmt.Errorf("no webhook serving certificate loaded yet: %w", m.lastErr)
	}
	return errors.New("no webhook serving certificate loaded yet")
}

func (m *Manager) setLastError(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastErr = err
}

// Start runs until ctx is done.
func (m *Manager) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("webhook-cert").WithValues("mode", m.opts.Mode)
	ctx = ctrl.LoggerInto(ctx, log)
	if m.opts.Mode.servesFiles() {
		return m.serveCertDir(ctx)
	}
	if m.watches == nil {
		return errors.New("the self-managed webhook certificate manager must be added with SetupWithManager")
	}
	m.watch(ctx)
	m.run(ctx)
	return nil
}

// watch starts the private cache; every change of the Secret or of a webhook configuration
// wakes the sync loop. Without it (e.g. no list/watch permission) the loop still runs on its
// timer.
func (m *Manager) watch(ctx context.Context) {
	log := ctrl.LoggerFrom(ctx)
	wakeUp := func() {
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { wakeUp() },
		UpdateFunc: func(any, any) { wakeUp() },
		DeleteFunc: func(any) { wakeUp() },
	}
	watched := []client.Object{&corev1.Secret{}}
	if m.opts.MutatingWebhookConfiguration != "" {
		watched = append(watched, &admissionregistrationv1.MutatingWebhookConfiguration{})
	}
	if m.opts.ValidatingWebhookConfiguration != "" {
		watched = append(watched, &admissionregistrationv1.ValidatingWebhookConfiguration{})
	}
	for _, obj := range watched {
		informer, err := m.watches.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
		if err == nil {
			_, err = informer.AddEventHandler(handler)
		}
		if err != nil {
			log.Error(err, "Failed to watch; relying on the periodic check", "type", fmt.Sprintf("%T", obj))
		}
	}
	go func() {
		if err := m.watches.Start(ctx); err != nil {
			log.Error(err, "Watching the webhook certificate Secret and webhook configurations stopped; relying on the periodic check")
		}
	}()
}

// run syncs now, then again when a watch event arrives, at the next renewal or check interval,
// or after a growing backoff when a sync failed.
func (m *Manager) run(ctx context.Context) {
	log := ctrl.LoggerFrom(ctx)
	backoff := time.Second
	for {
		delay, err := m.sync(ctx)
		if ctx.Err() != nil {
			return
		}
		m.setLastError(err)
		if err != nil {
			log.Error(err, "Failed to ensure the webhook serving certificate; retrying", "retryAfter", backoff)
			delay = backoff
			backoff = min(2*backoff, maxBackoff)
		} else {
			backoff = time.Second
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-m.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// sync makes the Secret valid, injects its CA bundle and serves its certificate. It returns how
// long to wait before the next check.
func (m *Manager) sync(ctx context.Context) (time.Duration, error) {
	now := m.opts.Now()
	bundle, err := m.ensureSecret(ctx, now)
	if err != nil {
		return 0, err
	}
	injectErr := m.injectCABundle(ctx, bundle.CABundle)
	if err := m.load(ctx, bundle, injectErr == nil, now); err != nil {
		return 0, errors.Join(injectErr, err)
	}
	if injectErr != nil {
		return 0, injectErr
	}
	untilRenewal := pki.NextRenewal(bundle, m.service, now).Sub(now)
	// The floor keeps a clock that jumps past a renewal (tests drive one) from spinning the loop.
	return min(max(untilRenewal, time.Second), m.opts.CheckInterval), nil
}

// ensureSecret returns the bundle of the Secret after creating or renewing it if needed.
// Replicas racing to do the same converge on one bundle: the Secret is created only if absent
// and updated only at the resourceVersion that was read; whoever loses re-reads the winner's
// bundle, which is then valid.
func (m *Manager) ensureSecret(ctx context.Context, now time.Time) (pki.Bundle, error) {
	key := client.ObjectKey{Namespace: m.opts.Namespace, Name: m.opts.SecretName}
	log := ctrl.LoggerFrom(ctx).WithValues("secret", klog.KRef(key.Namespace, key.Name))
	const attempts = 5
	for range attempts {
		secret := &corev1.Secret{}
		err := m.reader.Get(ctx, key, secret)
		if apierrors.IsNotFound(err) {
			bundle, err := pki.Issue(m.service, now)
			if err != nil {
				return pki.Bundle{}, err
			}
			secret = m.newSecret(bundle)
			log.Info("Creating the webhook certificate Secret with a new CA")
			err = m.writer.Create(ctx, secret)
			if apierrors.IsAlreadyExists(err) {
				log.V(1).Info("Another replica created the Secret first; reading it")
				continue
			}
			if err != nil {
				return pki.Bundle{}, fmt.Errorf("failed to create Secret %s: %w", key, err)
			}
			return bundle, nil
		}
		if err != nil {
			return pki.Bundle{}, fmt.Errorf("failed to read Secret %s: %w", key, err)
		}
		if certificate, ok := secret.Annotations[certManagerAnnotation]; ok {
			return pki.Bundle{}, fmt.Errorf("secret %s is cert-manager's (Certificate %q): run the operator with --webhook-cert-mode=%s or give it another Secret", key, certificate, CertManager)
		}

		stored := pki.FromSecretData(secret.Data)
		renewed, decision, err := pki.Renew(stored, m.service, now)
		if err != nil {
			return pki.Bundle{}, err
		}
		if !decision.NeedsUpdate() {
			return stored, nil
		}
		log.Info("Renewing the webhook certificates", "caReason", decision.CA, "servingReason", decision.Serving, "staleCABundle", decision.StaleCABundle)
		if secret.Data == nil {
			secret.Data = map[string][]byte{}
		}
		maps.Copy(secret.Data, renewed.SecretData())
		err = m.writer.Update(ctx, secret)
		if apierrors.IsConflict(err) {
			log.V(1).Info("The Secret changed since it was read; reading it again")
			continue
		}
		if err != nil {
			return pki.Bundle{}, fmt.Errorf("failed to update Secret %s: %w", key, err)
		}
		return renewed, nil
	}
	return pki.Bundle{}, fmt.Errorf("secret %s kept changing: gave up after %d attempts", key, attempts)
}

func (m *Manager) newSecret(bundle pki.Bundle) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: m.opts.Namespace,
			Name:      m.opts.SecretName,
			Labels: map[string]string{
				"app.kubernetes.io/name":       "meshlift",
				"app.kubernetes.io/component":  "webhook-certificates",
				"app.kubernetes.io/managed-by": "meshlift-operator",
			},
		},
		Type: corev1.SecretTypeTLS,
		Data: bundle.SecretData(),
	}
}

// injectCABundle writes caBundle into every webhook of both webhook configurations, patching
// only those where it differs.
func (m *Manager) injectCABundle(ctx context.Context, caBundle []byte) error {
	var errs []error
	if name := m.opts.MutatingWebhookConfiguration; name != "" {
		config := &admissionregistrationv1.MutatingWebhookConfiguration{}
		errs = append(errs, m.patchCABundle(ctx, config, "MutatingWebhookConfiguration", name, caBundle, func() []*[]byte {
			caBundles := make([]*[]byte, len(config.Webhooks))
			for i := range config.Webhooks {
				caBundles[i] = &config.Webhooks[i].ClientConfig.CABundle
			}
			return caBundles
		}))
	}
	if name := m.opts.ValidatingWebhookConfiguration; name != "" {
		config := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		errs = append(errs, m.patchCABundle(ctx, config, "ValidatingWebhookConfiguration", name, caBundle, func() []*[]byte {
			caBundles := make([]*[]byte, len(config.Webhooks))
			for i := range config.Webhooks {
				caBundles[i] = &config.Webhooks[i].ClientConfig.CABundle
			}
			return caBundles
		}))
	}
	return errors.Join(errs...)
}

// patchCABundle reads config by name and patches the caBundle fields that caBundleFields points
// at (once config is read) where they differ from caBundle.
func (m *Manager) patchCABundle(ctx context.Context, config client.Object, kind, name string, caBundle []byte, caBundleFields func() []*[]byte) error {
	log := ctrl.LoggerFrom(ctx).WithValues("kind", kind, "name", name)
	if err := m.reader.Get(ctx, client.ObjectKey{Name: name}, config); err != nil {
		if apierrors.IsNotFound(err) {
			log.V(1).Info("Webhook configuration not found; nothing to inject")
			return nil
		}
		return fmt.Errorf("failed to read %s %s: %w", kind, name, err)
	}
	base, ok := config.DeepCopyObject().(client.Object)
	if !ok {
		return fmt.Errorf("cannot copy %s %s", kind, name)
	}
	stale := 0
	for _, field := range caBundleFields() {
		if !bytes.Equal(*field, caBundle) {
			*field = caBundle
			stale++
		}
	}
	if stale == 0 {
		return nil
	}
	log.Info("Injecting the CA bundle into the webhook configuration", "webhooks", stale)
	// A strategic merge patch touches only caBundle of each webhook (merged by name); the
	// resourceVersion makes it fail rather than apply to a version that was not read.
	patch := client.StrategicMergeFrom(base, client.MergeFromWithOptimisticLock{})
	if err := m.writer.Patch(ctx, config, patch); err != nil {
		return fmt.Errorf("failed to inject the CA bundle into %s %s: %w", kind, name, err)
	}
	return nil
}

// load serves the bundle's certificate unless it is served already. A replica that serves a
// certificate keeps it until the CA bundle the new one needs is injected (unless the served one
// has expired): the API server must never see a certificate whose CA it does not trust yet.
func (m *Manager) load(ctx context.Context, bundle pki.Bundle, caBundleInjected bool, now time.Time) error {
	current := m.serving.Load()
	if current != nil && bytes.Equal(current.certPEM, bundle.Cert) && bytes.Equal(current.keyPEM, bundle.Key) {
		return nil
	}
	log := ctrl.LoggerFrom(ctx)
	if current != nil && !caBundleInjected && now.Before(current.cert.Leaf.NotAfter) {
		log.Info("Keeping the current serving certificate until the CA bundle is injected")
		return nil
	}
	cert, err := parseKeyPair(bundle.Cert, bundle.Key)
	if err != nil {
		return fmt.Errorf("failed to load the serving certificate of Secret %s/%s: %w", m.opts.Namespace, m.opts.SecretName, err)
	}
	m.serving.Store(&servingCertificate{cert: cert, certPEM: bundle.Cert, keyPEM: bundle.Key})
	log.Info("Serving a new webhook certificate", "serialNumber", cert.Leaf.SerialNumber.Text(16), "notAfter", cert.Leaf.NotAfter)
	return nil
}

// serveCertDir serves tls.crt and tls.key of the Secret mounted in CertDir (cert-manager's, or
// OLM's) and reloads them when they change: controller-runtime's certwatcher watches the files
// and also re-reads them every 10 seconds, which catches the kubelet's atomic swap of a Secret
// volume. It waits for the files: the kubelet may still be writing the volume when the operator
// starts. It reads and writes nothing through the API server.
func (m *Manager) serveCertDir(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithValues("certDir", m.opts.CertDir)
	certPath, keyPath := filepath.Join(m.opts.CertDir, certFile), filepath.Join(m.opts.CertDir, keyFile)
	var watcher *certwatcher.CertWatcher
	waiting := false
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(context.Context) (bool, error) {
		w, err := certwatcher.New(certPath, keyPath)
		if err != nil {
			m.setLastError(fmt.Errorf("failed to load %s and %s: %w", certPath, keyPath, err))
			if !waiting {
				log.Info("Waiting for the webhook certificate files", "error", err.Error())
				waiting = true
			}
			return false, nil
		}
		watcher = w
		return true, nil
	})
	if err != nil {
		// Stopped before the files appeared.
		return nil
	}
	watcher.RegisterCallback(func(loaded tls.Certificate) {
		cert := loaded
		if cert.Leaf == nil && len(cert.Certificate) > 0 {
			cert.Leaf, _ = x509.ParseCertificate(cert.Certificate[0])
		}
		m.serving.Store(&servingCertificate{cert: &cert})
		m.setLastError(nil)
		if cert.Leaf != nil {
			log.Info("Serving the webhook certificate from its files", "serialNumber", cert.Leaf.SerialNumber.Text(16), "notAfter", cert.Leaf.NotAfter)
		}
	})
	if err := watcher.Start(ctx); err != nil {
		return fmt.Errorf("failed to watch the webhook certificate files in %s: %w", m.opts.CertDir, err)
	}
	return nil
}

func parseKeyPair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, err
		}
	}
	return &cert, nil
}
