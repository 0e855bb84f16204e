package install_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/meshlift/meshlift/internal/capture/install"
)

const bridgeList = `{
  "cniVersion": "1.0.0",
  "name": "cluster",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

// node is a node's CNI directories and the installer's inputs, in a temporary directory.
func node(t *testing.T, confName, conf string) install.Options {
	t.Helper()
	root := t.TempDir()
	opts := install.Options{
		BinDir: filepath.Join(root, "bin"), ConfDir: filepath.Join(root, "net.d"),
		Binary: filepath.Join(root, "image", "meshlift-cni"), APIServer: "https://10.96.0.1:443",
		CAFile: filepath.Join(root, "sa", "ca.crt"), TokenFile: filepath.Join(root, "sa", "token"),
		ExcludeNamespaces: []string{"kube-system"},
	}
	for path, data := range map[string]string{
		filepath.Join(opts.ConfDir, confName): conf, opts.Binary: "#!plugin v1", opts.CAFile: "-----BEGIN CERTIFICATE-----\n",
		opts.TokenFile: "token-1\n", filepath.Join(opts.BinDir, "bridge"): "bridge",
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return opts
}

func plugins(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return list.Plugins
}

func types(ps []map[string]any) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p["type"].(string))
	}
	return out
}

func TestInstallChainsThePluginLastAndUninstallPutsTheNodeBack(t *testing.T) {
	opts := node(t, "10-cluster.conflist", bridgeList)
	conf := filepath.Join(opts.ConfDir, "10-cluster.conflist")
	changed, err := install.Install(opts)
	if err != nil || !changed {
		t.Fatalf("Install: changed %v, %v", changed, err)
	}
	ps := plugins(t, conf)
	if got := strings.Join(types(ps), ","); got != "bridge,portmap,meshlift-cni" {
		t.Fatalf("chain %s, want bridge,portmap,meshlift-cni", got)
	}
	if ps[2]["kubeconfig"] != filepath.Join(opts.ConfDir, install.KubeconfigName) {
		t.Errorf("the plugin's kubeconfig is %v", ps[2]["kubeconfig"])
	}
	if ps[0]["ipam"].(map[string]any)["ranges"] == nil || ps[0]["isGateway"] != true {
		t.Errorf("the network plugin's own fields changed: %v", ps[0])
	}
	binary, err := os.ReadFile(filepath.Join(opts.BinDir, "meshlift-cni"))
	if err != nil || string(binary) != "#!plugin v1" {
		t.Errorf("the binary was not installed: %q, %v", binary, err)
	}
	info, err := os.Stat(filepath.Join(opts.ConfDir, install.KubeconfigName))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig: %v, %v (want mode 0600: it holds a token)", info, err)
	}
	kubeconfig, _ := os.ReadFile(filepath.Join(opts.ConfDir, install.KubeconfigName))
	if !strings.Contains(string(kubeconfig), `"token": "token-1"`) || !strings.Contains(string(kubeconfig), "https://10.96.0.1:443") {
		t.Errorf("kubeconfig:\n%s", kubeconfig)
	}

	// Installing again changes nothing; a rotated token is written.
	before, _ := os.ReadFile(conf)
	if changed, err := install.Install(opts); err != nil || changed {
		t.Fatalf("second Install: changed %v, %v", changed, err)
	}
	if after, _ := os.ReadFile(conf); string(after) != string(before) {
		t.Error("a second Install rewrote the configuration")
	}
	if err := os.WriteFile(opts.TokenFile, []byte("token-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := install.Install(opts); err != nil {
		t.Fatal(err)
	}
	if kubeconfig, _ := os.ReadFile(filepath.Join(opts.ConfDir, install.KubeconfigName)); !strings.Contains(string(kubeconfig), `"token": "token-2"`) {
		t.Error("the rotated token was not written")
	}

	if err := install.Uninstall(opts); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(types(plugins(t, conf)), ","); got != "bridge,portmap" {
		t.Errorf("after Uninstall the chain is %s", got)
	}
	for _, path := range []string{filepath.Join(opts.BinDir, "meshlift-cni"), filepath.Join(opts.ConfDir, install.KubeconfigName)} {
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("%s is still there after Uninstall", path)
		}
	}
	if _, err := os.Stat(filepath.Join(opts.BinDir, "bridge")); err != nil {
		t.Error("Uninstall removed another plugin's binary")
	}
	entries, _ := os.ReadDir(opts.ConfDir)
	if len(entries) != 1 {
		t.Errorf("files left in the configuration directory: %v", entries)
	}
}

func TestInstallReplacesAStaleEntryInsteadOfAddingAnother(t *testing.T) {
	stale := strings.Replace(bridgeList, `{"type": "portmap", "capabilities": {"portMappings": true}}`,
		`{"type": "meshlift-cni", "kubeconfig": "/old"}, {"type": "portmap", "capabilities": {"portMappings": true}}`, 1)
	opts := node(t, "10-cluster.conflist", stale)
	if _, err := install.Install(opts); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(types(plugins(t, filepath.Join(opts.ConfDir, "10-cluster.conflist"))), ","); got != "bridge,portmap,meshlift-cni" {
		t.Errorf("chain %s, want one meshlift-cni, last", got)
	}
}

func TestInstallPicksTheFileTheRuntimeUses(t *testing.T) {
	opts := node(t, "20-other.conflist", bridgeList)
	if err := os.WriteFile(filepath.Join(opts.ConfDir, "10-first.conflist"), []byte(bridgeList), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := install.Install(opts); err != nil {
		t.Fatal(err)
	}
	if got := types(plugins(t, filepath.Join(opts.ConfDir, "10-first.conflist"))); len(got) != 3 {
		t.Errorf("the first file in lexical order was not chained: %v", got)
	}
	if got := types(plugins(t, filepath.Join(opts.ConfDir, "20-other.conflist"))); len(got) != 2 {
		t.Errorf("a file the runtime does not use was chained: %v", got)
	}
}

func TestASinglePluginConfigurationBecomesAList(t *testing.T) {
	opts := node(t, "10-bridge.conf", `{"cniVersion": "0.4.0", "name": "net", "type": "bridge", "bridge": "cni0"}`)
	if _, err := install.Install(opts); err != nil {
		t.Fatal(err)
	}
	ps := plugins(t, filepath.Join(opts.ConfDir, "10-bridge.conflist"))
	if got := strings.Join(types(ps), ","); got != "bridge,meshlift-cni" || ps[0]["bridge"] != "cni0" {
		t.Errorf("chain %v", ps)
	}
	if _, err := os.Stat(filepath.Join(opts.ConfDir, "10-bridge.conf")); !os.IsNotExist(err) {
		t.Error("the .conf is still there next to its list")
	}
}

func TestInstallRefusesWhatItCannotChain(t *testing.T) {
	for name, conf := range map[string]string{
		"not JSON":            "cni",
		"no plugins":          `{"cniVersion": "1.0.0", "name": "x"}`,
		"only meshlift-cni":   `{"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "meshlift-cni"}]}`,
		"a plugin not object": `{"cniVersion": "1.0.0", "name": "x", "plugins": ["bridge"]}`,
		"trailing data":       bridgeList + "{}",
	} {
		t.Run(name, func(t *testing.T) {
			opts := node(t, "10-x.conflist", conf)
			if _, err := install.Install(opts); err == nil {
				t.Error("Install chained a configuration it should refuse")
			}
			if data, _ := os.ReadFile(filepath.Join(opts.ConfDir, "10-x.conflist")); string(data) != conf {
				t.Error("a refused configuration was changed")
			}
		})
	}
	opts := node(t, "README", "no configuration")
	if _, err := install.Install(opts); err == nil || !strings.Contains(err.Error(), "network plugin must be installed first") {
		t.Errorf("Install without a configuration: %v", err)
	}
}

