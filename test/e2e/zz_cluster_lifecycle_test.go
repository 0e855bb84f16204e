//go:build e2e

package e2e

// These tests run last (Go runs files in name order): the final one takes the cluster down.

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/meshlift/meshlift/internal/localcluster"
)

func TestUpReusesAHealthyCluster(t *testing.T) {
	out, err := exec.Command(localCluster, "--state-dir", clusterState, "up").CombinedOutput()
	if err != nil {
		t.Fatalf("up on a running cluster failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "already up and healthy; reusing it") {
		t.Errorf("up did not reuse the running cluster:\n%s", out)
	}
	if strings.Contains(string(out), "Starting ") {
		t.Errorf("up started components of a healthy cluster again:\n%s", out)
	}
}

func TestDownLeavesNoProcessAndNoMount(t *testing.T) {
	out, err := exec.Command(localCluster, "--state-dir", clusterState, "down").CombinedOutput()
	t.Logf("down:\n%s", out)
	if err != nil {
		t.Fatalf("down failed: %v", err)
	}
	// Checked here independently of down's own check: every process of the cluster (components
	// and containerd shims) names the state directory in its command line.
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if strings.Contains(string(cmdline), clusterState+"/") {
			t.Errorf("process %s still runs: %s", e.Name(), strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	if mounts := localcluster.MountsUnder(clusterState); len(mounts) > 0 {
		t.Errorf("mounts left under %s: %v", clusterState, mounts)
	}
	if _, err := os.Stat(clusterState); !os.IsNotExist(err) {
		t.Errorf("state directory %s still exists (%v)", clusterState, err)
	}
}
