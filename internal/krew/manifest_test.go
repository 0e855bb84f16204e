package krew

import (
	"strings"
	"testing"

	k8sversion "k8s.io/apimachinery/pkg/util/version"
)

// krewAcceptsVersion is krew's own check of spec.version (a leading "v", then the semantic
// version parser of k8s.io/apimachinery), the reference IsKrewVersion must not be laxer than.
func krewAcceptsVersion(version string) bool {
	if !strings.HasPrefix(version, "v") {
		return false
	}
	_, err := k8sversion.ParseSemantic(version)
	return err == nil
}

func TestManifestVersion(t *testing.T) {
	tests := []struct {
		name    string
		version string
		want    string
	}{
		{name: "a release tag is used as is", version: "v1.2.3", want: "v1.2.3"},
		{name: "a semantic version without a v gets one", version: "1.2.3", want: "v1.2.3"},
		{name: "pre-release and build metadata are kept", version: "v1.2.3-rc.1+build.5", want: "v1.2.3-rc.1+build.5"},
		{name: "a describe past a tag is a semantic pre-release", version: "v1.2.3-4-g42b9926-dirty", want: "v1.2.3-4-g42b9926-dirty"},
		{name: "an untagged describe becomes a dev version", version: "42b9926-dirty", want: "v0.0.0-dev+42b9926-dirty"},
		{name: "the Makefile's fallback becomes a dev version", version: "dev", want: "v0.0.0-dev+dev"},
		{name: "a version with two numbers is not semantic", version: "v1.2", want: "v0.0.0-dev+v1.2"},
		{name: "a leading zero is not semantic", version: "v01.2.3", want: "v0.0.0-dev+v01.2.3"},
		{name: "characters build metadata cannot hold separate identifiers", version: "release_2026..1", want: "v0.0.0-dev+release.2026.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ManifestVersion(tt.version)
			if err != nil {
				t.Fatalf("ManifestVersion(%q): %v", tt.version, err)
			}
			if got != tt.want {
				t.Errorf("ManifestVersion(%q) = %q, want %q", tt.version, got, tt.want)
			}
			if !IsKrewVersion(got) || !krewAcceptsVersion(got) {
				t.Errorf("%q: IsKrewVersion %v, krew's own check %v; want both true", got, IsKrewVersion(got), krewAcceptsVersion(got))
			}
			if IsDevVersion(got) == (got == tt.version || got == "v"+tt.version) {
				t.Errorf("IsDevVersion(%q) = %v for version %q", got, IsDevVersion(got), tt.version)
			}
		})
	}
	for _, refused := range []string{"", "+", "..."} {
		if got, err := ManifestVersion(refused); err == nil {
			t.Errorf("ManifestVersion(%q) = %q, want an error", refused, got)
		}
	}
}

