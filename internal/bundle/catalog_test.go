package bundle_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/blang/semver/v4"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/operator-framework/api/pkg/operators/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/meshlift/meshlift/internal/bundle"
	"github.com/meshlift/meshlift/internal/bundle/kustomize"
)

// validateCatalog checks the structure of a file-based catalog of one package, our own subset
// of what `opm validate` checks (operator-registry is not a dependency), and that the catalog
// says what the bundle it serves says: csv is the bundle's CSV and annotations its
// metadata/annotations.yaml. It returns every problem, each naming where it is.
func validateCatalog(data []byte, csv *v1alpha1.ClusterServiceVersion, annotations map[string]string) []string {
	var problems []string
	problem := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	docs, err := bundle.ParseCatalog(data)
	if err != nil {
		return []string{err.Error()}
	}
	strict := func(doc bundle.CatalogDocument, into any) bool {
		if err := yaml.UnmarshalStrict(doc.Raw, into); err != nil {
			problem("document %d (%s): %v", doc.Index, doc.Schema, err)
			return false
		}
		return true
	}
	var packages []bundle.CatalogPackage
	var channels []bundle.CatalogChannel
	bundles := map[string]bundle.CatalogBundle{}
	channelNames := map[string]bool{}
	for _, doc := range docs {
		switch doc.Schema {
		case bundle.SchemaPackage:
			var p bundle.CatalogPackage
			if strict(doc, &p) {
				packages = append(packages, p)
			}
		case bundle.SchemaChannel:
			var c bundle.CatalogChannel
			if !strict(doc, &c) {
				continue
			}
			if channelNames[c.Name] {
				problem("duplicate olm.channel %q", c.Name)
			}
			channelNames[c.Name] = true
			channels = append(channels, c)
		case bundle.SchemaBundle:
			var b bundle.CatalogBundle
			if !strict(doc, &b) {
				continue
			}
			if _, ok := bundles[b.Name]; ok {
				problem("duplicate olm.bundle %q", b.Name)
			}
			bundles[b.Name] = b
		default:
			problem("document %d has unknown schema %q (want olm.package, olm.channel or olm.bundle)", doc.Index, doc.Schema)
		}
	}
	if len(packages) != 1 {
		problem("want exactly one olm.package, found %d", len(packages))
		return problems
	}
	pkg := packages[0]
	if pkg.Name != bundle.Package {
		problem("olm.package is %q, want %q", pkg.Name, bundle.Package)
	}
	if !channelNames[pkg.DefaultChannel] {
		problem("defaultChannel %q names no olm.channel", pkg.DefaultChannel)
	}
	if pkg.DefaultChannel != annotations["operators.operatorframework.io.bundle.channel.default.v1"] {
		problem("defaultChannel %q is not the bundle's default channel %q", pkg.DefaultChannel, annotations["operators.operatorframework.io.bundle.channel.default.v1"])
	}
	if pkg.Icon == nil || pkg.Icon.Data == "" || pkg.Icon.MediaType == "" {
		problem("olm.package has no icon")
	}
	for _, want := range strings.Split(annotations["operators.operatorframework.io.bundle.channels.v1"], ",") {
		if !channelNames[want] {
			problem("the bundle is in channel %q, but the catalog has no such olm.channel", want)
		}
	}

	for _, c := range channels {
		if c.Package != pkg.Name {
			problem("olm.channel %q is of package %q, want %q", c.Name, c.Package, pkg.Name)
		}
		problems = append(problems, channelProblems(c, bundles, pkg.Name)...)
	}

	for _, b := range bundles {
		if b.Package != pkg.Name {
			problem("olm.bundle %q is of package %q, want %q", b.Name, b.Package, pkg.Name)
		}
		if _, err := name.ParseReference(b.Image, name.StrictValidation); err != nil {
			problem("olm.bundle %q: image %q is not a valid image reference: %v", b.Name, b.Image, err)
		}
	}
	served, ok := bundles[csv.Name]
	if !ok {
		problem("no olm.bundle %q for the bundle's CSV", csv.Name)
		return problems
	}
	var versions []bundle.PackageProperty
	var gvks []string
	for i, p := range served.Properties {
		switch p.Type {
		case bundle.PropertyPackage:
			var v bundle.PackageProperty
			if err := propertyValue(p, &v); err != nil {
				problem("olm.bundle %q property %d (%s): %v", served.Name, i, p.Type, err)
				continue
			}
			versions = append(versions, v)
		case bundle.PropertyGVK:
			var v bundle.GVKProperty
			if err := propertyValue(p, &v); err != nil {
				problem("olm.bundle %q property %d (%s): %v", served.Name, i, p.Type, err)
				continue
			}
			gvks = append(gvks, v.Group+"/"+v.Version+"/"+v.Kind)
		}
	}
	if len(versions) != 1 {
		problem("olm.bundle %q has %d olm.package properties, want 1", served.Name, len(versions))
	} else {
		if versions[0].PackageName != pkg.Name {
			problem("olm.bundle %q: olm.package property names package %q, want %q", served.Name, versions[0].PackageName, pkg.Name)
		}
		if versions[0].Version != csv.Spec.Version.String() {
			problem("olm.bundle %q: olm.package property version %q, but the CSV is version %q", served.Name, versions[0].Version, csv.Spec.Version.String())
		}
	}
	var owned []string
	for _, crd := range csv.Spec.CustomResourceDefinitions.Owned {
		_, group, _ := strings.Cut(crd.Name, ".")
		owned = append(owned, group+"/"+crd.Version+"/"+crd.Kind)
	}
	slices.Sort(gvks)
	slices.Sort(owned)
	if !slices.Equal(gvks, owned) {
		problem("olm.bundle %q: olm.gvk properties %v, but the CSV owns %v", served.Name, gvks, owned)
	}
	return problems
}

