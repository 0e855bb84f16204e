package controlplane

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/controlplane/endpoints"
	"github.com/meshlift/meshlift/internal/outbound"
	"github.com/meshlift/meshlift/internal/podcache"
)

// outboundBatch is how long changes are collected before the outbound routes are rebuilt: the
// listener holds every MeshService's destinations, so a rollout's burst of pod changes is better
// served by one rebuild.
const outboundBatch = 250 * time.Millisecond

// outboundIndex builds the outbound routes listener (outbound.ListenerName) of every MeshService
// of the cluster once per batch of changes, and wakes the streams subscribed to it when its
// content changes. It holds nothing while no stream subscribes: the first subscriber computes it
// whole, the last one drops it.
type outboundIndex struct {
	reader client.Reader
	log    logr.Logger
	kick   chan struct{}

	mu          sync.Mutex
	subscribers map[*stream]struct{}
	// pieces are the chains of each MeshService; current is the listener built from them. Both
	// are nil while no stream subscribes.
	pieces  map[types.NamespacedName][]outbound.Chain
	current *resource
	dirty   map[types.NamespacedName]struct{}
}

func newOutboundIndex(reader client.Reader, log logr.Logger) *outboundIndex {
	return &outboundIndex{
		reader:      reader,
		log:         log,
		kick:        make(chan struct{}, 1),
		subscribers: map[*stream]struct{}{},
		dirty:       map[types.NamespacedName]struct{}{},
	}
}

// notify marks the MeshService key changed (itself, one of its pods, or a Service that leads to it).
func (x *outboundIndex) notify(key types.NamespacedName) {
	x.mu.Lock()
	if x.current == nil {
		x.mu.Unlock()
		return // nobody subscribes: the first subscriber reads everything afresh
	}
	x.dirty[key] = struct{}{}
	x.mu.Unlock()
	select {
	case x.kick <- struct{}{}:
	default:
	}
}

// run rebuilds the listener after each batch of changes until ctx is done.
func (x *outboundIndex) run(ctx context.Context) { runBatches(ctx, x.kick, outboundBatch, x.flush) }

func (x *outboundIndex) flush(ctx context.Context) {
	x.mu.Lock()
	dirty := x.dirty
	x.dirty = map[types.NamespacedName]struct{}{}
	if x.current == nil || len(dirty) == 0 {
		x.mu.Unlock()
		return
	}
	byNamespace := map[string][]types.NamespacedName{}
	for key := range dirty {
		byNamespace[key.Namespace] = append(byNamespace[key.Namespace], key)
	}
	for namespace, keys := range byNamespace {
		pieces, err := x.computeNamespace(ctx, namespace, keys)
		if err != nil {
			x.log.Error(err, "Failed to compute outbound routes; streams keep the previous ones", "namespace", namespace)
			continue
		}
		for _, key := range keys {
			if chains, ok := pieces[key]; ok {
				x.pieces[key] = chains
			} else {
				delete(x.pieces, key)
			}
		}
	}
	res, err := x.build()
	if err != nil {
		x.log.Error(err, "Failed to build the outbound routes; streams keep the previous ones")
		x.mu.Unlock()
		return
	}
	changed := res.digest != x.current.digest
	x.current = &res
	woken := slices.Collect(maps.Keys(x.subscribers))
	x.mu.Unlock()
	if !changed {
		return
	}
	for _, st := range woken {
		st.wakeOutboundRoutes()
	}
}

// subscribe makes st woken when the listener changes and returns it, computing it if st is the
// first subscriber.
func (x *outboundIndex) subscribe(ctx context.Context, st *stream) (resource, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.current == nil {
		if err := x.computeAll(ctx); err != nil {
			return resource{}, err
		}
	}
	x.subscribers[st] = struct{}{}
	return *x.current, nil
}

// unsubscribe stops waking st, and drops the listener once nobody subscribes.
func (x *outboundIndex) unsubscribe(st *stream) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.subscribers, st)
	if len(x.subscribers) == 0 {
		x.pieces, x.current = nil, nil
		x.dirty = map[types.NamespacedName]struct{}{}
	}
}

