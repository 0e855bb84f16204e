package localcluster

import (
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// hybridMountinfo is this kind of machine's: cgroup v1 controllers plus cgroup2 at
// /sys/fs/cgroup/unified, and the tmpfs that holds them.
const hybridMountinfo = `22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
34 30 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
36 30 0:32 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
37 30 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
38 22 0:34 / /var/lib/ml/cgroup-like rw,relatime shared:5 - tmpfs tmpfs rw
`

func TestParseCgroupHierarchiesFindsEveryV1ControllerAndTheUnifiedHierarchy(t *testing.T) {
	got := ParseCgroupHierarchies(strings.NewReader(hybridMountinfo))
	want := []string{
		"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/cpuset", "/sys/fs/cgroup/memory",
		"/sys/fs/cgroup/pids", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified",
	}
	if !slices.Equal(got, want) {
		t.Errorf("ParseCgroupHierarchies() = %q, want %q", got, want)
	}
	v2 := ParseCgroupHierarchies(strings.NewReader("29 22 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"))
	if !slices.Equal(v2, []string{"/sys/fs/cgroup"}) {
		t.Errorf("ParseCgroupHierarchies(cgroup v2 only) = %q", v2)
	}
}

func TestClusterCgroupsAreOnlyTheClusterRootInEachHierarchy(t *testing.T) {
	hierarchies := []string{"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified"}
	got := ClusterCgroupDirs(hierarchies, "/meshlift-local")
	want := []string{"/sys/fs/cgroup/cpu/meshlift-local", "/sys/fs/cgroup/memory/meshlift-local", "/sys/fs/cgroup/unified/meshlift-local"}
	if !slices.Equal(got, want) {
		t.Errorf("ClusterCgroupDirs() = %q, want %q", got, want)
	}
	for _, root := range []string{"", "/", "//", "/.."} {
		if got := ClusterCgroupDirs(hierarchies, root); len(got) != 0 {
			t.Errorf("ClusterCgroupDirs(root %q) = %q: the root of a hierarchy is never the cluster's", root, got)
		}
	}
}

func TestTheKubeletPutsPodsUnderTheClusterCgroupRoot(t *testing.T) {
	l, c := testLayout()
	data, err := KubeletConfig(l, c)
	if err != nil {
		t.Fatal(err)
	}
	var kubelet map[string]any
	if err := yaml.Unmarshal(data, &kubelet); err != nil {
		t.Fatal(err)
	}
	if kubelet["cgroupRoot"] != "/meshlift-local" || c.CgroupRoot != "/meshlift-local" {
		t.Errorf("kubelet cgroupRoot = %v (config %q), want /meshlift-local: without it the kubelet's kubepods share the host's top level", kubelet["cgroupRoot"], c.CgroupRoot)
	}
}

func TestCgroupRemovalOrderIsDeepestFirst(t *testing.T) {
	got := CgroupRemovalOrder([]string{
		"/sys/fs/cgroup/cpu/meshlift-local",
		"/sys/fs/cgroup/cpu/meshlift-local/kubepods/besteffort/pod1",
		"/sys/fs/cgroup/cpu/meshlift-local/kubepods",
		"/sys/fs/cgroup/cpu/meshlift-local/kubepods/besteffort",
		"/sys/fs/cgroup/cpu/meshlift-local/kubepods/besteffort/pod1/ctr",
	})
	want := []string{
		"/sys/fs/cgroup/cpu/meshlift-local/kubepods/besteffort/pod1/ctr",
		"/sys/fs/cgroup/cpu/meshlift-local/kubepods/besteffort/pod1",
		"/sys/fs/cgroup/cpu/meshlift-local/kubepods/besteffort",
		"/sys/fs/cgroup/cpu/meshlift-local/kubepods",
		"/sys/fs/cgroup/cpu/meshlift-local",
	}
	if !slices.Equal(got, want) {
		t.Errorf("CgroupRemovalOrder() = %q, want %q", got, want)
	}
}
