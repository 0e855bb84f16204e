package krew

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"debug/macho"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

var (
	// safePluginName is the plugin names krew accepts (its index validation).
	safePluginName = regexp.MustCompile(`^[\w-]+$`)
	// validSHA256 is how krew wants a digest written.
	validSHA256 = regexp.MustCompile(`^[a-f0-9]{64}$`)
	// windowsReservedNames cannot be file names on Windows, so krew refuses them as plugin names.
	windowsReservedNames = []string{"CON", "PRN", "AUX", "NUL",
		"COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8", "COM9",
		"LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9"}
)

// Validate checks a manifest on its own: what krew checks before it installs a plugin
// (apiVersion, kind, name, a one-line shortDescription, a "v"-prefixed semantic version, and per
// platform uri, sha256, bin, files and a selector on os and arch only), and what this project
// requires of its manifest besides: the name meshlift, a description, a shortDescription of at
// most MaxShortDescription characters, https or http URIs, and platforms whose selectors are
// matchLabels {os, arch} covering each of Targets exactly once. It reports every problem found.
func Validate(m Manifest) error {
	var problems []error
	problem := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }

	if m.APIVersion != APIVersion {
		problem("apiVersion is %q, want %q", m.APIVersion, APIVersion)
	}
	if m.Kind != Kind {
		problem("kind is %q, want %q", m.Kind, Kind)
	}
	switch name := m.Metadata.Name; {
	case !safePluginName.MatchString(name) || slices.ContainsFunc(windowsReservedNames, func(reserved string) bool { return strings.EqualFold(reserved, name) }):
		problem("metadata.name %q is not a plugin name krew accepts (letters, digits, '_' and '-', not a Windows device name)", name)
	case name != PluginName:
		problem("metadata.name is %q, want %q (the manifest is %s)", name, PluginName, ManifestFile)
	}
	if !IsKrewVersion(m.Spec.Version) {
		problem("spec.version %q is not a semantic version with a leading \"v\" (such as v1.2.3)", m.Spec.Version)
	}
	switch short := m.Spec.ShortDescription; {
	case short == "":
		problem("spec.shortDescription is empty")
	case strings.ContainsAny(short, "\r\n"):
		problem("spec.shortDescription %q has a line break", short)
	case utf8.RuneCountInString(short) > MaxShortDescription:
		problem("spec.shortDescription %q has %d characters, more than %d", short, utf8.RuneCountInString(short), MaxShortDescription)
	}
	if strings.TrimSpace(m.Spec.Description) == "" {
		problem("spec.description is empty")
	}
	if len(m.Spec.Platforms) == 0 {
		problem("spec.platforms is empty")
	}
	covered := map[Target]int{}
	for i, platform := range m.Spec.Platforms {
		for _, err := range validatePlatform(platform) {
			problem("spec.platforms[%d]: %w", i, err)
		}
		if target, ok := platformTarget(platform); ok {
			covered[target]++
		}
	}
	for _, target := range Targets {
		switch count := covered[target]; {
		case count == 0:
			problem("no platform for %s", target)
		case count > 1:
			problem("%d platforms for %s, want one", count, target)
		}
	}
	for target := range covered {
		if !slices.Contains(Targets, target) {
			problem("a platform for %s, which is not a release target (%s)", target, targetList())
		}
	}
	return errors.Join(problems...)
}

// validatePlatform returns the problems of one platform.
func validatePlatform(platform Platform) []error {
	var problems []error
	problem := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }

	if platform.URI == "" {
		problem("uri is empty")
	} else if uri, err := url.Parse(platform.URI); err != nil || (uri.Scheme != "https" && uri.Scheme != "http") || uri.Host == "" {
		problem("uri %q is not an http(s) URL", platform.URI)
	}
	if !validSHA256.MatchString(platform.SHA256) {
		problem("sha256 %q is not 64 lowercase hex digits", platform.SHA256)
	}
	if platform.Bin == "" {
		problem("bin is empty")
	} else if _, err := binEntryName(platform.Bin); err != nil {
		problem("%w", err)
	}
	if platform.Files != nil && len(platform.Files) == 0 {
		problem("files is empty: leave it out to install the whole archive")
	}
	for j, file := range platform.Files {
		if file.From == "" || file.To == "" {
			problem("files[%d] needs both from and to", j)
		}
	}

	selector := platform.Selector
	if selector.MatchLabels == nil && selector.MatchExpressions == nil {
		problem("selector is empty")
	}
	if selector.MatchLabels != nil && len(selector.MatchLabels) == 0 {
		problem("selector.matchLabels is present but empty")
	}
	if selector.MatchExpressions != nil && len(selector.MatchExpressions) == 0 {
		problem("selector.matchExpressions is present but empty")
	}
	for label := range selector.MatchLabels {
		if label != "os" && label != "arch" {
			problem("selector label %q is not supported (krew matches os and arch only)", label)
		}
	}
	for _, requirement := range selector.MatchExpressions {
		if requirement.Key != "os" && requirement.Key != "arch" {
			problem("selector expression key %q is not supported (krew matches os and arch only)", requirement.Key)
		}
	}
	if len(selector.MatchExpressions) > 0 {
		problem("selector uses matchExpressions: this project's platforms each select one os/arch with matchLabels")
	} else if selector.MatchLabels["os"] == "" || selector.MatchLabels["arch"] == "" {
		problem("selector.matchLabels %v does not name both os and arch", selector.MatchLabels)
	}
	return problems
}