// computeAll computes every MeshService's chains and the listener (x.mu held).
func (x *outboundIndex) computeAll(ctx context.Context) error {
	list := &meshv1alpha1.MeshServiceList{}
	if err := x.reader.List(ctx, list); err != nil {
		return fmt.Errorf("failed to list MeshServices: %w", err)
	}
	byNamespace := map[string][]types.NamespacedName{}
	for i := range list.Items {
		ms := &list.Items[i]
		byNamespace[ms.Namespace] = append(byNamespace[ms.Namespace], types.NamespacedName{Namespace: ms.Namespace, Name: ms.Name})
	}
	pieces := map[types.NamespacedName][]outbound.Chain{}
	for namespace, keys := range byNamespace {
		computed, err := x.computeNamespace(ctx, namespace, keys)
		if err != nil {
			return err
		}
		maps.Copy(pieces, computed)
	}
	x.pieces = pieces
	res, err := x.build()
	if err != nil {
		x.pieces = nil
		return err
	}
	x.current = &res
	return nil
}

// computeNamespace computes the chains of the MeshServices keys of one namespace, reading its
// pods and Services once; a MeshService that does not exist has none (and no entry).
func (x *outboundIndex) computeNamespace(ctx context.Context, namespace string, keys []types.NamespacedName) (map[types.NamespacedName][]outbound.Chain, error) {
	var meshServices []*meshv1alpha1.MeshService
	names := map[string]bool{}
	for _, key := range keys {
		ms := &meshv1alpha1.MeshService{}
		if err := x.reader.Get(ctx, key, ms); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("failed to read MeshService %s: %w", key, err)
		}
		meshServices = append(meshServices, ms)
		names[ms.Name] = true
	}
	out := map[types.NamespacedName][]outbound.Chain{}
	if len(meshServices) == 0 {
		return out, nil
	}
	pods, err := podcache.Pods(ctx, x.reader, namespace, func(pod *corev1.Pod) bool {
		return names[pod.Annotations[meshv1alpha1.AnnotationMeshService]]
	})
	if err != nil {
		return nil, fmt.Errorf("failed to list the pods of namespace %s: %w", namespace, err)
	}
	serviceList := &corev1.ServiceList{}
	if err := x.reader.List(ctx, serviceList, client.InNamespace(namespace)); err != nil {
		return nil, fmt.Errorf("failed to list the Services of namespace %s: %w", namespace, err)
	}
	var services []*corev1.Service
	for i := range serviceList.Items {
		if names[endpoints.MeshServiceOfService(&serviceList.Items[i])] {
			services = append(services, &serviceList.Items[i])
		}
	}
	for _, ms := range meshServices {
		key := types.NamespacedName{Namespace: ms.Namespace, Name: ms.Name}
		out[key] = endpoints.OutboundChains(ms, endpoints.Members(ms, pods), services)
	}
	return out, nil
}

// build makes the listener of the pieces, in the order of their MeshServices (x.mu held).
func (x *outboundIndex) build() (resource, error) {
	keys := slices.SortedFunc(maps.Keys(x.pieces), func(a, b types.NamespacedName) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	var chains []outbound.Chain
	for _, key := range keys {
		chains = append(chains, x.pieces[key]...)
	}
	listener, conflicts, err := outbound.Build(chains)
	if err != nil {
		return resource{}, err
	}
	if len(conflicts) > 0 {
		first := conflicts[0]
		x.log.Info("Destinations claimed by two MeshService ports are routed to the first one only",
			"conflicts", len(conflicts), "destination", first.Destination.String(), "kept", first.Kept, "left", first.Left)
	}
	res, err := newResource(outbound.TypeListener, listener)
	if err != nil {
		return resource{}, err
	}
	x.log.V(1).Info("Built the outbound routes", "meshServices", len(keys), "filterChains", len(listener.GetFilterChains()), "version", res.digest)
	return res, nil
}
