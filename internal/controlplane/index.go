package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/controlplane/endpoints"
	"github.com/meshlift/meshlift/internal/podcache"
)

// resource is a marshaled xDS resource shared by every stream that sends it, with a digest
// that changes with its content.
type resource struct {
	any    *anypb.Any
	digest string
}

func newResource(typeURL string, msg proto.Message) (resource, error) {
	// Deterministic, so the digest does not depend on map order (endpoint metadata).
	value, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		return resource{}, fmt.Errorf("marshaling a %s: %w", typeURL, err)
	}
	sum := sha256.Sum256(value)
	return resource{any: &anypb.Any{TypeUrl: typeURL, Value: value}, digest: hex.EncodeToString(sum[:8])}, nil
}

// serviceState is what the index knows about one MeshService: the clusters its proxies call
// and the assignment of each of its ports.
type serviceState struct {
	exists      bool
	upstreams   []endpoints.Upstream
	assignments map[string]resource // by port name
	digest      string
	// routed are the pods in the assignments: a stream that sent or acknowledged this state
	// may route to them.
	routed map[types.UID]struct{}
}

// routes reports whether the state's assignments hold the pod with uid.
func (s *serviceState) routes(uid types.UID) bool {
	if s == nil {
		return false
	}
	_, ok := s.routed[uid]
	return ok
}

// assignment is the resource of cluster, which is a port of this MeshService: empty when the
// MeshService or the port does not exist (the client then knows it has no endpoints).
func (s *serviceState) assignment(cluster, port string) (resource, error) {
	if s != nil {
		if res, ok := s.assignments[port]; ok {
			return res, nil
		}
	}
	return newResource(typeEndpoints, endpoints.Assignment(cluster, nil))
}

// endpointIndex computes each watched MeshService's state once and wakes the streams that
// watch it when it changes. States are computed on demand and dropped when their MeshService
// changes, so an unwatched state is never stale.
type endpointIndex struct {
	reader      client.Reader
	trustDomain string
	log         logr.Logger
	kick        chan struct{}
	// flushed, when set, is called after each batch of changes is computed.
	flushed func()

	mu       sync.Mutex
	services map[types.NamespacedName]*serviceState
	watchers map[types.NamespacedName]map[*stream]struct{}
	watching map[*stream][]types.NamespacedName
	dirty    map[types.NamespacedName]struct{}
}

func newEndpointIndex(reader client.Reader, trustDomain string, log logr.Logger) *endpointIndex {
	return &endpointIndex{
		reader:      reader,
		trustDomain: trustDomain,
		log:         log,
		kick:        make(chan struct{}, 1),
		services:    map[types.NamespacedName]*serviceState{},
		watchers:    map[types.NamespacedName]map[*stream]struct{}{},
		watching:    map[*stream][]types.NamespacedName{},
		dirty:       map[types.NamespacedName]struct{}{},
	}
}

func (x *endpointIndex) notify(key types.NamespacedName) {
	x.mu.Lock()
	x.dirty[key] = struct{}{}
	x.mu.Unlock()
	select {
	case x.kick <- struct{}{}:
	default:
	}
}

// run recomputes changed MeshServices in batches until ctx is done.
func (x *endpointIndex) run(ctx context.Context) { runBatches(ctx, x.kick, endpointBatch, x.flush) }

// runBatches calls flush once per burst of kicks until ctx is done: after a kick it waits batch
// to collect the rest of the burst (a rollout updates many pods at once) before flushing.
func runBatches(ctx context.Context, kick <-chan struct{}, batch time.Duration, flush func(context.Context)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(batch):
		}
		flush(ctx)
	}
}

