package localcluster

import (
	"os/exec"
	"slices"
	"strings"
)

// kubeletChains are the iptables chains the kubelet creates itself; kube-proxy --cleanup removes
// only kube-proxy's.
var kubeletChains = []string{"KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"}

// KubeletChainCleanup turns the `iptables -t TABLE -S` output of one table into the argument lists
// that remove the kubelet's chains from it: first the rules that jump to them, then the chains.
func KubeletChainCleanup(table, rules string) [][]string {
	var cmds [][]string
	var chains []string
	for _, line := range strings.Split(rules, "\n") {
		fields := strings.Fields(line)
		switch {
		case len(fields) == 2 && fields[0] == "-N" && slices.Contains(kubeletChains, fields[1]):
			chains = append(chains, fields[1])
		case len(fields) >= 4 && fields[0] == "-A" && !slices.Contains(kubeletChains, fields[1]) &&
			slices.ContainsFunc(kubeletChains, func(chain string) bool { return jumpsTo(fields, chain) }):
			cmds = append(cmds, append([]string{"-t", table, "-D"}, fields[1:]...))
		}
	}
	for _, chain := range chains {
		cmds = append(cmds, []string{"-t", table, "-F", chain}, []string{"-t", table, "-X", chain})
	}
	return cmds
}

func jumpsTo(fields []string, chain string) bool {
	i := slices.Index(fields, "-j")
	return i >= 0 && i+1 < len(fields) && fields[i+1] == chain
}

// removeKubeletChains removes the kubelet's iptables chains (IPv4 and IPv6), best effort.
func removeKubeletChains() {
	for _, tool := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"filter", "nat", "mangle"} {
			out, err := exec.Command(tool, "-t", table, "-S").Output()
			if err != nil {
				continue
			}
			for _, args := range KubeletChainCleanup(table, string(out)) {
				_ = exec.Command(tool, args...).Run()
			}
		}
	}
}
