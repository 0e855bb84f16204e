package localcluster

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The kubelet runs with cgroupRoot Config.CgroupRoot, so its kubepods hierarchy (and every pod's
// and container's cgroup) lives under a cgroup of ours in each hierarchy: `up` creates it, `down`
// removes it, and no other cgroup on the machine is touched.

// ParseCgroupHierarchies reads mountinfo and returns the mount points of the cgroup hierarchies:
// one per cgroup v1 controller or named hierarchy, and the cgroup v2 one.
func ParseCgroupHierarchies(mountinfo io.Reader) []string {
	var points []string
	scanner := bufio.NewScanner(mountinfo)
	for scanner.Scan() {
		before, after, ok := strings.Cut(scanner.Text(), " - ")
		fields, fsFields := strings.Fields(before), strings.Fields(after)
		if !ok || len(fields) < 5 || len(fsFields) < 1 {
			continue
		}
		if fsFields[0] == "cgroup" || fsFields[0] == "cgroup2" {
			points = append(points, unescapeMountinfo(fields[4]))
		}
	}
	slices.Sort(points)
	return slices.Compact(points)
}

// CgroupHierarchies returns the cgroup hierarchies mounted on this machine.
func CgroupHierarchies() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	return ParseCgroupHierarchies(f)
}

// ClusterCgroupDirs returns the cluster's cgroup (cgroupRoot, e.g. "/meshlift-local") in every
// hierarchy: the only cgroups `down` removes.
func ClusterCgroupDirs(hierarchies []string, cgroupRoot string) []string {
	name := strings.Trim(filepath.Clean("/"+cgroupRoot), "/")
	if name == "" {
		return nil // never the root of a hierarchy
	}
	dirs := make([]string, 0, len(hierarchies))
	for _, h := range hierarchies {
		dirs = append(dirs, filepath.Join(h, name))
	}
	return dirs
}

// createClusterCgroups creates the cluster's cgroup in every hierarchy; the kubelet checks that
// its cgroupRoot exists. A new cpuset cgroup starts with no CPUs and memory nodes: it gets its
// parent's.
func createClusterCgroups(dirs []string) error {
	for _, dir := range dirs {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("failed to create cgroup %s: %w", dir, err)
		}
		for _, file := range []string{"cpuset.cpus", "cpuset.mems"} {
			value, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil || strings.TrimSpace(string(value)) != "" {
				continue
			}
			parent, err := os.ReadFile(filepath.Join(filepath.Dir(dir), file))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, file), parent, 0o644); err != nil {
				return fmt.Errorf("failed to copy %s into %s: %w", file, dir, err)
			}
		}
	}
	return nil
}

// CgroupRemovalOrder returns dirs (and nothing else) deepest first, the order rmdir needs.
func CgroupRemovalOrder(dirs []string) []string {
	ordered := slices.Clone(dirs)
	slices.SortStableFunc(ordered, func(a, b string) int {
		if d := strings.Count(filepath.Clean(b), "/") - strings.Count(filepath.Clean(a), "/"); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	return slices.Compact(ordered)
}

// cgroupTree lists root and every cgroup below it.
func cgroupTree(root string) []string {
	var dirs []string
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	return dirs
}

// removeClusterCgroups kills what still runs in the cluster's cgroups (containers whose shim was
// killed keep running otherwise; nothing else can be in them), then removes them deepest first.
func removeClusterCgroups(roots []string) (killed int, err error) {
	var dirs []string
	for _, root := range roots {
		dirs = append(dirs, cgroupTree(root)...)
	}
	if len(dirs) == 0 {
		return 0, nil
	}
	seen := map[int]bool{}
	for range 50 {
		pids := cgroupProcs(dirs)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			if !seen[pid] && pid != os.Getpid() && unix.Kill(pid, unix.SIGKILL) == nil {
				seen[pid] = true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	var errs []error
	for _, dir := range CgroupRemovalOrder(dirs) {
		if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("failed to remove cgroup %s: %w", dir, err))
		}
	}
	return len(seen), errors.Join(errs...)
}

func cgroupProcs(dirs []string) []int {
	var pids []int
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, field := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(field); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	slices.Sort(pids)
	return slices.Compact(pids)
}

// topLevelKubepodsCgroups returns the kubepods cgroups at the top of every hierarchy: where a
// kubelet without a cgroupRoot (every node's) puts its pods.
func topLevelKubepodsCgroups(hierarchies []string) []string {
	var found []string
	for _, h := range hierarchies {
		matches, _ := filepath.Glob(filepath.Join(h, "kubepods*"))
		for _, m := range matches {
			if info, err := os.Stat(m); err == nil && info.IsDir() {
				found = append(found, m)
			}
		}
	}
	return found
}

// removeLegacyKubepodsCgroups removes the top-level kubepods cgroups that a cluster of an older
// version (whose kubelet had no cgroupRoot) created; only called for such a cluster's state.
func removeLegacyKubepodsCgroups(hierarchies []string) error {
	var errs []error
	for _, root := range topLevelKubepodsCgroups(hierarchies) {
		for _, dir := range CgroupRemovalOrder(cgroupTree(root)) {
			if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("failed to remove cgroup %s: %w", dir, err))
			}
		}
	}
	return errors.Join(errs...)
}
