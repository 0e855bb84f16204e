//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// readmeCommands returns the commands of the first sh block under the README heading, without
// their comments.
func readmeCommands(t testing.TB, heading string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no heading %q", heading)
	}
	_, block, ok := strings.Cut(section, "```sh\n")
	if !ok {
		t.Fatalf("README.md has no sh block under %q", heading)
	}
	block, _, _ = strings.Cut(block, "```")
	var commands []string
	scanner := bufio.NewScanner(strings.NewReader(block))
	for scanner.Scan() {
		line, _, _ := strings.Cut(scanner.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			commands = append(commands, line)
		}
	}
	return commands
}

// lockedBuffer collects the output of a command that runs in the background.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestTheReadmeCommandsForYourOwnClusterWork runs the commands of the README's "Use it with your
// own cluster" section as written, from the repository's root, with kubectl on the PATH and
// KUBECONFIG naming the local cluster: `make run` runs the operator on this machine (the
// in-cluster operator is scaled to 0 meanwhile, as the cluster of a user who tries it has none),
// the samples apply, and the operator run by `make run` reconciles them.
func TestTheReadmeCommandsForYourOwnClusterWork(t *testing.T) {
	commands := readmeCommands(t, "## Use it with your own cluster")
	if len(commands) == 0 || commands[0] != "make run" {
		t.Fatalf("the README's commands are %q; this test expects `make run` first", commands)
	}
	kubectl := os.Getenv("E2E_KUBECTL")
	if kubectl == "" {
		t.Fatal("E2E_KUBECTL is not set: run the suite with `make test-e2e`")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "PATH="+filepath.Dir(kubectl)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"KUBECONFIG="+os.Getenv("E2E_KUBECONFIG"))

	ctx := context.Background()
	scaleOperator(t, 0)
	t.Cleanup(func() {
		scaleOperator(t, operatorReplicas)
		waitForTheWholeOperator(t)
	})
	waitForNoOperatorPod(t)

	// make run: in the background until the test ends, in its own process group so that the
	// operator go run started stops with it.
	run := exec.Command("bash", "-c", "exec "+commands[0])
	run.Dir, run.Env = root, env
	run.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	output := &lockedBuffer{}
	run.Stdout, run.Stderr = output, output
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-run.Process.Pid, syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-run.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		t.Logf("make run:\n%s", output.String())
	})
	testenv.Eventually(t, 5*time.Minute, func(context.Context) (bool, string) {
		select {
		case err := <-exited:
			t.Fatalf("make run exited: %v\n%s", err, output.String())
		default:
		}
		return strings.Contains(output.String(), "Starting workers"), "the operator of make run has not started its controllers"
	})

	// The samples' objects; those that exist already (a demo on the same cluster has a proxy-v1
	// too) are left as they are at the end.
	samples := []client.Object{
		&meshv1alpha1.UpgradePlan{}, &meshv1alpha1.MeshService{}, &meshv1alpha1.SidecarVersion{}, &meshv1alpha1.SidecarVersion{},
	}
	existed := make([]bool, len(samples))
	for i, name := range []string{"front-to-v2", "demo", "proxy-v1", "proxy-v2"} {
		samples[i].SetName(name)
		if i < 2 {
			samples[i].SetNamespace("default")
		}
		err := k8s.Get(ctx, client.ObjectKeyFromObject(samples[i]), samples[i])
		existed[i] = err == nil
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for i, obj := range samples {
			if existed[i] {
				continue
			}
			if err := k8s.Delete(context.Background(), obj); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("deleting sample %s: %v", obj.GetName(), err)
			}
		}
	})
	for _, command := range commands[1:] {
		cmd := exec.Command("bash", "-c", command)
		cmd.Dir, cmd.Env = root, env
		out, err := cmd.CombinedOutput()
		t.Logf("$ %s\n%s", command, out)
		if err != nil {
			t.Fatalf("%s: %v", command, err)
		}
		if strings.HasPrefix(command, "kubectl get ") {
			for _, name := range []string{"proxy-v1", "proxy-v2", "demo", "front-to-v2"} {
				if !strings.Contains(string(out), name) {
					t.Errorf("%s does not show %s", command, name)
				}
			}
		}
	}
	// The operator make run started reconciles what the samples created.
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) (bool, string) {
		ms := &meshv1alpha1.MeshService{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "default", Name: "demo"}, ms); err != nil {
			return false, err.Error()
		}
		plan := &meshv1alpha1.UpgradePlan{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "default", Name: "front-to-v2"}, plan); err != nil {
			return false, err.Error()
		}
		return ms.Status.ObservedGeneration == ms.Generation && plan.Status.ObservedGeneration == plan.Generation,
			fmt.Sprintf("MeshService observed %d of %d, UpgradePlan observed %d of %d (phase %q)",
				ms.Status.ObservedGeneration, ms.Generation, plan.Status.ObservedGeneration, plan.Generation, plan.Status.Phase)
	})
}
