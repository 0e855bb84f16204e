package localcluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Cluster runs the local cluster described by Layout and Config.
type Cluster struct {
	Layout Layout
	Config Config
	// RepoRoot is the checkout; Kubernetes binaries and the pause image are built from it.
	RepoRoot string
	// Out receives the progress messages.
	Out io.Writer
}

// KubeBinaries are built from hack/kube into Layout.BinDir.
var KubeBinaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// AptPackages are installed with apt-get when missing.
var AptPackages = map[string]string{ // package -> a file it provides
	"containerd":                  "/usr/bin/containerd",
	"runc":                        "/usr/sbin/runc",
	"containernetworking-plugins": "/usr/lib/cni/bridge",
	"iptables":                    "/usr/sbin/iptables",
	"conntrack":                   "/usr/sbin/conntrack",
}

func (c *Cluster) supervisor() Supervisor {
	return Supervisor{RunDir: c.Layout.RunDir(), LogDir: c.Layout.LogDir()}
}

func (c *Cluster) say(format string, args ...any) {
	fmt.Fprintf(c.Out, format+"\n", args...)
}

// step runs one named step and prints how long it took.
func (c *Cluster) step(name string, run func() error) error {
	c.say("==> %s", name)
	start := time.Now()
	if err := run(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	c.say("    done in %s", time.Since(start).Round(10*time.Millisecond))
	return nil
}

// Up starts the cluster, or reuses it when it is already healthy. It refuses to start on a
// machine that is a Kubernetes node, and records the host before changing it (see HostState).
func (c *Cluster) Up(ctx context.Context) error {
	start := time.Now()
	if err := requireRoot(); err != nil {
		return err
	}
	if err := c.step("Checking Debian packages (containerd, runc, CNI plugins, iptables, conntrack)", c.ensurePackages); err != nil {
		return err
	}
	if err := c.step("Checking Kubernetes binaries in "+c.Layout.BinDir, c.ensureBinaries); err != nil {
		return err
	}
	if healthy, why := c.healthy(ctx); healthy {
		c.say("==> The cluster is already up and healthy; reusing it")
		if _, recorded, _ := LoadHostState(c.Layout.HostStateFile()); !recorded {
			c.say("    warning: an older version started it without recording the host; down removes what that version created by name and cannot restore kernel settings")
		}
		c.printSummary(time.Since(start))
		return nil
	} else {
		// Before anything else: a previous cluster's down must not run on a node either.
		previous := c.previousCluster()
		if err := c.step("Checking that this machine is not a Kubernetes node", func() error { return c.refuseKubernetesNode(previous) }); err != nil {
			return err
		}
		if previous.Exists {
			c.say("==> A previous cluster is left in %s (%s); taking it down first", c.Layout.StateDir, why)
			if err := c.Down(ctx); err != nil {
				return err
			}
		}
	}
	hostSteps := []func() error{
		func() error {
			return c.step("Recording iptables rules, kernel settings, routes and directories before changing them (down restores them)", c.recordHostState)
		},
		func() error { return c.step("Enabling IP forwarding and bridge netfilter", c.enableForwarding) },
		func() error {
			return c.step("Keeping cluster addresses on this machine (routes to bridge "+c.Config.Bridge+")", c.routeClusterCIDRsLocally)
		},
		func() error {
			return c.step("Creating the kubelet's cgroup root "+c.Config.CgroupRoot+" in every cgroup hierarchy", func() error {
				return createClusterCgroups(ClusterCgroupDirs(CgroupHierarchies(), c.Config.CgroupRoot))
			})
		},
	}
	for _, run := range hostSteps {
		if err := run(); err != nil {
			return err
		}
	}

	containerd, err := exec.LookPath("containerd")
	if err != nil {
		return fmt.Errorf("containerd not found after installing it: %w", err)
	}
	procs := Processes(c.Layout, c.Config, containerd)
	sup := c.supervisor()
	startAndWait := func(name string, wait func(context.Context) error) error {
		return c.step("Starting "+name+" (log: "+sup.LogFile(name)+")", func() error {
			if _, err := sup.Start(procs[name]); err != nil {
				return err
			}
			if wait == nil {
				return nil
			}
			waitCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			if err := wait(waitCtx); err != nil {
				return fmt.Errorf("%s did not become ready (see %s): %w", name, sup.LogFile(name), err)
			}
			return nil
		})
	}

	steps := []func() error{
		func() error { return c.step("Writing PKI, kubeconfigs and component configuration", c.writeFiles) },
		func() error { return startAndWait(Etcd, c.waitEtcd) },
		func() error { return startAndWait(KubeAPIServer, c.waitAPIServer) },
		func() error { return startAndWait(KubeControllerManager, nil) },
		func() error { return startAndWait(KubeScheduler, nil) },
		func() error { return startAndWait(Containerd, c.waitContainerd) },
		func() error {
			return c.step("Building and loading the pause image "+c.Config.SandboxImage, c.loadPauseImage)
		},
		func() error { return startAndWait(Kubelet, c.waitNodeReady) },
		func() error { return startAndWait(KubeProxy, nil) },
		func() error {
			return c.step("Checking that a pod reaches the API server through the kubernetes Service", func() error {
				checkCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
				defer cancel()
				return c.checkServiceNetworking(checkCtx)
			})
		},
	}
	for _, run := range steps {
		if err := run(); err != nil {
			return err
		}
	}
	c.printSummary(time.Since(start))
	return nil
}

func (c *Cluster) printSummary(elapsed time.Duration) {
	c.say("")
	c.say("Local cluster is up (%s).", elapsed.Round(time.Second))
	c.say("  node:        %s (%s), pods %s, services %s", c.Config.NodeName, c.Config.NodeIP, c.Config.PodCIDR, c.Config.ServiceCIDR)
	c.say("  API server:  %s", c.Config.APIServerURL())
	c.say("  kubeconfig:  %s", c.Layout.AdminKubeconfig())
	c.say("  logs:        %s", c.Layout.LogDir())
	c.say("  try:         export KUBECONFIG=%s; %s get nodes", c.Layout.AdminKubeconfig(), c.Layout.Binary("kubectl"))
}

func requireRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("the local cluster runs containerd and the kubelet, which need root: run it as root")
	}
	return nil
}

