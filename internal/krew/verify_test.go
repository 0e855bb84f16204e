package krew

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestAReleaseVerifiesAgainstItsOwnArchives(t *testing.T) {
	dir, written := writeFakeRelease(t, "v1.4.0")

	manifest, warnings, err := VerifyDir(dir)
	if err != nil {
		t.Fatalf("VerifyDir: %v", err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings for a release with a LICENSE: %q", warnings)
	}
	if manifest.Spec.Version != "v1.4.0" || len(manifest.Spec.Platforms) != len(Targets) {
		t.Errorf("read back version %q with %d platforms, want v1.4.0 with %d", manifest.Spec.Version, len(manifest.Spec.Platforms), len(Targets))
	}
	if !slices.EqualFunc(manifest.Spec.Platforms, written.Spec.Platforms, func(a, b Platform) bool {
		return a.URI == b.URI && a.SHA256 == b.SHA256 && a.Bin == b.Bin
	}) {
		t.Errorf("the manifest on disk differs from the one WriteRelease returned:\n%s", Render(manifest))
	}

	// Every archive holds exactly the binary, executable, and the license, both as given.
	release := fakeRelease(t, "v1.4.0")
	for _, target := range Targets {
		archivePath := filepath.Join(dir, ArchiveName("v1.4.0", target))
		data, err := os.ReadFile(archivePath)
		if err != nil {
			t.Fatal(err)
		}
		entries, err := ReadArchive(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", archivePath, err)
		}
		if len(entries) != 2 || entries[0].Name != "LICENSE" || entries[1].Name != BinaryName {
			t.Fatalf("%s has entries %s, want LICENSE and %s", archivePath, entryNames(entries), BinaryName)
		}
		wantBinary, err := os.ReadFile(release.Binaries[target])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(entries[1].Content, wantBinary) || entries[1].Mode != 0o755 {
			t.Errorf("%s: the binary has mode %04o and %d bytes, want 0755 and the %d bytes built for %s",
				archivePath, entries[1].Mode, len(entries[1].Content), len(wantBinary), target)
		}
		if entries[0].Mode != 0o644 || string(entries[0].Content) != string(release.Extras[0].Content) {
			t.Errorf("%s: LICENSE has mode %04o and content %q", archivePath, entries[0].Mode, entries[0].Content)
		}
	}
}

func TestWritingTheSameReleaseTwiceGivesIdenticalFiles(t *testing.T) {
	release := fakeRelease(t, "v2.0.0-rc.1")
	first, second := t.TempDir(), t.TempDir()
	if _, err := WriteRelease(first, release); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteRelease(second, release); err != nil {
		t.Fatal(err)
	}
	firstFiles, secondFiles := readDir(t, first), readDir(t, second)
	if !slices.Equal(sortedKeys(firstFiles), sortedKeys(secondFiles)) {
		t.Fatalf("the runs wrote different files: %v and %v", sortedKeys(firstFiles), sortedKeys(secondFiles))
	}
	wantFiles := []string{ManifestFile}
	for _, target := range Targets {
		wantFiles = append(wantFiles, ArchiveName("v2.0.0-rc.1", target))
	}
	slices.Sort(wantFiles)
	if !slices.Equal(sortedKeys(firstFiles), wantFiles) {
		t.Errorf("the release directory holds %v, want %v", sortedKeys(firstFiles), wantFiles)
	}
	for name, content := range firstFiles {
		if !bytes.Equal(content, secondFiles[name]) {
			t.Errorf("%s differs between two runs with the same inputs", name)
		}
	}
}

func TestWritingAReleaseRemovesTheArchivesOfAnEarlierOne(t *testing.T) {
	dir := t.TempDir()
	if _, err := WriteRelease(dir, fakeRelease(t, "v1.0.0")); err != nil {
		t.Fatal(err)
	}
	unrelated := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(unrelated, []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteRelease(dir, fakeRelease(t, "v1.1.0")); err != nil {
		t.Fatal(err)
	}
	for name := range readDir(t, dir) {
		if strings.Contains(name, "v1.0.0") {
			t.Errorf("%s of the earlier release is still there", name)
		}
	}
	if _, err := os.Stat(unrelated); err != nil {
		t.Errorf("a file that is not an archive was touched: %v", err)
	}
	if _, _, err := VerifyDir(dir); err != nil {
		t.Errorf("VerifyDir after the second release: %v", err)
	}
}

func TestVerificationFindsReleasesThatKrewWouldInstallWrongly(t *testing.T) {
	linuxAMD64 := Target{OS: "linux", Arch: "amd64"}
	tests := []struct {
		name string
		// spoil changes the release in dir; m is its manifest, spoil writes it back if it changes it.
		spoil   func(t *testing.T, dir string, m *Manifest)
		wantErr []string
	}{
		{
			name: "an archive changed after the manifest was written fails on its sha256",
			spoil: func(t *testing.T, dir string, m *Manifest) {
				archivePath := filepath.Join(dir, ArchiveName("v1.0.0", linuxAMD64))
				data, err := os.ReadFile(archivePath)
				if err != nil {
					t.Fatal(err)
				}
				data[len(data)/2] ^= 0xff
				if err := os.WriteFile(archivePath, data, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: []string{"spec.platforms[0] (linux/amd64): sha256 mismatch: the manifest says", "kubectl-meshlift_v1.0.0_linux_amd64.tar.gz has"},
		},
		{
			name: "a missing archive is reported with the uri that names it",
			spoil: func(t *testing.T, dir string, m *Manifest) {
				if err := os.Remove(filepath.Join(dir, ArchiveName("v1.0.0", Target{OS: "darwin", Arch: "arm64"}))); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: []string{"(darwin/arm64): the archive of uri", "kubectl-meshlift_v1.0.0_darwin_arm64.tar.gz", "no such file"},
		},
		{
			name: "a binary without the executable bit fails",
			spoil: func(t *testing.T, dir string, m *Manifest) {
				repack(t, dir, m, linuxAMD64, []File{{Name: BinaryName, Mode: 0o644, Content: fakeExecutable(t, linuxAMD64, "")}})
			},
			wantErr: []string{"kubectl-meshlift in kubectl-meshlift_v1.0.0_linux_amd64.tar.gz is not executable (mode 0644)"},
		},
		{
			name: "a macOS binary in the linux archive fails",
			spoil: func(t *testing.T, dir string, m *Manifest) {
				darwin := Target{OS: "darwin", Arch: "amd64"}
				repack(t, dir, m, linuxAMD64, []File{{Name: BinaryName, Mode: 0o755, Content: fakeExecutable(t, darwin, "")}})
			},
			wantErr: []string{"not an ELF file, as a linux/amd64 executable is"},
		},
		{
			name: "an arm64 binary in the amd64 archive fails",
			spoil: func(t *testing.T, dir string, m *Manifest) {
				arm64 := Target{OS: "linux", Arch: "arm64"}
				repack(t, dir, m, linuxAMD64, []File{{Name: BinaryName, Mode: 0o755, Content: fakeExecutable(t, arm64, "")}})
			},
			wantErr: []string{"an ELF file for EM_AARCH64", "not for linux/amd64"},
		},
		{
			name: "an archive without the binary fails and says what it holds",
			spoil: func(t *testing.T, dir string, m *Manifest) {
				repack(t, dir, m, linuxAMD64, []File{{Name: "README.md", Mode: 0o644, Content: []byte("# readme")}})
			},
			wantErr: []string{"has no kubectl-meshlift (bin), only README.md"},
		},
		{
			name: "a bin the archive does not hold fails",
			spoil: func(t *testing.T, dir string, m *Manifest) {
				m.Spec.Platforms[platformFor(t, *m, linuxAMD64)].Bin = "bin/kubectl-meshlift"
				writeManifest(t, dir, *m)
			},
			wantErr: []string{"has no bin/kubectl-meshlift (bin), only LICENSE, kubectl-meshlift"},
		},
		{
			name: "archives swapped between platforms fail on their names",
			spoil: func(t *testing.T, dir string, m *Manifest) {
				amd64, arm64 := platformFor(t, *m, linuxAMD64), platformFor(t, *m, Target{OS: "linux", Arch: "arm64"})
				p := m.Spec.Platforms
				p[amd64].URI, p[arm64].URI = p[arm64].URI, p[amd64].URI
				p[amd64].SHA256, p[arm64].SHA256 = p[arm64].SHA256, p[amd64].SHA256
				writeManifest(t, dir, *m)
			},
			wantErr: []string{"archive kubectl-meshlift_v1.0.0_linux_arm64.tar.gz is not named for linux/amd64"},
		},
		{
			name: "a manifest without a darwin/arm64 platform fails",
			spoil: func(t *testing.T, dir string, m *Manifest) {
				m.Spec.Platforms = slices.Delete(m.Spec.Platforms, 3, 4)
				writeManifest(t, dir, *m)
			},
			wantErr: []string{"no platform for darwin/arm64"},
		},
		{
			name: "a manifest with two linux/amd64 platforms fails",
			spoil: func(t *testing.T, dir string, m *Manifest) {
				m.Spec.Platforms = append(m.Spec.Platforms, m.Spec.Platforms[0])
				writeManifest(t, dir, *m)
			},
			wantErr: []string{"2 platforms for linux/amd64, want one"},
		},
		{
			name: "a manifest with a misspelt key fails to parse",
			spoil: func(t *testing.T, dir string, m *Manifest) {
				data := strings.Replace(string(Render(*m)), "shortDescription:", "shortDesciption:", 1)
				if err := os.WriteFile(filepath.Join(dir, ManifestFile), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: []string{"failed to parse the plugin manifest", "shortDesciption"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, manifest := writeFakeRelease(t, "v1.0.0")
			tt.spoil(t, dir, &manifest)
			_, _, err := VerifyDir(dir)
			if err == nil {
				t.Fatal("VerifyDir succeeded")
			}
			t.Logf("VerifyDir: %v", err)
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("the error does not say %q:\n%v", want, err)
				}
			}
		})
	}
}

func TestAnArchiveWithoutALicenseVerifiesWithAWarning(t *testing.T) {
	release := fakeRelease(t, "v1.0.0")
	release.Extras = []File{{Name: "README.md", Content: []byte("# Meshlift\n")}}
	dir := t.TempDir()
	if _, err := WriteRelease(dir, release); err != nil {
		t.Fatal(err)
	}
	_, warnings, err := VerifyDir(dir)
	if err != nil {
		t.Fatalf("VerifyDir: %v", err)
	}
	if len(warnings) != len(Targets) || !strings.Contains(warnings[0], "kubectl-meshlift_v1.0.0_linux_amd64.tar.gz has no license file") {
		t.Errorf("warnings = %q, want one per archive about the missing license", warnings)
	}
}

// repack replaces target's archive in dir with one of files and updates the manifest's sha256,
// so that only the archive's content is wrong.
func repack(t *testing.T, dir string, m *Manifest, target Target, files []File) {
	t.Helper()
	platform := &m.Spec.Platforms[platformFor(t, *m, target)]
	digest, err := WriteArchiveFile(filepath.Join(dir, path.Base(platform.URI)), files)
	if err != nil {
		t.Fatal(err)
	}
	platform.SHA256 = digest
	writeManifest(t, dir, *m)
}

func readDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, entry := range entries {
		content, err := os.ReadFile(filepath.Join(dir, entry.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[entry.Name()] = content
	}
	return files
}

func sortedKeys(files map[string][]byte) []string {
	keys := make([]string, 0, len(files))
	for name := range files {
		keys = append(keys, name)
	}
	slices.Sort(keys)
	return keys
}
