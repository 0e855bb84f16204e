// Package certmanager is the cert-manager CA backend: each replica generates an ECDSA P-256
// intermediate key in memory, has a cert-manager Issuer or ClusterIssuer sign it through a
// CertificateRequest, and signs workload leaves locally with it, so cert-manager is asked once
// per replica per renewal, not once per pod. The intermediate is renewed at two thirds of its
// lifetime, each new one published through an identity.Holder. The trust bundle is the trust
// anchor the admin pins in a ConfigMap or Secret of the operator's namespace (a trust-manager
// Bundle can write it), never what the issuer returns, unless the admin accepts that risk.
package certmanager

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/identity/wake"
)

// The CertificateRequests live in the operator's namespace.
// +kubebuilder:rbac:groups=cert-manager.io,namespace=system,resources=certificaterequests,verbs=get;list;watch;create;delete

const (
	// DefaultDuration is the lifetime the intermediate is requested for.
	DefaultDuration = 30 * 24 * time.Hour
	// DefaultKeepRequests is how many of its CertificateRequests a replica keeps.
	DefaultKeepRequests = 3
	// DefaultCheckInterval is how often a pending CertificateRequest is read again when no
	// watch event arrives.
	DefaultCheckInterval = 30 * time.Second

	// LabelComponent and Component mark the CertificateRequests of the intermediate CA.
	LabelComponent = "app.kubernetes.io/component"
	Component      = "workload-ca"
	// LabelReplica names the replica whose in-memory key a CertificateRequest is for.
	LabelReplica = "meshlift.io/ca-replica"

	// maxBackoff bounds the wait before retrying after an error.
	maxBackoff = 5 * time.Minute
)

// Options configure the cert-manager backend.
type Options struct {
	// Namespace is the operator's namespace, where the CertificateRequests are created (and
	// where an issuer of kind Issuer must be).
	Namespace string
	// IssuerRef is the issuer that signs the intermediate. Kind defaults to Issuer and Group to
	// cert-manager.io; in that group Kind must be Issuer or ClusterIssuer (other groups are
	// external issuers, whose kinds are their own).
	IssuerRef cmmeta.IssuerReference
	// TrustDomain is put in the intermediate's URI SAN (spiffe://<trust-domain>);
	// DefaultTrustDomain when empty.
	TrustDomain string
	// Duration is the lifetime requested for the intermediate; DefaultDuration when zero. The
	// issuer may grant less; renewal follows what it granted.
	Duration time.Duration
	// Replica tells this replica's CertificateRequests apart (label meshlift.io/ca-replica);
	// the host name (the pod name) when empty.
	Replica string
	// KeepRequests is how many of its latest CertificateRequests a replica keeps;
	// DefaultKeepRequests when zero.
	KeepRequests int
	// CheckInterval is how often a pending CertificateRequest is read even if no watch event
	// arrives; DefaultCheckInterval when zero.
	CheckInterval time.Duration
	// TrustAnchor is the ConfigMap or Secret of Namespace holding the trust bundle. Unset, the
	// bundle is the issuer's status.ca, which New refuses unless AcceptRisks has RiskIssuerCA.
	TrustAnchor TrustAnchor
	// AcceptRisks lists the unsafe configurations New accepts (an issuer of cluster scope, no
	// pinned trust anchor).
	AcceptRisks Risks
}

// CA gets intermediates from cert-manager and publishes them through a Holder. It runs on every
// replica: each one holds its own intermediate key, which never leaves its memory.
type CA struct {
	opts   Options
	holder *identity.Holder

	// reader reads from the API server, writer writes through the manager's client; watches is
	// a private cache holding only this replica's CertificateRequests, whose events wake the
	// wait for issuance.
	reader  client.Reader
	writer  client.Client
	watches cache.Cache
	wake    chan struct{}
	// anchorWatch is a private cache holding only the trust anchor's object; its events wake
	// anchorWake, which republishes the intermediate with the new bundle.
	anchorWatch cache.Cache
	anchorWake  chan struct{}
	// firstBackoff is the wait before the first retry after an error; it doubles up to
	// maxBackoff.
	firstBackoff time.Duration

	mu        sync.Mutex
	published *identity.Authority
	// keyPEM and certPEM are the published intermediate's key and status.certificate, kept to
	// republish it when the trust anchor changes.
	keyPEM, certPEM []byte
	lastErr         error
}