func (c *Cluster) ensurePackages() error {
	var missing []string
	for pkg, file := range AptPackages {
		if _, err := os.Stat(file); err != nil {
			missing = append(missing, pkg)
		}
	}
	if len(missing) == 0 {
		c.say("    all present")
		return nil
	}
	sort.Strings(missing)
	c.say("    installing with apt-get (missing: %s)", strings.Join(missing, ", "))
	if err := c.run("apt-get", "update", "-q"); err != nil {
		return fmt.Errorf("apt-get update failed: %w", err)
	}
	args := append([]string{"install", "-y", "-q", "--no-install-recommends"}, missing...)
	if err := c.run("apt-get", args...); err != nil {
		return fmt.Errorf("apt-get install %s failed: %w", strings.Join(missing, " "), err)
	}
	return nil
}

func (c *Cluster) ensureBinaries() error {
	var missing []string
	for _, bin := range KubeBinaries {
		if _, err := os.Stat(c.Layout.Binary(bin)); err != nil {
			missing = append(missing, bin)
		}
	}
	if len(missing) == 0 {
		c.say("    all present")
		return nil
	}
	c.say("    building %s from Go modules (hack/kube; cold: several minutes on 2 cores, cached afterwards)", strings.Join(missing, ", "))
	cmd := exec.Command(filepath.Join(c.RepoRoot, "hack", "kube", "build.sh"), append([]string{c.Layout.BinDir}, missing...)...)
	cmd.Stdout, cmd.Stderr = c.Out, c.Out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("hack/kube/build.sh failed: %w", err)
	}
	return nil
}

