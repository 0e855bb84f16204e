package versions_test

import (
	"fmt"
	"testing"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/versions"
)

// BenchmarkResolve resolves a MeshService among 100 plans of its namespace (one selects it by
// label) and 50 SidecarVersions: the per-pod work of the injector.
func BenchmarkResolve(b *testing.B) {
	ms := gen.MeshService("web", gen.MeshServiceMeta(gen.SetLabels("tier", "front")))
	var plans []meshv1alpha1.UpgradePlan
	for i := range 99 {
		plans = append(plans, *gen.UpgradePlan(fmt.Sprintf("other-%d", i), "v1", []string{fmt.Sprintf("svc-%d", i)}))
	}
	plans = append(plans, *gen.UpgradePlan("front", "v7", nil, gen.SelectMeshServices(map[string]string{"tier": "front"})))
	var svs []meshv1alpha1.SidecarVersion
	for i := range 50 {
		svs = append(svs, *gen.SidecarVersion(fmt.Sprintf("v%d", i), fmt.Sprintf("1.%d.0", i)))
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := versions.Resolve(ms, plans, svs); err != nil {
			b.Fatal(err)
		}
	}
}