// New validates opts and returns a CA that publishes through holder. Add it to the manager
// with SetupWithManager.
func New(opts Options, holder *identity.Holder) (*CA, error) {
	if opts.Namespace == "" {
		return nil, errors.New("the cert-manager CA backend needs the operator's namespace")
	}
	if holder == nil {
		return nil, errors.New("the cert-manager CA backend needs a Holder to publish to")
	}
	ref := &opts.IssuerRef
	ref.Kind = cmp.Or(ref.Kind, cmapi.IssuerKind)
	ref.Group = cmp.Or(ref.Group, "cert-manager.io")
	if ref.Name == "" {
		return nil, errors.New("the cert-manager CA backend needs the name of the issuer that signs its intermediate CA")
	}
	if ref.Group == "cert-manager.io" && ref.Kind != cmapi.IssuerKind && ref.Kind != cmapi.ClusterIssuerKind {
		return nil, fmt.Errorf("the issuer kind must be %s or %s, not %q", cmapi.IssuerKind, cmapi.ClusterIssuerKind, ref.Kind)
	}
	opts.TrustDomain = cmp.Or(opts.TrustDomain, identity.DefaultTrustDomain)
	if anchor := &opts.TrustAnchor; anchor.IsSet() {
		anchor.Key = cmp.Or(anchor.Key, DefaultTrustAnchorKey)
		if anchor.Kind != KindConfigMap && anchor.Kind != KindSecret {
			return nil, fmt.Errorf("the trust anchor must be a %s or a %s, not %q", KindConfigMap, KindSecret, anchor.Kind)
		}
		if errs := validation.IsDNS1123Subdomain(anchor.Name); len(errs) > 0 {
			return nil, fmt.Errorf("the trust anchor's name %q is invalid: %s", anchor.Name, strings.Join(errs, "; "))
		}
		if errs := validation.IsConfigMapKey(anchor.Key); len(errs) > 0 {
			return nil, fmt.Errorf("the trust anchor's key %q is invalid: %s", anchor.Key, strings.Join(errs, "; "))
		}
	}
	if err := checkSafety(opts); err != nil {
		return nil, err
	}
	if opts.Duration <= 0 {
		opts.Duration = DefaultDuration
	}
	if opts.KeepRequests <= 0 {
		opts.KeepRequests = DefaultKeepRequests
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = DefaultCheckInterval
	}
	if opts.Replica == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("the cert-manager CA backend needs a replica name: %w", err)
		}
		opts.Replica = host
	}
	opts.Replica = labelValue(opts.Replica)
	return &CA{opts: opts, holder: holder, wake: make(chan struct{}, 1), anchorWake: make(chan struct{}, 1), firstBackoff: time.Second}, nil
}