func (c *Cluster) writeFiles() error {
	l, cfg := c.Layout, c.Config
	for _, dir := range []string{l.path("kubeconfigs"), l.path("config"), l.path("bin"), l.CNIConfDir(), l.CNIDataDir(), l.CNIBinDir(), l.KubeletRootDir(), l.PodLogsDir()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if err := linkCNIPlugins(HostCNIBinDir, l.CNIBinDir()); err != nil {
		return err
	}
	pki := l.PKI()
	if _, err := pki.Ensure(ClusterCerts(cfg.NodeName, cfg.NodeIP, cfg.APIServiceIP), time.Now()); err != nil {
		return err
	}
	caPEM, err := os.ReadFile(pki.CAPath())
	if err != nil {
		return err
	}
	kubeconfigs := map[string]string{ // file -> certificate
		l.AdminKubeconfig():                 "admin",
		l.Kubeconfig(KubeControllerManager): KubeControllerManager,
		l.Kubeconfig(KubeScheduler):         KubeScheduler,
		l.Kubeconfig(Kubelet):               "kubelet",
		l.Kubeconfig(KubeProxy):             KubeProxy,
	}
	for file, certName := range kubeconfigs {
		certPEM, err := os.ReadFile(pki.CertPath(certName))
		if err != nil {
			return err
		}
		keyPEM, err := os.ReadFile(pki.KeyPath(certName))
		if err != nil {
			return err
		}
		data, err := Kubeconfig(cfg.APIServerURL(), certName, caPEM, certPEM, keyPEM)
		if err != nil {
			return err
		}
		if err := os.WriteFile(file, data, 0o600); err != nil {
			return err
		}
	}

	runc, err := exec.LookPath("runc")
	if err != nil {
		return fmt.Errorf("runc not found: %w", err)
	}
	if !HasCapability(capSysResource) {
		c.say("    CAP_SYS_RESOURCE is missing: containerd runs runc through %s, which sets negative oomScoreAdj to 0", l.RuncWrapper())
		if err := os.WriteFile(l.RuncWrapper(), []byte(RuncWrapper(runc)), 0o755); err != nil {
			return err
		}
		runc = l.RuncWrapper()
	}
	conflist, err := CNIConflist(l, cfg)
	if err != nil {
		return err
	}
	kubelet, err := KubeletConfig(l, cfg)
	if err != nil {
		return err
	}
	proxy, err := KubeProxyConfig(l, cfg)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		l.ConfigFile("containerd.toml"):                       []byte(ContainerdConfig(l, cfg, runc)),
		filepath.Join(l.CNIConfDir(), "10-meshlift.conflist"): conflist,
		l.ConfigFile("kubelet.yaml"):                          kubelet,
		l.ConfigFile("kube-proxy.yaml"):                       proxy,
	}
	for file, data := range files {
		if err := os.WriteFile(file, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// enableForwarding lets pods reach each other and the outside through the bridge, and makes
// bridged traffic pass iptables so kube-proxy's Service rules apply to it. The values before are
// in the host record; a module it loads is added to it.
func (c *Cluster) enableForwarding() error {
	settings := []Sysctl{
		{Path: "net/ipv4/ip_forward", Value: "1"},
		{Path: "net/bridge/bridge-nf-call-iptables", Value: "1"},
	}
	for _, setting := range settings {
		err := ProcSys{}.Write(setting.Path, setting.Value)
		if errors.Is(err, os.ErrNotExist) && strings.HasPrefix(setting.Path, "net/bridge/") {
			if err = exec.Command("modprobe", "br_netfilter").Run(); err == nil {
				c.say("    loaded the br_netfilter module (down unloads it)")
				if err = c.updateHostState(func(s *HostState) { s.LoadedModules = append(s.LoadedModules, "br_netfilter") }); err == nil {
					err = ProcSys{}.Write(setting.Path, setting.Value)
				}
			}
		}
		if err != nil {
			return fmt.Errorf("failed to set %s: %w", setting.Path, err)
		}
	}
	return nil
}

// routeClusterCIDRsLocally creates the pod bridge (the CNI bridge plugin reuses it) and routes
// the Service CIDR and the whole pod network to it. kube-proxy's DNAT still applies (it rewrites
// the destination before the packet is routed again) and the bridge's own /24 is more specific;
// anything else addressed to those ranges gets no ARP answer and is dropped here. Without it, a
// connection to a Service that kube-proxy has not programmed yet leaves by the default route.
func (c *Cluster) routeClusterCIDRsLocally() error {
	bridge := c.Config.Bridge
	var cmds [][]string
	if _, err := net.InterfaceByName(bridge); err != nil {
		cmds = append(cmds, []string{"link", "add", bridge, "type", "bridge"})
	}
	cmds = append(cmds, []string{"link", "set", bridge, "up"})
	for _, cidr := range c.Config.LocalCIDRs {
		cmds = append(cmds, []string{"route", "replace", cidr, "dev", bridge})
	}
	for _, args := range cmds {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// previousCluster reports what a local cluster of ours left in the state directory.
func (c *Cluster) previousCluster() PreviousCluster {
	previous := PreviousCluster{StateDir: c.Layout.StateDir}
	if _, err := os.Stat(c.Layout.StateDir); err != nil {
		return previous
	}
	previous.Exists = true
	if state, recorded, err := LoadHostState(c.Layout.HostStateFile()); recorded {
		previous.Recorded = &state
	} else if err != nil {
		c.say("    warning: %v; treating %s as left by an older version", err, c.Layout.StateDir)
	}
	sup := c.supervisor()
	for _, name := range StartOrder {
		if pid, ok := sup.Running(name); ok {
			previous.PIDs = append(previous.PIDs, pid)
		}
	}
	return previous
}

// refuseKubernetesNode fails when this machine already is a Kubernetes node (see
// KubernetesNodeFindings), naming what it found.
func (c *Cluster) refuseKubernetesNode(previous PreviousCluster) error {
	dumps := map[string]IptablesRuleset{}
	for _, family := range IptablesFamilies {
		dump, err := saveIptables(family)
		if err != nil {
			continue // unusable here: nothing can have programmed it
		}
		ruleset, err := ParseIptablesSave(dump)
		if err != nil {
			return err
		}
		dumps[family.Save] = ruleset
	}
	findings := KubernetesNodeFindings(observeNodeFacts(dumps, CgroupHierarchies()), previous)
	if len(findings) == 0 {
		c.say("    no kubelet or kube-proxy, no node configuration, no foreign KUBE-* iptables chain or kubepods cgroup")
		return nil
	}
	return fmt.Errorf("this machine looks like a Kubernetes node, and the local cluster (its own kubelet, "+
		"kube-proxy and cleanup) would rewrite that node's iptables rules, cgroups and kernel settings, so it does not start here:\n  - %s\n"+
		"Use a machine that is not a node, or remove that Kubernetes installation first (e.g. `kubeadm reset`); "+
		"if these are leftovers of a local cluster whose state directory %s is gone, remove them by hand",
		strings.Join(findings, "\n  - "), c.Layout.StateDir)
}

// recordHostState writes the host record before anything changes: the kernel settings the
// cluster's components write, every iptables chain and rule, whether the bridge exists, the routes
// to the cluster's CIDRs and which of the host directories components create are absent.
func (c *Cluster) recordHostState() error {
	var interfaces []string
	if entries, err := os.ReadDir("/proc/sys/net/ipv4/conf"); err == nil {
		for _, e := range entries {
			interfaces = append(interfaces, e.Name())
		}
	}
	state := HostState{
		Version:    hostStateVersion,
		RecordedAt: time.Now().UTC(),
		Sysctls:    RecordSysctls(ProcSys{}, SysctlsToRecord(interfaces)),
	}
	rules := 0
	for _, family := range IptablesFamilies {
		snapshot := IptablesSnapshot{Save: family.Save}
		if dump, err := saveIptables(family); err != nil {
			snapshot.Error = err.Error()
		} else {
			snapshot.Dump = dump
			ruleset, err := ParseIptablesSave(dump)
			if err != nil {
				return err
			}
			for _, table := range ruleset {
				rules += len(table.Rules)
			}
		}
		state.Iptables = append(state.Iptables, snapshot)
	}
	_, err := net.InterfaceByName(c.Config.Bridge)
	state.BridgeExisted = err == nil
	if state.BridgeExisted {
		c.say("    bridge %s exists already: the cluster uses it and down leaves it", c.Config.Bridge)
	}
	for _, cidr := range c.Config.LocalCIDRs {
		out, err := exec.Command("ip", "-4", "route", "show", "exact", cidr).Output()
		if err != nil {
			return fmt.Errorf("ip route show exact %s: %w", cidr, err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				state.Routes = append(state.Routes, line)
			}
		}
	}
	for _, dir := range HostDirsComponentsCreate {
		if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
			state.AbsentHostDirs = append(state.AbsentHostDirs, dir)
		}
	}
	if err := state.Save(c.Layout.HostStateFile()); err != nil {
		return fmt.Errorf("failed to record the host: %w", err)
	}
	c.say("    %d kernel settings, %d iptables rules, %d routes to the cluster's CIDRs in %s",
		len(state.Sysctls), rules, len(state.Routes), c.Layout.HostStateFile())
	return nil
}

func (c *Cluster) updateHostState(change func(*HostState)) error {
	state, recorded, err := LoadHostState(c.Layout.HostStateFile())
	if err != nil {
		return err
	}
	if !recorded {
		return fmt.Errorf("no host record in %s", c.Layout.HostStateFile())
	}
	change(&state)
	return state.Save(c.Layout.HostStateFile())
}

func (c *Cluster) waitEtcd(ctx context.Context) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/health", c.Config.EtcdPort)
	return poll(ctx, func() error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(body), `"health":"true"`) {
			return fmt.Errorf("etcd health: %s", body)
		}
		return nil
	})
}

func (c *Cluster) adminHTTPClient() (*http.Client, error) {
	pki := c.Layout.PKI()
	cert, err := tls.LoadX509KeyPair(pki.CertPath("admin"), pki.KeyPath("admin"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(pki.CAPath())
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, MinVersion: tls.VersionTLS12},
	}}, nil
}