// platformTarget is the os/arch a platform's matchLabels select.
func platformTarget(platform Platform) (Target, bool) {
	labels := platform.Selector.MatchLabels
	if labels["os"] == "" || labels["arch"] == "" || len(platform.Selector.MatchExpressions) > 0 {
		return Target{}, false
	}
	return Target{OS: labels["os"], Arch: labels["arch"]}, true
}

// binEntryName is the archive entry krew runs for bin, given that the manifest has no files and
// krew installs the archive as it is.
func binEntryName(bin string) (string, error) {
	name := path.Clean(strings.TrimPrefix(bin, "./"))
	if err := checkEntryName(name); err != nil {
		return "", fmt.Errorf("bin %q is not a path inside the installation directory", bin)
	}
	return name, nil
}

// VerifyDir reads dir/meshlift.yaml and verifies it against the archives in dir (see Verify).
func VerifyDir(dir string) (Manifest, []string, error) {
	manifestPath := filepath.Join(dir, ManifestFile)
	data, err := os.ReadFile(manifestPath)
	if err != nil {
		return Manifest{}, nil, fmt.Errorf("failed to read the plugin manifest: %w", err)
	}
	manifest, err := ParseManifest(data)
	if err != nil {
		return Manifest{}, nil, fmt.Errorf("%s: %w", manifestPath, err)
	}
	warnings, err := Verify(manifest, dir)
	if err != nil {
		return manifest, warnings, fmt.Errorf("%s does not match the archives in %s:\n%w", manifestPath, dir, err)
	}
	return manifest, warnings, nil
}

// Verify checks that a manifest is valid (Validate) and that every platform's archive is in dir
// under the base name of its uri, has the manifest's sha256, and contains bin as a regular,
// executable file compiled for the platform's os and arch. It returns every problem found, and
// warnings for what krew accepts but the krew index does not (no license file in an archive).
func Verify(m Manifest, dir string) (warnings []string, err error) {
	var problems []error
	if err := Validate(m); err != nil {
		problems = append(problems, err)
	}
	for i, platform := range m.Spec.Platforms {
		platformWarnings, err := verifyPlatformArchive(platform, dir)
		if err != nil {
			problems = append(problems, fmt.Errorf("spec.platforms[%d] (%s): %w", i, platformLabel(platform), err))
		}
		warnings = append(warnings, platformWarnings...)
	}
	return warnings, errors.Join(problems...)
}

func platformLabel(platform Platform) string {
	if target, ok := platformTarget(platform); ok {
		return target.String()
	}
	return fmt.Sprintf("selector %v", platform.Selector.MatchLabels)
}

