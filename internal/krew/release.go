package krew

import (
	"fmt"
	"os"
	"path/filepath"
)

// Release is what WriteRelease packs: compiled plugins, one per target, and the files that go
// into every archive next to the binary.
type Release struct {
	// Version is the release version as given (see ManifestOptions.Version).
	Version string
	// BaseURL replaces DefaultBaseURL when set.
	BaseURL string
	// Binaries maps each of Targets to the path of the plugin compiled for it.
	Binaries map[Target]string
	// Extras are put into every archive next to the binary, with RegularMode: the license.
	Extras []File
}

// WriteRelease writes the archive of every target (see ArchiveName) and the manifest naming them
// (ManifestFile) into dir, and returns the manifest. Archives of earlier releases in dir are
// removed first, so that dir holds one release.
func WriteRelease(dir string, release Release) (Manifest, error) {
	if err := CheckReleaseVersion(release.Version); err != nil {
		return Manifest{}, err
	}
	for _, target := range Targets {
		if _, ok := release.Binaries[target]; !ok {
			return Manifest{}, fmt.Errorf("no binary for %s", target)
		}
	}
	if len(release.Binaries) != len(Targets) {
		return Manifest{}, fmt.Errorf("binaries for %d platforms, want exactly %s", len(release.Binaries), targetList())
	}
	for _, extra := range release.Extras {
		if extra.Name == BinaryName {
			return Manifest{}, fmt.Errorf("an extra file is named %s like the plugin binary", BinaryName)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Manifest{}, fmt.Errorf("failed to create %s: %w", dir, err)
	}
	stale, err := filepath.Glob(filepath.Join(dir, BinaryName+"_*.tar.gz"))
	if err != nil {
		return Manifest{}, fmt.Errorf("failed to list earlier archives in %s: %w", dir, err)
	}
	for _, archivePath := range stale {
		if err := os.Remove(archivePath); err != nil {
			return Manifest{}, fmt.Errorf("failed to remove the earlier archive %s: %w", archivePath, err)
		}
	}

	var archives []Archive
	for _, target := range Targets {
		binary, err := os.ReadFile(release.Binaries[target])
		if err != nil {
			return Manifest{}, fmt.Errorf("failed to read the %s binary: %w", target, err)
		}
		files := []File{{Name: BinaryName, Mode: ExecutableMode, Content: binary}}
		for _, extra := range release.Extras {
			files = append(files, File{Name: extra.Name, Mode: RegularMode, Content: extra.Content})
		}
		fileName := ArchiveName(release.Version, target)
		digest, err := WriteArchiveFile(filepath.Join(dir, fileName), files)
		if err != nil {
			return Manifest{}, fmt.Errorf("failed to write the %s archive: %w", target, err)
		}
		archives = append(archives, Archive{Target: target, FileName: fileName, SHA256: digest})
	}

	manifest, err := NewManifest(ManifestOptions{Version: release.Version, BaseURL: release.BaseURL, Archives: archives})
	if err != nil {
		return Manifest{}, err
	}
	if err := writeFileAtomically(filepath.Join(dir, ManifestFile), Render(manifest)); err != nil {
		return Manifest{}, err
	}
	return manifest, nil
}
