package krew

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden manifest in testdata")

// goldenManifest is the manifest of a release with fixed digests, so that its rendering does
// not depend on how a Go version compresses archives.
func goldenManifest(t *testing.T) Manifest {
	t.Helper()
	var archives []Archive
	for i, target := range Targets {
		archives = append(archives, Archive{
			Target:   target,
			FileName: ArchiveName("v1.2.3", target),
			SHA256:   strings.Repeat(string("0123"[i])+"a", 32),
		})
	}
	m, err := NewManifest(ManifestOptions{Version: "v1.2.3", Archives: archives})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestTheRenderedManifestMatchesTheGoldenFile(t *testing.T) {
	rendered := Render(goldenManifest(t))
	goldenPath := filepath.Join("testdata", "meshlift.golden.yaml")
	if *update {
		if err := os.WriteFile(goldenPath, rendered, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/krew -update to write it)", err)
	}
	if string(rendered) != string(golden) {
		t.Errorf("the rendered manifest differs from %s (run go test ./internal/krew -update after checking the change):\n%s", goldenPath, rendered)
	}
}

func TestTheRenderedManifestReadsBackAsTheSameManifest(t *testing.T) {
	tests := []struct {
		name  string
		spoil func(m *Manifest)
	}{
		{name: "the generated manifest", spoil: func(*Manifest) {}},
		{name: "texts without a final line break", spoil: func(m *Manifest) {
			m.Spec.Description = "one\ntwo"
			m.Spec.Caveats = "no break"
		}},
		{name: "texts with blank lines, indented lines and several final line breaks", spoil: func(m *Manifest) {
			m.Spec.Description = "first\n\n  indented: yes # not a comment\n\n\n"
			m.Spec.Caveats = "- not a list\n\"quoted\"\n"
		}},
		{name: "texts a block cannot hold", spoil: func(m *Manifest) {
			m.Spec.Description = " leading space\nand a tab\there"
			m.Spec.Caveats = "\nleading break"
		}},
		{name: "scalars YAML would read as something else", spoil: func(m *Manifest) {
			m.Spec.ShortDescription = "yes"
			m.Spec.Homepage = "null"
			m.Spec.Platforms[0].Bin = "0x10"
			m.Spec.Platforms[1].Bin = "a: b"
			m.Spec.Platforms[2].Bin = "#comment"
			m.Spec.Platforms[3].Bin = "*alias"
		}},
		{name: "files and selector expressions", spoil: func(m *Manifest) {
			m.Spec.Platforms[0].Files = []FileOperation{{From: "kubectl-meshlift", To: "."}, {From: "LICENSE", To: "."}}
			m.Spec.Platforms[1].Selector.MatchExpressions = []SelectorRequirement{{Key: "os", Operator: "In", Values: []string{"linux", "darwin"}}}
			m.Spec.Platforms[2].Selector = Selector{MatchExpressions: []SelectorRequirement{{Key: "arch", Operator: "Exists"}}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := goldenManifest(t)
			tt.spoil(&m)
			rendered := Render(m)
			parsed, err := ParseManifest(rendered)
			if err != nil {
				t.Fatalf("ParseManifest: %v\n%s", err, rendered)
			}
			if !reflect.DeepEqual(parsed, m) {
				t.Errorf("read back\n%#v\nwant\n%#v\nfrom\n%s", parsed, m, rendered)
			}
		})
	}
}

func TestTheRenderedManifestIsWhatAGenericYAMLReaderSees(t *testing.T) {
	// A reader that knows nothing of Manifest sees the fields krew reads, under krew's names.
	var generic map[string]any
	if err := yaml.Unmarshal(Render(goldenManifest(t)), &generic); err != nil {
		t.Fatal(err)
	}
	spec := generic["spec"].(map[string]any)
	platform := spec["platforms"].([]any)[3].(map[string]any)
	labels := platform["selector"].(map[string]any)["matchLabels"].(map[string]any)
	checks := map[string]any{
		"apiVersion":            generic["apiVersion"],
		"kind":                  generic["kind"],
		"metadata.name":         generic["metadata"].(map[string]any)["name"],
		"spec.version":          spec["version"],
		"spec.shortDescription": spec["shortDescription"],
		"platform os":           labels["os"],
		"platform arch":         labels["arch"],
		"platform bin":          platform["bin"],
		"platform sha256":       platform["sha256"],
		"platform uri":          platform["uri"],
	}
	want := map[string]any{
		"apiVersion":            "krew.googlecontainertools.github.com/v1alpha2",
		"kind":                  "Plugin",
		"metadata.name":         "meshlift",
		"spec.version":          "v1.2.3",
		"spec.shortDescription": ShortDescription,
		"platform os":           "darwin",
		"platform arch":         "arm64",
		"platform bin":          "kubectl-meshlift",
		"platform sha256":       strings.Repeat("3a", 32),
		"platform uri":          "https://github.com/meshlift/meshlift/releases/download/v1.2.3/kubectl-meshlift_v1.2.3_darwin_arm64.tar.gz",
	}
	for field, value := range want {
		if checks[field] != value {
			t.Errorf("%s = %#v, want %#v", field, checks[field], value)
		}
	}
	if description, _ := spec["description"].(string); description != Description {
		t.Errorf("description = %q, want %q", description, Description)
	}
}
