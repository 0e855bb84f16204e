package localcluster

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// inNewNetworkNamespace runs f on a thread of its own in a new network namespace, so iptables
// commands it runs (forked from that thread) and netlink sockets it opens see an empty netfilter
// state and cannot touch the host's. The thread is never unlocked: it ends with its goroutine.
func inNewNetworkNamespace(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	for _, family := range IptablesFamilies {
		if _, err := exec.LookPath(family.Restore); err != nil {
			t.Skipf("needs %s: %v", family.Restore, err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("failed to create a network namespace: %v", err)
			return
		}
		f()
	}()
	<-done
}

func restoreTestdata(t *testing.T, family IptablesFamily, name string) {
	t.Helper()
	// kube-proxy counts dropped packets in an nfacct object that a new namespace lacks.
	var lines []string
	for _, line := range strings.Split(readTestdata(t, name), "\n") {
		if !strings.Contains(line, "--nfacct-name") {
			lines = append(lines, line)
		}
	}
	cmd := exec.Command(family.Restore)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s < %s: %v: %s", family.Restore, name, err, out)
	}
}

func TestCleanIptablesRemovesWhatTheClusterCreatedWithTheRealCommands(t *testing.T) {
	inNewNetworkNamespace(t, func() {
		for _, family := range IptablesFamilies {
			restoreTestdata(t, family, "before."+family.Save)
			beforeDump, err := saveIptables(family)
			if err != nil {
				t.Error(err)
				return
			}
			before, err := ParseIptablesSave(beforeDump)
			if err != nil {
				t.Error(err)
				return
			}
			restoreTestdata(t, family, "during."+family.Save)

			removed, kept, err := cleanIptables(family, before, IptablesOwner{CNINetwork: CNINetwork})
			if err != nil || len(kept) > 0 || len(removed) == 0 {
				t.Errorf("%s: cleanIptables() removed %q, kept %q, err %v", family.Save, removed, kept, err)
			}
			afterDump, err := saveIptables(family)
			if err != nil {
				t.Error(err)
				return
			}
			after, err := ParseIptablesSave(afterDump)
			if err != nil {
				t.Error(err)
				return
			}
			if got, want := formatRuleset(after), formatRuleset(before); got != want {
				t.Errorf("%s after the cleanup:\n%s\nwant the rules before:\n%s", family.Save, got, want)
			}
		}
	})
}
