package localcluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// HostState is what `up` found on this machine before changing anything, kept in the state
// directory (host-state.json). `down` removes what the cluster created since and writes back
// what it changed; a state directory without it was left by an older version.
type HostState struct {
	Version    int       `json:"version"`
	RecordedAt time.Time `json:"recordedAt"`
	// Sysctls are the kernel settings that up, the kubelet, kube-proxy or the CNI bridge plugin
	// write, with their values before, in the order down writes them back.
	Sysctls []Sysctl `json:"sysctls"`
	// Iptables is iptables-save's output per family before any component ran.
	Iptables []IptablesSnapshot `json:"iptables"`
	// BridgeExisted: the pod bridge was there before, so down leaves it.
	BridgeExisted bool `json:"bridgeExisted"`
	// Routes are `ip -4 route show exact` lines for Config.LocalCIDRs, which up points at the
	// bridge; down adds them back.
	Routes []string `json:"routes,omitempty"`
	// LoadedModules are kernel modules up loaded; down unloads them.
	LoadedModules []string `json:"loadedModules,omitempty"`
	// AbsentHostDirs are directories outside the state directory that components create
	// (HostDirsComponentsCreate) and that did not exist before; down removes them when nothing
	// but empty directories is left in them.
	AbsentHostDirs []string `json:"absentHostDirs,omitempty"`
}

// hostStateVersion is the format of HostState; a record of another version is not trusted.
const hostStateVersion = 1

// Sysctl is a kernel setting: its path under /proc/sys and its value.
type Sysctl struct {
	Path  string `json:"path"`
	Value string `json:"value"`
}

// IptablesSnapshot is the output of one family's save command, or why it could not run (then the
// components could not use that family either).
type IptablesSnapshot struct {
	Save  string `json:"save"`
	Dump  string `json:"dump,omitempty"`
	Error string `json:"error,omitempty"`
}

// SysctlsWritten lists, besides the per-interface forwarding settings SysctlsToRecord adds, the
// kernel settings written while the cluster runs.
var SysctlsWritten = []string{
	// up, and the CNI bridge plugin (isGateway). Writing it writes every interface's forwarding
	// setting too, so those follow it in the record and are written back after it.
	"net/ipv4/ip_forward",
	"net/ipv4/conf/all/forwarding",
	"net/ipv4/conf/default/forwarding",
	"net/ipv4/conf/all/accept_redirects", // the kernel turns it off with forwarding
	// up (kube-proxy's Service rules must see bridged traffic).
	"net/bridge/bridge-nf-call-iptables",
	"net/bridge/bridge-nf-call-ip6tables",
	// The CNI bridge plugin for IPv6 pod ranges.
	"net/ipv6/conf/all/forwarding",
	// The kubelet (KubeletConfiguration protectKernelDefaults false: it sets these at start).
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
	// kube-proxy (localhost NodePorts, conntrack table size and timeouts).
	"net/ipv4/conf/all/route_localnet",
	"net/netfilter/nf_conntrack_max",
	"net/netfilter/nf_conntrack_tcp_timeout_established",
	"net/netfilter/nf_conntrack_tcp_timeout_close_wait",
}

// SysctlsToRecord returns the settings to record, in the order they are written back: ip_forward,
// all/default forwarding and all/accept_redirects first (writing ip_forward resets them and every
// interface's forwarding), then each existing interface's forwarding, then the rest.
func SysctlsToRecord(interfaces []string) []string {
	paths := slices.Clone(SysctlsWritten[:4])
	ifaces := slices.Clone(interfaces)
	sort.Strings(ifaces)
	for _, iface := range ifaces {
		if iface != "all" && iface != "default" {
			paths = append(paths, "net/ipv4/conf/"+iface+"/forwarding")
		}
	}
	return append(paths, SysctlsWritten[4:]...)
}

// SysctlFS reads and writes kernel settings by their path under /proc/sys.
type SysctlFS interface {
	// Read returns the value, false when the setting does not exist (an interface that is gone,
	// a module not loaded).
	Read(path string) (string, bool)
	Write(path, value string) error
}

// ProcSys is the real /proc/sys.
type ProcSys struct{}

func (ProcSys) Read(path string) (string, bool) {
	data, err := os.ReadFile(filepath.Join("/proc/sys", path))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(data)), true
}

func (ProcSys) Write(path, value string) error {
	return os.WriteFile(filepath.Join("/proc/sys", path), []byte(value), 0o644)
}

// RecordSysctls reads the settings that exist; absent ones (a module not loaded) are not recorded.
func RecordSysctls(fs SysctlFS, paths []string) []Sysctl {
	var recorded []Sysctl
	for _, path := range paths {
		if value, ok := fs.Read(path); ok {
			recorded = append(recorded, Sysctl{Path: path, Value: value})
		}
	}
	return recorded
}

func sameSysctlValue(a, b string) bool {
	return strings.Join(strings.Fields(a), " ") == strings.Join(strings.Fields(b), " ")
}

// RestoreSysctls writes back, in order, every recorded setting whose value differs now (reading
// each just before, since writing one may change others), skips settings that no longer exist,
// and then checks that every one holds its recorded value. It returns what it wrote.
func RestoreSysctls(fs SysctlFS, recorded []Sysctl) ([]Sysctl, error) {
	var written []Sysctl
	var errs []error
	for _, want := range recorded {
		current, ok := fs.Read(want.Path)
		if !ok || sameSysctlValue(current, want.Value) {
			continue
		}
		if err := fs.Write(want.Path, want.Value); err != nil {
			errs = append(errs, fmt.Errorf("failed to restore %s to %q (it is %q): %w", want.Path, want.Value, current, err))
			continue
		}
		written = append(written, want)
	}
	for _, want := range recorded {
		if current, ok := fs.Read(want.Path); ok && !sameSysctlValue(current, want.Value) {
			errs = append(errs, fmt.Errorf("%s is %q after restoring, want %q", want.Path, current, want.Value))
		}
	}
	return written, errors.Join(errs...)
}