func TestNewManifest(t *testing.T) {
	digest := strings.Repeat("ab", 32)
	archives := func(version string) []Archive {
		var all []Archive
		for _, target := range Targets {
			all = append(all, Archive{Target: target, FileName: ArchiveName(version, target), SHA256: digest})
		}
		return all
	}

	t.Run("platforms follow the targets and download from the release of the version", func(t *testing.T) {
		m, err := NewManifest(ManifestOptions{Version: "v1.2.3", Archives: archives("v1.2.3")})
		if err != nil {
			t.Fatal(err)
		}
		for i, target := range Targets {
			platform := m.Spec.Platforms[i]
			wantURI := "https://github.com/meshlift/meshlift/releases/download/v1.2.3/kubectl-meshlift_v1.2.3_" + target.OS + "_" + target.Arch + ".tar.gz"
			if platform.URI != wantURI || platform.SHA256 != digest || platform.Bin != "kubectl-meshlift" || platform.Files != nil {
				t.Errorf("platform %d = %+v, want uri %s, the digest and bin kubectl-meshlift", i, platform, wantURI)
			}
			if len(platform.Selector.MatchLabels) != 2 || platform.Selector.MatchLabels["os"] != target.OS || platform.Selector.MatchLabels["arch"] != target.Arch {
				t.Errorf("platform %d selects %v, want os %s and arch %s", i, platform.Selector.MatchLabels, target.OS, target.Arch)
			}
		}
	})

	t.Run("a base URL replaces the GitHub releases and keeps the version's folder", func(t *testing.T) {
		m, err := NewManifest(ManifestOptions{Version: "42b9926-dirty", BaseURL: "https://example.com/meshlift/", Archives: archives("42b9926-dirty")})
		if err != nil {
			t.Fatal(err)
		}
		if want := "https://example.com/meshlift/42b9926-dirty/kubectl-meshlift_42b9926-dirty_linux_amd64.tar.gz"; m.Spec.Platforms[0].URI != want {
			t.Errorf("uri = %s, want %s", m.Spec.Platforms[0].URI, want)
		}
		if m.Spec.Version != "v0.0.0-dev+42b9926-dirty" {
			t.Errorf("version = %s, want v0.0.0-dev+42b9926-dirty", m.Spec.Version)
		}
	})

	refusals := []struct {
		name    string
		opts    ManifestOptions
		wantErr string
	}{
		{name: "a missing target", opts: ManifestOptions{Version: "v1.0.0", Archives: archives("v1.0.0")[:3]}, wantErr: "no archive for darwin/arm64"},
		{name: "a second archive for a target", opts: ManifestOptions{Version: "v1.0.0", Archives: append(archives("v1.0.0"), archives("v1.0.0")[0])}, wantErr: "two archives for linux/amd64"},
		{name: "an archive for another platform", opts: ManifestOptions{Version: "v1.0.0", Archives: append(archives("v1.0.0"), Archive{Target: Target{OS: "windows", Arch: "amd64"}, FileName: "x.tar.gz", SHA256: digest})}, wantErr: "archives for windows/amd64, which are not release targets"},
		{name: "a version that cannot be part of a file name", opts: ManifestOptions{Version: "v1/2", Archives: archives("v1/2")}, wantErr: `invalid version "v1/2"`},
		{name: "a digest krew would refuse", opts: ManifestOptions{Version: "v1.0.0", Archives: withDigest(archives("v1.0.0"), "ABC")}, wantErr: `the generated manifest is invalid: spec.platforms[0]: sha256 "ABC" is not 64 lowercase hex digits`},
	}
	for _, tt := range refusals {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			_, err := NewManifest(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewManifest error = %v, want one saying %q", err, tt.wantErr)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	valid := func() Manifest {
		var archives []Archive
		for _, target := range Targets {
			archives = append(archives, Archive{Target: target, FileName: ArchiveName("v1.0.0", target), SHA256: strings.Repeat("0f", 32)})
		}
		m, err := NewManifest(ManifestOptions{Version: "v1.0.0", Archives: archives})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if err := Validate(valid()); err != nil {
		t.Fatalf("the generated manifest is invalid: %v", err)
	}
	tests := []struct {
		name    string
		spoil   func(m *Manifest)
		wantErr string
	}{
		{name: "another apiVersion", spoil: func(m *Manifest) { m.APIVersion = "krew.googlecontainertools.github.com/v1alpha1" }, wantErr: `apiVersion is "krew.googlecontainertools.github.com/v1alpha1"`},
		{name: "another kind", spoil: func(m *Manifest) { m.Kind = "Receipt" }, wantErr: `kind is "Receipt"`},
		{name: "a name with a dot", spoil: func(m *Manifest) { m.Metadata.Name = "mesh.lift" }, wantErr: `metadata.name "mesh.lift" is not a plugin name krew accepts`},
		{name: "a Windows device name", spoil: func(m *Manifest) { m.Metadata.Name = "com1" }, wantErr: `metadata.name "com1" is not a plugin name krew accepts`},
		{name: "another plugin's name", spoil: func(m *Manifest) { m.Metadata.Name = "mesh" }, wantErr: `metadata.name is "mesh", want "meshlift"`},
		{name: "a version without v", spoil: func(m *Manifest) { m.Spec.Version = "1.0.0" }, wantErr: `spec.version "1.0.0" is not a semantic version with a leading "v"`},
		{name: "a version with two numbers", spoil: func(m *Manifest) { m.Spec.Version = "v1.0" }, wantErr: `spec.version "v1.0"`},
		{name: "no shortDescription", spoil: func(m *Manifest) { m.Spec.ShortDescription = "" }, wantErr: "spec.shortDescription is empty"},
		{name: "a two-line shortDescription", spoil: func(m *Manifest) { m.Spec.ShortDescription = "Watch\nsteer" }, wantErr: "has a line break"},
		{name: "a shortDescription of 51 characters", spoil: func(m *Manifest) { m.Spec.ShortDescription = strings.Repeat("é", 51) }, wantErr: "has 51 characters, more than 50"},
		{name: "no description", spoil: func(m *Manifest) { m.Spec.Description = " \n" }, wantErr: "spec.description is empty"},
		{name: "no platforms", spoil: func(m *Manifest) { m.Spec.Platforms = nil }, wantErr: "spec.platforms is empty"},
		{name: "an uppercase digest", spoil: func(m *Manifest) { m.Spec.Platforms[1].SHA256 = strings.Repeat("0F", 32) }, wantErr: "spec.platforms[1]: sha256 \"0F0F"},
		{name: "a file URI", spoil: func(m *Manifest) { m.Spec.Platforms[0].URI = "file:///tmp/a.tar.gz" }, wantErr: `spec.platforms[0]: uri "file:///tmp/a.tar.gz" is not an http(s) URL`},
		{name: "no bin", spoil: func(m *Manifest) { m.Spec.Platforms[2].Bin = "" }, wantErr: "spec.platforms[2]: bin is empty"},
		{name: "a bin outside the plugin directory", spoil: func(m *Manifest) { m.Spec.Platforms[2].Bin = "../kubectl" }, wantErr: `bin "../kubectl" is not a path inside`},
		{name: "an empty files list", spoil: func(m *Manifest) { m.Spec.Platforms[0].Files = []FileOperation{} }, wantErr: "files is empty"},
		{name: "a file without a destination", spoil: func(m *Manifest) { m.Spec.Platforms[0].Files = []FileOperation{{From: "LICENSE"}} }, wantErr: "files[0] needs both from and to"},
		{name: "a label krew does not match", spoil: func(m *Manifest) { m.Spec.Platforms[0].Selector.MatchLabels["distro"] = "debian" }, wantErr: `selector label "distro" is not supported`},
		{name: "an os-only selector", spoil: func(m *Manifest) { delete(m.Spec.Platforms[3].Selector.MatchLabels, "arch") }, wantErr: "does not name both os and arch"},
		{name: "an empty selector", spoil: func(m *Manifest) { m.Spec.Platforms[0].Selector = Selector{} }, wantErr: "spec.platforms[0]: selector is empty"},
		{
			name: "a selector with expressions",
			spoil: func(m *Manifest) {
				m.Spec.Platforms[0].Selector.MatchExpressions = []SelectorRequirement{{Key: "os", Operator: "In", Values: []string{"linux"}}}
			},
			wantErr: "selector uses matchExpressions",
		},
		{name: "a platform for windows", spoil: func(m *Manifest) { m.Spec.Platforms[0].Selector.MatchLabels["os"] = "windows" }, wantErr: "a platform for windows/amd64, which is not a release target"},
	}
	for _, tt := range tests {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			m := valid()
			tt.spoil(&m)
			err := Validate(m)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate error = %v, want one saying %q", err, tt.wantErr)
			}
		})
	}
}

func withDigest(archives []Archive, digest string) []Archive {
	for i := range archives {
		archives[i].SHA256 = digest
	}
	return archives
}
