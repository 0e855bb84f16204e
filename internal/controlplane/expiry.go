package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
)

// How fast a replica records certificate expiries on pods. Rotations are spread out (a 24h leaf
// is renewed after 12h ±72min), so 10,000 pods make about one patch every 4 seconds; only an
// operator restart or a CA change gives every proxy a certificate at once. Then 20 patches/s
// records 10,000 pods in about 8 minutes per replica (the replicas share the proxies), which the
// API server absorbs next to everything else, while a slower rate would leave the annotations
// stale for longer. 4 workers keep that rate with API-server round trips of up to 200 ms and
// bound the patches in flight to 4.
const (
	expiryPatchQPS   = 20
	expiryPatchBurst = 20
	expiryWorkers    = 4
	// A failed patch is retried after expiryRetryBase, doubling up to expiryRetryMax, until it
	// succeeds, the pod is gone or a newer certificate replaces it.
	expiryRetryBase = time.Second
	expiryRetryMax  = 5 * time.Minute
)

// issuedLeaf is a leaf sent to a proxy of the pod with uid.
type issuedLeaf struct {
	uid      types.UID
	notAfter time.Time
}

// formatNotAfter is the value of meshv1alpha1.AnnotationCertificateNotAfter for notAfter.
func formatNotAfter(notAfter time.Time) string {
	return notAfter.UTC().Truncate(time.Second).Format(time.RFC3339)
}

// notAfterToRecord decides whether pod (as the cache has it) must be patched for leaf, and with
// what value: not when it is another pod of the same name, nor when it already says so.
func notAfterToRecord(pod *corev1.Pod, leaf issuedLeaf) (value string, patch bool) {
	if pod.UID != leaf.uid {
		return "", false
	}
	value = formatNotAfter(leaf.notAfter)
	return value, pod.Annotations[meshv1alpha1.AnnotationCertificateNotAfter] != value
}

// notAfterPatch is a JSON merge patch that sets the annotation to value on the pod with uid and
// changes nothing else. The UID makes the API server refuse it (Invalid: the UID is immutable)
// on a pod that replaced that one under the same name.
func notAfterPatch(uid types.UID, value string) ([]byte, error) {
	return json.Marshal(map[string]any{"metadata": map[string]any{
		"uid":         uid,
		"annotations": map[string]string{meshv1alpha1.AnnotationCertificateNotAfter: value},
	}})
}

// expiryPublisher records on each pod the expiry of the newest certificate a stream of this
// replica sent one of its proxies (meshv1alpha1.AnnotationCertificateNotAfter), for kubectl
// meshlift proxy-status, which lists pods instead of asking each proxy.
//
// Streams only note the leaf (record) and go on: workers patch the pods later, at most
// expiryWorkers at a time and expiryPatchQPS per second. Notes are coalesced per pod until a
// worker takes them, so a pod is patched once however many certificates it got meanwhile, with
// the last one sent (a pod with two proxies, during a hot upgrade, shows the newest). A pod
// whose cached annotation already holds the value is not patched. Replicas write independently:
// each writes the newest leaf it sent, and the last write wins.
type expiryPublisher struct {
	reader client.Reader // the cache: whether a pod needs the patch
	writer client.Writer
	log    logr.Logger

	workers        int
	qps            float32
	burst          int
	retryBase      time.Duration
	retryMax       time.Duration
	queue          workqueue.TypedRateLimitingInterface[types.NamespacedName]
	patchesAllowed flowcontrol.RateLimiter

	mu      sync.Mutex
	pending map[types.NamespacedName]issuedLeaf
}

func newExpiryPublisher(reader client.Reader, writer client.Writer, log logr.Logger) *expiryPublisher {
	return &expiryPublisher{
		reader: reader, writer: writer, log: log.WithValues("annotation", meshv1alpha1.AnnotationCertificateNotAfter),
		workers: expiryWorkers, qps: expiryPatchQPS, burst: expiryPatchBurst, retryBase: expiryRetryBase, retryMax: expiryRetryMax,
		pending: map[types.NamespacedName]issuedLeaf{},
	}
}

// start starts the workers, which stop once ctx is done. record must not be called before.
func (p *expiryPublisher) start(ctx context.Context) {
	p.queue = workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[types.NamespacedName](p.retryBase, p.retryMax))
	p.patchesAllowed = flowcontrol.NewTokenBucketRateLimiter(p.qps, p.burst)
	var workers sync.WaitGroup
	for range p.workers {
		workers.Go(func() {
			for p.processNext(ctx) {
			}
		})
	}
	go func() {
		<-ctx.Done()
		p.queue.ShutDown()
		workers.Wait()
	}()
}

