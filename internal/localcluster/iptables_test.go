package localcluster

import (
	"fmt"
	"testing"
)

func TestKubeletChainCleanupRemovesJumpsBeforeChainsAndLeavesOtherRules(t *testing.T) {
	rules := `-P INPUT ACCEPT
-N KUBE-FIREWALL
-N KUBE-KUBELET-CANARY
-N DOCKER-USER
-A INPUT -j KUBE-FIREWALL
-A OUTPUT -j KUBE-FIREWALL
-A FORWARD -j DOCKER-USER
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -j DROP
`
	got := fmt.Sprint(KubeletChainCleanup("filter", rules))
	want := fmt.Sprint([][]string{
		{"-t", "filter", "-D", "INPUT", "-j", "KUBE-FIREWALL"},
		{"-t", "filter", "-D", "OUTPUT", "-j", "KUBE-FIREWALL"},
		{"-t", "filter", "-F", "KUBE-FIREWALL"}, {"-t", "filter", "-X", "KUBE-FIREWALL"},
		{"-t", "filter", "-F", "KUBE-KUBELET-CANARY"}, {"-t", "filter", "-X", "KUBE-KUBELET-CANARY"},
	})
	if got != want {
		t.Errorf("KubeletChainCleanup() =\n%s\nwant\n%s", got, want)
	}
}
