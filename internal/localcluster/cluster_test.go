package localcluster

import (
	"slices"
	"strings"
	"testing"
)

func TestParseMountsUnderReturnsOnlyTheStateDirectoryDeepestFirst(t *testing.T) {
	mountinfo := `22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
98 22 0:45 / /var/lib/ml/kubelet/pods/abc/volumes/kubernetes.io~projected/kube-api-access-x rw - tmpfs tmpfs rw
99 22 0:46 / /var/lib/ml/containerd/state/io.containerd.runtime.v2.task/k8s.io/123/rootfs rw - overlay overlay rw
100 22 0:47 / /var/lib/ml-other/x rw - tmpfs tmpfs rw
101 22 0:48 / /var/lib/ml/with\040space rw - tmpfs tmpfs rw
102 22 0:49 / /var/lib/ml rw - tmpfs tmpfs rw
`
	got := ParseMountsUnder(strings.NewReader(mountinfo), "/var/lib/ml/")
	want := []string{
		"/var/lib/ml/kubelet/pods/abc/volumes/kubernetes.io~projected/kube-api-access-x",
		"/var/lib/ml/containerd/state/io.containerd.runtime.v2.task/k8s.io/123/rootfs",
		"/var/lib/ml/with space",
		"/var/lib/ml",
	}
	if !slices.Equal(got, want) {
		t.Errorf("ParseMountsUnder() =\n%q\nwant\n%q", got, want)
	}
}

func TestParseDefaultRouteInterface(t *testing.T) {
	routes := `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
mlbr0	0000F40A	00000000	0001	0	0	0	00FFFFFF	0	0	0
eth0	00000000	010200C0	0003	0	0	0	00000000	0	0	0
eth0	000200C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
`
	got, err := ParseDefaultRouteInterface(strings.NewReader(routes))
	if err != nil || got != "eth0" {
		t.Errorf("ParseDefaultRouteInterface() = %q, %v; want eth0", got, err)
	}
	if _, err := ParseDefaultRouteInterface(strings.NewReader("Iface\tDestination\n")); err == nil {
		t.Error("no error without a default route")
	}
}