// channelProblems checks one channel's entries and its upgrade graph: every entry names a
// bundle of the package once, skipRanges parse, and exactly one entry (the head, what a
// subscription installs) is neither replaced nor skipped by another.
func channelProblems(c bundle.CatalogChannel, bundles map[string]bundle.CatalogBundle, pkg string) []string {
	var problems []string
	problem := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if len(c.Entries) == 0 {
		problem("olm.channel %q has no entries", c.Name)
	}
	seen := map[string]bool{}
	superseded := map[string]bool{}
	for _, e := range c.Entries {
		if seen[e.Name] {
			problem("olm.channel %q: duplicate entry %q", c.Name, e.Name)
		}
		seen[e.Name] = true
		if b, ok := bundles[e.Name]; !ok || b.Package != pkg {
			problem("olm.channel %q: entry %q names no olm.bundle of package %q", c.Name, e.Name, pkg)
		}
		if e.SkipRange != "" {
			if _, err := semver.ParseRange(e.SkipRange); err != nil {
				problem("olm.channel %q: entry %q: skipRange %q is not a semver range: %v", c.Name, e.Name, e.SkipRange, err)
			}
		}
		for _, from := range append([]string{e.Replaces}, e.Skips...) {
			if from == e.Name {
				problem("olm.channel %q: entry %q replaces or skips itself", c.Name, e.Name)
			}
			if from != "" {
				superseded[from] = true
			}
		}
	}
	var heads []string
	for _, e := range c.Entries {
		if !superseded[e.Name] {
			heads = append(heads, e.Name)
		}
	}
	if len(c.Entries) > 0 && len(heads) != 1 {
		problem("olm.channel %q has %d heads %v, want exactly one (every other entry replaced or skipped by another)", c.Name, len(heads), heads)
	}
	return problems
}

func propertyValue(p bundle.Property, into any) error {
	raw, err := json.Marshal(p.Value)
	if err != nil {
		return err
	}
	return yaml.UnmarshalStrict(raw, into)
}

func readAnnotations(t *testing.T, dir string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, bundle.Dir, "metadata", "annotations.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := yaml.Unmarshal(data, &meta); err != nil {
		t.Fatal(err)
	}
	return meta.Annotations
}

func committedCatalog(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root(t), filepath.FromSlash(bundle.CatalogFile)))
	if err != nil {
		t.Fatalf("no catalog (run make bundle): %v", err)
	}
	return data
}

func TestTheCommittedCatalogServesTheBundle(t *testing.T) {
	if problems := validateCatalog(committedCatalog(t), loadCSV(t), readAnnotations(t, root(t))); len(problems) > 0 {
		t.Errorf("catalog/ is invalid:\n  %s", strings.Join(problems, "\n  "))
	}
}

// TestACatalogOfALaterReleaseIsValid generates a second release in two channels, replacing the
// first: the entry carries replaces and skipRange, and the catalog still validates.
func TestACatalogOfALaterReleaseIsValid(t *testing.T) {
	r := root(t)
	opts := bundle.Options{Version: "0.2.0", Replaces: "meshlift.v0.1.0", Channels: []string{"stable", "candidate"}, DefaultChannel: "candidate",
		OperatorImage: "example.com/meshlift:0.2.0", CreatedAt: "2027-01-15T00:00:00Z", BundleImage: "quay.io/example/meshlift-bundle:v0.2.0"}
	files, err := kustomize.GenerateBundle(r, opts)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := files.Write(dir); err != nil {
		t.Fatal(err)
	}
	var csv v1alpha1.ClusterServiceVersion
	if err := yaml.Unmarshal(files[bundle.Dir+"/manifests/meshlift.clusterserviceversion.yaml"], &csv); err != nil {
		t.Fatal(err)
	}
	catalog := files[bundle.CatalogFile]
	if problems := validateCatalog(catalog, &csv, readAnnotations(t, dir)); len(problems) > 0 {
		t.Errorf("the catalog of 0.2.0 is invalid:\n  %s", strings.Join(problems, "\n  "))
	}
	for _, want := range []string{"image: quay.io/example/meshlift-bundle:v0.2.0\n", "  replaces: meshlift.v0.1.0\n", "  skipRange: '>=0.0.0 <0.2.0'\n", "defaultChannel: candidate\n", "name: candidate\n"} {
		if !strings.Contains(string(catalog), want) {
			t.Errorf("the catalog lacks %q", want)
		}
	}
	if got, err := bundle.OptionsOf(dir); err != nil || got.BundleImage != opts.BundleImage {
		t.Errorf("OptionsOf reads bundle image %q (%v), want %q", got.BundleImage, err, opts.BundleImage)
	}
}

