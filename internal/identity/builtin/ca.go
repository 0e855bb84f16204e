// Package builtin is the built-in CA backend: a self-signed ECDSA P-256 root whose key lives in
// a Secret of the operator's namespace. The first replica that finds no Secret creates it; every
// replica loads it, publishes it through an identity.Holder and reloads it when the Secret
// changes. A Secret that exists is never overwritten: if it is malformed the CA reports what to
// fix and keeps the root it loaded before, if any. A deleted Secret is created again from the CA
// in memory.
//
// A new root is minted only on the first start of an installation: the CA records the root it
// loaded in the ConfigMap meshlift-ca-root of its own namespace (the record), annotated with the
// Secret it belongs to. A replica that finds neither the Secret nor a CA in memory, but a record
// naming its Secret, refuses to mint (every running proxy trusts the recorded root) and keeps
// reporting how to restore the Secret, unless Options.AllowNewRoot says a new root is wanted.
package builtin

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/identity/wake"
	"github.com/meshlift/meshlift/internal/sidecar"
)

// The CA Secret lives in the operator's namespace: a Role there, not access to every Secret. It
// is created (a create cannot be limited to a name), then read and watched by its name, the
// default of --ca-secret-name.
// +kubebuilder:rbac:groups="",namespace=system,resources=secrets,verbs=create
// +kubebuilder:rbac:groups="",namespace=system,resources=secrets,resourceNames=meshlift-ca,verbs=get;list;watch
//
// The record is the trust bundle ConfigMap's name in the operator's namespace, so it takes the
// trust bundle controller's rules (controllers/trustbundle_controller.go): create, and list (by
// name) and patch.
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=create
// +kubebuilder:rbac:groups="",resources=configmaps,resourceNames=meshlift-ca-root,verbs=list;patch

const (
	// DefaultSecretName is the Secret holding the root and its key.
	DefaultSecretName = "meshlift-ca"
	// DefaultLifetime of a new root.
	DefaultLifetime = 10 * 365 * 24 * time.Hour
	// DefaultCheckInterval is how often the Secret is read again when no watch event arrives.
	DefaultCheckInterval = 10 * time.Minute

	// maxBackoff bounds the wait before retrying after an error.
	maxBackoff = 5 * time.Minute

	// RecordName is the ConfigMap of the operator's namespace where the CA records the root it
	// loaded: the trust bundle ConfigMap's name, holding the same key (ca.crt).
	RecordName = sidecar.CARootConfigMap
	// AnnotationCASecret on the record names the CA Secret (<namespace>/<name>) whose root it
	// records: the evidence that this installation had a CA, which another installation of the
	// operator, in another namespace, does not take for its own.
	AnnotationCASecret = "meshlift.io/ca-secret"
	// AnnotationCABundle on the record is the fingerprint of the recorded bundle
	// (identity.BundleFingerprint).
	AnnotationCABundle = "meshlift.io/ca-bundle"
)

// Options configure the built-in CA.
type Options struct {
	// Namespace is the operator's namespace, where the Secret lives.
	Namespace string
	// SecretName is the Secret holding the root (ca.crt) and its key (ca.key); DefaultSecretName
	// when empty.
	SecretName string
	// TrustDomain is put in the root's URI SAN (spiffe://<trust-domain>); DefaultTrustDomain
	// when empty.
	TrustDomain string
	// Lifetime of a root this CA creates; DefaultLifetime when zero.
	Lifetime time.Duration
	// CheckInterval is how often the Secret is read even if no watch event arrives;
	// DefaultCheckInterval when zero.
	CheckInterval time.Duration
	// AllowNewRoot lets the CA mint a new root when the Secret is missing though the record
	// shows that this installation had one (--ca-allow-new-root). Every proxy then needs the
	// new trust bundle. Without it the CA refuses, and keeps retrying until the Secret is back.
	AllowNewRoot bool
}

// CA keeps the built-in root in a Secret and publishes it through a Holder. It runs on every
// replica (each one serves SDS); replicas agree on one root because the Secret is created only
// if absent.
type CA struct {
	opts   Options
	holder *identity.Holder

	// reader reads from the API server: the manager's cache may not cache Secrets of this
	// namespace, and must not cache every Secret of the cluster to read one. writer writes
	// through the manager's client.
	reader client.Reader
	writer client.Client
	// watches is a private cache holding only the CA Secret; its events wake the sync loop.
	watches cache.Cache
	wake    chan struct{}
	// recorder reports a restored Secret as a Warning event on it; nil records nothing.
	recorder events.EventRecorder

	mu        sync.Mutex
	published []byte // fingerprint of ca.crt and ca.key of the Authority published last
	// held is ca.crt and ca.key of the Authority published last: what a deleted Secret is
	// created again from.
	held    map[string][]byte
	lastErr error
}

