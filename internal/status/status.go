// Package status computes the status of MeshServices and SidecarVersions from the objects the
// reconcilers gather. It is pure: the same inputs always give the same counts and conditions.
package status

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/versions"
)

// MaxIdentities bounds status.identity; a MeshService whose pods run as more service accounts
// than this lists the first ones in order.
const MaxIdentities = 16

// Counted reports whether a pod counts towards status: terminating and finished pods do not.
func Counted(pod *corev1.Pod) bool {
	return pod.DeletionTimestamp == nil && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

// MeshServiceInput is what the MeshService status is computed from.
type MeshServiceInput struct {
	// Pods are the pods the selector matches (uncounted ones are skipped), read only.
	Pods []*corev1.Pod
	// Resolution and ResolveErr are the result of versions.Resolve.
	Resolution versions.Resolution
	ResolveErr error
	// TrustDomain of the SPIFFE IDs and Namespace of the MeshService.
	TrustDomain string
	Namespace   string
	// Generation of the MeshService.
	Generation int64
}

// MeshService returns the new status of a MeshService. Conditions keep their transition times
// when their status does not change.
func MeshService(current meshv1alpha1.MeshServiceStatus, in MeshServiceInput) meshv1alpha1.MeshServiceStatus {
	next := meshv1alpha1.MeshServiceStatus{
		ObservedGeneration: in.Generation,
		Conditions:         slices.Clone(current.Conditions),
	}
	if in.ResolveErr == nil {
		next.CurrentVersion = in.Resolution.Version
		next.VersionSource = in.Resolution.Source
	}

	var (
		notInjected, optedOut, drifted int32
		byVersion                      = map[string]int32{}
		accounts                       = map[string]bool{}
	)
	for _, pod := range in.Pods {
		if !Counted(pod) {
			continue
		}
		next.Pods.Matched++
		accounts[serviceAccount(pod)] = true
		if sidecar.PodReady(pod) {
			next.Pods.Ready++
		}
		switch {
		case sidecar.IsInjected(pod):
			next.Pods.Injected++
			version := sidecar.Version(pod)
			byVersion[version]++
			if version != next.CurrentVersion {
				drifted++
			}
		case sidecar.OptedOut(pod):
			optedOut++
		default:
			notInjected++
		}
	}
	for _, version := range sortedKeys(byVersion) {
		next.Pods.ByVersion = append(next.Pods.ByVersion, meshv1alpha1.VersionCount{Version: version, Pods: byVersion[version]})
	}
	for _, sa := range sortedKeys(accounts) {
		if len(next.Identity) == MaxIdentities {
			break
		}
		next.Identity = append(next.Identity, identity.SPIFFEID(in.TrustDomain, in.Namespace, sa))
	}

	set := func(c metav1.Condition) {
		c.ObservedGeneration = in.Generation
		meta.SetStatusCondition(&next.Conditions, c)
	}
	pods := next.Pods
	var unresolved *versions.UnresolvedError
	switch {
	case errors.As(in.ResolveErr, &unresolved):
		set(metav1.Condition{Type: meshv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: unresolved.Reason,
			Message: "No sidecar version can be resolved, so new pods are not injected: " + unresolved.Message})
	case in.ResolveErr != nil:
		set(metav1.Condition{Type: meshv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: meshv1alpha1.ReasonVersionUnresolved,
			Message: in.ResolveErr.Error()})
	case pods.Matched == 0:
		set(metav1.Condition{Type: meshv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: meshv1alpha1.ReasonNoMatchingPods,
			Message: fmt.Sprintf("No running pods match spec.selector; new ones get SidecarVersion %s", next.CurrentVersion)})
	case notInjected > 0:
		set(metav1.Condition{Type: meshv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: meshv1alpha1.ReasonPodsNotInjected,
			Message: fmt.Sprintf("%d of %d pods have no sidecar: they were created before the MeshService selected them or while "+
				"no version resolved; delete them (or restart their workload) to inject them", notInjected, pods.Matched)})
	case pods.Ready < pods.Matched:
		set(metav1.Condition{Type: meshv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: meshv1alpha1.ReasonPodsNotReady,
			Message: fmt.Sprintf("%d of %d pods are not ready", pods.Matched-pods.Ready, pods.Matched)})
	default:
		msg := fmt.Sprintf("All %d pods are ready", pods.Matched)
		if optedOut > 0 {
			msg += fmt.Sprintf(" (%d opted out of injection with %s: \"false\")", optedOut, meshv1alpha1.AnnotationInject)
		}
		set(metav1.Condition{Type: meshv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: meshv1alpha1.ReasonAllPodsReady, Message: msg})
	}

	switch {
	case in.ResolveErr != nil:
		set(metav1.Condition{Type: meshv1alpha1.ConditionVersionDrift, Status: metav1.ConditionUnknown, Reason: meshv1alpha1.ReasonVersionUnresolved,
			Message: "No current version to compare the pods with"})
	case drifted > 0:
		set(metav1.Condition{Type: meshv1alpha1.ConditionVersionDrift, Status: metav1.ConditionTrue, Reason: meshv1alpha1.ReasonPodsOnOtherVersions,
			Message: fmt.Sprintf("%d of %d injected pods do not run %s: %s", drifted, pods.Injected, next.CurrentVersion,
				otherVersions(pods.ByVersion, next.CurrentVersion))})
	default:
		set(metav1.Condition{Type: meshv1alpha1.ConditionVersionDrift, Status: metav1.ConditionFalse, Reason: meshv1alpha1.ReasonAllPodsCurrent,
			Message: fmt.Sprintf("Every injected pod runs %s", next.CurrentVersion)})
	}
	return next
}

// SidecarVersionInput is what the SidecarVersion status is computed from.
type SidecarVersionInput struct {
	// Pods are the pods whose version annotation names the SidecarVersion, read only.
	Pods []*corev1.Pod
	// DefaultClaims are the names of every SidecarVersion claiming spec.default.
	DefaultClaims []string
	// Default and Generation of the SidecarVersion.
	Default    bool
	Generation int64
}

// SidecarVersion returns the new status of a SidecarVersion.
func SidecarVersion(current meshv1alpha1.SidecarVersionStatus, in SidecarVersionInput) meshv1alpha1.SidecarVersionStatus {
	next := meshv1alpha1.SidecarVersionStatus{
		ObservedGeneration: in.Generation,
		Conditions:         slices.Clone(current.Conditions),
	}
	for _, pod := range in.Pods {
		if !Counted(pod) {
			continue
		}
		next.Pods++
		if sidecar.ProxyReady(pod) {
			next.ReadyPods++
		}
	}
	set := func(c metav1.Condition) {
		c.ObservedGeneration = in.Generation
		meta.SetStatusCondition(&next.Conditions, c)
	}
	switch {
	case next.Pods == 0:
		set(metav1.Condition{Type: meshv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: meshv1alpha1.ReasonNoPods,
			Message: "No pods run this version"})
	case next.ReadyPods < next.Pods:
		set(metav1.Condition{Type: meshv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: meshv1alpha1.ReasonPodsNotReady,
			Message: fmt.Sprintf("The proxy is not ready in %d of %d pods running this version", next.Pods-next.ReadyPods, next.Pods)})
	default:
		set(metav1.Condition{Type: meshv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: meshv1alpha1.ReasonAllPodsReady,
			Message: fmt.Sprintf("The proxy is ready in all %d pods running this version", next.Pods)})
	}
	switch {
	case !in.Default:
		meta.RemoveStatusCondition(&next.Conditions, meshv1alpha1.ConditionDefaultConflict)
	case len(in.DefaultClaims) > 1:
		set(metav1.Condition{Type: meshv1alpha1.ConditionDefaultConflict, Status: metav1.ConditionTrue, Reason: meshv1alpha1.ReasonMultipleDefaults,
			Message: fmt.Sprintf("%d SidecarVersions claim spec.default (%s), so no default is used: unset it on all but one",
				len(in.DefaultClaims), strings.Join(in.DefaultClaims, ", "))})
	default:
		set(metav1.Condition{Type: meshv1alpha1.ConditionDefaultConflict, Status: metav1.ConditionFalse, Reason: meshv1alpha1.ReasonSingleDefault,
			Message: "This is the only default SidecarVersion"})
	}
	return next
}

func serviceAccount(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName == "" {
		return "default"
	}
	return pod.Spec.ServiceAccountName
}

func otherVersions(byVersion []meshv1alpha1.VersionCount, current string) string {
	var parts []string
	for _, vc := range byVersion {
		if vc.Version != current {
			parts = append(parts, fmt.Sprintf("%s (%d)", vc.Version, vc.Pods))
		}
	}
	return strings.Join(parts, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
