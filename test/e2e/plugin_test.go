//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// The kubectl plugin is run the way users run it: `kubectl meshlift ...`, kubectl finding
// kubectl-meshlift on the PATH.

var (
	pluginOnce sync.Once
	pluginDir  string
	pluginErr  error
)

// kubectlMeshlift returns the command `kubectl meshlift args...` with the plugin (built from this
// tree once per run) on the PATH and KUBECONFIG naming the local cluster.
func kubectlMeshlift(t testing.TB, ctx context.Context, args ...string) *exec.Cmd {
	t.Helper()
	kubectl := os.Getenv("E2E_KUBECTL")
	if kubectl == "" {
		t.Fatal("E2E_KUBECTL is not set: run the suite with `make test-e2e`")
	}
	pluginOnce.Do(func() {
		if pluginDir, pluginErr = os.MkdirTemp("", "kubectl-meshlift-"); pluginErr != nil {
			return
		}
		build := exec.Command("go", "build", "-o", filepath.Join(pluginDir, "kubectl-meshlift"), "../../cmd/kubectl-meshlift")
		if out, err := build.CombinedOutput(); err != nil {
			pluginErr = errors.New("building kubectl-meshlift: " + err.Error() + ": " + string(out))
		}
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	// kubectl finds a plugin only when its name comes before any flag, and passes every argument
	// after it to the plugin: the kubeconfig comes from KUBECONFIG, as for most users.
	cmd := exec.CommandContext(ctx, kubectl, append([]string{"meshlift"}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+pluginDir+string(os.PathListSeparator)+os.Getenv("PATH"), "KUBECONFIG="+os.Getenv("E2E_KUBECONFIG"))
	return cmd
}

// runPlugin runs `kubectl meshlift args...` and returns its output and exit code.
func runPlugin(t testing.TB, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := kubectlMeshlift(t, ctx, args...).CombinedOutput()
	return string(out), exitCode(t, err)
}

func exitCode(t testing.TB, err error) int {
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitCode()
	}
	t.Fatalf("running kubectl meshlift: %v", err)
	return -1
}

// followPlan starts `kubectl meshlift status PLAN -w` (plus args) on the plan and returns a
// function that waits for it to exit and returns its output and exit code. Its output is not a
// terminal: one line per change.
func followPlan(t testing.TB, plan *meshv1alpha1.UpgradePlan, args ...string) func() (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	var out bytes.Buffer
	cmd := kubectlMeshlift(t, ctx, append([]string{"status", plan.Name, "-n", plan.Namespace, "-w", "--timeout", "7m"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return func() (string, int) {
		defer cancel()
		select {
		case err := <-done:
			return out.String(), exitCode(t, err)
		case <-time.After(time.Minute):
			cancel()
			<-done
			t.Fatalf("kubectl meshlift status -w did not exit within a minute of the plan's end; it printed:\n%s", out.String())
			return "", -1
		}
	}
}

// checkFollower waits for a `status -w` started by followPlan and checks that it exited as the
// plan ended: 0 on Succeeded (or a manual pause with --success-on-pause), 2 on Failed or
// RolledBack, with the last line naming the phase and no escape codes in the log.
func checkFollower(t testing.TB, wait func() (string, int), phase meshv1alpha1.UpgradePhase) {
	t.Helper()
	out, code := wait()
	t.Logf("kubectl meshlift status -w printed:\n%s", out)
	want := 0
	if phase == meshv1alpha1.PhaseFailed || phase == meshv1alpha1.PhaseRolledBack {
		want = 2
	}
	if code != want {
		t.Errorf("kubectl meshlift status -w exited %d when the plan ended %s, want %d", code, phase, want)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if want == 2 {
		last = lines[max(len(lines)-2, 0)] // the last line is the error
	}
	if !strings.Contains(last, " "+string(phase)+":") {
		t.Errorf("the last status line %q does not say %s", last, phase)
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("escape codes in a log:\n%q", out)
	}
}

// TestCheckPassesAndSaysWhenTheOperatorIsDown runs `kubectl meshlift check` on the installed
// operator (every check passes), then scales the operator to 0: check fails on the operator's
// line, and passes again once it is back.
func TestCheckPassesAndSaysWhenTheOperatorIsDown(t *testing.T) {
	out, code := runPlugin(t, "check")
	t.Logf("kubectl meshlift check:\n%s", out)
	if code != 0 {
		t.Fatalf("check failed on a working installation (exit %d)", code)
	}
	// The demo SidecarVersion may be missing here; every other line is ok.
	ctx := context.Background()
	deploy := &appsv1.Deployment{}
	key := client.ObjectKey{Namespace: "meshlift-system", Name: "meshlift-controller-manager"}
	if err := k8s.Get(ctx, key, deploy); err != nil {
		t.Fatal(err)
	}
	replicas := ptr.Deref(deploy.Spec.Replicas, 1)
	restored := false
	t.Cleanup(func() {
		if !restored {
			scaleOperator(t, replicas)
			waitForTheInjector(t)
		}
	})
	scaleOperator(t, 0)
	waitForNoOperatorPod(t)
	out, code = runPlugin(t, "check")
	t.Logf("kubectl meshlift check with the operator scaled to 0:\n%s", out)
	if code == 0 {
		t.Errorf("check passed with the operator scaled to 0")
	}
	if !hasFailedLine(out, "operator") {
		t.Errorf("check did not fail on the operator's line")
	}

	scaleOperator(t, replicas)
	restored = true
	testenv.Eventually(t, 3*time.Minute, func(ctx context.Context) (bool, string) {
		out, code := runPlugin(t, "check")
		return code == 0, out
	})
	// The tests after this one create pods: the injector fails open, so a pod created before the
	// API server can reach it again would run without a sidecar.
	waitForTheInjector(t)
}

// waitForTheInjector waits until the API server calls the injector again: a server-side dry run
// of a pod that a MeshService selects comes back with the sidecar.
func waitForTheInjector(t testing.TB) {
	t.Helper()
	ns, _ := webMeshService(t, "e2e-injector-up")
	testenv.Eventually(t, 3*time.Minute, func(ctx context.Context) (bool, string) {
		pod := webPodIn(ns)
		if err := k8s.Create(ctx, pod, client.DryRunAll); err != nil {
			return false, err.Error()
		}
		return sidecar.IsInjected(pod), "a dry-run pod is not injected yet"
	})
}

// hasFailedLine reports whether check's output has a failed line that mentions what.
func hasFailedLine(out, what string) bool {
	for _, line := range strings.Split(out, "\n") {
		if (strings.Contains(line, "✖") || strings.Contains(strings.ToLower(line), "fail")) && strings.Contains(strings.ToLower(line), what) {
			return true
		}
	}
	return false
}

// TestThePluginShowsTheDemoPods: proxy-status, get and version on pods the operator really
// injected and issued certificates to.
func TestThePluginShowsTheMeshedPods(t *testing.T) {
	ns := createNamespace(t, "e2e-plugin")
	v1 := releasedVersion(ns+"-v1", "1.0.0")
	if err := k8s.Create(context.Background(), v1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), v1) })
	createDemoMeshServices(t, ns, v1.Name)
	if err := k8s.Create(context.Background(), demoDeployment(ns, "demo", 2)); err != nil {
		t.Fatal(err)
	}
	waitForMeshedPods(t, ns, "demo", 2)
	// The control plane records each pod's certificate expiry once it has issued one.
	testenv.Eventually(t, time.Minute, func(ctx context.Context) (bool, string) {
		out, code := runPlugin(t, "proxy-status", "-n", ns, "-l", "app=demo")
		return code == 0 && strings.Count(out, " in ") >= 2 && !strings.Contains(out, "unknown"), out
	})
	out, _ := runPlugin(t, "proxy-status", "-n", ns, "-l", "app=demo")
	t.Logf("kubectl meshlift proxy-status:\n%s", out)
	for _, want := range []string{v1.Name, "yes", "included"} {
		if !strings.Contains(out, want) {
			t.Errorf("proxy-status lacks %q", want)
		}
	}
	out, code := runPlugin(t, "get", "versions")
	t.Logf("kubectl meshlift get versions:\n%s", out)
	if code != 0 || !strings.Contains(out, ns+"/demo 2") {
		t.Errorf("get versions does not say that 2 pods of %s/demo run %s", ns, v1.Name)
	}
	out, code = runPlugin(t, "get", "meshservices", "-n", ns)
	t.Logf("kubectl meshlift get meshservices:\n%s", out)
	if code != 0 || !strings.Contains(out, v1.Name+":2") {
		t.Errorf("get meshservices does not count 2 pods on %s", v1.Name)
	}
	out, code = runPlugin(t, "version")
	t.Logf("kubectl meshlift version:\n%s", out)
	if code != 0 || !strings.Contains(out, "operator:") || strings.Contains(out, "unknown") || strings.Contains(out, "not found") {
		t.Errorf("version does not show the operator's version")
	}
}
