package localcluster

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
)

// Config is the shape of the cluster.
type Config struct {
	NodeName     string
	NodeIP       net.IP
	PodCIDR      string
	ServiceCIDR  string
	APIServiceIP net.IP
	APIPort      int
	EtcdPort     int
	EtcdPeerPort int
	Bridge       string
	// LocalCIDRs are routed to the pod bridge, so traffic to a cluster address that nothing
	// answers (a Service kube-proxy has not programmed yet, a pod that is gone) is dropped on
	// this machine instead of following the default route out of it.
	LocalCIDRs   []string
	SandboxImage string
	// CgroupRoot is the kubelet's cgroupRoot: its kubepods hierarchy lives under this cgroup,
	// which `up` creates and `down` removes in every cgroup hierarchy.
	CgroupRoot string
}

// CNINetwork names the pod network; the CNI plugins mark their iptables rules with it.
const CNINetwork = "meshlift"

// DefaultConfig is the cluster `up` builds; only the node IP is detected.
func DefaultConfig(nodeIP net.IP) Config {
	return Config{
		NodeName:     "meshlift-node",
		NodeIP:       nodeIP,
		PodCIDR:      "10.244.0.0/24",
		ServiceCIDR:  "10.96.0.0/16",
		APIServiceIP: net.IPv4(10, 96, 0, 1),
		APIPort:      6443,
		EtcdPort:     12379,
		EtcdPeerPort: 12380,
		Bridge:       "mlbr0",
		LocalCIDRs:   []string{"10.96.0.0/16", "10.244.0.0/16"},
		SandboxImage: "meshlift.local/pause:1",
		CgroupRoot:   "/meshlift-local",
	}
}

// APIServerURL is where clients on this machine reach the API server.
func (c Config) APIServerURL() string {
	return "https://" + net.JoinHostPort(c.NodeIP.String(), strconv.Itoa(c.APIPort))
}

// Layout is where everything of the cluster lives: one state directory (removed by `down`) and
// the directory of the Kubernetes binaries.
type Layout struct {
	StateDir string
	BinDir   string
}

func (l Layout) path(elem ...string) string {
	return filepath.Join(append([]string{l.StateDir}, elem...)...)
}

// Paths inside the state directory.
func (l Layout) PKI() PKI                      { return PKI{Dir: l.path("pki")} }
func (l Layout) AdminKubeconfig() string       { return l.path("admin.kubeconfig") }
func (l Layout) Kubeconfig(name string) string { return l.path("kubeconfigs", name+".kubeconfig") }
func (l Layout) ConfigFile(name string) string { return l.path("config", name) }
func (l Layout) LogDir() string                { return l.path("logs") }
func (l Layout) RunDir() string                { return l.path("run") }
func (l Layout) EtcdDir() string               { return l.path("etcd") }
func (l Layout) ContainerdDir() string         { return l.path("containerd") }
func (l Layout) ContainerdSocket() string      { return l.path("containerd", "containerd.sock") }
func (l Layout) CNIConfDir() string            { return l.path("cni", "net.d") }
func (l Layout) CNIDataDir() string            { return l.path("cni", "ipam") }
func (l Layout) KubeletRootDir() string        { return l.path("kubelet") }
func (l Layout) PodLogsDir() string            { return l.path("pod-logs") }
func (l Layout) RuncWrapper() string           { return l.path("bin", "runc-oom-wrapper") }
func (l Layout) HostStateFile() string         { return l.path("host-state.json") }
func (l Layout) CRIDir() string                { return l.path("containerd", "root", "io.containerd.grpc.v1.cri") }
func (l Layout) Binary(name string) string     { return filepath.Join(l.BinDir, name) }

// CNIBinDir is the runtime's CNI binary directory: links to the host's plugins (HostCNIBinDir)
// next to which a chained plugin such as meshlift-cni can be installed without touching the
// host's package directory.
func (l Layout) CNIBinDir() string { return l.path("cni", "bin") }

// Process is a command the cluster runs.
type Process struct {
	Name string
	Path string
	Args []string
}

// Component names, in start order.
const (
	Etcd                  = "etcd"
	KubeAPIServer         = "kube-apiserver"
	KubeControllerManager = "kube-controller-manager"
	KubeScheduler         = "kube-scheduler"
	Containerd            = "containerd"
	Kubelet               = "kubelet"
	KubeProxy             = "kube-proxy"
)

// StartOrder lists the components in the order `up` starts them; `down` stops them in reverse.
var StartOrder = []string{Etcd, KubeAPIServer, KubeControllerManager, KubeScheduler, Containerd, Kubelet, KubeProxy}

