package versions_test

import (
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/versions"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestResolve(t *testing.T) {
	v1 := *gen.SidecarVersion("proxy-v1", "1.0.0", gen.AsDefault())
	v2 := *gen.SidecarVersion("proxy-v2", "2.0.0")
	v3 := *gen.SidecarVersion("proxy-v3", "3.0.0")
	other := *gen.SidecarVersion("proxy-v9", "9.0.0", gen.AsDefault())
	deleting := *gen.SidecarVersion("proxy-v2", "2.0.0", gen.SidecarVersionMeta(func(m *metav1.ObjectMeta) {
		now := metav1.Now()
		m.DeletionTimestamp = &now
	}))

	web := gen.MeshService("web", gen.MeshServiceMeta(gen.SetLabels("tier", "front")))
	pinned := gen.MeshService("web", gen.PinVersion("proxy-v2"))

	planOf := func(name, target string, created time.Time, opts ...gen.UpgradePlanOption) meshv1alpha1.UpgradePlan {
		opts = append(opts, gen.UpgradePlanMeta(gen.SetCreated(created)))
		return *gen.UpgradePlan(name, target, []string{"web"}, opts...)
	}

	tests := []struct {
		name       string
		ms         *meshv1alpha1.MeshService
		plans      []meshv1alpha1.UpgradePlan
		versions   []meshv1alpha1.SidecarVersion
		want       versions.Resolution
		wantReason string
	}{
		{
			name:     "uses the default SidecarVersion when nothing else names a version",
			ms:       web,
			versions: []meshv1alpha1.SidecarVersion{v1, v2},
			want:     versions.Resolution{Version: "proxy-v1", Source: meshv1alpha1.VersionSourceDefault},
		},
		{
			name:     "prefers the MeshService pin over the default",
			ms:       pinned,
			versions: []meshv1alpha1.SidecarVersion{v1, v2},
			want:     versions.Resolution{Version: "proxy-v2", Source: meshv1alpha1.VersionSourceMeshService},
		},
		{
			name:     "prefers the governing UpgradePlan's target over the pin and the default",
			ms:       pinned,
			plans:    []meshv1alpha1.UpgradePlan{planOf("up", "proxy-v3", t0)},
			versions: []meshv1alpha1.SidecarVersion{v1, v2, v3},
			want:     versions.Resolution{Version: "proxy-v3", Source: meshv1alpha1.VersionSourceUpgradePlan, Plan: "up"},
		},
		{
			name: "falls back to the pin when the governing plan failed or rolled back",
			ms:   pinned,
			plans: []meshv1alpha1.UpgradePlan{planOf("up", "proxy-v3", t0, func(p *meshv1alpha1.UpgradePlan) {
				p.Status.Phase = meshv1alpha1.PhaseFailed
			})},
			versions: []meshv1alpha1.SidecarVersion{v1, v2, v3},
			want:     versions.Resolution{Version: "proxy-v2", Source: meshv1alpha1.VersionSourceMeshService},
		},
		{
			name: "falls back to the default while the governing plan rolls back",
			ms:   web,
			plans: []meshv1alpha1.UpgradePlan{planOf("up", "proxy-v3", t0, func(p *meshv1alpha1.UpgradePlan) {
				p.Status.Phase = meshv1alpha1.PhaseRollingBack
			})},
			versions: []meshv1alpha1.SidecarVersion{v1, v2, v3},
			want:     versions.Resolution{Version: "proxy-v1", Source: meshv1alpha1.VersionSourceDefault},
		},
		{
			name: "lets the oldest of two governing plans win",
			ms:   web,
			plans: []meshv1alpha1.UpgradePlan{
				planOf("newer", "proxy-v3", t0.Add(time.Hour)),
				planOf("older", "proxy-v2", t0),
			},
			versions: []meshv1alpha1.SidecarVersion{v1, v2, v3},
			want:     versions.Resolution{Version: "proxy-v2", Source: meshv1alpha1.VersionSourceUpgradePlan, Plan: "older"},
		},
		{
			name: "breaks a creation-time tie between plans by name",
			ms:   web,
			plans: []meshv1alpha1.UpgradePlan{
				planOf("b", "proxy-v3", t0),
				planOf("a", "proxy-v2", t0),
			},
			versions: []meshv1alpha1.SidecarVersion{v1, v2, v3},
			want:     versions.Resolution{Version: "proxy-v2", Source: meshv1alpha1.VersionSourceUpgradePlan, Plan: "a"},
		},
		{
			name:     "follows a plan that selects the MeshService by label",
			ms:       web,
			plans:    []meshv1alpha1.UpgradePlan{planOf("up", "proxy-v3", t0, gen.SelectMeshServices(map[string]string{"tier": "front"}))},
			versions: []meshv1alpha1.SidecarVersion{v1, v3},
			want:     versions.Resolution{Version: "proxy-v3", Source: meshv1alpha1.VersionSourceUpgradePlan, Plan: "up"},
		},
		{
			name: "ignores plans of other namespaces, other MeshServices and other labels",
			ms:   web,
			plans: []meshv1alpha1.UpgradePlan{
				planOf("elsewhere", "proxy-v3", t0, gen.UpgradePlanMeta(gen.SetNamespace("other"))),
				*gen.UpgradePlan("api-only", "proxy-v3", []string{"api"}),
				planOf("backend", "proxy-v3", t0, gen.SelectMeshServices(map[string]string{"tier": "back"})),
			},
			versions: []meshv1alpha1.SidecarVersion{v1, v3},
			want:     versions.Resolution{Version: "proxy-v1", Source: meshv1alpha1.VersionSourceDefault},
		},
		{
			name:       "refuses a plan whose target does not exist instead of falling back",
			ms:         web,
			plans:      []meshv1alpha1.UpgradePlan{planOf("up", "proxy-v7", t0)},
			versions:   []meshv1alpha1.SidecarVersion{v1},
			want:       versions.Resolution{Version: "proxy-v7", Source: meshv1alpha1.VersionSourceUpgradePlan, Plan: "up"},
			wantReason: versions.ReasonVersionNotFound,
		},
		{
			name:       "refuses a pin to a SidecarVersion that is being deleted",
			ms:         pinned,
			versions:   []meshv1alpha1.SidecarVersion{v1, deleting},
			want:       versions.Resolution{Version: "proxy-v2", Source: meshv1alpha1.VersionSourceMeshService},
			wantReason: versions.ReasonVersionNotFound,
		},
		{
			name:       "resolves nothing when no version is named and there is no default",
			ms:         web,
			versions:   []meshv1alpha1.SidecarVersion{v2},
			wantReason: versions.ReasonNoVersion,
		},
		{
			name:       "resolves nothing while two SidecarVersions claim the default",
			ms:         web,
			versions:   []meshv1alpha1.SidecarVersion{v1, other},
			wantReason: versions.ReasonDefaultConflict,
		},
		{
			name:     "is not disturbed by a default conflict when the MeshService pins a version",
			ms:       pinned,
			versions: []meshv1alpha1.SidecarVersion{v1, v2, other},
			want:     versions.Resolution{Version: "proxy-v2", Source: meshv1alpha1.VersionSourceMeshService},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := versions.Resolve(tt.ms, tt.plans, tt.versions)
			if got != tt.want {
				t.Errorf("Resolve() = %+v, want %+v", got, tt.want)
			}
			if tt.wantReason == "" {
				if err != nil {
					t.Fatalf("Resolve() error = %v, want none", err)
				}
				return
			}
			var unresolved *versions.UnresolvedError
			if !errors.As(err, &unresolved) {
				t.Fatalf("Resolve() error = %v, want an UnresolvedError with reason %s", err, tt.wantReason)
			}
			if unresolved.Reason != tt.wantReason {
				t.Errorf("reason = %s, want %s (message %q)", unresolved.Reason, tt.wantReason, unresolved.Message)
			}
		})
	}
}

func TestDefaultClaimsAreSortedAndSkipDeletedVersions(t *testing.T) {
	now := metav1.Now()
	gone := gen.SidecarVersion("a-gone", "1.0.0", gen.AsDefault(), gen.SidecarVersionMeta(func(m *metav1.ObjectMeta) { m.DeletionTimestamp = &now }))
	got := versions.DefaultClaims([]meshv1alpha1.SidecarVersion{
		*gen.SidecarVersion("z", "1.0.0", gen.AsDefault()),
		*gone,
		*gen.SidecarVersion("m", "1.0.0"),
		*gen.SidecarVersion("b", "1.0.0", gen.AsDefault()),
	})
	if len(got) != 2 || got[0] != "b" || got[1] != "z" {
		t.Fatalf("DefaultClaims() = %v, want [b z]", got)
	}
}
