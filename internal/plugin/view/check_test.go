package view_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshlift/meshlift/internal/plugin/preflight"
	"github.com/meshlift/meshlift/internal/plugin/view"
)

// The repository's golden tests refresh their files with `go test ./... -update`. Other golden
// tests of this package may register the same flag; registering it twice would panic, so the
// flag is registered here only when nobody else did (package variables, including theirs, are
// initialized before init functions run).
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite the golden files in testdata")
	}
}

func updateGolden() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "check", name+".golden")
	if updateGolden() {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/plugin/view -update to write it)", err)
	}
	if got != string(want) {
		t.Errorf("the output differs from %s (run go test ./internal/plugin/view -update after checking the change):\n%s", path, got)
	}
}

func okResult(id string, c preflight.Category, d string) preflight.Result {
	return preflight.Result{ID: id, Category: c, Status: preflight.StatusOK, Description: d}
}

// passing are the results of a healthy installation.
func passing() []preflight.Result {
	return []preflight.Result{
		okResult("crd.upgradeplans.mesh.meshlift.io", preflight.CategoryCRDs, "CRD upgradeplans.mesh.meshlift.io is established and serves v1alpha1"),
		okResult("crd.meshservices.mesh.meshlift.io", preflight.CategoryCRDs, "CRD meshservices.mesh.meshlift.io is established and serves v1alpha1"),
		okResult("crd.sidecarversions.mesh.meshlift.io", preflight.CategoryCRDs, "CRD sidecarversions.mesh.meshlift.io is established and serves v1alpha1"),
		okResult("operator.available", preflight.CategoryOperator, "operator Deployment meshlift-system/meshlift-controller-manager has 2 of 2 replicas available"),
		okResult("webhooks.mutating", preflight.CategoryWebhooks, "MutatingWebhookConfiguration meshlift-mutating-webhook-configuration: the caBundle of its 1 webhook verifies the serving certificate for meshlift-webhook-service.meshlift-system.svc"),
		okResult("webhooks.validating", preflight.CategoryWebhooks, "ValidatingWebhookConfiguration meshlift-validating-webhook-configuration: the caBundle of its 3 webhooks verifies the serving certificate for meshlift-webhook-service.meshlift-system.svc"),
		okResult("webhooks.serving-certificate", preflight.CategoryWebhooks, "webhook serving certificate (Secret meshlift-system/meshlift-webhook-certs) is valid for 335d more (until 2027-11-06T21:00:00Z)"),
		okResult("control-plane.endpoints", preflight.CategoryControlPlane, "control-plane Service meshlift-system/meshlift-control-plane has 2 ready endpoints"),
		okResult("trust-bundle.ca", preflight.CategoryTrustBundle, `mesh CA "meshlift-mesh-ca" (Secret meshlift-system/meshlift-ca) is valid for 3620d more (until 2036-10-24T21:00:00Z)`),
		okResult("trust-bundle.configmaps", preflight.CategoryTrustBundle, "trust bundle ConfigMap meshlift-ca-root is published in all 2 namespaces with MeshServices (meshlift-demo, shop)"),
		okResult("sidecar-versions.default", preflight.CategorySidecarVersions, "SidecarVersion proxy-v1 (1.0.0) is the default"),
	}
}

// replace swaps the result of the same ID.
func replace(results []preflight.Result, with ...preflight.Result) []preflight.Result {
	for _, w := range with {
		for i := range results {
			if results[i].ID == w.ID {
				w.Category = results[i].Category
				results[i] = w
			}
		}
	}
	return results
}

func failing() []preflight.Result {
	return replace(passing(),
		preflight.Result{ID: "operator.available", Status: preflight.StatusError,
			Description: "operator has no ready replica: Deployment meshlift-system/meshlift-controller-manager has 0 of 1 replicas available",
			Hint: "see why its pods are not ready:\n" +
				"kubectl -n meshlift-system get pods -l app.kubernetes.io/name=meshlift,control-plane=controller-manager\n" +
				"kubectl -n meshlift-system describe deployment meshlift-controller-manager\n" +
				"kubectl -n meshlift-system logs deployment/meshlift-controller-manager -c manager"},
		preflight.Result{ID: "webhooks.serving-certificate", Status: preflight.StatusWarning,
			Description: "cannot read Secret meshlift-system/meshlift-webhook-certs (forbidden): the webhook serving certificate and caBundle are not checked",
			Hint:        "run check with an account that may get secrets (kubectl auth can-i get secrets -n meshlift-system)"},
		preflight.Result{ID: "sidecar-versions.default", Status: preflight.StatusError,
			Description: "DefaultConflict: 2 SidecarVersions claim spec.default (proxy-v1, proxy-v2), so none is used as the default",
			Hint: "MeshServices without spec.sidecar.version or an UpgradePlan get no sidecar until one is left; unset it on all but one:\n" +
				`kubectl patch sidecarversion proxy-v2 --type=merge -p '{"spec":{"default":false}}'`},
	)
}

func warning() []preflight.Result {
	return replace(passing(),
		preflight.Result{ID: "trust-bundle.ca", Status: preflight.StatusWarning,
			Description: `mesh CA "meshlift-mesh-ca" (Secret meshlift-system/meshlift-ca) expires in 12d (2026-12-18T21:00:00Z)`,
			Hint: "the operator's root: replace it before it expires, in three steps that keep trust (docs/control-plane.md, \"Built-in: the Secret\")\n" +
				"this warns 30 days before the CA expires and fails once it has"},
	)
}

func TestRenderCheckMatchesTheGoldenFiles(t *testing.T) {
	for _, tt := range []struct {
		name    string
		results []preflight.Result
	}{
		{"passing", passing()},
		{"failing", failing()},
		{"warning", warning()},
	} {
		report := preflight.Summarize(tt.results)
		t.Run(tt.name+"/plain", func(t *testing.T) {
			got := view.RenderCheck(report, view.Options{Width: 80})
			if strings.Contains(got, "\x1b") || strings.ContainsAny(got, "✔‼✖") {
				t.Errorf("plain output has colours or symbols:\n%s", got)
			}
			checkGolden(t, tt.name, got)
		})
		t.Run(tt.name+"/color", func(t *testing.T) {
			checkGolden(t, tt.name+"-color", view.RenderCheck(report, view.Options{Color: true, Width: 120}))
		})
	}
}

func TestCheckSummarySaysTheWorstAndTheCounts(t *testing.T) {
	for _, tt := range []struct {
		results []preflight.Result
		want    string
	}{
		{passing(), "[ok] 11 ok"},
		{warning(), "[warn] 1 warning, 10 ok"},
		{failing(), "[FAIL] 2 errors, 1 warning, 8 ok"},
		{nil, "[ok] 0 ok"},
	} {
		if got := view.CheckSummary(preflight.Summarize(tt.results), view.Options{}); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}
