package krew

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzRenderedManifestsReadBack checks the hand-written YAML renderer against a YAML reader
// (sigs.k8s.io/yaml, the one krew uses): whatever the texts, the manifest reads back unchanged.
func FuzzRenderedManifestsReadBack(f *testing.F) {
	f.Add("Watch and steer Meshlift sidecar upgrades", Description, Caveats, "kubectl-meshlift")
	f.Add("yes", "a\n\n  b\n\n", "no final break", "./bin/kubectl-meshlift")
	f.Add("", " leading\n", "\n", "a: b")
	f.Add("#x", "tab\there\n", "\u2028 line separator\nx", "null")
	f.Add("'q'", "a\r\nb\n", "\u0085\n", "-")
	f.Fuzz(func(t *testing.T, shortDescription, description, caveats, bin string) {
		for _, text := range []string{shortDescription, description, caveats, bin} {
			if !utf8.ValidString(text) {
				t.Skip("input is not UTF-8: manifests are UTF-8 text, so only valid UTF-8 inputs are checked")
			}
		}
		m := goldenManifest(t)
		m.Spec.ShortDescription = shortDescription
		m.Spec.Description = description
		m.Spec.Caveats = caveats
		m.Spec.Platforms[0].Bin = bin
		m.Spec.Platforms[1].Selector.MatchLabels["os"] = shortDescription
		rendered := Render(m)
		parsed, err := ParseManifest(rendered)
		if err != nil {
			t.Fatalf("ParseManifest: %v\n%s", err, rendered)
		}
		if !reflect.DeepEqual(parsed, m) {
			t.Fatalf("read back\n%#v\nwant\n%#v\nfrom\n%s", parsed.Spec, m.Spec, rendered)
		}
	})
}

// FuzzManifestVersion checks that every version NewManifest can be given becomes a spec.version
// krew accepts (by krew's own parser), and that IsKrewVersion is never laxer than krew.
func FuzzManifestVersion(f *testing.F) {
	for _, seed := range []string{"v1.2.3", "1.2.3", "42b9926-dirty", "v1.2.3-4-g42b9926-dirty", "dev", "v1.2", "v01.2.3", "v1.2.3+a..b", "v1.0.0-"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, version string) {
		if IsKrewVersion(version) && !krewAcceptsVersion(version) {
			t.Errorf("IsKrewVersion(%q) but krew refuses it", version)
		}
		if CheckReleaseVersion(version) != nil {
			return
		}
		manifestVersion, err := ManifestVersion(version)
		if err != nil {
			t.Fatalf("ManifestVersion(%q): %v", version, err)
		}
		if !IsKrewVersion(manifestVersion) || !krewAcceptsVersion(manifestVersion) {
			t.Errorf("ManifestVersion(%q) = %q, which krew refuses", version, manifestVersion)
		}
		if !IsDevVersion(manifestVersion) && strings.TrimPrefix(manifestVersion, "v") != strings.TrimPrefix(version, "v") {
			t.Errorf("ManifestVersion(%q) = %q changed a semantic version", version, manifestVersion)
		}
	})
}
