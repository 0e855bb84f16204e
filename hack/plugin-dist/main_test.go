package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/meshlift/meshlift/internal/krew"
	"github.com/meshlift/meshlift/internal/repo"
)

func TestParseOptions(t *testing.T) {
	tests := []struct {
		name        string
		args        []string
		want        options
		wantErr     string
		wantErrIs   error
		wantLdflags string
	}{
		{
			name: "a version alone builds ./cmd/kubectl-meshlift into dist with the version linked in",
			args: []string{"--version", "v1.2.3"},
			want: options{version: "v1.2.3", out: "dist", pkg: "./cmd/kubectl-meshlift", baseURL: krew.DefaultBaseURL,
				ldflags: "-s -w -X github.com/meshlift/meshlift/internal/buildinfo.Version=v1.2.3"},
		},
		{
			name: "given linker flags replace the default ones",
			args: []string{"--version", "42b9926-dirty", "--out", "out", "--ldflags", "-X a.B=c", "--pkg", ".", "--base-url", "https://example.com/r"},
			want: options{version: "42b9926-dirty", out: "out", pkg: ".", baseURL: "https://example.com/r", ldflags: "-X a.B=c"},
		},
		{name: "verifying needs no version", args: []string{"--verify", "dist"}, want: options{verify: "dist", out: "dist", pkg: "./cmd/kubectl-meshlift", baseURL: krew.DefaultBaseURL}},
		{name: "verifying refuses a version", args: []string{"--verify", "dist", "--version", "v1.0.0"}, wantErr: "takes no --version"},
		{name: "building needs a version", args: []string{"--out", "dist"}, wantErr: "--version is required"},
		{name: "a version with a slash is refused", args: []string{"--version", "release/1"}, wantErr: `invalid version "release/1"`},
		{name: "stray arguments are refused", args: []string{"--version", "v1.0.0", "extra"}, wantErr: `unexpected arguments ["extra"]`},
		{name: "an unknown flag is a usage error", args: []string{"--tag", "v1"}, wantErrIs: repo.ErrUsage},
		{name: "help is not an error", args: []string{"-h"}, wantErrIs: flag.ErrHelp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseOptions(tt.args, io.Discard)
			switch {
			case tt.wantErrIs != nil:
				if !errors.Is(err, tt.wantErrIs) {
					t.Errorf("error = %v, want %v", err, tt.wantErrIs)
				}
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error = %v, want one saying %q", err, tt.wantErr)
				}
			case err != nil:
				t.Errorf("parseOptions: %v", err)
			case got != tt.want:
				t.Errorf("options = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// fakePluginModule writes a module whose main package prints the version linked into it, with a
// LICENSE if withLicense, and makes it the working directory.
func fakePluginModule(t *testing.T, withLicense bool) {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"go.mod":    "module example.com/fakeplugin\n\ngo 1.26\n",
		"main.go":   "package main\n\nvar version = \"unset\"\n\nfunc main() { println(\"fake kubectl-meshlift\", version) }\n",
		"README.md": "# fake plugin\n",
	}
	if withLicense {
		files["LICENSE"] = "fake license\n"
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	// The temporary module must not pick up a workspace around the test's directory.
	t.Setenv("GOWORK", "off")
}

func runCommand(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestTheGeneratorBuildsReproducibleReleasesThatVerify(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped under -short: it cross-compiles a program for four platforms (make test and CI run it)")
	}
	fakePluginModule(t, true)
	first, second := filepath.Join(t.TempDir(), "dist"), filepath.Join(t.TempDir(), "dist")
	for _, out := range []string{first, second} {
		stdout, stderr, err := runCommand(t, "--version", "v0.3.0", "--out", out, "--pkg", ".", "--ldflags", "-X main.version=v0.3.0")
		if err != nil {
			t.Fatalf("plugin-dist: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
		}
		if stderr != "" {
			t.Errorf("a release with a license and a semantic version printed to stderr:\n%s", stderr)
		}
	}

	// Two runs with the same sources and flags give the same bytes.
	for _, name := range releaseFiles(t, first) {
		a, errA := os.ReadFile(filepath.Join(first, name))
		b, errB := os.ReadFile(filepath.Join(second, name))
		if errA != nil || errB != nil {
			t.Fatalf("reading %s: %v, %v", name, errA, errB)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two runs", name)
		}
	}

	stdout, stderr, err := runCommand(t, "--verify", first)
	if err != nil {
		t.Fatalf("--verify: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "plugin meshlift v0.3.0, 4 platforms") || stderr != "" {
		t.Errorf("--verify printed\n%s\nand to stderr\n%s", stdout, stderr)
	}

	// The binary for this machine runs and carries the version from the linker flags.
	target := krew.Target{OS: runtime.GOOS, Arch: runtime.GOARCH}
	archive, err := os.Open(filepath.Join(first, krew.ArchiveName("v0.3.0", target)))
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("this machine (%s) is none of the four release platforms, so no archive can run here (CI, linux/amd64, runs it)", target)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = archive.Close() }()
	entries, err := krew.ReadArchive(archive)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Name != "LICENSE" || string(entries[0].Content) != "fake license\n" || entries[1].Name != krew.BinaryName {
		t.Fatalf("the archive holds %d entries %+v, want LICENSE and %s", len(entries), entries[0].Name, krew.BinaryName)
	}
	binaryPath := filepath.Join(t.TempDir(), krew.BinaryName)
	if err := os.WriteFile(binaryPath, entries[1].Content, 0o755); err != nil {
		t.Fatal(err)
	}
	output, err := exec.Command(binaryPath).CombinedOutput()
	if err != nil || strings.TrimSpace(string(output)) != "fake kubectl-meshlift v0.3.0" {
		t.Errorf("the packed binary printed %q (%v), want the version linked in", output, err)
	}
}

func TestAModuleWithoutALicenseShipsItsReadmeAndSaysSo(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped under -short: it cross-compiles a program for four platforms (make test and CI run it)")
	}
	fakePluginModule(t, false)
	out := filepath.Join(t.TempDir(), "dist")
	_, stderr, err := runCommand(t, "--version", "42b9926-dirty", "--out", out, "--pkg", ".")
	if err != nil {
		t.Fatalf("plugin-dist: %v\n%s", err, stderr)
	}
	for _, want := range []string{"warning: no license file", "the archives get README.md instead",
		`note: "42b9926-dirty" is not a semantic version, so the manifest says v0.0.0-dev+42b9926-dirty`} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr)
		}
	}
	manifest, warnings, err := krew.VerifyDir(out)
	if err != nil {
		t.Fatal(err)
	}
	if manifest.Spec.Version != "v0.0.0-dev+42b9926-dirty" || len(warnings) != len(krew.Targets) {
		t.Errorf("version %s with warnings %q, want the dev version and a missing-license warning per archive", manifest.Spec.Version, warnings)
	}
	want := "https://github.com/meshlift/meshlift/releases/download/42b9926-dirty/kubectl-meshlift_42b9926-dirty_linux_amd64.tar.gz"
	if manifest.Spec.Platforms[0].URI != want {
		t.Errorf("uri = %s, want %s", manifest.Spec.Platforms[0].URI, want)
	}
}

func TestABuildFailureNamesThePlatformAndTheCommand(t *testing.T) {
	fakePluginModule(t, true)
	if err := os.WriteFile("main.go", []byte("package main\n\nfunc main() { undefined() }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := runCommand(t, "--version", "v1.0.0", "--out", t.TempDir(), "--pkg", ".")
	if err == nil {
		t.Fatal("plugin-dist succeeded with a package that does not compile")
	}
	for _, want := range []string{"linux/amd64: GOOS=linux GOARCH=amd64 CGO_ENABLED=0 go build -trimpath -ldflags", "undefined: undefined"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q:\n%v", want, err)
		}
	}
}

func releaseFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, entry := range entries {
		names = append(names, entry.Name())
	}
	if len(names) != len(krew.Targets)+1 {
		t.Errorf("%s holds %q, want %d archives and %s", dir, names, len(krew.Targets), krew.ManifestFile)
	}
	return names
}
