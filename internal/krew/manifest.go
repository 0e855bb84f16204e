// Package krew owns how the kubectl plugin kubectl-meshlift is distributed through krew: the
// release archives (one deterministic .tar.gz per os/arch), the krew plugin manifest that names
// them, and the checks that a manifest is one krew accepts and agrees with the archives it names.
// It does not compile anything; hack/plugin-dist builds the binaries and calls this package.
package krew

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

const (
	// APIVersion and Kind identify a krew plugin manifest.
	APIVersion = "krew.googlecontainertools.github.com/v1alpha2"
	Kind       = "Plugin"

	// PluginName is the plugin's name in the krew index: `kubectl krew install meshlift`,
	// invoked as `kubectl meshlift`. The manifest file is PluginName + ".yaml".
	PluginName = "meshlift"
	// ManifestFile is the manifest's file name next to the archives.
	ManifestFile = PluginName + ".yaml"
	// BinaryName is the plugin executable inside every archive.
	BinaryName = "kubectl-meshlift"

	// DefaultBaseURL is where the archives of a release are downloaded from: a GitHub release
	// whose tag is the version, <DefaultBaseURL>/<version>/<archive>.
	DefaultBaseURL = "https://github.com/meshlift/meshlift/releases/download"
	// Homepage is the manifest's homepage.
	Homepage = "https://github.com/meshlift/meshlift"

	// MaxShortDescription is the longest shortDescription Validate accepts; longer ones are cut
	// off in `kubectl krew search`.
	MaxShortDescription = 50
)

// Texts of the manifest, shown by `kubectl krew info meshlift` and after installation.
const (
	ShortDescription = "Watch and steer Meshlift sidecar upgrades"
	Description      = `Shows and steers Meshlift's hot upgrades of mesh sidecars from kubectl.
"status PLAN -w" follows an UpgradePlan to its end: phase, progress and the
pods in flight. "get" lists UpgradePlans, SidecarVersions and MeshServices.
"pause", "resume", "abort", "rollback" and "retry" act on a running plan.
"proxy-status" shows each meshed pod's proxy: version, active slot,
readiness and certificate expiry. "check" is a pre-flight check of the
Meshlift installation.
`
	Caveats = `This plugin needs the Meshlift operator (its CRDs and controller) installed
in the cluster; see https://github.com/meshlift/meshlift for how to install it.
`
)

// Target is an os/arch pair the plugin is released for, spelled as GOOS and GOARCH, which is
// also what krew's selectors match.
type Target struct {
	OS   string
	Arch string
}

func (t Target) String() string { return t.OS + "/" + t.Arch }

// Targets are the platforms every release has an archive for, in manifest order.
var Targets = []Target{
	{OS: "linux", Arch: "amd64"},
	{OS: "linux", Arch: "arm64"},
	{OS: "darwin", Arch: "amd64"},
	{OS: "darwin", Arch: "arm64"},
}

// targetList is Targets for messages: "linux/amd64, linux/arm64, ...".
func targetList() string {
	names := make([]string, 0, len(Targets))
	for _, target := range Targets {
		names = append(names, target.String())
	}
	return strings.Join(names, ", ")
}

// Manifest is a krew plugin manifest (apiVersion krew.googlecontainertools.github.com/v1alpha2).
type Manifest struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	Spec       Spec     `json:"spec"`
}

// Metadata names the plugin.
type Metadata struct {
	Name string `json:"name"`
}

// Spec describes the plugin and how to install it on each platform.
type Spec struct {
	Version          string     `json:"version"`
	Homepage         string     `json:"homepage,omitempty"`
	ShortDescription string     `json:"shortDescription"`
	Description      string     `json:"description,omitempty"`
	Caveats          string     `json:"caveats,omitempty"`
	Platforms        []Platform `json:"platforms"`
}

// Platform is how the plugin is installed on the platforms its selector matches.
type Platform struct {
	Selector Selector `json:"selector"`
	URI      string   `json:"uri"`
	SHA256   string   `json:"sha256"`
	// Files is left empty by this package (krew then installs the whole archive); it is here so
	// that a manifest using it parses and Verify can refuse it plainly.
	Files []FileOperation `json:"files,omitempty"`
	Bin   string          `json:"bin"`
}

// Selector is the label selector krew matches against {os: GOOS, arch: GOARCH}.
type Selector struct {
	MatchLabels      map[string]string     `json:"matchLabels,omitempty"`
	MatchExpressions []SelectorRequirement `json:"matchExpressions,omitempty"`
}

// SelectorRequirement is one matchExpressions entry.
type SelectorRequirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

// FileOperation copies files matching From in the archive to To in the installation directory.
type FileOperation struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Archive is one release archive as the manifest refers to it.
type Archive struct {
	Target Target
	// FileName is the archive's base name, as ArchiveName returns it.
	FileName string
	// SHA256 is the lowercase hex sha256 of the archive file.
	SHA256 string
}

// ManifestOptions are the inputs of NewManifest.
type ManifestOptions struct {
	// Version is the release version as it was given (a tag such as v1.2.0, or a `git describe`
	// such as 42b9926-dirty); it names the archives and is the tag in their URLs.
	Version string
	// BaseURL replaces DefaultBaseURL when set.
	BaseURL string
	// Archives are the release's archives, one per target.
	Archives []Archive
}