func (c *Cluster) waitAPIServer(ctx context.Context) error {
	client, err := c.adminHTTPClient()
	if err != nil {
		return err
	}
	return poll(ctx, func() error { return apiServerReady(client, c.Config.APIServerURL()) })
}

func apiServerReady(client *http.Client, server string) error {
	resp, err := client.Get(server + "/readyz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("/readyz: %s: %s", resp.Status, body)
	}
	return nil
}

func (c *Cluster) waitContainerd(ctx context.Context) error {
	return poll(ctx, func() error {
		return exec.CommandContext(ctx, "ctr", "--address", c.Layout.ContainerdSocket(), "version").Run()
	})
}

func (c *Cluster) clientset() (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Layout.AdminKubeconfig())
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 10 * time.Second
	return kubernetes.NewForConfig(cfg)
}

func (c *Cluster) waitNodeReady(ctx context.Context) error {
	cs, err := c.clientset()
	if err != nil {
		return err
	}
	return poll(ctx, func() error { return nodeReady(ctx, cs, c.Config.NodeName) })
}

func nodeReady(ctx context.Context, cs kubernetes.Interface, name string) error {
	node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			if cond.Status == corev1.ConditionTrue {
				return nil
			}
			return fmt.Errorf("node %s not ready: %s", name, cond.Message)
		}
	}
	return fmt.Errorf("node %s has no Ready condition yet", name)
}

