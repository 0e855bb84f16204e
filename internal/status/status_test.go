package status_test

import (
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/status"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/versions"
)

func running(pod *corev1.Pod, ready bool) *corev1.Pod {
	if ready {
		gen.Ready(pod)(&pod.Status)
	} else {
		gen.NotReady(pod)(&pod.Status)
	}
	return pod
}

func TestMeshServiceStatus(t *testing.T) {
	v2 := versions.Resolution{Version: "v2", Source: meshv1alpha1.VersionSourceDefault}
	terminating := gen.Pod("gone", gen.Injected("web", "v1"), gen.PodMeta(func(m *metav1.ObjectMeta) {
		now := metav1.Now()
		m.DeletionTimestamp = &now
	}))
	finished := gen.Pod("done", gen.Injected("web", "v1"))
	finished.Status.Phase = corev1.PodSucceeded

	tests := []struct {
		name         string
		in           status.MeshServiceInput
		wantPods     meshv1alpha1.MeshServicePods
		wantVersion  string
		wantReady    metav1.ConditionStatus
		wantReason   string
		wantDrift    metav1.ConditionStatus
		wantIdentity []string
	}{
		{
			name: "is ready when every pod is injected with the current version and ready",
			in: status.MeshServiceInput{Resolution: v2, Pods: []*corev1.Pod{
				running(gen.Pod("a", gen.Injected("web", "v2")), true),
				running(gen.Pod("b", gen.Injected("web", "v2"), gen.SetServiceAccount("web")), true),
			}},
			wantPods:     meshv1alpha1.MeshServicePods{Matched: 2, Injected: 2, Ready: 2, ByVersion: []meshv1alpha1.VersionCount{{Version: "v2", Pods: 2}}},
			wantVersion:  "v2",
			wantReady:    metav1.ConditionTrue,
			wantReason:   meshv1alpha1.ReasonAllPodsReady,
			wantDrift:    metav1.ConditionFalse,
			wantIdentity: []string{"spiffe://cluster.local/ns/default/sa/default", "spiffe://cluster.local/ns/default/sa/web"},
		},
		{
			name: "reports drift and counts each version when pods run an older version",
			in: status.MeshServiceInput{Resolution: v2, Pods: []*corev1.Pod{
				running(gen.Pod("a", gen.Injected("web", "v1")), true),
				running(gen.Pod("b", gen.Injected("web", "v2")), true),
				running(gen.Pod("c", gen.Injected("web", "v1")), true),
			}},
			wantPods: meshv1alpha1.MeshServicePods{Matched: 3, Injected: 3, Ready: 3, ByVersion: []meshv1alpha1.VersionCount{
				{Version: "v1", Pods: 2}, {Version: "v2", Pods: 1}}},
			wantVersion:  "v2",
			wantReady:    metav1.ConditionTrue,
			wantReason:   meshv1alpha1.ReasonAllPodsReady,
			wantDrift:    metav1.ConditionTrue,
			wantIdentity: []string{"spiffe://cluster.local/ns/default/sa/default"},
		},
		{
			name: "is not ready while a matched pod has no sidecar",
			in: status.MeshServiceInput{Resolution: v2, Pods: []*corev1.Pod{
				running(gen.Pod("a", gen.Injected("web", "v2")), true),
				running(gen.Pod("b"), true),
			}},
			wantPods:     meshv1alpha1.MeshServicePods{Matched: 2, Injected: 1, Ready: 2, ByVersion: []meshv1alpha1.VersionCount{{Version: "v2", Pods: 1}}},
			wantVersion:  "v2",
			wantReady:    metav1.ConditionFalse,
			wantReason:   meshv1alpha1.ReasonPodsNotInjected,
			wantDrift:    metav1.ConditionFalse,
			wantIdentity: []string{"spiffe://cluster.local/ns/default/sa/default"},
		},
		{
			name: "does not wait for pods that opted out of injection",
			in: status.MeshServiceInput{Resolution: v2, Pods: []*corev1.Pod{
				running(gen.Pod("a", gen.Injected("web", "v2")), true),
				running(gen.Pod("b", gen.PodMeta(gen.SetAnnotations(meshv1alpha1.AnnotationInject, "false"))), true),
			}},
			wantPods:     meshv1alpha1.MeshServicePods{Matched: 2, Injected: 1, Ready: 2, ByVersion: []meshv1alpha1.VersionCount{{Version: "v2", Pods: 1}}},
			wantVersion:  "v2",
			wantReady:    metav1.ConditionTrue,
			wantReason:   meshv1alpha1.ReasonAllPodsReady,
			wantDrift:    metav1.ConditionFalse,
			wantIdentity: []string{"spiffe://cluster.local/ns/default/sa/default"},
		},
		{
			name: "is not ready while a pod is not ready",
			in: status.MeshServiceInput{Resolution: v2, Pods: []*corev1.Pod{
				running(gen.Pod("a", gen.Injected("web", "v2")), false),
			}},
			wantPods:     meshv1alpha1.MeshServicePods{Matched: 1, Injected: 1, Ready: 0, ByVersion: []meshv1alpha1.VersionCount{{Version: "v2", Pods: 1}}},
			wantVersion:  "v2",
			wantReady:    metav1.ConditionFalse,
			wantReason:   meshv1alpha1.ReasonPodsNotReady,
			wantDrift:    metav1.ConditionFalse,
			wantIdentity: []string{"spiffe://cluster.local/ns/default/sa/default"},
		},
		{
			name:        "skips terminating and finished pods",
			in:          status.MeshServiceInput{Resolution: v2, Pods: []*corev1.Pod{terminating, finished}},
			wantVersion: "v2",
			wantReady:   metav1.ConditionTrue,
			wantReason:  meshv1alpha1.ReasonNoMatchingPods,
			wantDrift:   metav1.ConditionFalse,
		},
		{
			name: "says why when no version resolves and leaves currentVersion empty",
			in: status.MeshServiceInput{
				ResolveErr: &versions.UnresolvedError{Reason: versions.ReasonDefaultConflict, Message: "2 SidecarVersions claim spec.default"},
				Pods:       []*corev1.Pod{running(gen.Pod("a", gen.Injected("web", "v1")), true)},
			},
			wantPods:     meshv1alpha1.MeshServicePods{Matched: 1, Injected: 1, Ready: 1, ByVersion: []meshv1alpha1.VersionCount{{Version: "v1", Pods: 1}}},
			wantReady:    metav1.ConditionFalse,
			wantReason:   versions.ReasonDefaultConflict,
			wantDrift:    metav1.ConditionUnknown,
			wantIdentity: []string{"spiffe://cluster.local/ns/default/sa/default"},
		},
		{
			name:       "reports an unexpected resolution error as VersionUnresolved",
			in:         status.MeshServiceInput{ResolveErr: errors.New("boom")},
			wantReady:  metav1.ConditionFalse,
			wantReason: meshv1alpha1.ReasonVersionUnresolved,
			wantDrift:  metav1.ConditionUnknown,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.TrustDomain, tt.in.Namespace, tt.in.Generation = "cluster.local", "default", 3
			got := status.MeshService(meshv1alpha1.MeshServiceStatus{}, tt.in)
			if !equalPods(got.Pods, tt.wantPods) {
				t.Errorf("pods = %+v, want %+v", got.Pods, tt.wantPods)
			}
			if got.CurrentVersion != tt.wantVersion {
				t.Errorf("currentVersion = %q, want %q", got.CurrentVersion, tt.wantVersion)
			}
			if got.ObservedGeneration != 3 {
				t.Errorf("observedGeneration = %d, want 3", got.ObservedGeneration)
			}
			assertCondition(t, got.Conditions, meshv1alpha1.ConditionReady, tt.wantReady, tt.wantReason)
			assertCondition(t, got.Conditions, meshv1alpha1.ConditionVersionDrift, tt.wantDrift, "")
			if len(got.Identity) != len(tt.wantIdentity) {
				t.Fatalf("identity = %v, want %v", got.Identity, tt.wantIdentity)
			}
			for i := range got.Identity {
				if got.Identity[i] != tt.wantIdentity[i] {
					t.Errorf("identity = %v, want %v", got.Identity, tt.wantIdentity)
				}
			}
		})
	}
}

