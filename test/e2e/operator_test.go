//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

const operatorNamespace = "meshlift-system"

func TestOperatorRunsInTheClusterAndBecomesReady(t *testing.T) {
	testenv.Eventually(t, 3*time.Minute, func(ctx context.Context) (bool, string) {
		deploy := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: "meshlift-controller-manager"}, deploy); err != nil {
			return false, err.Error()
		}
		if deploy.Status.AvailableReplicas != operatorReplicas || deploy.Status.UpdatedReplicas != operatorReplicas {
			return false, fmt.Sprintf("deployment status %+v", deploy.Status)
		}
		return true, ""
	})

	pods := &corev1.PodList{}
	if err := k8s.List(context.Background(), pods, client.InNamespace(operatorNamespace), client.MatchingLabels{"control-plane": "controller-manager"}); err != nil {
		t.Fatal(err)
	}
	var ready int
	for _, pod := range pods.Items {
		if pod.DeletionTimestamp != nil {
			continue
		}
		for _, status := range pod.Status.ContainerStatuses {
			if status.Ready {
				ready++
			}
			if status.RestartCount != 0 {
				t.Errorf("operator container %s/%s restarted %d times", pod.Name, status.Name, status.RestartCount)
			}
		}
	}
	if ready != operatorReplicas {
		t.Errorf("%d ready operator containers, want %d", ready, operatorReplicas)
	}

	// Leader election works in the cluster: the leader holds the Lease.
	testenv.Eventually(t, time.Minute, func(ctx context.Context) (bool, string) {
		lease := &coordinationv1.Lease{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: "meshlift.mesh.meshlift.io"}, lease); err != nil {
			return false, err.Error()
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return false, "the lease has no holder"
		}
		return true, ""
	})
}
