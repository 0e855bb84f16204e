package controlplane

import (
	"context"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
)

// drainRecheck is how often pods waiting for an acknowledgement are looked at again without an
// event (a failed patch, a proxy that never answers).
const drainRecheck = 2 * time.Second

// drainRetry is how soon an acknowledgement that lost a race with another change of the pod is
// tried again.
const drainRetry = 200 * time.Millisecond

// drainAcker writes this replica's drain acknowledgement (meshv1alpha1.EDSAckAnnotation) on each
// pod excluded from EDS (meshlift.io/eds-excluded) once no stream of this replica may route to
// it any more: every stream that calls its MeshService was sent, and acknowledged, endpoints
// without it. The InPlace rollout restarts the pod's proxy once every replica serving proxies
// has written its acknowledgement (docs/rollout.md).
//
// The acknowledgement is a merge patch with the resourceVersion the decision was made on, so a
// pod restored (and perhaps excluded again) in the meantime is never acknowledged by mistake.
type drainAcker struct {
	srv    *Server
	reader client.Reader
	writer client.Writer
	key    string // the annotation
	log    logr.Logger
	wake   chan struct{}

	mu      sync.Mutex
	pending map[types.UID]pendingDrain
}

// pendingDrain is a pod excluded from EDS that this replica has not acknowledged yet.
type pendingDrain struct {
	pod         types.NamespacedName
	meshService types.NamespacedName
}

func newDrainAcker(srv *Server, reader client.Reader, writer client.Writer, replica string, log logr.Logger) *drainAcker {
	return &drainAcker{
		srv: srv, reader: reader, writer: writer, key: meshv1alpha1.EDSAckAnnotation(replica),
		log: log.WithValues("annotation", meshv1alpha1.EDSAckAnnotation(replica)), wake: make(chan struct{}, 1),
		pending: map[types.UID]pendingDrain{},
	}
}

// kick makes the acker look at the pending pods soon (from any goroutine; nil-safe).
func (d *drainAcker) kick() {
	if d == nil {
		return
	}
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// podChanged tracks whether pod waits for this replica's acknowledgement.
func (d *drainAcker) podChanged(pod *corev1.Pod, deleted bool) {
	if d == nil {
		return
	}
	ms := pod.Annotations[meshv1alpha1.AnnotationMeshService]
	waiting := !deleted && ms != "" && pod.DeletionTimestamp == nil &&
		pod.Annotations[meshv1alpha1.AnnotationEDSExcluded] == "true" && pod.Annotations[d.key] == ""
	d.mu.Lock()
	_, was := d.pending[pod.UID]
	if waiting {
		d.pending[pod.UID] = pendingDrain{
			pod:         types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name},
			meshService: types.NamespacedName{Namespace: pod.Namespace, Name: ms},
		}
	} else {
		delete(d.pending, pod.UID)
	}
	d.mu.Unlock()
	if waiting && !was {
		d.kick()
	}
}

// run acknowledges pending pods on every kick and every drainRecheck until ctx is done.
func (d *drainAcker) run(ctx context.Context) {
	ticker := time.NewTicker(drainRecheck)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-ticker.C:
		}
		d.acknowledge(ctx)
	}
}

// acknowledge patches every pending pod no stream of this replica may route to.
func (d *drainAcker) acknowledge(ctx context.Context) {
	d.mu.Lock()
	ready := make(map[types.UID]pendingDrain, len(d.pending))
	for uid, p := range d.pending {
		if !d.srv.mayRoute(p.meshService, uid) {
			ready[uid] = p
		}
	}
	d.mu.Unlock()
	for uid, p := range ready {
		if err := d.patch(ctx, uid, p.pod); err != nil {
			d.log.Error(err, "Failed to acknowledge a pod's exclusion from the endpoints; retrying", "pod", klog.KRef(p.pod.Namespace, p.pod.Name))
		}
	}
}

func (d *drainAcker) patch(ctx context.Context, uid types.UID, key types.NamespacedName) error {
	pod := &corev1.Pod{}
	if err := d.reader.Get(ctx, key, pod); err != nil {
		return client.IgnoreNotFound(err)
	}
	if pod.UID != uid || pod.Annotations[meshv1alpha1.AnnotationEDSExcluded] != "true" || pod.Annotations[d.key] != "" {
		return nil // the cache moved on; its event updates the pending set
	}
	base := pod.DeepCopy()
	pod.Annotations[d.key] = "true"
	err := d.writer.Patch(ctx, pod, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	switch {
	case err == nil:
		d.log.V(1).Info("Acknowledged a pod's exclusion from the endpoints", "pod", klog.KObj(pod))
		return nil
	case apierrors.IsNotFound(err):
		return nil
	case apierrors.IsConflict(err):
		// Changed meanwhile: decide again soon, once the cache has the new version.
		time.AfterFunc(drainRetry, d.kick)
		return nil
	default:
		return err
	}
}

// mayRoute reports whether a stream of this replica may still route to the pod with uid, an
// endpoint of the MeshService key: the endpoints of key are being recomputed, or they hold the
// pod, or a stream that calls key was sent or still holds endpoints with the pod.
func (s *Server) mayRoute(key types.NamespacedName, uid types.UID) bool {
	x := s.index
	x.mu.Lock()
	_, dirty := x.dirty[key]
	current := x.services[key]
	watchers := make([]*stream, 0, len(x.watchers[key]))
	for st := range x.watchers[key] {
		watchers = append(watchers, st)
	}
	x.mu.Unlock()
	if dirty || current.routes(uid) {
		return true
	}
	for _, st := range watchers {
		if st.mayRoute(key, uid) {
			return true
		}
	}
	return false
}