// record notes that a proxy of the pod key (with uid) was sent a leaf valid until notAfter. It
// never waits for the API server (nil-safe; from any goroutine).
func (p *expiryPublisher) record(key types.NamespacedName, uid types.UID, notAfter time.Time) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.pending[key] = issuedLeaf{uid: uid, notAfter: notAfter}
	p.mu.Unlock()
	p.queue.Add(key)
}

// take removes and returns what is pending for key.
func (p *expiryPublisher) take(key types.NamespacedName) (issuedLeaf, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	leaf, ok := p.pending[key]
	delete(p.pending, key)
	return leaf, ok
}

// putBack makes leaf pending again for key after a failed patch, unless a newer one is.
func (p *expiryPublisher) putBack(key types.NamespacedName, leaf issuedLeaf) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, newer := p.pending[key]; !newer {
		p.pending[key] = leaf
	}
}

// processNext records what is pending for the next pod of the queue; false once the queue is
// shut down. The queue never hands one pod to two workers at once, so an older value cannot
// overtake a newer one.
func (p *expiryPublisher) processNext(ctx context.Context) bool {
	key, shutdown := p.queue.Get()
	if shutdown {
		return false
	}
	defer p.queue.Done(key)
	leaf, ok := p.take(key)
	if !ok {
		p.queue.Forget(key)
		return true
	}
	result, err := p.publish(ctx, key, leaf)
	certificateExpiryAnnotations.WithLabelValues(result).Inc()
	if err == nil {
		p.queue.Forget(key)
		return true
	}
	if ctx.Err() != nil {
		return true
	}
	p.putBack(key, leaf)
	log := p.log.WithValues("pod", klog.KRef(key.Namespace, key.Name), "attempts", p.queue.NumRequeues(key)+1)
	if p.queue.NumRequeues(key) == 0 {
		log.Error(err, "Failed to record a pod's certificate expiry; retrying")
	} else {
		log.V(1).Info("Failed again to record a pod's certificate expiry; retrying", "error", err.Error())
	}
	p.queue.AddRateLimited(key)
	return true
}

// Results of publish (the certificate_expiry_annotations_total label).
const (
	expiryPatched   = "patched"
	expiryUnchanged = "unchanged"
	expiryGone      = "gone"
	expiryError     = "error"
)

// publish patches the pod key with leaf's expiry, if it needs it.
func (p *expiryPublisher) publish(ctx context.Context, key types.NamespacedName, leaf issuedLeaf) (string, error) {
	pod := &corev1.Pod{}
	// Only read, so the cache's own copy will do (its maps are shared, not copied).
	if err := p.reader.Get(ctx, key, pod, client.UnsafeDisableDeepCopy); err != nil {
		if apierrors.IsNotFound(err) {
			p.log.V(1).Info("The pod is gone; not recording its certificate expiry", "pod", klog.KRef(key.Namespace, key.Name))
			return expiryGone, nil
		}
		return expiryError, fmt.Errorf("failed to read Pod %s: %w", key, err)
	}
	value, needed := notAfterToRecord(pod, leaf)
	if !needed {
		return expiryUnchanged, nil
	}
	patch, err := notAfterPatch(leaf.uid, value)
	if err != nil {
		return expiryError, fmt.Errorf("failed to encode the patch of Pod %s: %w", key, err)
	}
	if err := p.patchesAllowed.Wait(ctx); err != nil {
		return expiryError, fmt.Errorf("stopped waiting to patch Pod %s: %w", key, err)
	}
	target := &corev1.Pod{}
	target.Namespace, target.Name = key.Namespace, key.Name
	err = p.writer.Patch(ctx, target, client.RawPatch(types.MergePatchType, patch))
	switch {
	case err == nil:
		p.log.V(1).Info("Recorded a pod's certificate expiry", "pod", klog.KRef(key.Namespace, key.Name), "notAfter", value)
		return expiryPatched, nil
	case apierrors.IsNotFound(err), apierrors.IsInvalid(err):
		// Gone, or replaced by a pod of the same name (the patch's UID is not its own).
		p.log.V(1).Info("The pod is gone; not recording its certificate expiry", "pod", klog.KRef(key.Namespace, key.Name),
			"reason", apierrors.ReasonForError(err))
		return expiryGone, nil
	default:
		return expiryError, fmt.Errorf("failed to patch Pod %s: %w", key, err)
	}
}
