// Package controllers holds the reconcilers. They are thin: they gather objects from the cache,
// call the pure packages (internal/versions, internal/status, ...) and write the result.
package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
)

// IndexPodMeshService indexes pods by the MeshService they were injected for.
const IndexPodMeshService = "meshlift.io/pod-meshservice"

// SetupIndexes registers the cache indexes the reconcilers list by. (The MeshService and
// SidecarVersion reconcilers read pods through podcache.Pods, by namespace.)
func SetupIndexes(ctx context.Context, mgr ctrl.Manager) error {
	err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.Pod{}, IndexPodMeshService, func(obj client.Object) []string {
		if ms := obj.GetAnnotations()[meshv1alpha1.AnnotationMeshService]; ms != "" {
			return []string{ms}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("failed to index pods by %s: %w", meshv1alpha1.AnnotationMeshService, err)
	}
	return nil
}
