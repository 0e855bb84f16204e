package localcluster

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

func testLayout() (Layout, Config) {
	return Layout{StateDir: "/var/lib/ml", BinDir: "/repo/bin/k8s"}, DefaultConfig(net.ParseIP("192.0.2.2"))
}

func TestProcessesUseTheStateDirectoryAndTheNodeIP(t *testing.T) {
	l, c := testLayout()
	procs := Processes(l, c, "/usr/bin/containerd")
	for _, name := range StartOrder {
		p, ok := procs[name]
		if !ok {
			t.Fatalf("no process for %s", name)
		}
		if p.Name != name {
			t.Errorf("process %s is named %s", name, p.Name)
		}
	}
	want := map[string][]string{
		KubeAPIServer: {"--advertise-address=192.0.2.2", "--etcd-servers=http://127.0.0.1:12379", "--kubelet-preferred-address-types=InternalIP",
			"--service-account-signing-key-file=/var/lib/ml/pki/sa.key", "--authorization-mode=Node,RBAC"},
		KubeControllerManager: {"--root-ca-file=/var/lib/ml/pki/ca.crt", "--service-account-private-key-file=/var/lib/ml/pki/sa.key"},
		Kubelet:               {"--root-dir=/var/lib/ml/kubelet", "--node-ip=192.0.2.2", "--hostname-override=meshlift-node"},
		Containerd:            {"--config=/var/lib/ml/config/containerd.toml"},
	}
	for name, args := range want {
		for _, arg := range args {
			if !slices.Contains(procs[name].Args, arg) {
				t.Errorf("%s lacks %s: %v", name, arg, procs[name].Args)
			}
		}
	}
	if procs[Kubelet].Path != "/repo/bin/k8s/kubelet" || procs[Containerd].Path != "/usr/bin/containerd" {
		t.Errorf("binary paths: kubelet %s, containerd %s", procs[Kubelet].Path, procs[Containerd].Path)
	}
}

func TestContainerdConfigKeepsContainerdInTheStateDirectory(t *testing.T) {
	l, c := testLayout()
	conf := ContainerdConfig(l, c, "/var/lib/ml/bin/runc-oom-wrapper")
	for _, want := range []string{
		`root = "/var/lib/ml/containerd/root"`, `state = "/var/lib/ml/containerd/state"`,
		`address = "/var/lib/ml/containerd/containerd.sock"`, `sandbox_image = "meshlift.local/pause:1"`,
		`SystemdCgroup = false`, `BinaryName = "/var/lib/ml/bin/runc-oom-wrapper"`, `conf_dir = "/var/lib/ml/cni/net.d"`,
		`netns_mounts_under_state_dir = true`, `Root = "/var/lib/ml/containerd/runc"`,
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("containerd config lacks %s:\n%s", want, conf)
		}
	}
	for _, line := range strings.Split(conf, "\n") {
		if strings.Contains(line, "/var/lib/containerd") || strings.Contains(line, "/run/containerd") {
			t.Errorf("containerd config points at the system containerd: %s", line)
		}
	}
}

func TestCNIConflistAssignsPodAddressesFromThePodCIDR(t *testing.T) {
	l, c := testLayout()
	data, err := CNIConflist(l, c)
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Plugins []struct {
			Type   string `json:"type"`
			Bridge string `json:"bridge"`
			IPAM   struct {
				Ranges  [][]struct{ Subnet string } `json:"ranges"`
				DataDir string                      `json:"dataDir"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &conf); err != nil {
		t.Fatal(err)
	}
	bridge := conf.Plugins[0]
	if bridge.Type != "bridge" || bridge.Bridge != "mlbr0" || bridge.IPAM.Ranges[0][0].Subnet != "10.244.0.0/24" ||
		bridge.IPAM.DataDir != "/var/lib/ml/cni/ipam" {
		t.Errorf("bridge plugin = %+v", bridge)
	}
}

func TestKubeletAndKubeProxyConfigsAvoidWhatThisMachineForbids(t *testing.T) {
	l, c := testLayout()
	kubeletYAML, err := KubeletConfig(l, c)
	if err != nil {
		t.Fatal(err)
	}
	var kubelet map[string]any
	if err := yaml.Unmarshal(kubeletYAML, &kubelet); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]any{
		"cgroupDriver": "cgroupfs", "failCgroupV1": false, "failSwapOn": false, "oomScoreAdj": float64(0),
		"containerRuntimeEndpoint": "unix:///var/lib/ml/containerd/containerd.sock", "podLogsDir": "/var/lib/ml/pod-logs",
	} {
		if kubelet[key] != want {
			t.Errorf("kubelet %s = %v, want %v", key, kubelet[key], want)
		}
	}
	proxyYAML, err := KubeProxyConfig(l, c)
	if err != nil {
		t.Fatal(err)
	}
	var proxy map[string]any
	if err := yaml.Unmarshal(proxyYAML, &proxy); err != nil {
		t.Fatal(err)
	}
	if proxy["mode"] != "iptables" || proxy["oomScoreAdj"] != float64(0) || proxy["hostnameOverride"] != "meshlift-node" {
		t.Errorf("kube-proxy config = %v", proxy)
	}
}

func TestKubeconfigEmbedsTheCredentials(t *testing.T) {
	data, err := Kubeconfig("https://192.0.2.2:6443", "admin", []byte("CA"), []byte("CERT"), []byte("KEY"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if cfg.Clusters[ctx.Cluster].Server != "https://192.0.2.2:6443" || string(cfg.AuthInfos[ctx.AuthInfo].ClientKeyData) != "KEY" ||
		string(cfg.Clusters[ctx.Cluster].CertificateAuthorityData) != "CA" {
		t.Errorf("kubeconfig = %+v", cfg)
	}
}

func TestRuncWrapperRewritesOnlyNegativeOOMScoreAdj(t *testing.T) {
	dir := t.TempDir()
	// The "real runc" records its arguments so the test can see it was exec'ed with them.
	fakeRunc := filepath.Join(dir, "runc")
	if err := os.WriteFile(fakeRunc, []byte("#!/bin/sh\necho \"$@\" > "+filepath.Join(dir, "args")+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(dir, "wrapper")
	if err := os.WriteFile(wrapper, []byte(RuncWrapper(fakeRunc)), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ in, want string }{
		{`{"process":{"oomScoreAdj":-998}}`, `{"process":{"oomScoreAdj":0}}`},
		{`{"process":{"oomScoreAdj":500}}`, `{"process":{"oomScoreAdj":500}}`},
	} {
		bundle := t.TempDir()
		if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(tt.in), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(wrapper, "--root", "/x", "create", "--bundle", bundle, "ctr-1").CombinedOutput()
		if err != nil {
			t.Fatalf("wrapper failed: %v: %s", err, out)
		}
		got, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
		if string(got) != tt.want {
			t.Errorf("config.json = %s, want %s", got, tt.want)
		}
		args, _ := os.ReadFile(filepath.Join(dir, "args"))
		if strings.TrimSpace(string(args)) != "--root /x create --bundle "+bundle+" ctr-1" {
			t.Errorf("real runc got %q", args)
		}
	}
}