// checkServiceNetworking runs a pod that calls the API server through the kubernetes Service
// ClusterIP with its service account, which needs the CNI bridge, kube-proxy's rules, the
// service account token and the root CA ConfigMap to work.
func (c *Cluster) checkServiceNetworking(ctx context.Context) error {
	cs, err := c.clientset()
	if err != nil {
		return err
	}
	const ns, name = "kube-system", "meshlift-network-check"
	pods := cs.CoreV1().Pods(ns)
	_ = pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "check", Image: c.Config.SandboxImage, ImagePullPolicy: corev1.PullNever,
				Args: []string{"check-apiserver"},
			}},
		},
	}
	err = poll(ctx, func() error { // the service account appears shortly after the controller manager starts
		_, err := pods.Create(ctx, pod, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return errors.New("previous check pod still terminating")
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("failed to create the check pod: %w", err)
	}
	defer func() {
		_ = pods.Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	}()
	var last *corev1.Pod
	err = poll(ctx, func() error {
		last, err = pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		switch last.Status.Phase {
		case corev1.PodSucceeded:
			return nil
		case corev1.PodFailed:
			return errStop
		}
		return fmt.Errorf("check pod is %s", last.Status.Phase)
	})
	if err != nil {
		logs, _ := cs.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{}).DoRaw(context.Background())
		return fmt.Errorf("the check pod did not succeed (%v); its output: %s", err, logs)
	}
	return nil
}

// errStop ends a poll early.
var errStop = errors.New("failed")