// labelValue returns name if it is a valid label value, else a stable hash of it.
func labelValue(name string) string {
	if len(validation.IsValidLabelValue(name)) == 0 {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "replica-" + hex.EncodeToString(sum[:12])
}

// SetupWithManager adds the CA to mgr as a runnable that does not need leader election. mgr's
// scheme must hold cert-manager's API types (cmapi.AddToScheme).
func (c *CA) SetupWithManager(mgr ctrl.Manager) error {
	gvk := cmapi.SchemeGroupVersion.WithKind("CertificateRequest")
	if !mgr.GetScheme().Recognizes(gvk) {
		return fmt.Errorf("the manager's scheme does not know %s: add cert-manager's API types (cert-manager/pkg/apis/certmanager/v1.AddToScheme)", gvk)
	}
	c.reader = mgr.GetAPIReader()
	c.writer = mgr.GetClient()
	watches, err := cache.New(mgr.GetConfig(), cache.Options{
		HTTPClient: mgr.GetHTTPClient(),
		Scheme:     mgr.GetScheme(),
		Mapper:     mgr.GetRESTMapper(),
		ByObject: map[client.Object]cache.ByObject{
			&cmapi.CertificateRequest{}: {
				Namespaces: map[string]cache.Config{c.opts.Namespace: {}},
				Label:      labels.SelectorFromSet(c.requestLabels()),
			},
		},
		DefaultTransform: cache.TransformStripManagedFields(),
	})
	if err != nil {
		return fmt.Errorf("failed to create the cache watching CertificateRequests: %w", err)
	}
	c.watches = watches
	if anchor := c.opts.TrustAnchor; anchor.IsSet() {
		c.anchorWatch, err = cache.New(mgr.GetConfig(), cache.Options{
			HTTPClient: mgr.GetHTTPClient(),
			Scheme:     mgr.GetScheme(),
			Mapper:     mgr.GetRESTMapper(),
			ByObject: map[client.Object]cache.ByObject{
				c.anchorObject(): {
					Namespaces: map[string]cache.Config{c.opts.Namespace: {}},
					Field:      fields.OneTermEqualSelector("metadata.name", anchor.Name),
				},
			},
			DefaultTransform: cache.TransformStripManagedFields(),
		})
		if err != nil {
			return fmt.Errorf("failed to create the cache watching the trust anchor: %w", err)
		}
	}
	if err := mgr.Add(c); err != nil {
		return fmt.Errorf("failed to add the cert-manager CA backend: %w", err)
	}
	return nil
}

// NeedLeaderElection is false: every replica signs workload certificates with its own
// intermediate.
func (c *CA) NeedLeaderElection() bool { return false }

// Ready is a healthz.Checker: it fails until an intermediate is published, and once the
// published one has expired, with what keeps a new one from being issued.
func (c *CA) Ready(*http.Request) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.published != nil && time.Now().Before(c.published.Signer().NotAfter) {
		return nil
	}
	msg := "no intermediate CA from cert-manager yet"
	if c.published != nil {
		msg = "the intermediate CA from cert-manager has expired"
	}
	if c.lastErr != nil {
		return fmt.Errorf("%s: %w", msg, c.lastErr)
	}
	return errors.New(msg)
}

// Start requests an intermediate, publishes it and renews it until ctx is done.
func (c *CA) Start(ctx context.Context) error {
	if c.watches == nil {
		return errors.New("the cert-manager CA backend must be added with SetupWithManager")
	}
	ref := c.opts.IssuerRef
	log := ctrl.LoggerFrom(ctx).WithName("cert-manager-ca").WithValues("issuerKind", ref.Kind, "issuerName", ref.Name, "replica", c.opts.Replica)
	ctx = ctrl.LoggerInto(ctx, log)
	wake.OnChange(ctx, c.watches, &cmapi.CertificateRequest{}, c.wake, "CertificateRequests")
	if c.anchorWatch != nil {
		wake.OnChange(ctx, c.anchorWatch, c.anchorObject(), c.anchorWake, "the trust anchor")
	} else {
		log.Info("No trust anchor is pinned: the issuer's status.ca is the trust bundle (accepted with --ca-i-understand-unsafe)")
	}
	backoff := c.firstBackoff
	for {
		renewAt, err := c.issue(ctx)
		if ctx.Err() != nil {
			return nil
		}
		c.setLastError(err)
		var delay time.Duration
		if err != nil {
			log.Error(err, "Failed to get an intermediate CA from cert-manager; retrying", "retryAfter", backoff)
			delay = backoff
			backoff = min(2*backoff, maxBackoff)
		} else {
			log.Info("Scheduled the renewal of the intermediate CA", "renewAt", renewAt)
			// The floor keeps an issuer that grants almost no lifetime from spinning the loop.
			delay = max(time.Until(renewAt), time.Second)
			backoff = c.firstBackoff
		}
		if !c.sleep(ctx, delay, err == nil) {
			return nil
		}
	}
}

// sleep waits for delay. When the trust anchor changes in the meantime it republishes the
// intermediate in use with the new trust bundle (published is true) or ends the wait (an issuance
// failed, maybe for want of the anchor). It returns false when ctx is done.
func (c *CA) sleep(ctx context.Context, delay time.Duration, published bool) bool {
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		case <-c.anchorWake:
			if !published {
				return true
			}
			c.republish(ctx)
		}
	}
}

// anchorObject is an empty object of the trust anchor's kind.
func (c *CA) anchorObject() client.Object {
	if c.opts.TrustAnchor.Kind == KindSecret {
		return &corev1.Secret{}
	}
	return &corev1.ConfigMap{}
}

