package argocd_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshlift/meshlift/internal/argocd"
	"github.com/meshlift/meshlift/internal/repo"
)

var update = flag.Bool("update", false, "rewrite config/argocd/argocd-cm.yaml from the health checks")

// healthTests is health_test.yaml in Argo CD's format.
type healthTests struct {
	Tests []struct {
		HealthStatus argocd.Health `json:"healthStatus"`
		InputPath    string        `json:"inputPath"`
	} `json:"tests"`
}

func customizations(t *testing.T) (root string, cs []argocd.Customization) {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	cs, err = argocd.LoadCustomizations(filepath.Join(root, "config", "argocd", "resource_customizations"))
	if err != nil {
		t.Fatal(err)
	}
	return root, cs
}

// TestHealthChecksGiveWhatTheirTestsExpect runs every health.lua over the inputs its
// health_test.yaml names, as Argo CD's own test does, once with the libraries argocd-cm scripts
// get and once with every library: the status and the message must be exactly the expected ones.
// Every file in testdata/ must be named by a test.
func TestHealthChecksGiveWhatTheirTestsExpect(t *testing.T) {
	_, cs := customizations(t)
	kinds := map[string]bool{}
	for _, c := range cs {
		kinds[c.Group+"/"+c.Kind] = true
		t.Run(c.Group+"/"+c.Kind, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(c.Dir, "health_test.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			var tests healthTests
			if err := yaml.UnmarshalStrict(raw, &tests); err != nil {
				t.Fatalf("health_test.yaml: %v", err)
			}
			named := map[string]bool{}
			for _, tc := range tests.Tests {
				named[filepath.Clean(tc.InputPath)] = true
				input, err := os.ReadFile(filepath.Join(c.Dir, tc.InputPath))
				if err != nil {
					t.Fatal(err)
				}
				var obj map[string]any
				if err := yaml.Unmarshal(input, &obj); err != nil {
					t.Fatalf("%s: %v", tc.InputPath, err)
				}
				for _, libs := range []argocd.Libraries{argocd.ConfigMapLibraries, argocd.OpenLibraries} {
					got, err := argocd.Evaluate(c.Script, obj, libs)
					if err != nil {
						t.Errorf("%s (libraries %d): %v", tc.InputPath, libs, err)
						continue
					}
					if got != tc.HealthStatus {
						t.Errorf("%s (libraries %d):\n got  %+v\n want %+v", tc.InputPath, libs, got, tc.HealthStatus)
					}
				}
			}
			files, err := filepath.Glob(filepath.Join(c.Dir, "testdata", "*.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range files {
				if rel := filepath.Join("testdata", filepath.Base(f)); !named[rel] {
					t.Errorf("%s is not named by health_test.yaml", rel)
				}
			}
		})
	}
	for _, kind := range []string{"mesh.meshlift.io/UpgradePlan", "mesh.meshlift.io/MeshService", "mesh.meshlift.io/SidecarVersion"} {
		if !kinds[kind] {
			t.Errorf("no health check for %s", kind)
		}
	}
}

// TestTheArgoCDConfigMapSnippetIsCurrent checks config/argocd/argocd-cm.yaml against the health
// checks (go test ./internal/argocd -update, or make argocd-cm, rewrites it), and that it
// decodes to exactly the scripts under the keys Argo CD reads.
func TestTheArgoCDConfigMapSnippetIsCurrent(t *testing.T) {
	root, cs := customizations(t)
	want, err := argocd.RenderConfigMap(cs)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "config", "argocd", "argocd-cm.yaml")
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is stale: run make argocd-cm (go test ./internal/argocd -update) and commit it", path)
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict(got, &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Name != "argocd-cm" || len(cm.Data) != len(cs) {
		t.Errorf("the snippet is ConfigMap %s with %d keys, want argocd-cm with %d", cm.Name, len(cm.Data), len(cs))
	}
	for _, c := range cs {
		if cm.Data[c.ConfigMapKey()] != c.Script {
			t.Errorf("%s does not decode to %s/health.lua", c.ConfigMapKey(), c.Dir)
		}
	}
	if _, ok := cm.Data["resource.customizations.health.mesh.meshlift.io_UpgradePlan"]; !ok {
		t.Error("the snippet has no resource.customizations.health.mesh.meshlift.io_UpgradePlan")
	}
}
