package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/meshlift/meshlift/internal/capture"
	"github.com/meshlift/meshlift/internal/capture/netnstest"
)

// writeAnnotations writes annotations the way the kubelet's downward-API volume does: one
// key="value" line per annotation, sorted by key, the value Go-quoted.
func writeAnnotations(t *testing.T, annotations map[string]string) string {
	t.Helper()
	keys := make([]string, 0, len(annotations))
	for key := range annotations {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	var lines []string
	for _, key := range keys {
		lines = append(lines, key+"="+strconv.Quote(annotations[key]))
	}
	file := filepath.Join(t.TempDir(), "annotations")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// runInitBinary runs the test binary as "meshlift-cni init ARGS" (see TestMain). None of these
// cases reaches the rules, which would go into the namespace the test runs in.
func runInitBinary(t *testing.T, args ...string) (stderr string, exitCode int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"init"}, args...)...)
	cmd.Env = append(os.Environ(), runAsPlugin+"=1")
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return string(out), exitErr.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

func TestInitBinary(t *testing.T) {
	tests := []struct {
		name     string
		args     func(t *testing.T) []string
		wantCode int
		want     []string // substrings of its output
	}{
		{"fails with the path when the annotations file is missing",
			func(t *testing.T) []string { return []string{"--annotations", filepath.Join(t.TempDir(), "missing")} },
			1, []string{"failed to read the pod's annotations", "missing", "downward-API"}},
		{"fails when the annotations file is not the downward-API format",
			func(t *testing.T) []string {
				file := filepath.Join(t.TempDir(), "annotations")
				if err := os.WriteFile(file, []byte("meshlift.io/capture: inbound\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return []string{"--annotations=" + file}
			},
			1, []string{"failed to parse the pod's annotations file", "line 1"}},
		{"fails and names the annotation when an exclusion is malformed",
			func(t *testing.T) []string {
				return []string{"--annotations=" + writeAnnotations(t, map[string]string{
					capture.AnnotationCapture: "inbound,outbound", capture.AnnotationExcludeInboundPorts: "8081,http"})}
			},
			1, []string{"malformed", capture.AnnotationExcludeInboundPorts, `"http" is not a port number`}},
		{"fails when the capture annotation names an unknown direction",
			func(t *testing.T) []string {
				return []string{"--annotations=" + writeAnnotations(t, map[string]string{capture.AnnotationCapture: "sideways"})}
			},
			1, []string{capture.AnnotationCapture, `"sideways" is not a direction`}},
		{"succeeds without installing anything when the pod is not marked",
			func(t *testing.T) []string {
				return []string{"--annotations=" + writeAnnotations(t, map[string]string{capture.AnnotationCapture: "none", "team": "shop"})}
			},
			0, []string{"not marked for capture", "no rules installed"}},
		{"refuses arguments it does not know", func(*testing.T) []string { return []string{"--annotations=/x", "extra"} },
			2, []string{"unexpected arguments"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, code := runInitBinary(t, tt.args(t)...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d; output:\n%s", code, tt.wantCode, out)
			}
			for _, want := range tt.want {
				if !strings.Contains(out, want) {
					t.Errorf("output does not mention %q:\n%s", want, out)
				}
			}
		})
	}
}

// threadNetNS is the calling thread's network namespace: inside NetNS.Do, the test namespace.
// In the init container, every thread is in the pod's namespace and ownNetNS is the same.
const threadNetNS = "/proc/thread-self/ns/net"

func TestInitInstallsTheRulesInItsOwnNetworkNamespace(t *testing.T) {
	annotations := map[string]string{
		capture.AnnotationCapture:              "inbound,outbound",
		capture.AnnotationExcludeInboundPorts:  "8081",
		capture.AnnotationExcludeOutboundCIDRs: "10.96.0.0/12",
		"meshlift.io/active-slot":              "1",
	}
	config, err := capture.ParseAnnotations(annotations)
	if err != nil {
		t.Fatal(err)
	}
	want, err := capture.NewRuleset(config)
	if err != nil {
		t.Fatal(err)
	}
	file := writeAnnotations(t, annotations)

	ns := netnstest.New(t)
	for _, attempt := range []string{"first run", "second run (a restarted init container)"} {
		var result string
		if err := ns.Do(-1, func() (err error) {
			result, err = initCapture(file, threadNetNS)
			return err
		}); err != nil {
			t.Fatalf("%s: %v", attempt, err)
		}
		if !strings.Contains(result, "installed table inet meshlift") {
			t.Errorf("%s: result %q does not say what it installed", attempt, result)
		}
		if err := capture.Check(ns.Path, want); err != nil {
			t.Fatalf("%s: the test namespace does not hold the rules of the annotations: %v", attempt, err)
		}
	}
}

func TestInitInstallsOnlyTheDirectionsThePodAsksFor(t *testing.T) {
	annotations := map[string]string{capture.AnnotationCapture: "inbound"}
	config, err := capture.ParseAnnotations(annotations)
	if err != nil {
		t.Fatal(err)
	}
	want, err := capture.NewRuleset(config)
	if err != nil {
		t.Fatal(err)
	}
	file := writeAnnotations(t, annotations)
	ns := netnstest.New(t)
	if err := ns.Do(-1, func() error { _, err := initCapture(file, threadNetNS); return err }); err != nil {
		t.Fatal(err)
	}
	if err := capture.Check(ns.Path, want); err != nil {
		t.Fatalf("the namespace does not hold the inbound-only rules: %v", err)
	}
}

func TestInitInstallsNothingWhenTheAnnotationsAreMalformed(t *testing.T) {
	file := writeAnnotations(t, map[string]string{
		capture.AnnotationCapture: "inbound,outbound", capture.AnnotationExcludeOutboundCIDRs: "10.1.2.3/8"})
	ns := netnstest.New(t)
	err := ns.Do(-1, func() error { _, err := initCapture(file, threadNetNS); return err })
	if err == nil || !strings.Contains(err.Error(), `did you mean "10.0.0.0/8"`) {
		t.Fatalf("initCapture() = %v, want the CIDR error with its fix", err)
	}
	if err := capture.Check(ns.Path, capture.Ruleset{}); !errors.Is(err, capture.ErrNotApplied) {
		t.Fatalf("Check() = %v, want %v: nothing may be installed", err, capture.ErrNotApplied)
	}
}
