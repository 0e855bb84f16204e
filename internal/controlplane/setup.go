package controlplane

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	authenticationv1client "k8s.io/client-go/kubernetes/typed/authentication/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/controlplane/endpoints"
	"github.com/meshlift/meshlift/internal/identity"
)

// The server verifies tokens, reads pods, MeshServices and Services (for the outbound routes)
// from the cache and patches pods with its drain acknowledgements and their proxies' certificate
// expiry. Services are only ever read from the cache: list and watch, no get.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=list;watch
// +kubebuilder:rbac:groups=mesh.meshlift.io,resources=meshservices,verbs=get;list;watch

// The least rate limits of the TokenReview client (its own, apart from the manager's): a
// rollout starts many proxies at once, and each new token costs one TokenReview.
const (
	tokenReviewQPS   = 50
	tokenReviewBurst = 100
)

// Setup builds the server with the manager's cache and config, feeds it the Pod, MeshService and
// Service events of the cache's informers and adds it to the manager (it runs on every replica,
// once the caches have synced). holder publishes the mesh CA.
func Setup(ctx context.Context, mgr ctrl.Manager, holder *identity.Holder, opts Options) (*Server, error) {
	cfg := rest.CopyConfig(mgr.GetConfig())
	cfg.QPS, cfg.Burst = max(cfg.QPS, tokenReviewQPS), max(cfg.Burst, tokenReviewBurst)
	authn, err := authenticationv1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("failed to create the TokenReview client: %w", err)
	}
	if opts.PodWriter == nil {
		opts.PodWriter = mgr.GetClient()
	}
	s, err := New(opts, mgr.GetCache(), authn.TokenReviews(), holder, mgr.GetLogger().WithName("control-plane"))
	if err != nil {
		return nil, err
	}
	for _, watched := range []struct {
		obj     client.Object
		handler toolscache.ResourceEventHandler
	}{
		{&corev1.Pod{}, s.PodEventHandler()},
		{&meshv1alpha1.MeshService{}, s.MeshServiceEventHandler()},
		{&corev1.Service{}, s.ServiceEventHandler()},
	} {
		informer, err := mgr.GetCache().GetInformer(ctx, watched.obj)
		if err != nil {
			return nil, fmt.Errorf("failed to get the %T informer for the control plane: %w", watched.obj, err)
		}
		if _, err := informer.AddEventHandler(watched.handler); err != nil {
			return nil, fmt.Errorf("failed to watch %T for the control plane: %w", watched.obj, err)
		}
	}
	if err := mgr.Add(s); err != nil {
		return nil, fmt.Errorf("failed to add the control plane to the manager: %w", err)
	}
	return s, nil
}

// PodEventHandler feeds a Pod informer's events to the server: a change of a pod injected for
// a MeshService recomputes that MeshService's endpoints (Notify), and a deleted pod ends its
// streams (PodDeleted).
func (s *Server) PodEventHandler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { s.podChanged(obj, false) },
		UpdateFunc: func(oldObj, newObj any) {
			if onlyCertificateExpiryChanged(oldObj, newObj) {
				return // our own record of a certificate: endpoints and drains are unchanged
			}
			s.notifyPod(oldObj)
			s.podChanged(newObj, false)
		},
		DeleteFunc: func(obj any) {
			if tombstone, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = tombstone.Obj
			}
			pod, ok := obj.(*corev1.Pod)
			if !ok {
				return
			}
			s.podChanged(pod, true)
			s.PodDeleted(types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}, pod.UID)
		},
	}
}

// podChanged notifies the MeshService of a pod that was added, updated (its new state) or
// deleted, and tells the drain acknowledger.
func (s *Server) podChanged(obj any, deleted bool) {
	s.notifyPod(obj) // first: the acknowledger then sees the endpoints as being recomputed
	if pod, ok := obj.(*corev1.Pod); ok {
		s.drain.podChanged(pod, deleted)
	}
}

// notifyPod notifies the MeshService a pod was injected for.
func (s *Server) notifyPod(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if name := pod.Annotations[meshv1alpha1.AnnotationMeshService]; name != "" {
		s.Notify(types.NamespacedName{Namespace: pod.Namespace, Name: name})
	}
}

// MeshServiceEventHandler feeds a MeshService informer's events to the server (Notify).
func (s *Server) MeshServiceEventHandler() toolscache.ResourceEventHandler {
	changed := func(obj any) {
		if tombstone, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = tombstone.Obj
		}
		if ms, ok := obj.(*meshv1alpha1.MeshService); ok {
			s.Notify(types.NamespacedName{Namespace: ms.Namespace, Name: ms.Name})
		}
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    changed,
		UpdateFunc: func(_, newObj any) { changed(newObj) },
		DeleteFunc: changed,
	}
}

// ServiceEventHandler feeds a Service informer's events to the server: the outbound routes of the
// MeshService a Service leads to (endpoints.MeshServiceOfService), before and after a change,
// are recomputed (NotifyService).
func (s *Server) ServiceEventHandler() toolscache.ResourceEventHandler {
	changed := func(obj any) {
		if tombstone, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = tombstone.Obj
		}
		if svc, ok := obj.(*corev1.Service); ok {
			s.NotifyService(types.NamespacedName{Namespace: svc.Namespace, Name: endpoints.MeshServiceOfService(svc)})
		}
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: changed,
		UpdateFunc: func(oldObj, newObj any) {
			changed(oldObj)
			changed(newObj)
		},
		DeleteFunc: changed,
	}
}

// onlyCertificateExpiryChanged reports whether a pod update changed nothing but the
// meshlift.io/certificate-not-after annotation the control plane itself writes at every
// certificate (and the metadata every write changes), so it need not recompute endpoints.
func onlyCertificateExpiryChanged(oldObj, newObj any) bool {
	before, ok1 := oldObj.(*corev1.Pod)
	after, ok2 := newObj.(*corev1.Pod)
	if !ok1 || !ok2 {
		return false
	}
	key := meshv1alpha1.AnnotationCertificateNotAfter
	if before.Annotations[key] == after.Annotations[key] || len(before.Annotations) > len(after.Annotations) {
		return false
	}
	for k, v := range after.Annotations {
		if old, ok := before.Annotations[k]; k != key && (!ok || old != v) {
			return false
		}
	}
	return before.Generation == after.Generation && before.DeletionTimestamp.Equal(after.DeletionTimestamp) &&
		equality.Semantic.DeepEqual(before.Labels, after.Labels) &&
		equality.Semantic.DeepEqual(before.Spec, after.Spec) && equality.Semantic.DeepEqual(before.Status, after.Status)
}