// validReleaseVersion is what a version may look like: it becomes part of file names and URLs.
var validReleaseVersion = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)

// ArchiveName is the file name of version's archive for target:
// kubectl-meshlift_<version>_<os>_<arch>.tar.gz.
func ArchiveName(version string, target Target) string {
	return fmt.Sprintf("%s_%s_%s_%s.tar.gz", BinaryName, version, target.OS, target.Arch)
}

// CheckReleaseVersion returns an error when version cannot name archives and release URLs.
func CheckReleaseVersion(version string) error {
	if !validReleaseVersion.MatchString(version) {
		return fmt.Errorf("invalid version %q: a release version is up to 128 letters, digits, '.', '_', '+' and '-', starting with a letter or digit", version)
	}
	return nil
}

// semverPattern is Semantic Versioning 2.0.0 (semver.org) without a prefix: no leading zeros in
// numeric identifiers, dot-separated pre-release and build identifiers.
var semverPattern = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)` +
	`(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?` +
	`(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

// IsKrewVersion reports whether version is what krew accepts as spec.version: a semantic
// version with a leading "v".
func IsKrewVersion(version string) bool {
	rest, ok := strings.CutPrefix(version, "v")
	return ok && semverPattern.MatchString(rest)
}

// devVersionPrefix is the spec.version of a build that is not a semantic version: the lowest
// version krew can order, marked as a development pre-release, with the original version kept
// as build metadata.
const devVersionPrefix = "v0.0.0-dev+"

// ManifestVersion is the spec.version for a release version. A semantic version, with or without
// a "v", is used as is (with the "v" krew requires). Anything else, such as the `git describe`
// output 42b9926-dirty of an untagged build, becomes v0.0.0-dev+42b9926-dirty: krew accepts it,
// any real release sorts above it, and the original stays readable in the build metadata.
func ManifestVersion(version string) (string, error) {
	if version == "" {
		return "", errors.New("the version is empty")
	}
	if semverPattern.MatchString(strings.TrimPrefix(version, "v")) {
		return "v" + strings.TrimPrefix(version, "v"), nil
	}
	// Build metadata is dot-separated identifiers of [0-9A-Za-z-]: every other character
	// separates identifiers.
	identifiers := strings.FieldsFunc(version, func(r rune) bool {
		return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-')
	})
	if len(identifiers) == 0 {
		return "", fmt.Errorf("version %q has no letters or digits to keep as build metadata", version)
	}
	return devVersionPrefix + strings.Join(identifiers, "."), nil
}

// IsDevVersion reports whether a spec.version came from a version that is not semantic.
func IsDevVersion(manifestVersion string) bool {
	return strings.HasPrefix(manifestVersion, devVersionPrefix)
}

// NewManifest returns the plugin manifest of a release: one platform per archive, in the order of
// Targets, each downloading <base URL>/<version>/<archive> and running BinaryName from it.
func NewManifest(opts ManifestOptions) (Manifest, error) {
	if err := CheckReleaseVersion(opts.Version); err != nil {
		return Manifest{}, err
	}
	specVersion, err := ManifestVersion(opts.Version)
	if err != nil {
		return Manifest{}, err
	}
	baseURL := strings.TrimSuffix(opts.BaseURL, "/")
	if baseURL == "" {
		baseURL = DefaultBaseURL
	}
	byTarget := map[Target]Archive{}
	for _, archive := range opts.Archives {
		if _, seen := byTarget[archive.Target]; seen {
			return Manifest{}, fmt.Errorf("two archives for %s", archive.Target)
		}
		byTarget[archive.Target] = archive
	}
	manifest := Manifest{
		APIVersion: APIVersion,
		Kind:       Kind,
		Metadata:   Metadata{Name: PluginName},
		Spec: Spec{
			Version:          specVersion,
			Homepage:         Homepage,
			ShortDescription: ShortDescription,
			Description:      Description,
			Caveats:          Caveats,
		},
	}
	for _, target := range Targets {
		archive, ok := byTarget[target]
		if !ok {
			return Manifest{}, fmt.Errorf("no archive for %s", target)
		}
		delete(byTarget, target)
		manifest.Spec.Platforms = append(manifest.Spec.Platforms, Platform{
			Selector: Selector{MatchLabels: map[string]string{"os": target.OS, "arch": target.Arch}},
			URI:      baseURL + "/" + opts.Version + "/" + archive.FileName,
			SHA256:   archive.SHA256,
			Bin:      BinaryName,
		})
	}
	if len(byTarget) > 0 {
		var extra []string
		for target := range byTarget {
			extra = append(extra, target.String())
		}
		slices.Sort(extra)
		return Manifest{}, fmt.Errorf("archives for %s, which are not release targets (%s)", strings.Join(extra, ", "), targetList())
	}
	if err := Validate(manifest); err != nil {
		return Manifest{}, fmt.Errorf("the generated manifest is invalid: %w", err)
	}
	return manifest, nil
}
