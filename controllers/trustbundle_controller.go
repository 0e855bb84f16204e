package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/sidecar"
)

const (
	// TrustBundleConfigMap is the ConfigMap holding the mesh trust bundle in each meshed
	// namespace; the injector projects it into every injected pod (MESHLIFT_CA_FILE), so the
	// names come from the package both share.
	TrustBundleConfigMap = sidecar.CARootConfigMap
	// TrustBundleKey is the ConfigMap key of the PEM bundle.
	TrustBundleKey = sidecar.CARootKey
)

// The trust bundle ConfigMap is written in every meshed namespace, so the rules are cluster-wide,
// but only for its name: the private cache lists and watches it with a metadata.name field
// selector, and patches it (a create cannot be limited to a name). It is never read with a GET.
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=create
// +kubebuilder:rbac:groups="",resources=configmaps,resourceNames=meshlift-ca-root,verbs=list;watch;patch

// TrustBundleReconciler publishes the trust bundle of the current CA as the ConfigMap
// meshlift-ca-root (key ca.crt) in every namespace that has a MeshService, keeps it equal to
// the bundle when the CA changes and repairs edits. A request names a namespace.
//
// It creates the ConfigMap only in namespaces with at least one MeshService, and never deletes
// it: pods of a namespace whose last MeshService went away may still mount it. A ConfigMap it
// labelled as its own is kept up to date wherever it is.
type TrustBundleReconciler struct {
	client client.Client
	holder *identity.Holder
	// configMaps reads the ConfigMaps named meshlift-ca-root from a private cache holding only
	// them, not every ConfigMap of the cluster.
	configMaps client.Reader
}

// NewTrustBundleReconciler returns a reconciler that writes through c the trust bundle of the
// Authority holder publishes.
func NewTrustBundleReconciler(c client.Client, holder *identity.Holder) *TrustBundleReconciler {
	return &TrustBundleReconciler{client: c, holder: holder}
}

// SetupWithManager watches MeshServices (a namespace gets its first), the ConfigMaps named
// meshlift-ca-root (edits and deletions are repaired) and the Holder (a new CA updates every
// namespace).
func (r *TrustBundleReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.holder == nil {
		return errors.New("the trust bundle controller needs the CA's Holder")
	}
	configMaps, err := cache.New(mgr.GetConfig(), cache.Options{
		HTTPClient: mgr.GetHTTPClient(),
		Scheme:     mgr.GetScheme(),
		Mapper:     mgr.GetRESTMapper(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.ConfigMap{}: {Field: fields.OneTermEqualSelector("metadata.name", TrustBundleConfigMap)},
		},
		DefaultTransform: cache.TransformStripManagedFields(),
	})
	if err != nil {
		return fmt.Errorf("failed to create the cache of trust bundle ConfigMaps: %w", err)
	}
	if err := mgr.Add(configMaps); err != nil {
		return fmt.Errorf("failed to add the cache of trust bundle ConfigMaps: %w", err)
	}
	r.configMaps = configMaps

	byNamespace := func(_ context.Context, obj client.Object) []reconcile.Request {
		return []reconcile.Request{namespaceRequest(obj.GetNamespace())}
	}
	// Only a new MeshService can make a namespace meshed; status updates are frequent and
	// change nothing here.
	meshServiceCreated := predicate.Funcs{
		UpdateFunc:  func(event.UpdateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("trustbundle").
		Watches(&meshv1alpha1.MeshService{}, handler.EnqueueRequestsFromMapFunc(byNamespace), builder.WithPredicates(meshServiceCreated)).
		WatchesRawSource(source.Kind(configMaps, &corev1.ConfigMap{}, handler.TypedEnqueueRequestsFromMapFunc(
			func(_ context.Context, cm *corev1.ConfigMap) []reconcile.Request {
				return []reconcile.Request{namespaceRequest(cm.Namespace)}
			}))).
		WatchesRawSource(source.Func(r.watchHolder)).
		Complete(r)
}

func namespaceRequest(namespace string) reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Name: namespace}}
}

// watchHolder is the source of the Holder's changes: on each it enqueues every namespace that
// is meshed or has a ConfigMap of ours. It starts with the controller (on the leader), so the
// first Set after the start is never missed; reconciles before it read Current themselves.
func (r *TrustBundleReconciler) watchHolder(ctx context.Context, queue workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	changed := r.holder.Changed()
	go func() {
		log := ctrl.LoggerFrom(ctx).WithName("trustbundle")
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
			changed = r.holder.Changed()
			for {
				namespaces, err := r.namespacesToUpdate(ctx)
				if err == nil {
					log.V(1).Info("The CA changed; updating the trust bundle of every namespace", "namespaces", len(namespaces))
					for ns := range namespaces {
						queue.Add(namespaceRequest(ns))
					}
					break
				}
				log.Error(err, "Failed to list the namespaces whose trust bundle to update; retrying")
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
		}
	}()
	return nil
}

