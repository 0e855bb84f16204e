package krew

import (
	"bytes"
	"debug/elf"
	"debug/macho"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeExecutable returns the smallest file that debug/elf or debug/macho read as an executable
// for target (a header without sections or load commands), followed by payload.
func fakeExecutable(t testing.TB, target Target, payload string) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch target.OS {
	case "linux":
		machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[target.Arch]
		header := elf.Header64{
			Ident:     [elf.EI_NIDENT]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)},
			Type:      uint16(elf.ET_EXEC),
			Machine:   uint16(machine),
			Version:   uint32(elf.EV_CURRENT),
			Ehsize:    64,
			Phentsize: 56,
			Shentsize: 64,
		}
		if err := binary.Write(&buf, binary.LittleEndian, header); err != nil {
			t.Fatal(err)
		}
	case "darwin":
		cpu := map[string]macho.Cpu{"amd64": macho.CpuAmd64, "arm64": macho.CpuArm64}[target.Arch]
		header := macho.FileHeader{Magic: macho.Magic64, Cpu: cpu, Type: macho.TypeExec}
		if err := binary.Write(&buf, binary.LittleEndian, header); err != nil {
			t.Fatal(err)
		}
		buf.Write(make([]byte, 4)) // The 64-bit header's reserved word.
	default:
		t.Fatalf("no fake executable format for %s", target)
	}
	buf.WriteString(payload)
	return buf.Bytes()
}

// fakeRelease writes a fake executable per target into a temporary directory and returns the
// Release packing them with a LICENSE.
func fakeRelease(t testing.TB, version string) Release {
	t.Helper()
	binDir := t.TempDir()
	release := Release{
		Version:  version,
		Binaries: map[Target]string{},
		Extras:   []File{{Name: "LICENSE", Content: []byte("Apache License 2.0, in this test\n")}},
	}
	for _, target := range Targets {
		binaryPath := filepath.Join(binDir, target.OS+"_"+target.Arch)
		payload := strings.Repeat("kubectl-meshlift "+version+" for "+target.String()+"\n", 100)
		if err := os.WriteFile(binaryPath, fakeExecutable(t, target, payload), 0o755); err != nil {
			t.Fatal(err)
		}
		release.Binaries[target] = binaryPath
	}
	return release
}

// writeFakeRelease writes fakeRelease(version) into a new directory and returns the directory
// and the manifest.
func writeFakeRelease(t testing.TB, version string) (string, Manifest) {
	t.Helper()
	dir := t.TempDir()
	manifest, err := WriteRelease(dir, fakeRelease(t, version))
	if err != nil {
		t.Fatalf("WriteRelease: %v", err)
	}
	return dir, manifest
}

// platformFor returns the index of target's platform in m.
func platformFor(t testing.TB, m Manifest, target Target) int {
	t.Helper()
	for i, platform := range m.Spec.Platforms {
		if platform.Selector.MatchLabels["os"] == target.OS && platform.Selector.MatchLabels["arch"] == target.Arch {
			return i
		}
	}
	t.Fatalf("no platform for %s", target)
	return -1
}

// writeManifest renders m into dir as the release's manifest.
func writeManifest(t testing.TB, dir string, m Manifest) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, ManifestFile), Render(m), 0o644); err != nil {
		t.Fatal(err)
	}
}
