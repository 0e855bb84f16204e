package webhooks

import (
	"context"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/versions"
)

// Paths of the validating webhooks of the Meshlift kinds (config/webhook points at them).
const (
	UpgradePlanValidatorPath    = "/validate-mesh-meshlift-io-v1alpha1-upgradeplan"
	MeshServiceValidatorPath    = "/validate-mesh-meshlift-io-v1alpha1-meshservice"
	SidecarVersionValidatorPath = "/validate-mesh-meshlift-io-v1alpha1-sidecarversion"
)

// These validators decide what one object's CEL rules cannot: rules across objects. They only
// warn: with GitOps, an UpgradePlan may well be applied before the SidecarVersion it targets, and
// rejecting it would break the sync. Everything they warn about is also reported in status. A
// check whose read fails (the cache not synced, the API server unreachable) is skipped with a
// warning that says so (couldNotCheck); it never denies.

// UpgradePlanValidator warns about a target that does not exist and about plans it conflicts with.
type UpgradePlanValidator struct{ Reader client.Reader }

func (v *UpgradePlanValidator) ValidateCreate(ctx context.Context, plan *meshv1alpha1.UpgradePlan) (admission.Warnings, error) {
	return v.warnings(ctx, plan), nil
}

func (v *UpgradePlanValidator) ValidateUpdate(ctx context.Context, _, plan *meshv1alpha1.UpgradePlan) (admission.Warnings, error) {
	return v.warnings(ctx, plan), nil
}

func (v *UpgradePlanValidator) ValidateDelete(context.Context, *meshv1alpha1.UpgradePlan) (admission.Warnings, error) {
	return nil, nil
}

func (v *UpgradePlanValidator) warnings(ctx context.Context, plan *meshv1alpha1.UpgradePlan) admission.Warnings {
	var warnings admission.Warnings
	w, err := missingVersion(ctx, v.Reader, plan.Spec.TargetVersion, "spec.targetVersion", "the plan waits until it exists")
	switch {
	case err != nil:
		warnings = append(warnings, couldNotCheck(ctx, "whether spec.targetVersion exists", err))
	case w != "":
		warnings = append(warnings, w)
	}
	conflicts, err := v.conflicts(ctx, plan)
	if err != nil {
		return append(warnings, couldNotCheck(ctx, "whether an older UpgradePlan governs the same MeshServices", err))
	}
	return append(warnings, conflicts...)
}

// conflicts warns about the MeshServices that plan selects but an older plan governs.
func (v *UpgradePlanValidator) conflicts(ctx context.Context, plan *meshv1alpha1.UpgradePlan) (admission.Warnings, error) {
	var warnings admission.Warnings
	meshServices := &meshv1alpha1.MeshServiceList{}
	if err := v.Reader.List(ctx, meshServices, client.InNamespace(plan.Namespace)); err != nil {
		return nil, fmt.Errorf("failed to list MeshServices: %w", err)
	}
	plans := &meshv1alpha1.UpgradePlanList{}
	if err := v.Reader.List(ctx, plans, client.InNamespace(plan.Namespace)); err != nil {
		return nil, fmt.Errorf("failed to list UpgradePlans: %w", err)
	}
	candidate := plan.DeepCopy()
	if candidate.CreationTimestamp.IsZero() { // being created: it is the newest plan
		candidate.CreationTimestamp = latest(plans.Items)
	}
	others := make([]meshv1alpha1.UpgradePlan, 0, len(plans.Items)+1)
	for _, p := range plans.Items {
		if p.Name != plan.Name {
			others = append(others, p)
		}
	}
	others = append(others, *candidate)
	for i := range meshServices.Items {
		ms := &meshServices.Items[i]
		governing := versions.GoverningPlans(ms, others)
		if len(governing) > 1 && governing[0].Name != plan.Name && versions.PlanSelects(candidate, ms) {
			warnings = append(warnings, fmt.Sprintf("MeshService %s is already governed by the older UpgradePlan %s; "+
				"this plan does not apply to it (it gets a Conflict condition) until that plan stops selecting it", ms.Name, governing[0].Name))
		}
	}
	return warnings, nil
}

// MeshServiceValidator warns about a pinned version that does not exist and about MeshServices
// whose selectors overlap.
type MeshServiceValidator struct{ Reader client.Reader }

func (v *MeshServiceValidator) ValidateCreate(ctx context.Context, ms *meshv1alpha1.MeshService) (admission.Warnings, error) {
	return v.warnings(ctx, ms), nil
}

func (v *MeshServiceValidator) ValidateUpdate(ctx context.Context, _, ms *meshv1alpha1.MeshService) (admission.Warnings, error) {
	return v.warnings(ctx, ms), nil
}

func (v *MeshServiceValidator) ValidateDelete(context.Context, *meshv1alpha1.MeshService) (admission.Warnings, error) {
	return nil, nil
}