func (x *endpointIndex) flush(ctx context.Context) {
	x.mu.Lock()
	dirty := x.dirty
	x.dirty = map[types.NamespacedName]struct{}{}
	woken := map[*stream]struct{}{}
	for key := range dirty {
		old := x.services[key]
		delete(x.services, key)
		if len(x.watchers[key]) == 0 {
			continue
		}
		state, err := x.compute(ctx, key)
		if err != nil {
			x.log.Error(err, "Failed to compute endpoints; streams keep the previous ones", "meshService", klog.KRef(key.Namespace, key.Name))
			if old != nil {
				x.services[key] = old
			}
			continue
		}
		x.services[key] = state
		if old == nil || old.digest != state.digest {
			for st := range x.watchers[key] {
				woken[st] = struct{}{}
			}
		}
	}
	x.mu.Unlock()
	for st := range woken {
		st.wakeEndpoints()
	}
	if x.flushed != nil {
		x.flushed()
	}
}

// service returns the state of key, computing it if nobody did since it last changed.
func (x *endpointIndex) service(ctx context.Context, key types.NamespacedName) (*serviceState, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if state, ok := x.services[key]; ok {
		return state, nil
	}
	state, err := x.compute(ctx, key)
	if err != nil {
		return nil, err
	}
	x.services[key] = state
	return state, nil
}

// watch makes st woken when one of keys changes (instead of what it watched before).
func (x *endpointIndex) watch(st *stream, keys []types.NamespacedName) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, key := range x.watching[st] {
		if !slices.Contains(keys, key) {
			x.removeWatcherLocked(st, key)
		}
	}
	for _, key := range keys {
		if x.watchers[key] == nil {
			x.watchers[key] = map[*stream]struct{}{}
		}
		x.watchers[key][st] = struct{}{}
	}
	x.watching[st] = slices.Clone(keys)
}

func (x *endpointIndex) unwatch(st *stream) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, key := range x.watching[st] {
		x.removeWatcherLocked(st, key)
	}
	delete(x.watching, st)
}

// removeWatcherLocked stops waking st for key, and forgets key's state once nobody watches it.
func (x *endpointIndex) removeWatcherLocked(st *stream, key types.NamespacedName) {
	delete(x.watchers[key], st)
	if len(x.watchers[key]) == 0 {
		delete(x.watchers, key)
		delete(x.services, key)
	}
}

// compute reads the MeshService and the pods of its namespace (without copying them: they are
// only read) and builds its state.
func (x *endpointIndex) compute(ctx context.Context, key types.NamespacedName) (*serviceState, error) {
	ms := &meshv1alpha1.MeshService{}
	if err := x.reader.Get(ctx, key, ms); err != nil {
		if apierrors.IsNotFound(err) {
			return &serviceState{digest: "absent"}, nil
		}
		return nil, fmt.Errorf("failed to read MeshService %s: %w", key, err)
	}
	members, err := podcache.Pods(ctx, x.reader, key.Namespace, func(pod *corev1.Pod) bool {
		return pod.Annotations[meshv1alpha1.AnnotationMeshService] == key.Name
	})
	if err != nil {
		return nil, fmt.Errorf("failed to list the pods of namespace %s: %w", key.Namespace, err)
	}
	routed := endpoints.Members(ms, members)
	lbEndpoints := endpoints.LbEndpointsOf(routed, x.trustDomain)
	state := &serviceState{exists: true, upstreams: endpoints.Upstreams(ms), assignments: map[string]resource{},
		routed: make(map[types.UID]struct{}, len(routed))}
	for _, pod := range routed {
		state.routed[pod.UID] = struct{}{}
	}
	digest := sha256.New()
	for _, u := range state.upstreams {
		fmt.Fprintf(digest, "upstream %s\n", u.Cluster)
	}
	for _, port := range ms.Spec.Ports {
		cluster := endpoints.ClusterName(port.Name, ms.Name, ms.Namespace)
		res, err := newResource(typeEndpoints, endpoints.Assignment(cluster, lbEndpoints))
		if err != nil {
			return nil, err
		}
		state.assignments[port.Name] = res
		fmt.Fprintf(digest, "port %s %s\n", port.Name, res.digest)
	}
	state.digest = hex.EncodeToString(digest.Sum(nil)[:8])
	return state, nil
}