// Processes returns the command of every component. containerdBinary is the containerd found on
// this machine.
func Processes(l Layout, c Config, containerdBinary string) map[string]Process {
	pki := l.PKI()
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", c.EtcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", c.EtcdPeerPort)
	return map[string]Process{
		Etcd: {Name: Etcd, Path: l.Binary("etcd"), Args: []string{
			"--name=meshlift", "--data-dir=" + l.EtcdDir(),
			"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
			"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=meshlift=" + peerURL,
			// A throwaway development cluster: speed over durability.
			"--unsafe-no-fsync=true",
		}},
		KubeAPIServer: {Name: KubeAPIServer, Path: l.Binary("kube-apiserver"), Args: []string{
			"--advertise-address=" + c.NodeIP.String(), "--bind-address=0.0.0.0", "--secure-port=" + strconv.Itoa(c.APIPort),
			"--etcd-servers=" + etcdURL,
			"--service-cluster-ip-range=" + c.ServiceCIDR,
			"--tls-cert-file=" + pki.CertPath("apiserver"), "--tls-private-key-file=" + pki.KeyPath("apiserver"),
			"--client-ca-file=" + pki.CAPath(),
			"--kubelet-client-certificate=" + pki.CertPath("apiserver-kubelet-client"),
			"--kubelet-client-key=" + pki.KeyPath("apiserver-kubelet-client"),
			// The node name does not resolve here; `kubectl logs` must dial the node IP.
			"--kubelet-preferred-address-types=InternalIP",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + pki.ServiceAccountPubPath(),
			"--service-account-signing-key-file=" + pki.ServiceAccountKeyPath(),
			"--authorization-mode=Node,RBAC",
			"--enable-admission-plugins=NodeRestriction",
			"--allow-privileged=true",
			"--profiling=false",
		}},
		KubeControllerManager: {Name: KubeControllerManager, Path: l.Binary("kube-controller-manager"), Args: []string{
			"--kubeconfig=" + l.Kubeconfig(KubeControllerManager),
			"--authentication-kubeconfig=" + l.Kubeconfig(KubeControllerManager),
			"--authorization-kubeconfig=" + l.Kubeconfig(KubeControllerManager),
			"--bind-address=127.0.0.1", "--leader-elect=false",
			"--service-account-private-key-file=" + pki.ServiceAccountKeyPath(),
			"--root-ca-file=" + pki.CAPath(),
			"--cluster-signing-cert-file=" + pki.CAPath(), "--cluster-signing-key-file=" + pki.KeyPath(caName),
			"--use-service-account-credentials=true",
			"--service-cluster-ip-range=" + c.ServiceCIDR,
			"--allocate-node-cidrs=false",
		}},
		KubeScheduler: {Name: KubeScheduler, Path: l.Binary("kube-scheduler"), Args: []string{
			"--kubeconfig=" + l.Kubeconfig(KubeScheduler),
			"--authentication-kubeconfig=" + l.Kubeconfig(KubeScheduler),
			"--authorization-kubeconfig=" + l.Kubeconfig(KubeScheduler),
			"--bind-address=127.0.0.1", "--leader-elect=false",
		}},
		Containerd: {Name: Containerd, Path: containerdBinary, Args: []string{"--config=" + l.ConfigFile("containerd.toml")}},
		Kubelet: {Name: Kubelet, Path: l.Binary("kubelet"), Args: []string{
			"--config=" + l.ConfigFile("kubelet.yaml"),
			"--kubeconfig=" + l.Kubeconfig(Kubelet),
			"--root-dir=" + l.KubeletRootDir(),
			"--hostname-override=" + c.NodeName,
			"--node-ip=" + c.NodeIP.String(),
		}},
		KubeProxy: {Name: KubeProxy, Path: l.Binary("kube-proxy"), Args: []string{"--config=" + l.ConfigFile("kube-proxy.yaml")}},
	}
}

// ContainerdConfig renders containerd's configuration: its own root, state, socket, runc state and
// pod network namespaces under the state directory (so it does not disturb another containerd on
// the machine, and down finds them there), the locally built
// pause image, cgroupfs, CNI from Debian's plugins, and runcBinary as the OCI runtime.
func ContainerdConfig(l Layout, c Config, runcBinary string) string {
	q := strconv.Quote
	lines := []string{
		`version = 2`,
		`root = ` + q(l.path("containerd", "root")),
		`state = ` + q(l.path("containerd", "state")),
		`oom_score = 0`,
		``,
		`[grpc]`,
		`  address = ` + q(l.ContainerdSocket()),
		``,
		`[ttrpc]`,
		`  address = ` + q(l.ContainerdSocket()+".ttrpc"),
		``,
		`[plugins."io.containerd.internal.v1.opt"]`,
		`  path = ` + q(l.path("containerd", "opt")),
		``,
		`[plugins."io.containerd.grpc.v1.cri"]`,
		`  sandbox_image = ` + q(c.SandboxImage),
		// The pods' network namespaces are mounted under the state directory, not /run/netns.
		`  netns_mounts_under_state_dir = true`,
		`  [plugins."io.containerd.grpc.v1.cri".containerd]`,
		`    snapshotter = "overlayfs"`,
		`    default_runtime_name = "runc"`,
		`    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]`,
		`      runtime_type = "io.containerd.runc.v2"`,
		`      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]`,
		`        SystemdCgroup = false`,
		`        BinaryName = ` + q(runcBinary),
		`        Root = ` + q(l.path("containerd", "runc")), // runc's state, not /run/containerd/runc
		`  [plugins."io.containerd.grpc.v1.cri".cni]`,
		`    bin_dir = ` + q(l.CNIBinDir()),
		`    conf_dir = ` + q(l.CNIConfDir()),
	}
	return strings.Join(lines, "\n") + "\n"
}

