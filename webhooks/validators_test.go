package webhooks_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// The validating webhooks never reject: every object below is created, with a warning that says
// what is off.
func TestValidatorsWarnButNeverReject(t *testing.T) {
	ctx := context.Background()
	ns, version := meshed(t, "validate", nil)
	inNS := gen.UpgradePlanMeta(gen.SetNamespace(ns))

	tests := []struct {
		name        string
		obj         func() clientObject
		wantWarning string
	}{
		{"an UpgradePlan whose target does not exist yet",
			func() clientObject { return gen.UpgradePlan("early", "not-yet", []string{"web"}, inNS) },
			`spec.targetVersion names SidecarVersion "not-yet", which does not exist (yet)`},
		{"a MeshService pinned to a SidecarVersion that does not exist",
			func() clientObject {
				return gen.MeshService("pinned", gen.PinVersion("missing"), gen.MeshServiceMeta(gen.SetNamespace(ns)),
					func(ms *meshv1alpha1.MeshService) { ms.Spec.Selector.MatchLabels = map[string]string{"app": "pinned"} })
			},
			`spec.sidecar.version names SidecarVersion "missing"`},
		{"a MeshService whose selector overlaps another's",
			func() clientObject {
				return gen.MeshService("web-canary", gen.MeshServiceMeta(gen.SetNamespace(ns)),
					func(ms *meshv1alpha1.MeshService) {
						ms.Spec.Selector.MatchLabels = map[string]string{"app": "web", "track": "canary"}
					})
			},
			"may select the same pods as MeshService web"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			warned.take()
			if err := warnClient.Create(ctx, tt.obj()); err != nil {
				t.Fatalf("rejected: %v", err)
			}
			got := strings.Join(warned.take(), "\n")
			if !strings.Contains(got, tt.wantWarning) {
				t.Errorf("warnings = %q, want one containing %q", got, tt.wantWarning)
			}
		})
	}

	t.Run("a second UpgradePlan for a MeshService an older plan governs", func(t *testing.T) {
		testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) { // the older plan must be in the webhook's cache
			err := mgrCache.Get(ctx, client.ObjectKey{Namespace: ns, Name: "early"}, &meshv1alpha1.UpgradePlan{})
			return err == nil, fmt.Sprint(err)
		})
		warned.take()
		if err := warnClient.Create(ctx, gen.UpgradePlan("late", version.Name, []string{"web"}, inNS)); err != nil {
			t.Fatalf("rejected: %v", err)
		}
		if got := strings.Join(warned.take(), "\n"); !strings.Contains(got, "MeshService web is already governed by the older UpgradePlan early") {
			t.Errorf("warnings = %q", got)
		}
	})

	t.Run("a second default SidecarVersion", func(t *testing.T) {
		first := gen.SidecarVersion(ns+"-default-a", "1.0.0", gen.AsDefault())
		second := gen.SidecarVersion(ns+"-default-b", "1.0.0", gen.AsDefault())
		for _, sv := range []*meshv1alpha1.SidecarVersion{first, second} {
			if err := warnClient.Create(ctx, sv); err != nil {
				t.Fatalf("rejected: %v", err)
			}
			t.Cleanup(func() { _ = warnClient.Delete(context.Background(), sv) })
		}
		// The webhook reads the cache, which may not have the first one yet: update the second
		// until the warning shows (an update is validated the same way).
		waitForWarning(t, func() error {
			second.Spec.Args = append(second.Spec.Args, "--touch")
			return warnClient.Update(ctx, second)
		}, "is already the default")
	})
}