func (r *TrustBundleReconciler) namespacesToUpdate(ctx context.Context) (map[string]struct{}, error) {
	namespaces := map[string]struct{}{}
	meshServices := &meshv1alpha1.MeshServiceList{}
	if err := r.client.List(ctx, meshServices); err != nil {
		return nil, fmt.Errorf("failed to list MeshServices: %w", err)
	}
	for _, ms := range meshServices.Items {
		namespaces[ms.Namespace] = struct{}{}
	}
	configMaps := &corev1.ConfigMapList{}
	if err := r.configMaps.List(ctx, configMaps); err != nil {
		return nil, fmt.Errorf("failed to list ConfigMaps %s: %w", TrustBundleConfigMap, err)
	}
	for _, cm := range configMaps.Items {
		namespaces[cm.Namespace] = struct{}{}
	}
	return namespaces, nil
}

// Reconcile makes the trust bundle ConfigMap of one namespace hold the current bundle.
func (r *TrustBundleReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	authority := r.holder.Current()
	if authority == nil {
		// No CA yet: its first Set enqueues every namespace.
		return ctrl.Result{}, nil
	}
	ns := req.Name
	log := ctrl.LoggerFrom(ctx).WithValues("namespace", ns)
	key := client.ObjectKey{Namespace: ns, Name: TrustBundleConfigMap}
	existing := &corev1.ConfigMap{}
	if err := r.configMaps.Get(ctx, key, existing); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("failed to read ConfigMap %s: %w", key, err)
		}
		existing = nil
	}
	meshServices := &meshv1alpha1.MeshServiceList{}
	if err := r.client.List(ctx, meshServices, client.InNamespace(ns)); err != nil {
		return ctrl.Result{}, fmt.Errorf("failed to list MeshServices in namespace %s: %w", ns, err)
	}
	bundle := string(authority.TrustBundle())
	fingerprint := identity.BundleFingerprint(authority.TrustBundle())

	switch trustBundleChange(existing, len(meshServices.Items) > 0, bundle) {
	case trustBundleCreate:
		log.Info("Publishing the trust bundle", "bundle", fingerprint)
		err := r.client.Create(ctx, desiredTrustBundle(ns, bundle))
		switch {
		case apierrors.IsAlreadyExists(err):
			// The cache has not seen it yet; its event brings us back, this is a fallback.
			log.V(1).Info("The trust bundle ConfigMap exists but is not in the cache yet; checking again")
			return ctrl.Result{RequeueAfter: time.Second}, nil
		case apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause):
			return ctrl.Result{}, nil
		case err != nil:
			return ctrl.Result{}, fmt.Errorf("failed to create ConfigMap %s: %w", key, err)
		}
	case trustBundleUpdate:
		log.Info("Updating the trust bundle", "bundle", fingerprint)
		base := existing.DeepCopy()
		updated := existing.DeepCopy()
		applyTrustBundle(updated, bundle)
		if err := r.client.Patch(ctx, updated, client.MergeFrom(base)); err != nil {
			return ctrl.Result{}, fmt.Errorf("failed to update ConfigMap %s: %w", key, err)
		}
	}
	return ctrl.Result{}, nil
}

// trustBundleAction is what a namespace's trust bundle ConfigMap needs.
type trustBundleAction int

const (
	trustBundleNone trustBundleAction = iota
	trustBundleCreate
	trustBundleUpdate
)

// trustBundleChange decides what to do with the ConfigMap of a namespace (existing is nil when
// there is none): create it where MeshServices are, and bring it back to the bundle and label
// where it is ours, meaning the namespace is meshed or the ConfigMap carries our label.
func trustBundleChange(existing *corev1.ConfigMap, meshed bool, bundle string) trustBundleAction {
	switch {
	case existing == nil && meshed:
		return trustBundleCreate
	case existing == nil:
		return trustBundleNone
	case !meshed && existing.Labels[identity.LabelPartOf] != identity.PartOf:
		return trustBundleNone
	case existing.Data[TrustBundleKey] != bundle || existing.Labels[identity.LabelPartOf] != identity.PartOf:
		return trustBundleUpdate
	}
	return trustBundleNone
}

func desiredTrustBundle(namespace, bundle string) *corev1.ConfigMap {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: TrustBundleConfigMap}}
	applyTrustBundle(cm, bundle)
	return cm
}

// applyTrustBundle sets the bundle and our label; other keys and labels are left alone.
func applyTrustBundle(cm *corev1.ConfigMap, bundle string) {
	if cm.Labels == nil {
		cm.Labels = map[string]string{}
	}
	cm.Labels[identity.LabelPartOf] = identity.PartOf
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[TrustBundleKey] = bundle
}