// CNIConflist renders the pod network: a bridge with host-local addresses from the pod CIDR,
// masquerading traffic that leaves it, plus port mappings.
func CNIConflist(l Layout, c Config) ([]byte, error) {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       CNINetwork,
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": c.Bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  []any{[]any{map[string]any{"subnet": c.PodCIDR}}},
					"routes":  []any{map[string]any{"dst": "0.0.0.0/0"}},
					"dataDir": l.CNIDataDir(),
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// KubeletConfig renders the KubeletConfiguration for this machine: cgroupfs on the cgroup v1
// host, pods under the cluster's own cgroup (cgroupRoot, so down removes exactly the cgroups the
// kubelet created), no swap check, low eviction thresholds (the kubelet cannot read filesystem
// stats here), no image garbage collection (images are loaded locally and cannot be pulled again)
// and no negative oom_score_adj for itself.
func KubeletConfig(l Layout, c Config) ([]byte, error) {
	pki := l.PKI()
	return yaml.Marshal(map[string]any{
		"apiVersion": "kubelet.config.k8s.io/v1beta1",
		"kind":       "KubeletConfiguration",
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": true},
			"x509":      map[string]any{"clientCAFile": pki.CAPath()},
		},
		"authorization":                 map[string]any{"mode": "Webhook"},
		"cgroupDriver":                  "cgroupfs",
		"cgroupRoot":                    c.CgroupRoot,
		"failCgroupV1":                  false,
		"failSwapOn":                    false,
		"containerRuntimeEndpoint":      "unix://" + l.ContainerdSocket(),
		"tlsCertFile":                   pki.CertPath("kubelet-serving"),
		"tlsPrivateKeyFile":             pki.KeyPath("kubelet-serving"),
		"podCIDR":                       c.PodCIDR,
		"clusterDomain":                 "cluster.local",
		"podLogsDir":                    l.PodLogsDir(),
		"volumePluginDir":               l.path("kubelet-plugins"),
		"oomScoreAdj":                   0,
		"readOnlyPort":                  0,
		"serializeImagePulls":           false,
		"imageGCHighThresholdPercent":   100,
		"imageGCLowThresholdPercent":    99,
		"localStorageCapacityIsolation": false,
		"evictionHard": map[string]string{
			"memory.available": "100Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%", "imagefs.available": "1%",
		},
	})
}

// KubeProxyConfig renders the KubeProxyConfiguration: iptables mode, no conntrack sysctl changes
// (not permitted here) and no negative oom_score_adj.
func KubeProxyConfig(l Layout, c Config) ([]byte, error) {
	return yaml.Marshal(map[string]any{
		"apiVersion":         "kubeproxy.config.k8s.io/v1alpha1",
		"kind":               "KubeProxyConfiguration",
		"clientConnection":   map[string]any{"kubeconfig": l.Kubeconfig(KubeProxy)},
		"mode":               "iptables",
		"hostnameOverride":   c.NodeName,
		"clusterCIDR":        c.PodCIDR,
		"bindAddress":        "0.0.0.0",
		"healthzBindAddress": "127.0.0.1:10256",
		"metricsBindAddress": "127.0.0.1:10249",
		"oomScoreAdj":        0,
		"conntrack":          map[string]any{"maxPerCore": 0, "min": 0},
	})
}

// RuncWrapper is a script that runs realRunc after rewriting a negative oomScoreAdj in the OCI
// bundle to 0. The kubelet asks for -998 on pod sandboxes, which needs CAP_SYS_RESOURCE; without
// it runc fails every pod with "failed to update /proc/self/oom_score_adj: Permission denied".
func RuncWrapper(realRunc string) string {
	return `#!/bin/sh
# Written by hack/local-cluster because this machine lacks CAP_SYS_RESOURCE: rewrite a negative
# oomScoreAdj in the bundle's config.json to 0, then run the real runc.
bundle=""
prev=""
for arg in "$@"; do
  case "$prev" in --bundle|-b) bundle="$arg" ;; esac
  case "$arg" in --bundle=*) bundle="${arg#--bundle=}" ;; esac
  prev="$arg"
done
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
  sed -i -E 's/"oomScoreAdj":-[0-9]+/"oomScoreAdj":0/' "$bundle/config.json"
fi
exec ` + realRunc + ` "$@"
`
}

// Kubeconfig renders a kubeconfig for user that authenticates to server with a client
// certificate, embedding the PEM data so the file can be copied elsewhere.
func Kubeconfig(server, user string, caPEM, certPEM, keyPEM []byte) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["meshlift-local"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts["meshlift-local"] = &clientcmdapi.Context{Cluster: "meshlift-local", AuthInfo: user}
	cfg.CurrentContext = "meshlift-local"
	return clientcmd.Write(*cfg)
}