func poll(ctx context.Context, check func() error) error {
	for {
		err := check()
		if err == nil || errors.Is(err, errStop) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// run runs a command with its output going to Out.
func (c *Cluster) run(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = c.Out, c.Out
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	return cmd.Run()
}

// healthy reports whether every component runs and the node is Ready; otherwise it says why not.
func (c *Cluster) healthy(ctx context.Context) (bool, string) {
	sup := c.supervisor()
	for _, name := range StartOrder {
		if _, ok := sup.Running(name); !ok {
			return false, name + " is not running"
		}
	}
	cs, err := c.clientset()
	if err != nil {
		return false, err.Error()
	}
	if err := nodeReady(ctx, cs, c.Config.NodeName); err != nil {
		return false, err.Error()
	}
	return true, ""
}

// Status prints what runs.
func (c *Cluster) Status(ctx context.Context) error {
	sup := c.supervisor()
	for _, name := range StartOrder {
		if pid, ok := sup.Running(name); ok {
			c.say("%-24s running (pid %d)", name, pid)
		} else {
			c.say("%-24s stopped", name)
		}
	}
	if _, ok := sup.Running(KubeAPIServer); ok {
		if cs, err := c.clientset(); err == nil {
			if err := nodeReady(ctx, cs, c.Config.NodeName); err != nil {
				c.say("%-24s %v", "node", err)
			} else {
				c.say("%-24s %s Ready", "node", c.Config.NodeName)
			}
		}
	}
	c.say("%-24s %s", "kubeconfig", c.Layout.AdminKubeconfig())
	if healthy, why := c.healthy(ctx); !healthy {
		return fmt.Errorf("the cluster is not healthy: %s", why)
	}
	return nil
}

// Load imports image tarballs into the cluster's containerd.
func (c *Cluster) Load(ctx context.Context, tarballs []string) error {
	if _, ok := c.supervisor().Running(Containerd); !ok {
		return errors.New("containerd is not running: run `up` first")
	}
	for _, tarball := range tarballs {
		if err := c.step("Loading "+tarball, func() error { return c.importImage(ctx, tarball) }); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) importImage(ctx context.Context, tarball string) error {
	cmd := exec.CommandContext(ctx, "ctr", "--address", c.Layout.ContainerdSocket(), "-n", "k8s.io", "images", "import", "--all-platforms", tarball)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import %s: %w: %s", tarball, err, out)
	}
	return nil
}

// Down stops every process `up` started and removes the pods' sandboxes (and with them their
// network namespaces and mounts). Then it changes the host back to the record `up` made: it
// removes the cluster's cgroups, the iptables chains and rules the cluster created, the bridge and
// routes it added, unloads modules it loaded, writes back the kernel settings and removes the
// host directories components created. Finally it removes the state directory. For a state
// directory of an older version, which recorded nothing, it removes what that version created by
// name and leaves kernel settings as they are.
func (c *Cluster) Down(ctx context.Context) error {
	if err := requireRoot(); err != nil {
		return err
	}
	if _, err := os.Stat(c.Layout.StateDir); errors.Is(err, os.ErrNotExist) {
		if procs, mounts := c.Leftovers(); len(procs) > 0 || len(mounts) > 0 {
			return fmt.Errorf("no state directory %s, but left behind: processes %v, mounts %v", c.Layout.StateDir, procs, mounts)
		}
		c.say("No local cluster in %s: nothing to take down.", c.Layout.StateDir)
		return nil
	}
	var record *HostState
	if state, recorded, err := LoadHostState(c.Layout.HostStateFile()); recorded {
		record = &state
	} else {
		if err != nil {
			c.say("warning: %v", err)
		}
		c.say("warning: %s has no host record (an older version started this cluster): removing what that version "+
			"created by name (KUBE-* and CNI-* iptables chains, top-level kubepods cgroups); kernel settings stay as they are", c.Layout.StateDir)
	}
	sup := c.supervisor()
	stop := func(name string) error {
		stopped, err := sup.Stop(name, 15*time.Second)
		if stopped {
			c.say("    stopped %s", name)
		}
		return err
	}
	var errs []error
	errs = append(errs, c.step("Stopping the kubelet", func() error { return stop(Kubelet) }))
	if _, ok := sup.Running(Containerd); ok {
		errs = append(errs, c.step("Removing pod sandboxes through the CRI", func() error {
			removeCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			return c.removeSandboxes(removeCtx)
		}))
	}
	errs = append(errs, c.step("Stopping kube-proxy", func() error { return stop(KubeProxy) }))
	errs = append(errs, c.step("Stopping the control plane and containerd", func() error {
		var errs []error
		for _, name := range []string{KubeScheduler, KubeControllerManager, KubeAPIServer, Etcd, Containerd} {
			errs = append(errs, stop(name))
		}
		killed := killProcessesMentioning(c.Layout.ContainerdSocket())
		if killed > 0 {
			c.say("    killed %d containerd shims left by our containerd", killed)
		}
		return errors.Join(errs...)
	}))
	errs = append(errs, c.step("Removing the cluster's cgroups ("+c.Config.CgroupRoot+" in every hierarchy)", func() error {
		hierarchies := CgroupHierarchies()
		killed, err := removeClusterCgroups(ClusterCgroupDirs(hierarchies, c.Config.CgroupRoot))
		if killed > 0 {
			c.say("    killed %d processes left in them", killed)
		}
		if record == nil {
			err = errors.Join(err, removeLegacyKubepodsCgroups(hierarchies))
		}
		return err
	}))
	errs = append(errs, c.step("Unmounting what is left under "+c.Layout.StateDir, func() error {
		var errs []error
		for _, mount := range MountsUnder(c.Layout.StateDir) {
			if err := unix.Unmount(mount, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("failed to unmount %s: %w", mount, err))
			}
		}
		return errors.Join(errs...)
	}))
	// A failure from here on leaves the host record, so that down can be run again.
	var leftIptables, leftDirs bool
	hostErrs := []error{
		c.step("Removing the iptables chains and rules the cluster created", func() (err error) {
			leftIptables, err = c.removeIptables(record)
			return err
		}),
		c.step("Removing the bridge "+c.Config.Bridge+" and restoring routes", func() error { return c.removeBridge(record) }),
		c.step("Restoring kernel settings and modules", func() error { return c.restoreKernel(record) }),
		c.step("Removing host directories the components created", func() (err error) {
			leftDirs, err = c.removeHostDirs(record)
			return err
		}),
	}
	errs = append(errs, hostErrs...)
	errs = append(errs, c.step("Removing "+c.Layout.StateDir, func() error {
		if errors.Join(hostErrs...) == nil {
			return os.RemoveAll(c.Layout.StateDir)
		}
		c.say("    keeping %s: run down again to retry", c.Layout.HostStateFile())
		return removeAllBut(c.Layout.StateDir, c.Layout.HostStateFile())
	}))
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if procs, mounts := c.Leftovers(); len(procs) > 0 || len(mounts) > 0 {
		return fmt.Errorf("left behind after down: processes %v, mounts %v", procs, mounts)
	}
	switch {
	case record == nil:
		c.say("Local cluster is down; nothing of it is left running or mounted. Kernel settings were not restored (no record).")
	case leftIptables || leftDirs:
		c.say("Local cluster is down; nothing of it is left running or mounted, and what it changed on the host is restored. What appeared meanwhile and is not the cluster's is left in place (listed above).")
	default:
		c.say("Local cluster is down; nothing of it is left running or mounted, and the host is as up found it.")
	}
	return nil
}

// removeIptables removes, for each iptables family, the chains and rules PlanIptablesCleanup
// attributes to the cluster, and reports what appeared meanwhile but is not the cluster's.
func (c *Cluster) removeIptables(record *HostState) (left bool, err error) {
	var errs []error
	for _, family := range IptablesFamilies {
		var before IptablesRuleset
		if record != nil {
			var ok bool
			var err error
			if before, ok, err = record.IptablesBefore(family.Save); err != nil {
				errs = append(errs, err)
				continue
			} else if !ok {
				continue // unusable when up ran: nothing of the cluster is in it
			}
		}
		removed, kept, err := cleanIptables(family, before, IptablesOwner{CNINetwork: CNINetwork})
		if err != nil && record == nil {
			continue // an older version's cluster: best effort (the family may be unusable here)
		}
		errs = append(errs, err)
		for _, what := range removed {
			c.say("    %s: removed %s", family.Save, what)
		}
		for _, what := range kept {
			c.say("    %s: left in place (appeared while the cluster ran, not the cluster's): %s", family.Save, what)
			left = true
		}
	}
	return left, errors.Join(errs...)
}

// removeBridge deletes the pod bridge when up created it (its routes go with it), else only the
// routes up added, and adds back the routes to the cluster's CIDRs that existed before.
func (c *Cluster) removeBridge(record *HostState) error {
	bridge := c.Config.Bridge
	if _, err := net.InterfaceByName(bridge); err == nil {
		if record == nil || !record.BridgeExisted {
			if out, err := exec.Command("ip", "link", "delete", bridge).CombinedOutput(); err != nil {
				return fmt.Errorf("ip link delete %s: %w: %s", bridge, err, out)
			}
		} else {
			for _, cidr := range c.Config.LocalCIDRs {
				_ = exec.Command("ip", "route", "del", cidr, "dev", bridge).Run()
			}
		}
	}
	if record == nil {
		return nil
	}
	var errs []error
	for _, route := range record.Routes {
		if out, err := exec.Command("ip", append([]string{"-4", "route", "replace"}, strings.Fields(route)...)...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("failed to restore route %q: %w: %s", route, err, out))
		}
	}
	return errors.Join(errs...)
}