// New validates opts and returns a CA that publishes through holder. Add it to the manager
// with SetupWithManager.
func New(opts Options, holder *identity.Holder) (*CA, error) {
	if opts.Namespace == "" {
		return nil, errors.New("the built-in CA needs the operator's namespace")
	}
	if holder == nil {
		return nil, errors.New("the built-in CA needs a Holder to publish to")
	}
	if opts.SecretName == "" {
		opts.SecretName = DefaultSecretName
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = identity.DefaultTrustDomain
	}
	if opts.Lifetime <= 0 {
		opts.Lifetime = DefaultLifetime
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = DefaultCheckInterval
	}
	return &CA{opts: opts, holder: holder, wake: make(chan struct{}, 1)}, nil
}

// SetupWithManager adds the CA to mgr as a runnable that does not need leader election. It
// reads through mgr's API reader, writes through mgr's client and watches the Secret with a
// private cache restricted to it, so it works whatever mgr's cache is restricted to.
func (c *CA) SetupWithManager(mgr ctrl.Manager) error {
	c.reader = mgr.GetAPIReader()
	c.writer = mgr.GetClient()
	c.recorder = mgr.GetEventRecorder("meshlift-ca")
	watches, err := cache.New(mgr.GetConfig(), cache.Options{
		HTTPClient: mgr.GetHTTPClient(),
		Scheme:     mgr.GetScheme(),
		Mapper:     mgr.GetRESTMapper(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {
				Namespaces: map[string]cache.Config{c.opts.Namespace: {}},
				Field:      fields.OneTermEqualSelector("metadata.name", c.opts.SecretName),
			},
		},
		DefaultTransform: cache.TransformStripManagedFields(),
	})
	if err != nil {
		return fmt.Errorf("failed to create the cache watching the CA Secret: %w", err)
	}
	c.watches = watches
	if err := mgr.Add(c); err != nil {
		return fmt.Errorf("failed to add the built-in CA: %w", err)
	}
	return nil
}

// NeedLeaderElection is false: every replica signs workload certificates.
func (c *CA) NeedLeaderElection() bool { return false }

// Ready is a healthz.Checker: it fails until the CA is loaded, with the error that keeps it
// from loading. Once loaded it stays ready; a later error (a Secret edited into something
// unusable) is logged and the loaded root keeps signing.
func (c *CA) Ready(*http.Request) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.published != nil {
		return nil
	}
	if c.lastErr != nil {
		return fmt.Errorf("the built-in CA is not loaded yet: %w", c.lastErr)
	}
	return errors.New("the built-in CA is not loaded yet")
}

// Start loads (or creates) the CA, then reloads it whenever the Secret changes, until ctx is
// done.
func (c *CA) Start(ctx context.Context) error {
	if c.watches == nil {
		return errors.New("the built-in CA must be added with SetupWithManager")
	}
	log := ctrl.LoggerFrom(ctx).WithName("builtin-ca").WithValues("secret", klog.KRef(c.opts.Namespace, c.opts.SecretName))
	ctx = ctrl.LoggerInto(ctx, log)
	wake.OnChange(ctx, c.watches, &corev1.Secret{}, c.wake, "the CA Secret")
	c.run(ctx)
	return nil
}