func TestMeshServiceStatusKeepsTransitionTimeWhenNothingChanges(t *testing.T) {
	in := status.MeshServiceInput{Resolution: versions.Resolution{Version: "v1"}, TrustDomain: "td", Namespace: "default"}
	first := status.MeshService(meshv1alpha1.MeshServiceStatus{}, in)
	old := metav1.NewTime(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC))
	for i := range first.Conditions {
		first.Conditions[i].LastTransitionTime = old
	}
	second := status.MeshService(first, in)
	for _, c := range second.Conditions {
		if !c.LastTransitionTime.Equal(&old) {
			t.Errorf("condition %s moved its transition time to %v", c.Type, c.LastTransitionTime)
		}
	}
}

func TestSidecarVersionStatus(t *testing.T) {
	readyPod := running(gen.Pod("a", gen.Injected("web", "v1")), true)
	idleReadyOnly := gen.Pod("b", gen.Injected("web", "v1"))
	idleReadyOnly.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "meshlift-proxy-2", Ready: true}}

	tests := []struct {
		name         string
		in           status.SidecarVersionInput
		wantPods     int32
		wantReady    int32
		readyStatus  metav1.ConditionStatus
		wantConflict metav1.ConditionStatus // "" means the condition is absent
	}{
		{"is ready with no pods and carries no conflict condition when not default",
			status.SidecarVersionInput{}, 0, 0, metav1.ConditionTrue, ""},
		{"counts pods and is ready when every active proxy is ready",
			status.SidecarVersionInput{Pods: []*corev1.Pod{readyPod}}, 1, 1, metav1.ConditionTrue, ""},
		{"is not ready when only an idle slot is ready",
			status.SidecarVersionInput{Pods: []*corev1.Pod{readyPod, idleReadyOnly}}, 2, 1, metav1.ConditionFalse, ""},
		{"reports a conflict when two versions claim the default",
			status.SidecarVersionInput{Default: true, DefaultClaims: []string{"v1", "v2"}}, 0, 0, metav1.ConditionTrue, metav1.ConditionTrue},
		{"reports no conflict for the only default",
			status.SidecarVersionInput{Default: true, DefaultClaims: []string{"v1"}}, 0, 0, metav1.ConditionTrue, metav1.ConditionFalse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := status.SidecarVersion(meshv1alpha1.SidecarVersionStatus{}, tt.in)
			if got.Pods != tt.wantPods || got.ReadyPods != tt.wantReady {
				t.Errorf("pods/ready = %d/%d, want %d/%d", got.Pods, got.ReadyPods, tt.wantPods, tt.wantReady)
			}
			assertCondition(t, got.Conditions, meshv1alpha1.ConditionReady, tt.readyStatus, "")
			c := meta.FindStatusCondition(got.Conditions, meshv1alpha1.ConditionDefaultConflict)
			switch {
			case tt.wantConflict == "" && c != nil:
				t.Errorf("DefaultConflict = %+v, want no such condition", c)
			case tt.wantConflict != "" && (c == nil || c.Status != tt.wantConflict):
				t.Errorf("DefaultConflict = %+v, want status %s", c, tt.wantConflict)
			}
		})
	}
}

