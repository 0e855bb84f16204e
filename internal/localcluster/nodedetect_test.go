package localcluster

import (
	"strings"
	"testing"
)

func TestKubernetesNodeFindings(t *testing.T) {
	const stateDir = "/var/lib/meshlift-local-cluster"
	ourKubelet := NodeProcess{PID: 4242, Program: "kubelet", Cmdline: "/repo/bin/k8s/1.36.3/kubelet --config=" + stateDir + "/config/kubelet.yaml"}
	// A previous cluster of ours recorded the host before creating KUBE-FIREWALL.
	recorded := &HostState{Version: hostStateVersion, Iptables: []IptablesSnapshot{{Save: "iptables-save", Dump: dump(map[string][]string{
		"filter": {":INPUT ACCEPT", ":DOCKER-LIKE-TEST -", ":KUBE-FORWARD -"}, // KUBE-FORWARD: a foreign node's, recorded anyway
	})}}}
	none := PreviousCluster{StateDir: stateDir}
	tests := []struct {
		name     string
		facts    NodeFacts
		previous PreviousCluster
		want     []string // substrings, one per finding
	}{
		{
			name:     "a machine with no trace of Kubernetes is not a node",
			facts:    NodeFacts{KubeChains: nil},
			previous: none,
		},
		{
			name:     "a kubelet that we did not start makes a node",
			facts:    NodeFacts{Processes: []NodeProcess{{PID: 77, Program: "kubelet", Cmdline: "/usr/bin/kubelet --config=/var/lib/kubelet/config.yaml"}}},
			previous: none,
			want:     []string{"kubelet runs (pid 77: /usr/bin/kubelet --config=/var/lib/kubelet/config.yaml)"},
		},
		{
			name:     "k3s makes a node",
			facts:    NodeFacts{Processes: []NodeProcess{{PID: 9, Program: "k3s-server", Cmdline: "/usr/local/bin/k3s server"}}},
			previous: none,
			want:     []string{"k3s-server runs (pid 9"},
		},
		{
			name:     "the kubelet our previous cluster recorded is not a finding",
			facts:    NodeFacts{Processes: []NodeProcess{ourKubelet}},
			previous: PreviousCluster{StateDir: stateDir, Exists: true, Recorded: recorded, PIDs: []int{4242}},
		},
		{
			name:     "a kubelet of an earlier local cluster that runs without a PID record is named as such",
			facts:    NodeFacts{Processes: []NodeProcess{ourKubelet}},
			previous: none,
			want:     []string{"kubelet (pid 4242) of an earlier local cluster still runs without a PID record"},
		},
		{
			name:     "kubeadm's kubelet configuration makes a node",
			facts:    NodeFacts{Files: []string{"/var/lib/kubelet/config.yaml", "/etc/kubernetes/kubelet.conf"}},
			previous: none,
			want:     []string{"/var/lib/kubelet/config.yaml exists", "/etc/kubernetes/kubelet.conf exists"},
		},
		{
			name: "KUBE chains without a cluster of ours make a node",
			facts: NodeFacts{KubeChains: []IptablesChain{
				{Save: "iptables-save", Table: "nat", Chain: "KUBE-SERVICES"}, {Save: "ip6tables-save", Table: "filter", Chain: "KUBE-FIREWALL"},
			}},
			previous: none,
			want:     []string{"iptables chains of kube-proxy or a kubelet exist: iptables-save -t nat KUBE-SERVICES, ip6tables-save -t filter KUBE-FIREWALL"},
		},
		{
			name:     "KUBE chains our previous cluster created after recording the host are not a finding",
			facts:    NodeFacts{KubeChains: []IptablesChain{{Save: "iptables-save", Table: "filter", Chain: "KUBE-FIREWALL"}}},
			previous: PreviousCluster{StateDir: stateDir, Exists: true, Recorded: recorded},
		},
		{
			name:     "a KUBE chain that predates our previous cluster's record makes a node",
			facts:    NodeFacts{KubeChains: []IptablesChain{{Save: "iptables-save", Table: "filter", Chain: "KUBE-FORWARD"}}},
			previous: PreviousCluster{StateDir: stateDir, Exists: true, Recorded: recorded},
			want:     []string{"iptables-save -t filter KUBE-FORWARD"},
		},
		{
			name:     "top-level kubepods cgroups make a node: our kubelet keeps its own under the cluster's cgroup root",
			facts:    NodeFacts{KubepodsCgroups: []string{"/sys/fs/cgroup/cpu/kubepods"}},
			previous: PreviousCluster{StateDir: stateDir, Exists: true, Recorded: recorded},
			want:     []string{"a kubelet's pod cgroups exist: /sys/fs/cgroup/cpu/kubepods"},
		},
		{
			name: "an older version's state directory accounts for KUBE chains and top-level kubepods cgroups",
			facts: NodeFacts{
				KubeChains:      []IptablesChain{{Save: "iptables-save", Table: "nat", Chain: "KUBE-SERVICES"}},
				KubepodsCgroups: []string{"/sys/fs/cgroup/memory/kubepods"},
			},
			previous: PreviousCluster{StateDir: stateDir, Exists: true},
		},
		{
			name: "an older version's state directory does not account for a foreign kubelet",
			facts: NodeFacts{
				Processes:  []NodeProcess{{PID: 77, Program: "kubelet", Cmdline: "/usr/bin/kubelet"}},
				KubeChains: []IptablesChain{{Save: "iptables-save", Table: "nat", Chain: "KUBE-SERVICES"}},
			},
			previous: PreviousCluster{StateDir: stateDir, Exists: true},
			want:     []string{"kubelet runs (pid 77"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := KubernetesNodeFindings(tt.facts, tt.previous)
			if len(got) != len(tt.want) {
				t.Fatalf("findings = %q, want %d like %q", got, len(tt.want), tt.want)
			}
			for i, want := range tt.want {
				if !strings.Contains(got[i], want) {
					t.Errorf("finding %d = %q, want it to contain %q", i, got[i], want)
				}
			}
		})
	}
}

func TestKubeChainsInListsOnlyKubeChains(t *testing.T) {
	ruleset := mustParse(t, dump(duringTables()))
	var got []string
	for _, c := range KubeChainsIn("iptables-save", ruleset) {
		got = append(got, c.Table+"/"+c.Chain)
	}
	want := "filter/KUBE-FIREWALL filter/KUBE-FORWARD filter/KUBE-KUBELET-CANARY filter/KUBE-SERVICES " +
		"mangle/KUBE-IPTABLES-HINT mangle/KUBE-KUBELET-CANARY " +
		"nat/KUBE-MARK-MASQ nat/KUBE-POSTROUTING nat/KUBE-SERVICES nat/KUBE-SVC-NPX46M4PTMTKRN6Y"
	if strings.Join(got, " ") != want {
		t.Errorf("KubeChainsIn() = %s\nwant %s", strings.Join(got, " "), want)
	}
	if chains := KubeChainsIn("iptables-save", mustParse(t, dump(beforeTables))); len(chains) != 0 {
		t.Errorf("KubeChainsIn(a host with DOCKER-LIKE-TEST and CNI chains) = %v, want none", chains)
	}
}