// readTrustAnchor returns the PEM roots of the pinned trust anchor, nil when none is pinned.
func (c *CA) readTrustAnchor(ctx context.Context) ([]byte, error) {
	anchor := c.opts.TrustAnchor
	if !anchor.IsSet() {
		return nil, nil
	}
	key := client.ObjectKey{Namespace: c.opts.Namespace, Name: anchor.Name}
	var data []byte
	switch obj := c.anchorObject().(type) {
	case *corev1.Secret:
		if err := c.reader.Get(ctx, key, obj); err != nil {
			return nil, anchorReadError(anchor, key, err)
		}
		data = obj.Data[anchor.Key]
	case *corev1.ConfigMap:
		if err := c.reader.Get(ctx, key, obj); err != nil {
			return nil, anchorReadError(anchor, key, err)
		}
		data = []byte(obj.Data[anchor.Key])
	}
	if err := checkAnchorPEM(data); err != nil {
		return nil, fmt.Errorf("the trust anchor %s %s, key %s: %w", anchor.Kind, key, anchor.Key, err)
	}
	return data, nil
}

func anchorReadError(anchor TrustAnchor, key client.ObjectKey, err error) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("the trust anchor %s %s does not exist: create it with the PEM roots the issuer chains to under key %s (or have a trust-manager Bundle write it): %w",
			anchor.Kind, key, anchor.Key, err)
	}
	return fmt.Errorf("failed to read the trust anchor %s %s: %w", anchor.Kind, key, err)
}

// republish publishes the intermediate in use again with the trust anchor's current roots, if
// they changed and the intermediate still chains to them. Otherwise the intermediate in use
// stays published with the previous bundle, and the error is logged.
func (c *CA) republish(ctx context.Context) {
	log := ctrl.LoggerFrom(ctx)
	c.mu.Lock()
	published, keyPEM, certPEM := c.published, c.keyPEM, c.certPEM
	c.mu.Unlock()
	if published == nil {
		return
	}
	anchorPEM, err := c.readTrustAnchor(ctx)
	if err == nil && bytes.Equal(anchorPEM, published.TrustBundle()) {
		return
	}
	if err == nil {
		var authority *identity.Authority
		authority, err = identity.NewAuthority(certPEM, keyPEM, certPEM, anchorPEM)
		if err == nil {
			log.Info("The trust anchor changed; publishing the intermediate CA with the new trust bundle")
			c.publish(ctx, authority, keyPEM, certPEM)
			return
		}
		err = fmt.Errorf("the intermediate CA in use does not chain to the new trust anchor (add new roots before removing old ones): %w", err)
	}
	log.Error(err, "Kept the trust bundle in use: the trust anchor changed into something unusable")
	c.setLastError(err)
}

