package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestInstallBinary runs "meshlift-cni install" as the DaemonSet does, on a node's directories in
// a temporary directory: it chains itself into the node's configuration list, says so on /ready,
// and on SIGTERM takes itself out again and removes what it wrote.
func TestInstallBinary(t *testing.T) {
	root := t.TempDir()
	binDir, confDir, saDir := filepath.Join(root, "bin"), filepath.Join(root, "net.d"), filepath.Join(root, "sa")
	list := `{"cniVersion":"1.0.0","name":"cluster","plugins":[{"type":"bridge","bridge":"cni0"}]}`
	for path, data := range map[string]string{
		filepath.Join(confDir, "10-cluster.conflist"): list, filepath.Join(saDir, "token"): "t0k3n",
		filepath.Join(saDir, "ca.crt"): "-----BEGIN CERTIFICATE-----\n", filepath.Join(binDir, "bridge"): "bridge",
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ready := freeAddress(t)
	cmd := exec.Command(os.Args[0], "install", "--bin-dir="+binDir, "--conf-dir="+confDir, "--host-conf-dir=/etc/cni/net.d",
		"--service-account-dir="+saDir, "--ready-address="+ready, "--interval=50ms")
	cmd.Env = append(os.Environ(), runAsPlugin+"=1", "KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	conf := filepath.Join(confDir, "10-cluster.conflist")
	waitUntil(t, "the installer says it is ready", func() bool {
		resp, err := http.Get("http://" + ready + "/ready")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	var chained struct {
		Plugins []map[string]any `json:"plugins"`
	}
	data, _ := os.ReadFile(conf)
	if err := json.Unmarshal(data, &chained); err != nil || len(chained.Plugins) != 2 || chained.Plugins[1]["type"] != "meshlift-cni" ||
		chained.Plugins[1]["kubeconfig"] != "/etc/cni/net.d/meshlift-cni.kubeconfig" {
		t.Fatalf("the node's configuration after install: %s (%v)", data, err)
	}
	kubeconfig, _ := os.ReadFile(filepath.Join(confDir, "meshlift-cni.kubeconfig"))
	if !strings.Contains(string(kubeconfig), "https://10.96.0.1:443") || !strings.Contains(string(kubeconfig), "t0k3n") {
		t.Errorf("kubeconfig:\n%s", kubeconfig)
	}
	if _, err := os.Stat(filepath.Join(binDir, "meshlift-cni")); err != nil {
		t.Errorf("the plugin binary was not installed: %v", err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the installer exited with %v:\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the installer did not exit on SIGTERM:\n%s", logs.String())
	}
	if data, _ := os.ReadFile(conf); !strings.Contains(string(data), `"bridge"`) || strings.Contains(string(data), "meshlift-cni") {
		t.Errorf("the node's configuration after SIGTERM: %s", data)
	}
	entries, _ := os.ReadDir(binDir)
	if len(entries) != 1 {
		t.Errorf("the binary directory after SIGTERM: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(confDir, "meshlift-cni.kubeconfig")); !os.IsNotExist(err) {
		t.Error("the kubeconfig is still there after SIGTERM")
	}
}

func freeAddress(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}