// run syncs now, then again when the Secret changes, at the check interval, or after a growing
// backoff when a sync failed.
func (c *CA) run(ctx context.Context) {
	log := ctrl.LoggerFrom(ctx)
	backoff := time.Second
	for {
		err := c.sync(ctx)
		if ctx.Err() != nil {
			return
		}
		c.setLastError(err)
		delay := c.opts.CheckInterval
		if err != nil {
			log.Error(err, "Failed to load the built-in CA; retrying", "retryAfter", backoff)
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
		case <-c.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// sync reads the Secret, creating it if absent, and publishes its CA if it changed.
func (c *CA) sync(ctx context.Context) error {
	data, err := c.ensureSecret(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	unchanged := c.published != nil && bytes.Equal(c.published, secretFingerprint(data))
	c.mu.Unlock()
	if !unchanged {
		authority, err := authorityFromSecretData(data, c.opts.TrustDomain)
		if err != nil {
			return fmt.Errorf("the CA Secret %s/%s is malformed: %w; fix it, or delete it and restart the operator with --ca-allow-new-root to have it create a new root (every proxy then needs the new trust bundle)",
				c.opts.Namespace, c.opts.SecretName, err)
		}
		c.publish(ctx, data, authority)
	}
	// Read again at each sync, so that a deleted record comes back.
	return c.ensureRecord(ctx, data)
}

// ensureSecret returns the data of the Secret after creating it if absent: from the CA this
// replica holds in memory if it holds one (the Secret was deleted), else with a new root.
// Replicas racing to create it converge on one root: whoever loses reads the winner's Secret,
// and replicas restoring a deleted Secret all hold the same CA.
func (c *CA) ensureSecret(ctx context.Context) (map[string][]byte, error) {
	key := client.ObjectKey{Namespace: c.opts.Namespace, Name: c.opts.SecretName}
	log := ctrl.LoggerFrom(ctx)
	const attempts = 3
	for range attempts {
		secret := &corev1.Secret{}
		err := c.reader.Get(ctx, key, secret)
		if err == nil {
			return secret.Data, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("failed to read the CA Secret %s: %w", key, err)
		}
		data, restored, replaced, err := c.dataToCreate(ctx)
		if err != nil {
			return nil, err
		}
		secret = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: key.Namespace,
				Name:      key.Name,
				Labels:    map[string]string{identity.LabelPartOf: identity.PartOf},
			},
			Type: corev1.SecretTypeOpaque,
			Data: data,
		}
		err = c.writer.Create(ctx, secret)
		if apierrors.IsAlreadyExists(err) {
			log.V(1).Info("Another replica created the CA Secret first; reading it")
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("failed to create the CA Secret %s: %w", key, err)
		}
		if restored && c.recorder != nil {
			c.recorder.Eventf(secret, nil, corev1.EventTypeWarning, "CASecretRestored", "Restore",
				"The CA Secret was deleted; recreated from the CA in memory (bundle %s). Edit the Secret to replace the root.", identity.BundleFingerprint(data[CertKey]))
		}
		if replaced != "" && c.recorder != nil {
			c.recorder.Eventf(secret, nil, corev1.EventTypeWarning, "CARootReplaced", "Mint",
				"The CA Secret was missing; minted a new root (bundle %s) in place of bundle %s, as --ca-allow-new-root allows. Every proxy needs the new trust bundle.",
				identity.BundleFingerprint(data[CertKey]), replaced)
		}
		return data, nil
	}
	return nil, fmt.Errorf("the CA Secret %s kept disappearing between create and read: gave up after %d attempts", key, attempts)
}

// dataToCreate is the data of a Secret to create: the CA held in memory, or a new root when
// none is held and no record shows that this installation had a CA (the first start of the
// mesh), or when one does and Options.AllowNewRoot allows replacing it (replaced is then the
// recorded bundle's fingerprint).
func (c *CA) dataToCreate(ctx context.Context) (data map[string][]byte, restored bool, replaced string, err error) {
	log := ctrl.LoggerFrom(ctx)
	c.mu.Lock()
	held := c.held
	c.mu.Unlock()
	if held != nil {
		// Never a new root here: every running proxy trusts the held one.
		log.Info("The CA Secret was deleted; creating it again from the CA in memory",
			"bundle", identity.BundleFingerprint(held[CertKey]))
		return map[string][]byte{CertKey: bytes.Clone(held[CertKey]), KeyKey: bytes.Clone(held[KeyKey])}, true, "", nil
	}
	record, err := c.readRecord(ctx)
	if err != nil {
		return nil, false, "", err
	}
	if record != nil && record.Annotations[AnnotationCASecret] == c.secretRef() {
		replaced = cmp.Or(record.Annotations[AnnotationCABundle], "unknown")
		if !c.opts.AllowNewRoot {
			c.reportMissingRoot(record, replaced)
			return nil, false, "", &MissingRootError{Secret: c.secretRef(), Record: c.recordRef(), Bundle: replaced}
		}
		log.Info("The CA Secret is missing and this installation had a root; minting a new one as --ca-allow-new-root allows",
			"replacedBundle", replaced, "trustDomain", c.opts.TrustDomain, "lifetime", c.opts.Lifetime)
	} else {
		log.Info("Creating the CA Secret with a new root", "trustDomain", c.opts.TrustDomain, "lifetime", c.opts.Lifetime)
	}
	data, err = newSecretData(c.opts.TrustDomain, c.opts.Lifetime, time.Now())
	return data, false, replaced, err
}

// MissingRootError is the refusal to mint a new root in place of a root this installation had:
// the CA Secret is missing, no replica that could restore it holds the CA, and the record in
// the operator's namespace shows that the Secret existed.
type MissingRootError struct {
	// Secret and Record are <namespace>/<name> of the CA Secret and of the record.
	Secret, Record string
	// Bundle is the fingerprint of the recorded bundle.
	Bundle string
}

func (e *MissingRootError) Error() string {
	return fmt.Sprintf("the CA Secret %s is missing, but this installation had a root (bundle %s, recorded in ConfigMap %s) that every running proxy trusts, "+
		"so no new root is minted: restore the Secret from a backup (kubectl apply -f <the backed-up Secret>; the operator loads it at once), "+
		"or, to start over with a new root that every proxy must then be given, restart the operator with --ca-allow-new-root and remove the flag once the new Secret exists",
		e.Secret, e.Bundle, e.Record)
}

// reportMissingRoot records a Warning event on the record for a MissingRootError.
func (c *CA) reportMissingRoot(record *corev1.ConfigMap, bundle string) {
	if c.recorder == nil {
		return
	}
	c.recorder.Eventf(record, nil, corev1.EventTypeWarning, "CASecretMissing", "Mint",
		"The CA Secret %s is missing and no replica holds its root (bundle %s); refusing to mint a new root. Restore the Secret from a backup, or restart the operator with --ca-allow-new-root.",
		c.secretRef(), bundle)
}

func (c *CA) secretRef() string { return c.opts.Namespace + "/" + c.opts.SecretName }

func (c *CA) recordRef() string { return c.opts.Namespace + "/" + RecordName }

// readRecord reads the record from the API server (a list by name: the operator may list and
// watch ConfigMaps of that name, not get them); nil when there is none.
func (c *CA) readRecord(ctx context.Context) (*corev1.ConfigMap, error) {
	list := &corev1.ConfigMapList{}
	if err := c.reader.List(ctx, list, client.InNamespace(c.opts.Namespace), client.MatchingFields{"metadata.name": RecordName}); err != nil {
		return nil, fmt.Errorf("failed to read ConfigMap %s, the record of this installation's CA: %w", c.recordRef(), err)
	}
	for i := range list.Items {
		if list.Items[i].Name == RecordName {
			return &list.Items[i], nil
		}
	}
	return nil, nil
}

// ensureRecord makes the record hold the bundle of data and name the CA Secret.
func (c *CA) ensureRecord(ctx context.Context, data map[string][]byte) error {
	existing, err := c.readRecord(ctx)
	if err != nil {
		return err
	}
	bundle := identity.BundleFingerprint(data[CertKey])
	apply := func(cm *corev1.ConfigMap) {
		if cm.Annotations == nil {
			cm.Annotations = map[string]string{}
		}
		cm.Annotations[AnnotationCASecret] = c.secretRef()
		cm.Annotations[AnnotationCABundle] = bundle
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[CertKey] = string(data[CertKey])
	}
	if existing == nil {
		// Not labelled as a trust bundle: the trust bundle controllers, of this installation or
		// another, leave a ConfigMap of a namespace without MeshServices alone unless it is.
		record := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: c.opts.Namespace, Name: RecordName}}
		apply(record)
		ctrl.LoggerFrom(ctx).Info("Recording the CA's root", "configMap", klog.KObj(record), "bundle", bundle)
		if err := c.writer.Create(ctx, record); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("failed to create ConfigMap %s, the record of this installation's CA: %w", c.recordRef(), err)
		}
		return nil
	}
	updated := existing.DeepCopy()
	apply(updated)
	if equality.Semantic.DeepEqual(existing.Annotations, updated.Annotations) && equality.Semantic.DeepEqual(existing.Data, updated.Data) {
		return nil
	}
	ctrl.LoggerFrom(ctx).Info("Recording the CA's root", "configMap", klog.KObj(updated), "bundle", bundle)
	if err := c.writer.Patch(ctx, updated, client.MergeFrom(existing)); err != nil {
		return fmt.Errorf("failed to update ConfigMap %s, the record of this installation's CA: %w", c.recordRef(), err)
	}
	return nil
}

func (c *CA) publish(ctx context.Context, data map[string][]byte, authority *identity.Authority) {
	signer := authority.Signer()
	log := ctrl.LoggerFrom(ctx).WithValues("bundle", identity.BundleFingerprint(authority.TrustBundle()),
		"serialNumber", signer.SerialNumber.Text(16), "notAfter", signer.NotAfter)
	log.Info("Publishing the built-in CA")
	if remaining, total := time.Until(signer.NotAfter), signer.NotAfter.Sub(signer.NotBefore); remaining < total/10 {
		log.Info("The built-in CA root expires soon; plan its replacement", "remaining", remaining.Round(time.Hour))
	}
	c.holder.Set(authority)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.published = secretFingerprint(data)
	c.held = map[string][]byte{CertKey: bytes.Clone(data[CertKey]), KeyKey: bytes.Clone(data[KeyKey])}
}

func (c *CA) setLastError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastErr = err
}

// secretFingerprint identifies the CA material of the Secret's data.
func secretFingerprint(data map[string][]byte) []byte {
	h := sha256.New()
	h.Write(data[CertKey])
	h.Write([]byte{0})
	h.Write(data[KeyKey])
	return h.Sum(nil)
}
