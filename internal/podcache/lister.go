package podcache

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// informers is what a manager's cache offers beyond a client.Reader: its informers.
type informers interface {
	GetInformer(ctx context.Context, obj client.Object, opts ...cache.InformerGetOption) (cache.Informer, error)
}

// indexed is an informer that exposes its store (client-go's shared index informers do).
type indexed interface {
	GetIndexer() toolscache.Indexer
}

// Pods returns the pods of namespace (of every namespace when it is empty) that keep accepts.
// When reader is a manager's cache, they are the cache's own objects, read through the informer's
// namespace index: a list of thousands of pods costs a slice of pointers, not a copy of every pod
// (client.List, even with UnsafeDisableDeepCopy, copies each pod's struct, about 1.2 KB, into its
// Items). Nothing may modify them. Another reader (an API reader) is listed.
func Pods(ctx context.Context, reader client.Reader, namespace string, keep func(*corev1.Pod) bool) ([]*corev1.Pod, error) {
	if getter, ok := reader.(informers); ok {
		informer, err := getter.GetInformer(ctx, &corev1.Pod{})
		if err != nil {
			return nil, fmt.Errorf("failed to get the pod informer: %w", err)
		}
		if store, ok := informer.(indexed); ok {
			return fromStore(store.GetIndexer(), namespace, keep)
		}
	}
	list := &corev1.PodList{}
	if err := reader.List(ctx, list, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("failed to list pods: %w", err)
	}
	var pods []*corev1.Pod
	for i := range list.Items {
		if keep(&list.Items[i]) {
			pods = append(pods, &list.Items[i])
		}
	}
	return pods, nil
}

func fromStore(store toolscache.Indexer, namespace string, keep func(*corev1.Pod) bool) ([]*corev1.Pod, error) {
	var objs []any
	if namespace == "" {
		objs = store.List()
	} else {
		var err error
		if objs, err = store.ByIndex(toolscache.NamespaceIndex, namespace); err != nil {
			return nil, fmt.Errorf("failed to read the pods of namespace %s from the cache: %w", namespace, err)
		}
	}
	var pods []*corev1.Pod
	for _, obj := range objs {
		if pod, ok := obj.(*corev1.Pod); ok && keep(pod) {
			pods = append(pods, pod)
		}
	}
	return pods, nil
}
