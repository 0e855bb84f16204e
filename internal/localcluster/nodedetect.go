package localcluster

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The local cluster's kube-proxy, kubelet and cleanup would rewrite the iptables rules, cgroups
// and kernel settings of a Kubernetes node, so `up` refuses to start on a machine that is one.

// NodeAgentPrograms are programs that run only on a Kubernetes node.
var NodeAgentPrograms = []string{"kubelet", "kube-proxy", "k3s", "k3s-server", "k3s-agent", "k0s", "rke2"}

// KubernetesNodeFiles are files that Kubernetes distributions leave on their nodes.
var KubernetesNodeFiles = []string{
	"/etc/kubernetes/kubelet.conf",    // kubeadm
	"/etc/kubernetes/admin.conf",      // kubeadm control plane
	"/etc/kubernetes/manifests",       // kubeadm static pods
	"/var/lib/kubelet/config.yaml",    // kubeadm
	"/var/lib/kubelet/kubeconfig",     // kubelet default kubeconfig location of several installers
	"/etc/rancher/k3s/k3s.yaml",       // k3s
	"/var/lib/rancher/k3s",            // k3s
	"/var/lib/k0s",                    // k0s
	"/etc/kubernetes/kube-proxy.conf", // kube-proxy of hand-made nodes
}

// NodeFacts is what `up` observes before changing anything.
type NodeFacts struct {
	// Processes run one of NodeAgentPrograms.
	Processes []NodeProcess
	// Files are the KubernetesNodeFiles that exist.
	Files []string
	// KubeChains are the iptables chains named KUBE-*.
	KubeChains []IptablesChain
	// KubepodsCgroups are kubepods cgroups at the top of a hierarchy.
	KubepodsCgroups []string
}

// NodeProcess is a running node agent.
type NodeProcess struct {
	PID     int
	Program string
	Cmdline string
}

// IptablesChain names a chain: the family's save command, the table and the chain.
type IptablesChain struct {
	Save, Table, Chain string
}

// PreviousCluster is what a local cluster of ours left on this machine.
type PreviousCluster struct {
	StateDir string
	// Exists: the state directory is there.
	Exists bool
	// Recorded is its host record; nil for a cluster of an older version (or none).
	Recorded *HostState
	// PIDs are the processes our supervisor recorded that still run.
	PIDs []int
}

// Legacy reports whether the state directory is an older version's, which recorded nothing.
func (p PreviousCluster) Legacy() bool { return p.Exists && p.Recorded == nil }

// KubernetesNodeFindings returns why the machine looks like a Kubernetes node, one sentence per
// finding; none means the cluster may start. What a previous local cluster of ours left is not a
// finding: node agents it started (recorded PIDs, or naming its state directory), KUBE-* chains
// that its record shows it created, and, for an older version's state directory that recorded
// nothing, any KUBE-* chain and top-level kubepods cgroup (that version created both, and `down`
// removes them).
func KubernetesNodeFindings(facts NodeFacts, previous PreviousCluster) []string {
	var findings []string
	for _, p := range facts.Processes {
		if slices.Contains(previous.PIDs, p.PID) {
			continue
		}
		if previous.StateDir != "" && strings.Contains(p.Cmdline, filepath.Clean(previous.StateDir)+"/") {
			findings = append(findings, fmt.Sprintf("%s (pid %d) of an earlier local cluster still runs without a PID record: stop it (kill %d), then run down", p.Program, p.PID, p.PID))
			continue
		}
		findings = append(findings, fmt.Sprintf("%s runs (pid %d: %s)", p.Program, p.PID, p.Cmdline))
	}
	for _, file := range facts.Files {
		findings = append(findings, file+" exists")
	}
	if !previous.Legacy() {
		var foreign []string
		for _, c := range facts.KubeChains {
			if previous.Recorded != nil && !chainExistedBefore(*previous.Recorded, c) {
				continue // created by our previous cluster
			}
			foreign = append(foreign, c.Save+" -t "+c.Table+" "+c.Chain)
		}
		if len(foreign) > 0 {
			findings = append(findings, "iptables chains of kube-proxy or a kubelet exist: "+strings.Join(foreign, ", "))
		}
		if len(facts.KubepodsCgroups) > 0 {
			findings = append(findings, "a kubelet's pod cgroups exist: "+strings.Join(facts.KubepodsCgroups, ", "))
		}
	}
	return findings
}

func chainExistedBefore(state HostState, c IptablesChain) bool {
	before, ok, err := state.IptablesBefore(c.Save)
	if err != nil || !ok {
		return err != nil // an unreadable record proves nothing: count the chain as foreign
	}
	table := before[c.Table]
	return table != nil && table.HasChain(c.Chain)
}

// KubeChainsIn returns the KUBE-* chains of a family's ruleset.
func KubeChainsIn(save string, ruleset IptablesRuleset) []IptablesChain {
	var chains []IptablesChain
	for _, table := range sortedTables(ruleset) {
		for _, chain := range sortedChains(ruleset[table]) {
			if strings.HasPrefix(chain, "KUBE-") {
				chains = append(chains, IptablesChain{Save: save, Table: table, Chain: chain})
			}
		}
	}
	return chains
}

// observeNodeFacts gathers NodeFacts on this machine. dumps are the families' iptables-save
// outputs (unusable families absent).
func observeNodeFacts(dumps map[string]IptablesRuleset, hierarchies []string) NodeFacts {
	var facts NodeFacts
	facts.Processes = nodeAgentProcesses()
	for _, file := range KubernetesNodeFiles {
		if _, err := os.Stat(file); err == nil {
			facts.Files = append(facts.Files, file)
		}
	}
	for _, family := range IptablesFamilies {
		if ruleset, ok := dumps[family.Save]; ok {
			facts.KubeChains = append(facts.KubeChains, KubeChainsIn(family.Save, ruleset)...)
		}
	}
	facts.KubepodsCgroups = topLevelKubepodsCgroups(hierarchies)
	return facts
}

func nodeAgentProcesses() []NodeProcess {
	var found []NodeProcess
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		program := ""
		for _, name := range []string{filepath.Base(strings.TrimSuffix(exe, " (deleted)")), strings.TrimSpace(string(comm))} {
			if slices.Contains(NodeAgentPrograms, name) {
				program = name
				break
			}
		}
		if program == "" {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		found = append(found, NodeProcess{PID: pid, Program: program, Cmdline: strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))})
	}
	return found
}