const olderBundle = `---
schema: olm.bundle
name: meshlift.v0.0.9
package: meshlift
image: docker.io/meshlift/meshlift-operator-bundle:v0.0.9
properties:
- type: olm.package
  value: {packageName: meshlift, version: 0.0.9}
`

func TestTheCatalogValidationCatchesBrokenCatalogs(t *testing.T) {
	committed := string(committedCatalog(t))
	csv := loadCSV(t)
	annotations := readAnnotations(t, root(t))
	replace := func(old, new string) func(string) string {
		return func(s string) string {
			if !strings.Contains(s, old) {
				t.Fatalf("the committed catalog has no %q to break", old)
			}
			return strings.Replace(s, old, new, 1)
		}
	}
	appendDoc := func(doc string) func(string) string { return func(s string) string { return s + doc } }
	twoEntries := replace("entries:\n- name: meshlift.v0.1.0\n", "entries:\n- name: meshlift.v0.1.0\n- name: meshlift.v0.0.9\n")
	for _, tc := range []struct {
		name    string
		corrupt func(string) string
		want    string
	}{
		{"a document of an unknown schema", appendDoc("---\nschema: olm.unknown\nname: x\n"), `unknown schema "olm.unknown"`},
		{"a field the schema does not have", replace("defaultChannel: stable", "defaultChannel: stable\ndefaultchannels: stable"), `unknown field "defaultchannels"`},
		{"a second olm.package", appendDoc("---\nschema: olm.package\nname: other\ndefaultChannel: stable\n"), "want exactly one olm.package, found 2"},
		{"a default channel that is no channel", replace("defaultChannel: stable", "defaultChannel: fast"), `defaultChannel "fast" names no olm.channel`},
		{"a channel entry without its bundle", appendDoc("---\nschema: olm.channel\npackage: meshlift\nname: candidate\nentries:\n- name: meshlift.v9.9.9\n"), `entry "meshlift.v9.9.9" names no olm.bundle of package "meshlift"`},
		{"a channel twice", appendDoc("---\nschema: olm.channel\npackage: meshlift\nname: stable\nentries:\n- name: meshlift.v0.1.0\n"), `duplicate olm.channel "stable"`},
		{"a bundle twice", appendDoc(strings.ReplaceAll(olderBundle, "0.0.9", "0.1.0")), `duplicate olm.bundle "meshlift.v0.1.0"`},
		{"a package version that is not the CSV's", replace("packageName: meshlift\n    version: 0.1.0", "packageName: meshlift\n    version: 0.1.1"), `olm.package property version "0.1.1", but the CSV is version "0.1.0"`},
		{"a gvk the CSV does not own", replace("kind: UpgradePlan\n", "kind: UpgradePlans\n"), "olm.gvk properties"},
		{"an invalid bundle image", replace("image: docker.io/meshlift/meshlift-operator-bundle:v0.1.0\nname:", "image: Docker.io/Meshlift Bundle\nname:"), "is not a valid image reference"},
		{"a skipRange that is no range", replace("skipRange: '>=0.0.0 <0.1.0'", "skipRange: 'from 0.0.0'"), `skipRange "from 0.0.0" is not a semver range`},
		{"two heads in a channel", func(s string) string { return twoEntries(s) + olderBundle }, `olm.channel "stable" has 2 heads [meshlift.v0.1.0 meshlift.v0.0.9]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			problems := validateCatalog([]byte(tc.corrupt(committed)), csv, annotations)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("problems %q, want one that says %q", problems, tc.want)
			}
		})
	}

	t.Run("an older bundle the head replaces is one graph, not two heads", func(t *testing.T) {
		chained := replace("- name: meshlift.v0.1.0\n", "- name: meshlift.v0.1.0\n  replaces: meshlift.v0.0.9\n")(twoEntries(committed)) + olderBundle
		if problems := validateCatalog([]byte(chained), csv, annotations); len(problems) > 0 {
			t.Errorf("problems %q, want none", problems)
		}
	})
}