func TestSidecarVersionStatusDropsTheConflictConditionWhenNoLongerDefault(t *testing.T) {
	conflicted := status.SidecarVersion(meshv1alpha1.SidecarVersionStatus{}, status.SidecarVersionInput{Default: true, DefaultClaims: []string{"a", "b"}})
	cleared := status.SidecarVersion(conflicted, status.SidecarVersionInput{Default: false, DefaultClaims: []string{"b"}})
	if c := meta.FindStatusCondition(cleared.Conditions, meshv1alpha1.ConditionDefaultConflict); c != nil {
		t.Fatalf("DefaultConflict = %+v, want it removed", c)
	}
}

func assertCondition(t *testing.T, conditions []metav1.Condition, condType string, want metav1.ConditionStatus, reason string) {
	t.Helper()
	c := meta.FindStatusCondition(conditions, condType)
	if c == nil {
		t.Fatalf("no %s condition in %+v", condType, conditions)
	}
	if c.Status != want || (reason != "" && c.Reason != reason) {
		t.Errorf("%s = %s/%s (%s), want %s/%s", condType, c.Status, c.Reason, c.Message, want, reason)
	}
	if c.Message == "" {
		t.Errorf("%s has no message", condType)
	}
}

func equalPods(a, b meshv1alpha1.MeshServicePods) bool {
	if a.Matched != b.Matched || a.Injected != b.Injected || a.Ready != b.Ready || len(a.ByVersion) != len(b.ByVersion) {
		return false
	}
	for i := range a.ByVersion {
		if a.ByVersion[i] != b.ByVersion[i] {
			return false
		}
	}
	return true
}
