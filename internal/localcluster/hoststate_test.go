package localcluster

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeSysctls models /proc/sys as far as restoring needs: writing ip_forward or all/forwarding
// sets default and every interface's forwarding too, and all/accept_redirects to the opposite,
// as the kernel does.
type fakeSysctls struct {
	values   map[string]string
	readOnly map[string]bool
	writes   []string
}

func (f *fakeSysctls) Read(path string) (string, bool) {
	v, ok := f.values[path]
	return v, ok
}

func (f *fakeSysctls) Write(path, value string) error {
	if _, ok := f.values[path]; !ok {
		return errors.New("no such file")
	}
	if f.readOnly[path] {
		return errors.New("permission denied")
	}
	f.writes = append(f.writes, path+"="+value)
	f.values[path] = value
	if path == "net/ipv4/ip_forward" || path == "net/ipv4/conf/all/forwarding" {
		for p := range f.values {
			if strings.HasPrefix(p, "net/ipv4/conf/") && strings.HasSuffix(p, "/forwarding") || p == "net/ipv4/ip_forward" {
				f.values[p] = value
			}
		}
		f.values["net/ipv4/conf/all/accept_redirects"] = map[string]string{"0": "1", "1": "0"}[value]
	}
	return nil
}

func TestSysctlsToRecordPutsForwardingFirstThenEachInterfaceThenTheRest(t *testing.T) {
	got := SysctlsToRecord([]string{"lo", "eth0", "all", "default"})
	want := []string{
		"net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding", "net/ipv4/conf/default/forwarding",
		"net/ipv4/conf/all/accept_redirects", "net/ipv4/conf/eth0/forwarding", "net/ipv4/conf/lo/forwarding",
	}
	if !slices.Equal(got[:len(want)], want) {
		t.Errorf("SysctlsToRecord() starts with %q, want %q", got[:len(want)], want)
	}
	for _, path := range []string{"net/bridge/bridge-nf-call-iptables", "vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "net/ipv4/conf/all/route_localnet"} {
		if !slices.Contains(got, path) {
			t.Errorf("SysctlsToRecord() lacks %s, which the cluster or its components write", path)
		}
	}
}