// HostDirsComponentsCreate are directories outside the state directory that containerd, runc,
// the CNI plugins or the kubelet create although everything else of theirs is configured into
// the state directory.
var HostDirsComponentsCreate = []string{
	"/run/containerd",     // containerd's shim sockets (/run/containerd/s) and runc's state
	"/run/netns",          // pods' network namespaces
	"/run/mount",          // util-linux's mount, which the kubelet runs for volumes
	"/var/lib/cni",        // libcni's result cache
	"/var/lib/kubelet",    // the kubelet's device plugin socket (a fixed path, whatever its root dir)
	"/var/log/containers", // the kubelet's container log symlinks
}

// TreeEntry is a file found under a host directory that up did not find.
type TreeEntry struct {
	Path string
	Mode fs.FileMode
	// LinkTarget is where a symlink points.
	LinkTarget string
}

// CreatedTreeLeftover decides whether a host directory that did not exist when up recorded the
// host can be removed: everything in it appeared while the cluster ran, and it may hold only
// directories, sockets no process listens on (liveSockets: the paths in /proc/net/unix), symlinks
// into the state directory (the kubelet's container log links) and files named after one of our
// containerd's sandboxes or containers (ourIDs; libcni caches results as
// <network>-<sandbox ID>-<interface>). It returns the first entry that is none of those, or ""
// when the directory can go.
func CreatedTreeLeftover(entries []TreeEntry, stateDir string, liveSockets map[string]bool, ourIDs []string) string {
	namedAfterOurs := func(path string) bool {
		name := filepath.Base(path)
		return slices.ContainsFunc(ourIDs, func(id string) bool { return len(id) >= 12 && strings.Contains(name, id) })
	}
	for _, e := range entries {
		switch {
		case e.Mode.IsDir():
		case e.Mode&fs.ModeSocket != 0 && !liveSockets[e.Path]:
		case e.Mode&fs.ModeSymlink != 0 && strings.HasPrefix(filepath.Clean(e.LinkTarget), filepath.Clean(stateDir)+"/"):
		case e.Mode.IsRegular() && namedAfterOurs(e.Path):
		default:
			return e.Path
		}
	}
	return ""
}

// ContainerdIDs returns the IDs of the sandboxes and containers our containerd's CRI plugin knows
// (criDir is its root directory, Layout.CRIDir).
func ContainerdIDs(criDir string) []string {
	var ids []string
	for _, kind := range []string{"sandboxes", "containers"} {
		entries, _ := os.ReadDir(filepath.Join(criDir, kind))
		for _, e := range entries {
			ids = append(ids, e.Name())
		}
	}
	return ids
}

// RemoveCreatedTree removes dir when CreatedTreeLeftover allows it, and reports whether it did;
// otherwise it removes nothing and names what it found.
func RemoveCreatedTree(dir, stateDir string, ourIDs []string) (removed bool, leftover string, err error) {
	var entries []TreeEntry
	walkErr := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		entry := TreeEntry{Path: path, Mode: d.Type()}
		if d.Type()&fs.ModeSymlink != 0 {
			entry.LinkTarget, _ = os.Readlink(path)
		}
		entries = append(entries, entry)
		return nil
	})
	if errors.Is(walkErr, fs.ErrNotExist) {
		return false, "", nil
	}
	if walkErr != nil {
		return false, "", walkErr
	}
	if leftover := CreatedTreeLeftover(entries, stateDir, liveUnixSockets(), ourIDs); leftover != "" {
		return false, leftover, nil
	}
	var dirs []string
	for _, e := range entries {
		if e.Mode.IsDir() {
			dirs = append(dirs, e.Path)
		} else if err := os.Remove(e.Path); err != nil {
			return false, "", err
		}
	}
	for _, d := range CgroupRemovalOrder(dirs) { // deepest first
		if err := os.Remove(d); err != nil {
			return false, "", err
		}
	}
	return true, "", nil
}

// liveUnixSockets returns the paths that processes have bound Unix sockets to.
func liveUnixSockets() map[string]bool {
	live := map[string]bool{}
	data, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return live
	}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		if fields := strings.Fields(line); len(fields) >= 8 && strings.HasPrefix(fields[7], "/") {
			live[fields[7]] = true
		}
	}
	return live
}

// LoadHostState reads the record; ok is false when there is none (a state directory of an older
// version, or none at all).
func LoadHostState(file string) (state HostState, ok bool, err error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return HostState{}, false, nil
	}
	if err != nil {
		return HostState{}, false, err
	}
	if err := json.Unmarshal(data, &state); err != nil {
		return HostState{}, false, fmt.Errorf("failed to read %s: %w", file, err)
	}
	if state.Version != hostStateVersion {
		return HostState{}, false, fmt.Errorf("%s has format version %d, this version reads %d", file, state.Version, hostStateVersion)
	}
	return state, true, nil
}

// Save writes the record atomically.
func (s HostState) Save(file string) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

// IptablesBefore returns the family's recorded rules; ok is false when the family was unusable
// (nothing of the cluster can have used it either).
func (s HostState) IptablesBefore(save string) (IptablesRuleset, bool, error) {
	for _, snap := range s.Iptables {
		if snap.Save != save {
			continue
		}
		if snap.Error != "" {
			return nil, false, nil
		}
		ruleset, err := ParseIptablesSave(snap.Dump)
		return ruleset, err == nil, err
	}
	return nil, false, nil
}
