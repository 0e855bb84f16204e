// Package versions decides which SidecarVersion a MeshService's pods get. It is pure: the
// webhook and the reconcilers gather the objects and call it, so both always agree.
//
// Precedence (ARCHITECTURE.md section 3): the target of the UpgradePlan that governs the
// MeshService (the oldest one if several do) > MeshService.spec.sidecar.version > the default
// SidecarVersion.
package versions

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
)

// Resolution is the version new pods of a MeshService get and why.
type Resolution struct {
	// Version is the name of the SidecarVersion.
	Version string
	// Source is the rule that picked it.
	Source meshv1alpha1.VersionSource
	// Plan is the governing UpgradePlan, when Source is UpgradePlan.
	Plan string
}

// Reasons of an UnresolvedError; they double as condition reasons.
const (
	ReasonNoVersion       = "NoVersion"
	ReasonVersionNotFound = "VersionNotFound"
	ReasonDefaultConflict = "DefaultConflict"
)

// UnresolvedError says why no version could be resolved, in words that tell the user what to fix.
type UnresolvedError struct {
	Reason  string
	Message string
}

func (e *UnresolvedError) Error() string { return e.Message }

// Resolve returns the SidecarVersion that new pods of ms get. plans may hold plans of any
// namespace; only those of ms's namespace that select it count. versions are all SidecarVersions.
func Resolve(ms *meshv1alpha1.MeshService, plans []meshv1alpha1.UpgradePlan, versions []meshv1alpha1.SidecarVersion) (Resolution, error) {
	if governing := GoverningPlans(ms, plans); len(governing) > 0 && !gaveUp(governing[0]) {
		plan := governing[0]
		res := Resolution{Version: plan.Spec.TargetVersion, Source: meshv1alpha1.VersionSourceUpgradePlan, Plan: plan.Name}
		if !exists(versions, res.Version) {
			return res, &UnresolvedError{Reason: ReasonVersionNotFound, Message: fmt.Sprintf(
				"UpgradePlan %s targets SidecarVersion %q, which does not exist: create it or fix spec.targetVersion", plan.Name, res.Version)}
		}
		return res, nil
	}
	if pinned := ms.Spec.Sidecar.Version; pinned != "" {
		res := Resolution{Version: pinned, Source: meshv1alpha1.VersionSourceMeshService}
		if !exists(versions, pinned) {
			return res, &UnresolvedError{Reason: ReasonVersionNotFound, Message: fmt.Sprintf(
				"spec.sidecar.version names SidecarVersion %q, which does not exist: create it or fix spec.sidecar.version", pinned)}
		}
		return res, nil
	}
	defaults := DefaultClaims(versions)
	switch len(defaults) {
	case 0:
		return Resolution{}, &UnresolvedError{Reason: ReasonNoVersion, Message: "no UpgradePlan governs this MeshService, spec.sidecar.version is empty " +
			"and no SidecarVersion is the default: set one of them"}
	case 1:
		return Resolution{Version: defaults[0], Source: meshv1alpha1.VersionSourceDefault}, nil
	default:
		return Resolution{}, &UnresolvedError{Reason: ReasonDefaultConflict, Message: fmt.Sprintf(
			"%d SidecarVersions claim spec.default (%s): unset it on all but one", len(defaults), strings.Join(defaults, ", "))}
	}
}

// gaveUp reports whether a plan failed or rolled back: its target is not what new pods should
// get any more, so the MeshService's pin or the default decides again (the version the pods
// came from, as a rule), and a scale-up does not create pods with a version that just failed.
func gaveUp(plan *meshv1alpha1.UpgradePlan) bool {
	switch plan.Status.Phase {
	case meshv1alpha1.PhaseFailed, meshv1alpha1.PhaseRollingBack, meshv1alpha1.PhaseRolledBack:
		return true
	}
	return false
}

// DefaultClaims returns the sorted names of the live SidecarVersions with spec.default set.
func DefaultClaims(versions []meshv1alpha1.SidecarVersion) []string {
	var names []string
	for i := range versions {
		if versions[i].Spec.Default && versions[i].DeletionTimestamp == nil {
			names = append(names, versions[i].Name)
		}
	}
	slices.Sort(names)
	return names
}

// GoverningPlans returns the live plans that select ms, oldest first (ties broken by name). The
// first one governs; the others conflict with it.
func GoverningPlans(ms *meshv1alpha1.MeshService, plans []meshv1alpha1.UpgradePlan) []*meshv1alpha1.UpgradePlan {
	var governing []*meshv1alpha1.UpgradePlan
	for i := range plans {
		if PlanSelects(&plans[i], ms) {
			governing = append(governing, &plans[i])
		}
	}
	slices.SortFunc(governing, func(a, b *meshv1alpha1.UpgradePlan) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return governing
}

// PlanSelects reports whether a live plan selects ms. A plan whose selector cannot be parsed
// selects nothing; its own controller reports the error.
func PlanSelects(plan *meshv1alpha1.UpgradePlan, ms *meshv1alpha1.MeshService) bool {
	if plan.Namespace != ms.Namespace || plan.DeletionTimestamp != nil {
		return false
	}
	if plan.Spec.Selector == nil {
		return slices.Contains(plan.Spec.MeshServices, ms.Name)
	}
	selector, err := metav1.LabelSelectorAsSelector(plan.Spec.Selector)
	if err != nil {
		return false
	}
	return selector.Matches(labels.Set(ms.Labels))
}

func exists(versions []meshv1alpha1.SidecarVersion, name string) bool {
	return slices.ContainsFunc(versions, func(v meshv1alpha1.SidecarVersion) bool {
		return v.Name == name && v.DeletionTimestamp == nil
	})
}