// verifyPlatformArchive checks the archive one platform names.
func verifyPlatformArchive(platform Platform, dir string) (warnings []string, err error) {
	uri, err := url.Parse(platform.URI)
	if err != nil || uri.Path == "" {
		return nil, fmt.Errorf("uri %q names no archive", platform.URI)
	}
	fileName := path.Base(uri.Path)
	if !strings.HasSuffix(fileName, ".tar.gz") {
		return nil, fmt.Errorf("uri %q does not name a .tar.gz archive", platform.URI)
	}
	if target, ok := platformTarget(platform); ok && !strings.HasSuffix(fileName, "_"+target.OS+"_"+target.Arch+".tar.gz") {
		return nil, fmt.Errorf("archive %s is not named for %s (want a name ending in _%s_%s.tar.gz)", fileName, target, target.OS, target.Arch)
	}
	data, err := os.ReadFile(filepath.Join(dir, fileName))
	if err != nil {
		return nil, fmt.Errorf("the archive of uri %q: %w", platform.URI, err)
	}
	sum := sha256.Sum256(data)
	if actual := hex.EncodeToString(sum[:]); actual != platform.SHA256 {
		return nil, fmt.Errorf("sha256 mismatch: the manifest says %s, %s has %s", platform.SHA256, fileName, actual)
	}
	if platform.Files != nil {
		return nil, errors.New("the platform lists files: this verifier checks manifests that install the whole archive")
	}
	entries, err := ReadArchive(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fileName, err)
	}
	binName, err := binEntryName(platform.Bin)
	if err != nil {
		return nil, err
	}

	var problems []error
	var binary *Entry
	hasLicense := false
	for i, entry := range entries {
		if checkEntryName(strings.TrimSuffix(entry.Name, "/")) != nil {
			problems = append(problems, fmt.Errorf("%s has an entry %q outside the installation directory", fileName, entry.Name))
		}
		if path.Clean(entry.Name) == binName {
			if binary != nil {
				problems = append(problems, fmt.Errorf("%s has two entries for %s", fileName, binName))
			}
			binary = &entries[i]
		}
		if base := strings.ToUpper(path.Base(entry.Name)); strings.HasPrefix(base, "LICENSE") || strings.HasPrefix(base, "LICENCE") || strings.HasPrefix(base, "COPYING") {
			hasLicense = true
		}
	}
	switch {
	case binary == nil:
		problems = append(problems, fmt.Errorf("%s has no %s (bin), only %s", fileName, binName, entryNames(entries)))
	case binary.Typeflag != tar.TypeReg:
		problems = append(problems, fmt.Errorf("%s in %s is not a regular file (tar type %q)", binName, fileName, binary.Typeflag))
	case binary.Mode&0o100 == 0:
		problems = append(problems, fmt.Errorf("%s in %s is not executable (mode %04o)", binName, fileName, binary.Mode))
	default:
		if target, ok := platformTarget(platform); ok {
			if err := checkExecutableFormat(binary.Content, target); err != nil {
				problems = append(problems, fmt.Errorf("%s in %s: %w", binName, fileName, err))
			}
		}
	}
	if !hasLicense {
		warnings = append(warnings, fmt.Sprintf("%s has no license file: the krew index requires one in every archive", fileName))
	}
	return warnings, errors.Join(problems...)
}

func entryNames(entries []Entry) string {
	if len(entries) == 0 {
		return "no entries"
	}
	names := make([]string, 0, len(entries))
	for _, entry := range entries {
		names = append(names, entry.Name)
	}
	return strings.Join(names, ", ")
}

var (
	elfMachines   = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	machoCPUTypes = map[string]macho.Cpu{"amd64": macho.CpuAmd64, "arm64": macho.CpuArm64}
)

// checkExecutableFormat returns an error unless content is an executable for target: an ELF
// executable for linux, a Mach-O executable for darwin, for the target's architecture. A binary
// that was built for the wrong platform or packed into the wrong archive fails here.
func checkExecutableFormat(content []byte, target Target) error {
	switch target.OS {
	case "linux":
		wantMachine, known := elfMachines[target.Arch]
		if !known {
			return nil
		}
		file, err := elf.NewFile(bytes.NewReader(content))
		if err != nil {
			return fmt.Errorf("not an ELF file, as a %s executable is: %w", target, err)
		}
		if file.Machine != wantMachine || file.Class != elf.ELFCLASS64 {
			return fmt.Errorf("an ELF file for %v (%v), not for %s", file.Machine, file.Class, target)
		}
		if file.Type != elf.ET_EXEC && file.Type != elf.ET_DYN {
			return fmt.Errorf("an ELF file of type %v, not an executable", file.Type)
		}
	case "darwin":
		wantCPU, known := machoCPUTypes[target.Arch]
		if !known {
			return nil
		}
		file, err := macho.NewFile(bytes.NewReader(content))
		if err != nil {
			return fmt.Errorf("not a Mach-O file, as a %s executable is: %w", target, err)
		}
		if file.Cpu != wantCPU {
			return fmt.Errorf("a Mach-O file for %v, not for %s", file.Cpu, target)
		}
		if file.Type != macho.TypeExec {
			return fmt.Errorf("a Mach-O file of type %v, not an executable", file.Type)
		}
	}
	return nil
}