func FuzzChain(f *testing.F) {
	f.Add([]byte(bridgeList), false)
	f.Add([]byte(`{"cniVersion": "0.4.0", "name": "net", "type": "bridge"}`), true)
	f.Fuzz(func(t *testing.T, data []byte, single bool) {
		entry := map[string]any{"type": install.PluginType, "kubeconfig": "/k"}
		out, _, err := install.Chain(data, single, entry)
		if err != nil {
			return
		}
		again, changed, err := install.Chain(out, false, entry)
		if err != nil || changed || string(again) != string(out) {
			t.Fatalf("chaining twice changed %q: %v", out, err)
		}
		back, _, err := install.Unchain(out)
		if err != nil {
			t.Fatalf("Unchain(%q): %v", out, err)
		}
		if strings.Contains(string(back), `"meshlift-cni"`) && !strings.Contains(string(data), `"meshlift-cni"`) {
			t.Fatalf("Unchain left the entry in %q", back)
		}
	})
}

// TestRunKeepsThePluginChainedAndUninstallsAtTheEnd: a network plugin that rewrites its list
// (dropping the entry) gets it back at the next check; ending Run leaves the node as found.
func TestRunKeepsThePluginChainedAndUninstallsAtTheEnd(t *testing.T) {
	opts := node(t, "10-cluster.conflist", bridgeList)
	conf := filepath.Join(opts.ConfDir, "10-cluster.conflist")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- install.Run(ctx, opts, 20*time.Millisecond, "127.0.0.1:0", logr.Discard()) }()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting until %s", what)
			}
		}
	}
	chained := func() bool { return len(plugins(t, conf)) == 3 }
	waitFor("the plugin is chained", chained)
	if err := os.WriteFile(conf, []byte(bridgeList), 0o644); err != nil { // the network plugin rewrites its list
		t.Fatal(err)
	}
	waitFor("the plugin is chained again", chained)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run ended with %v", err)
	}
	if got := strings.Join(types(plugins(t, conf)), ","); got != "bridge,portmap" {
		t.Errorf("after Run the chain is %s", got)
	}
}