// restoreKernel unloads the modules up loaded and writes back the recorded kernel settings.
func (c *Cluster) restoreKernel(record *HostState) error {
	if record == nil {
		var now []string
		for _, s := range RecordSysctls(ProcSys{}, SysctlsWritten) {
			now = append(now, s.Path+"="+s.Value)
		}
		c.say("    not restored (no record of their values before): %s", strings.Join(now, " "))
		return nil
	}
	var errs []error
	for _, module := range record.LoadedModules {
		if out, err := exec.Command("modprobe", "-r", module).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("failed to unload module %s: %w: %s", module, err, out))
		}
	}
	written, err := RestoreSysctls(ProcSys{}, record.Sysctls)
	for _, s := range written {
		c.say("    %s = %s", s.Path, s.Value)
	}
	return errors.Join(append(errs, err)...)
}

// removeHostDirs removes the host directories components created (absent when up recorded the
// host) when nothing but what the cluster left is in them (see CreatedTreeLeftover).
func (c *Cluster) removeHostDirs(record *HostState) (left bool, err error) {
	if record == nil {
		return false, nil
	}
	ourIDs := ContainerdIDs(c.Layout.CRIDir())
	var errs []error
	for _, dir := range record.AbsentHostDirs {
		removed, leftover, err := RemoveCreatedTree(dir, c.Layout.StateDir, ourIDs)
		switch {
		case err != nil:
			errs = append(errs, err)
		case removed:
			c.say("    removed %s", dir)
		case leftover != "":
			c.say("    left %s in place: it holds %s, which is not the cluster's", dir, leftover)
			left = true
		}
	}
	return left, errors.Join(errs...)
}

// removeAllBut empties dir except for the file keep.
func removeAllBut(dir, keep string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if path := filepath.Join(dir, e.Name()); path != filepath.Clean(keep) {
			errs = append(errs, os.RemoveAll(path))
		}
	}
	return errors.Join(errs...)
}

