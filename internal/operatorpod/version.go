// Package operatorpod publishes on an operator replica's own Pod what kubectl meshlift reads
// about the operator: the version it runs (meshv1alpha1.AnnotationOperatorVersion).
package operatorpod

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
)

// The replica patches its own Pod.
// +kubebuilder:rbac:groups="",resources=pods,verbs=patch

// DefaultBackoff is how long VersionPublisher waits between attempts: 1s, doubling up to a
// minute, with 10% jitter.
var DefaultBackoff = wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.1, Steps: 7, Cap: time.Minute}

// VersionPublisher is a manager Runnable that writes Version as meshv1alpha1.AnnotationOperatorVersion
// on Pod, the replica's own Pod, once, on every replica (leader or not). It retries with Backoff
// until the patch succeeds or the manager stops, and gives up at once when the Pod does not
// exist (the operator runs outside the cluster). It never fails the manager: the annotation only
// informs kubectl meshlift version.
type VersionPublisher struct {
	Writer  client.Writer
	Pod     types.NamespacedName
	Version string
	Log     logr.Logger
	// Backoff between attempts; the zero value is DefaultBackoff.
	Backoff wait.Backoff
}

// NeedLeaderElection is false: every replica annotates its own Pod.
func (p *VersionPublisher) NeedLeaderElection() bool { return false }

// Start patches the Pod, retrying until it succeeds, the Pod turns out not to exist, or ctx is
// done. It always returns nil.
func (p *VersionPublisher) Start(ctx context.Context) error {
	log := p.Log.WithValues("pod", klog.KRef(p.Pod.Namespace, p.Pod.Name), "version", p.Version)
	backoff := p.Backoff
	if backoff.Duration == 0 {
		backoff = DefaultBackoff
	}
	patch, err := versionPatch(p.Version)
	if err != nil {
		log.Error(err, "Cannot record the operator version on this replica's Pod")
		return nil
	}
	for attempt := 1; ; attempt++ {
		target := &corev1.Pod{}
		target.Namespace, target.Name = p.Pod.Namespace, p.Pod.Name
		err := p.Writer.Patch(ctx, target, client.RawPatch(types.MergePatchType, patch))
		switch {
		case err == nil:
			log.Info("Recorded the operator version on this replica's Pod")
			return nil
		case apierrors.IsNotFound(err):
			log.Info("This replica's Pod does not exist; not recording the operator version")
			return nil
		case ctx.Err() != nil:
			return nil
		}
		delay := backoff.Step()
		log.Error(err, "Failed to record the operator version on this replica's Pod; retrying", "attempt", attempt, "retryIn", delay)
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
	}
}

// versionPatch is a JSON merge patch that sets the operator version annotation and changes
// nothing else.
func versionPatch(version string) ([]byte, error) {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"annotations": map[string]string{meshv1alpha1.AnnotationOperatorVersion: version},
	}})
	if err != nil {
		return nil, fmt.Errorf("failed to encode the operator version patch: %w", err)
	}
	return patch, nil
}