func (v *MeshServiceValidator) warnings(ctx context.Context, ms *meshv1alpha1.MeshService) admission.Warnings {
	var warnings admission.Warnings
	if ms.Spec.Sidecar.Version != "" {
		w, err := missingVersion(ctx, v.Reader, ms.Spec.Sidecar.Version, "spec.sidecar.version", "new pods are not injected until it exists")
		switch {
		case err != nil:
			warnings = append(warnings, couldNotCheck(ctx, "whether spec.sidecar.version exists", err))
		case w != "":
			warnings = append(warnings, w)
		}
	}
	others := &meshv1alpha1.MeshServiceList{}
	if err := v.Reader.List(ctx, others, client.InNamespace(ms.Namespace)); err != nil {
		return append(warnings, couldNotCheck(ctx, "whether spec.selector overlaps another MeshService's",
			fmt.Errorf("failed to list MeshServices: %w", err)))
	}
	var overlapping []string
	for _, other := range others.Items {
		if other.Name != ms.Name && selectorsOverlap(ms.Spec.Selector.MatchLabels, other.Spec.Selector.MatchLabels) {
			overlapping = append(overlapping, other.Name)
		}
	}
	if len(overlapping) > 0 {
		warnings = append(warnings, fmt.Sprintf("spec.selector may select the same pods as MeshService %s; "+
			"a pod selected by several is injected for the oldest", strings.Join(overlapping, ", ")))
	}
	return warnings
}

// SidecarVersionValidator warns about a second default and about deleting a version in use.
type SidecarVersionValidator struct{ Reader client.Reader }

func (v *SidecarVersionValidator) ValidateCreate(ctx context.Context, sv *meshv1alpha1.SidecarVersion) (admission.Warnings, error) {
	return v.defaultWarnings(ctx, sv), nil
}

func (v *SidecarVersionValidator) ValidateUpdate(ctx context.Context, _, sv *meshv1alpha1.SidecarVersion) (admission.Warnings, error) {
	return v.defaultWarnings(ctx, sv), nil
}

func (v *SidecarVersionValidator) ValidateDelete(_ context.Context, sv *meshv1alpha1.SidecarVersion) (admission.Warnings, error) {
	if sv.Status.Pods > 0 {
		return admission.Warnings{fmt.Sprintf("%d pods still run SidecarVersion %s; they keep running it, but plans and MeshServices "+
			"that name it stop resolving", sv.Status.Pods, sv.Name)}, nil
	}
	return nil, nil
}

func (v *SidecarVersionValidator) defaultWarnings(ctx context.Context, sv *meshv1alpha1.SidecarVersion) admission.Warnings {
	if !sv.Spec.Default {
		return nil
	}
	all := &meshv1alpha1.SidecarVersionList{}
	if err := v.Reader.List(ctx, all); err != nil {
		return admission.Warnings{couldNotCheck(ctx, "whether another SidecarVersion is already the default",
			fmt.Errorf("failed to list SidecarVersions: %w", err))}
	}
	var others []string
	for _, name := range versions.DefaultClaims(all.Items) {
		if name != sv.Name {
			others = append(others, name)
		}
	}
	if len(others) > 0 {
		return admission.Warnings{fmt.Sprintf("SidecarVersion %s is already the default; while more than one claims spec.default "+
			"no default is used: unset it on all but one", strings.Join(others, ", "))}
	}
	return nil
}

// couldNotCheck logs a read that failed and returns the warning that admits the object without
// the check it was for. The validators must never return the error: controller-runtime turns it
// into a denial, and failurePolicy Ignore only covers a webhook that does not answer.
func couldNotCheck(ctx context.Context, check string, err error) string {
	ctrl.LoggerFrom(ctx).Error(err, "Admitting without a check whose read failed", "check", check)
	return fmt.Sprintf("meshlift could not check %s: %v; admitted without that check", check, err)
}

// missingVersion returns a warning when the named SidecarVersion does not exist.
func missingVersion(ctx context.Context, reader client.Reader, name, field, consequence string) (string, error) {
	err := reader.Get(ctx, client.ObjectKey{Name: name}, &meshv1alpha1.SidecarVersion{})
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Sprintf("%s names SidecarVersion %q, which does not exist (yet): %s", field, name, consequence), nil
	case err != nil:
		return "", fmt.Errorf("failed to read SidecarVersion %s: %w", name, err)
	}
	return "", nil
}

// selectorsOverlap is a cheap check for matchLabels selectors that can select the same pod: no
// key is required with two different values. Selectors with expressions are not compared.
func selectorsOverlap(a, b map[string]string) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	for key, value := range a {
		if other, ok := b[key]; ok && other != value {
			return false
		}
	}
	return true
}

// latest returns a time after the creation of every plan: the age a plan being created will have.
func latest(plans []meshv1alpha1.UpgradePlan) metav1.Time {
	var t metav1.Time
	for _, p := range plans {
		if p.CreationTimestamp.After(t.Time) {
			t = p.CreationTimestamp
		}
	}
	return metav1.NewTime(t.Add(time.Second))
}