func (c *Cluster) removeSandboxes(ctx context.Context) error {
	conn, err := grpc.NewClient("unix://"+c.Layout.ContainerdSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("failed to connect to containerd's CRI: %w", err)
	}
	defer conn.Close()
	runtime := runtimeapi.NewRuntimeServiceClient(conn)
	list, err := runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("failed to list pod sandboxes: %w", err)
	}
	var errs []error
	for _, sandbox := range list.Items {
		if _, err := runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sandbox.Id}); err != nil {
			errs = append(errs, fmt.Errorf("failed to stop sandbox of %s/%s: %w", sandbox.Metadata.Namespace, sandbox.Metadata.Name, err))
			continue
		}
		if _, err := runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sandbox.Id}); err != nil {
			errs = append(errs, fmt.Errorf("failed to remove sandbox of %s/%s: %w", sandbox.Metadata.Namespace, sandbox.Metadata.Name, err))
		}
	}
	c.say("    removed %d pod sandboxes", len(list.Items))
	return errors.Join(errs...)
}

// Leftovers lists processes that mention the state directory in their command line (every
// component and containerd shim does; envtest's processes, which run the same binaries, do not)
// and mounts under the state directory. After `down` both must be empty.
func (c *Cluster) Leftovers() (processes []string, mounts []string) {
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.ReplaceAll(string(cmdline), "\x00", " ")
		if strings.Contains(args, c.Layout.StateDir+"/") {
			processes = append(processes, fmt.Sprintf("%d %s", pid, strings.TrimSpace(args)))
		}
	}
	return processes, MountsUnder(c.Layout.StateDir)
}

// MountsUnder returns the mount points at or below dir, deepest first.
func MountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	return ParseMountsUnder(f, dir)
}

// ParseMountsUnder reads mountinfo and returns the mount points at or below dir, deepest first.
func ParseMountsUnder(mountinfo io.Reader, dir string) []string {
	dir = filepath.Clean(dir)
	var mounts []string
	scanner := bufio.NewScanner(mountinfo)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) < 5 {
			continue
		}
		point := unescapeMountinfo(fields[4])
		if point == dir || strings.HasPrefix(point, dir+"/") {
			mounts = append(mounts, point)
		}
	}
	slices.SortStableFunc(mounts, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return slices.Compact(mounts)
}

// unescapeMountinfo decodes the octal escapes (\040 for space...) of /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// killProcessesMentioning kills processes whose command line contains needle (the containerd
// shims of our containerd carry its socket path) and returns how many it killed.
func killProcessesMentioning(needle string) int {
	killed := 0
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cmdline), needle) {
			if unix.Kill(pid, unix.SIGKILL) == nil {
				killed++
			}
		}
	}
	return killed
}

const capSysResource = 24

// HasCapability reports whether the effective capability set of this process holds bit cap.
func HasCapability(cap uint) bool {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(status), "\n") {
		if value, ok := strings.CutPrefix(line, "CapEff:"); ok {
			bits, err := strconv.ParseUint(strings.TrimSpace(value), 16, 64)
			return err == nil && bits&(1<<cap) != 0
		}
	}
	return false
}

// DefaultRouteIP returns the IPv4 address of the interface that holds the default route: the
// address pods can reach the API server on.
func DefaultRouteIP() (net.IP, error) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	iface, err := ParseDefaultRouteInterface(f)
	if err != nil {
		return nil, err
	}
	link, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, err
	}
	addrs, err := link.Addrs()
	if err != nil {
		return nil, err
	}
	for _, addr := range addrs {
		if ipNet, ok := addr.(*net.IPNet); ok && ipNet.IP.To4() != nil {
			return ipNet.IP.To4(), nil
		}
	}
	return nil, fmt.Errorf("interface %s of the default route has no IPv4 address", iface)
}

// ParseDefaultRouteInterface reads /proc/net/route and returns the interface of the default route.
func ParseDefaultRouteInterface(routes io.Reader) (string, error) {
	scanner := bufio.NewScanner(routes)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) >= 8 && fields[1] == "00000000" && fields[7] == "00000000" {
			return fields[0], nil
		}
	}
	return "", errors.New("no default route in /proc/net/route: pass --node-ip")
}

// HostCNIBinDir is where Debian's containernetworking-plugins package puts the CNI plugins.
const HostCNIBinDir = "/usr/lib/cni"

// linkCNIPlugins links every plugin of host into dir (the runtime's bin_dir), so that a chained
// plugin can be installed into dir while the host's directory stays as the package left it.
// Links that exist already are kept; the plugins are never copied.
func linkCNIPlugins(host, dir string) error {
	entries, err := os.ReadDir(host)
	if err != nil {
		return fmt.Errorf("failed to read the host's CNI plugins in %s: %w", host, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		link := filepath.Join(dir, e.Name())
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join(host, e.Name()), link); err != nil {
			return fmt.Errorf("failed to link the CNI plugin %s into %s: %w", e.Name(), dir, err)
		}
	}
	return nil
}