func TestRestoreSysctls(t *testing.T) {
	// The host before up, as recorded.
	before := map[string]string{
		"net/ipv4/ip_forward": "0", "net/ipv4/conf/all/forwarding": "0", "net/ipv4/conf/default/forwarding": "0",
		"net/ipv4/conf/eth0/forwarding": "0", "net/ipv4/conf/lo/forwarding": "0", "net/ipv4/conf/all/accept_redirects": "1",
		"net/bridge/bridge-nf-call-iptables": "1", "vm/overcommit_memory": "0", "kernel/panic": "1", "kernel/panic_on_oops": "0",
		"net/ipv4/tcp_rmem": "4096\t131072\t6291456",
	}
	record := func(fs *fakeSysctls) []Sysctl {
		paths := append(SysctlsToRecord([]string{"all", "default", "eth0", "lo"}), "net/ipv4/tcp_rmem")
		return RecordSysctls(fs, paths)
	}
	// What the cluster leaves: up, the CNI bridge plugin, the kubelet and kube-proxy wrote these.
	during := func() map[string]string {
		values := map[string]string{}
		for k, v := range before {
			values[k] = v
		}
		for k, v := range map[string]string{
			"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/forwarding": "1", "net/ipv4/conf/default/forwarding": "1",
			"net/ipv4/conf/eth0/forwarding": "1", "net/ipv4/conf/lo/forwarding": "1", "net/ipv4/conf/mlbr0/forwarding": "1",
			"net/ipv4/conf/all/accept_redirects": "0",
			"vm/overcommit_memory":               "1", "kernel/panic": "10", "kernel/panic_on_oops": "1", "net/ipv4/tcp_rmem": "4096 131072 6291456",
		} {
			values[k] = v
		}
		return values
	}
	tests := []struct {
		name        string
		adjust      func(recorded []Sysctl, now map[string]string) ([]Sysctl, map[string]bool)
		wantWrites  []string
		wantErr     string
		wantChanged map[string]string // values that differ from before afterwards
	}{
		{
			name:       "writes back the values the cluster changed, in order, and nothing else",
			wantWrites: []string{"net/ipv4/ip_forward=0", "vm/overcommit_memory=0", "kernel/panic=1", "kernel/panic_on_oops=0"},
		},
		{
			name: "restores an interface's forwarding that writing ip_forward back resets",
			adjust: func(recorded []Sysctl, now map[string]string) ([]Sysctl, map[string]bool) {
				for i := range recorded {
					if recorded[i].Path == "net/ipv4/conf/eth0/forwarding" {
						recorded[i].Value = "1" // forwarding on eth0 only, before up
					}
				}
				return recorded, nil
			},
			wantWrites: []string{"net/ipv4/ip_forward=0", "net/ipv4/conf/eth0/forwarding=1", "vm/overcommit_memory=0", "kernel/panic=1", "kernel/panic_on_oops=0"},
		},
		{
			name: "skips a setting that no longer exists",
			adjust: func(recorded []Sysctl, now map[string]string) ([]Sysctl, map[string]bool) {
				delete(now, "net/ipv4/conf/lo/forwarding")
				return append(recorded, Sysctl{Path: "net/ipv4/conf/veth1/forwarding", Value: "0"}), nil
			},
			wantWrites: []string{"net/ipv4/ip_forward=0", "vm/overcommit_memory=0", "kernel/panic=1", "kernel/panic_on_oops=0"},
		},
		{
			name: "reports a setting it cannot write back and still restores the others",
			adjust: func(recorded []Sysctl, now map[string]string) ([]Sysctl, map[string]bool) {
				return recorded, map[string]bool{"kernel/panic": true}
			},
			wantWrites:  []string{"net/ipv4/ip_forward=0", "vm/overcommit_memory=0", "kernel/panic_on_oops=0"},
			wantErr:     "failed to restore kernel/panic",
			wantChanged: map[string]string{"kernel/panic": "10"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recorded := record(&fakeSysctls{values: before})
			fs := &fakeSysctls{values: during()}
			if tt.adjust != nil {
				recorded, fs.readOnly = tt.adjust(recorded, fs.values)
			}
			written, err := RestoreSysctls(fs, recorded)
			if !slices.Equal(fs.writes, tt.wantWrites) {
				t.Errorf("writes = %q, want %q", fs.writes, tt.wantWrites)
			}
			if len(written) != len(tt.wantWrites) {
				t.Errorf("RestoreSysctls() returned %d written settings, want %d", len(written), len(tt.wantWrites))
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
			for _, s := range recorded {
				now, ok := fs.values[s.Path]
				if !ok {
					continue
				}
				if want, changed := tt.wantChanged[s.Path]; changed {
					if now != want {
						t.Errorf("%s = %q, want it left at %q", s.Path, now, want)
					}
				} else if !sameSysctlValue(now, s.Value) {
					t.Errorf("%s = %q after restoring, want %q", s.Path, now, s.Value)
				}
			}
		})
	}
}

func TestHostStateRoundTripsThroughItsFileAndRejectsAnotherVersion(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state", "host-state.json")
	if _, recorded, err := LoadHostState(file); recorded || err != nil {
		t.Fatalf("LoadHostState(missing) = %v, %v; want not recorded, no error", recorded, err)
	}
	state := HostState{
		Version: hostStateVersion, RecordedAt: time.Date(2026, 12, 6, 23, 0, 0, 0, time.UTC),
		Sysctls:  []Sysctl{{Path: "net/ipv4/ip_forward", Value: "0"}},
		Iptables: []IptablesSnapshot{{Save: "iptables-save", Dump: dump(beforeTables)}, {Save: "ip6tables-save", Error: "not supported"}},
		Routes:   []string{"10.96.0.0/16 via 192.0.2.1 dev eth0"}, AbsentHostDirs: []string{"/var/lib/cni"},
	}
	if err := state.Save(file); err != nil {
		t.Fatal(err)
	}
	got, recorded, err := LoadHostState(file)
	if err != nil || !recorded {
		t.Fatalf("LoadHostState() = %v, %v", recorded, err)
	}
	if before, ok, err := got.IptablesBefore("iptables-save"); err != nil || !ok || !before["filter"].HasChain("DOCKER-LIKE-TEST") {
		t.Errorf("IptablesBefore(iptables-save) = %v, %v, %v", before, ok, err)
	}
	if _, ok, err := got.IptablesBefore("ip6tables-save"); ok || err != nil {
		t.Errorf("IptablesBefore(ip6tables-save) of an unusable family = %v, %v; want not ok", ok, err)
	}
	if got.Routes[0] != state.Routes[0] || got.Sysctls[0] != state.Sysctls[0] || !got.RecordedAt.Equal(state.RecordedAt) {
		t.Errorf("LoadHostState() = %+v, want %+v", got, state)
	}

	state.Version = hostStateVersion + 1
	if err := state.Save(file); err != nil {
		t.Fatal(err)
	}
	if _, recorded, err := LoadHostState(file); recorded || err == nil {
		t.Errorf("LoadHostState(version %d) = %v, %v; want an error", state.Version, recorded, err)
	}
}

func TestCreatedTreeLeftover(t *testing.T) {
	const stateDir = "/var/lib/meshlift-local-cluster"
	dir := func(path string) TreeEntry { return TreeEntry{Path: path, Mode: fs.ModeDir} }
	tests := []struct {
		name    string
		entries []TreeEntry
		live    map[string]bool
		ourIDs  []string
		want    string
	}{
		{
			name:    "directories only can go",
			entries: []TreeEntry{dir("/var/lib/cni"), dir("/var/lib/cni/results")},
		},
		{
			name: "the kubelet's device plugin socket, no longer listened on, can go",
			entries: []TreeEntry{dir("/var/lib/kubelet"), dir("/var/lib/kubelet/device-plugins"),
				{Path: "/var/lib/kubelet/device-plugins/kubelet.sock", Mode: fs.ModeSocket}},
		},
		{
			name:    "a socket a process listens on stays",
			entries: []TreeEntry{dir("/run/containerd"), {Path: "/run/containerd/containerd.sock", Mode: fs.ModeSocket}},
			live:    map[string]bool{"/run/containerd/containerd.sock": true},
			want:    "/run/containerd/containerd.sock",
		},
		{
			name: "container log links into the state directory can go",
			entries: []TreeEntry{dir("/var/log/containers"), {Path: "/var/log/containers/check.log", Mode: fs.ModeSymlink,
				LinkTarget: stateDir + "/pod-logs/kube-system_check_1/check/0.log"}},
		},
		{
			name: "a link elsewhere stays",
			entries: []TreeEntry{dir("/var/log/containers"), {Path: "/var/log/containers/other.log", Mode: fs.ModeSymlink,
				LinkTarget: "/var/log/pods/x/0.log"}},
			want: "/var/log/containers/other.log",
		},
		{
			name: "a link to a sibling of the state directory stays",
			entries: []TreeEntry{dir("/var/log/containers"), {Path: "/var/log/containers/other.log", Mode: fs.ModeSymlink,
				LinkTarget: stateDir + "-other/0.log"}},
			want: "/var/log/containers/other.log",
		},
		{
			name: "libcni's cached results of our sandboxes can go",
			entries: []TreeEntry{dir("/var/lib/cni"), dir("/var/lib/cni/results"),
				{Path: "/var/lib/cni/results/meshlift-47bf40a90d34f172bd2e-eth0"}, {Path: "/var/lib/cni/results/cni-loopback-47bf40a90d34f172bd2e-lo"}},
			ourIDs: []string{"47bf40a90d34f172bd2e", "5ec110ed1d2d6367053c"},
		},
		{
			name: "libcni's cached result of another containerd's sandbox stays",
			entries: []TreeEntry{dir("/var/lib/cni"), dir("/var/lib/cni/results"),
				{Path: "/var/lib/cni/results/podman-0123456789abcdef0123-eth0"}},
			ourIDs: []string{"47bf40a90d34f172bd2e"},
			want:   "/var/lib/cni/results/podman-0123456789abcdef0123-eth0",
		},
		{
			name:    "a regular file stays",
			entries: []TreeEntry{dir("/run/netns"), {Path: "/run/netns/cni-1234"}},
			want:    "/run/netns/cni-1234",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CreatedTreeLeftover(tt.entries, stateDir, tt.live, tt.ourIDs); got != tt.want {
				t.Errorf("CreatedTreeLeftover() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRemoveCreatedTreeRemovesAllOrNothing(t *testing.T) {
	root := t.TempDir()
	stateDir := filepath.Join(root, "state")
	logs := filepath.Join(root, "containers")
	if err := os.MkdirAll(filepath.Join(logs, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(stateDir, "pod-logs", "0.log"), filepath.Join(logs, "sub", "a.log")); err != nil {
		t.Fatal(err)
	}
	if removed, leftover, err := RemoveCreatedTree(logs, stateDir, nil); !removed || leftover != "" || err != nil {
		t.Errorf("RemoveCreatedTree(links into the state directory) = %v, %q, %v; want removed", removed, leftover, err)
	}
	if _, err := os.Lstat(logs); !os.IsNotExist(err) {
		t.Errorf("%s still exists (%v)", logs, err)
	}

	netns := filepath.Join(root, "netns")
	file := filepath.Join(netns, "sub", "cni-1234")
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if removed, leftover, err := RemoveCreatedTree(netns, stateDir, nil); removed || leftover != file || err != nil {
		t.Errorf("RemoveCreatedTree(holding a file) = %v, %q, %v; want kept, naming %s", removed, leftover, err, file)
	}
	if _, err := os.Stat(filepath.Join(netns, "sub")); err != nil {
		t.Errorf("RemoveCreatedTree removed part of a directory it keeps: %v", err)
	}
	if removed, leftover, err := RemoveCreatedTree(filepath.Join(root, "absent"), stateDir, nil); removed || leftover != "" || err != nil {
		t.Errorf("RemoveCreatedTree(absent) = %v, %q, %v", removed, leftover, err)
	}
}