// issue gets a new intermediate from cert-manager, publishes it, cleans up old requests and
// returns when to renew.
func (c *CA) issue(ctx context.Context) (time.Time, error) {
	log := ctrl.LoggerFrom(ctx)
	// Read first: without the roots, a request would be made for nothing.
	if _, err := c.readTrustAnchor(ctx); err != nil {
		return time.Time{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return time.Time{}, fmt.Errorf("generating the intermediate CA key: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return time.Time{}, fmt.Errorf("encoding the intermediate CA key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	csrPEM, err := newCSR(key, c.opts.TrustDomain)
	if err != nil {
		return time.Time{}, err
	}
	cr := &cmapi.CertificateRequest{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:    c.opts.Namespace,
			GenerateName: "meshlift-ca-",
			Labels:       c.requestLabels(),
		},
		Spec: cmapi.CertificateRequestSpec{
			Duration:  &metav1.Duration{Duration: c.opts.Duration},
			IssuerRef: c.opts.IssuerRef,
			Request:   csrPEM,
			IsCA:      true,
			Usages:    intermediateUsages,
		},
	}
	log.Info("Requesting an intermediate CA from cert-manager", "duration", c.opts.Duration)
	if err := c.writer.Create(ctx, cr); err != nil {
		if meta.IsNoMatchError(err) {
			return time.Time{}, fmt.Errorf("cert-manager's CertificateRequest API is not served by this cluster (is cert-manager installed?): %w", err)
		}
		return time.Time{}, fmt.Errorf("failed to create a CertificateRequest in namespace %s: %w", c.opts.Namespace, err)
	}
	ctx = ctrl.LoggerInto(ctx, log.WithValues("certificateRequest", klog.KObj(cr)))
	// Whatever becomes of this request, old ones go: retries after failures create requests too.
	defer func() {
		if ctx.Err() == nil {
			c.cleanup(ctx, cr.Name)
		}
	}()
	issued, err := c.waitForCertificate(ctx, client.ObjectKeyFromObject(cr))
	if err != nil {
		return time.Time{}, err
	}
	// Read again: the roots in force now are the ones to publish.
	anchorPEM, err := c.readTrustAnchor(ctx)
	if err != nil {
		return time.Time{}, err
	}
	authority, err := authorityFromRequest(issued, keyPEM, anchorPEM, c.opts.TrustDomain)
	if err != nil {
		return time.Time{}, err
	}
	c.publish(ctx, authority, keyPEM, issued.Status.Certificate)
	return renewalTime(authority.Signer()), nil
}

// waitForCertificate reads the CertificateRequest until it is issued or will never be.
func (c *CA) waitForCertificate(ctx context.Context, key client.ObjectKey) (*cmapi.CertificateRequest, error) {
	log := ctrl.LoggerFrom(ctx)
	lastWaiting := ""
	for {
		cr := &cmapi.CertificateRequest{}
		if err := c.reader.Get(ctx, key, cr); err != nil {
			return nil, fmt.Errorf("failed to read CertificateRequest %s: %w", key, err)
		}
		state := stateOf(cr)
		if state.Err != nil {
			return nil, state.Err
		}
		if state.Issued {
			return cr, nil
		}
		if state.Waiting != lastWaiting {
			log.Info("Waiting for cert-manager to issue the intermediate CA", "waitingFor", state.Waiting)
			lastWaiting = state.Waiting
			c.setLastError(fmt.Errorf("CertificateRequest %s is waiting for %s", key, state.Waiting))
		}
		timer := time.NewTimer(c.opts.CheckInterval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-c.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

func (c *CA) publish(ctx context.Context, authority *identity.Authority, keyPEM, certPEM []byte) {
	signer := authority.Signer()
	ctrl.LoggerFrom(ctx).Info("Publishing the intermediate CA from cert-manager",
		"bundle", identity.BundleFingerprint(authority.TrustBundle()),
		"serialNumber", signer.SerialNumber.Text(16), "notAfter", signer.NotAfter)
	c.holder.Set(authority)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.published = authority
	c.keyPEM, c.certPEM = keyPEM, certPEM
}

// cleanup deletes the CertificateRequests requestsToDelete picks. Failing to is logged, not
// fatal: the next request tries again.
func (c *CA) cleanup(ctx context.Context, current string) {
	log := ctrl.LoggerFrom(ctx)
	requests := &cmapi.CertificateRequestList{}
	selector := client.MatchingLabels{identity.LabelPartOf: identity.PartOf, LabelComponent: Component}
	if err := c.reader.List(ctx, requests, client.InNamespace(c.opts.Namespace), selector); err != nil {
		log.Error(err, "Failed to list CertificateRequests to clean up")
		return
	}
	for _, name := range requestsToDelete(requests.Items, c.opts.Replica, current, c.opts.KeepRequests, c.opts.Duration, time.Now()) {
		cr := &cmapi.CertificateRequest{ObjectMeta: metav1.ObjectMeta{Namespace: c.opts.Namespace, Name: name}}
		log.V(1).Info("Deleting an old CertificateRequest", "old", klog.KObj(cr))
		if err := c.writer.Delete(ctx, cr); err != nil && !apierrors.IsNotFound(err) {
			log.Error(err, "Failed to delete an old CertificateRequest", "old", klog.KObj(cr))
		}
	}
}

func (c *CA) requestLabels() map[string]string {
	return map[string]string{
		identity.LabelPartOf: identity.PartOf,
		LabelComponent:       Component,
		LabelReplica:         c.opts.Replica,
	}
}

func (c *CA) setLastError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastErr = err
}
