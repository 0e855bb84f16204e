package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The test binary doubles as the plugin, so these tests run main() the way a container
// runtime does: CNI_* in the environment, the configuration on stdin, the result or error on
// stdout.
const runAsPlugin = "MESHLIFT_CNI_TEST_RUN_AS_PLUGIN"

func TestMain(m *testing.M) {
	if os.Getenv(runAsPlugin) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const prevResult = `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/test"}],"ips":[{"address":"10.99.0.2/24","interface":0}]}`

func runPlugin(t *testing.T, command, cniArgs, stdin string) (stdout string, err error) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), runAsPlugin+"=1",
		"CNI_COMMAND="+command, "CNI_CONTAINERID=c0ffee", "CNI_IFNAME=eth0", "CNI_PATH=/opt/cni/bin",
		"CNI_NETNS="+filepath.Join(t.TempDir(), "netns"), // no such namespace: none of these cases reaches it
		"CNI_ARGS="+cniArgs)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if errOut.Len() > 0 {
		t.Logf("plugin stderr: %s", errOut.String())
	}
	return out.String(), err
}

func conf(kubeconfig string) string {
	return `{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"meshlift-cni","kubeconfig":"` + kubeconfig + `","prevResult":` + prevResult + `}`
}

func TestPluginBinary(t *testing.T) {
	missingKubeconfig := filepath.Join(t.TempDir(), "missing.kubeconfig")

	t.Run("VERSION lists the supported CNI versions", func(t *testing.T) {
		out, err := runPlugin(t, "VERSION", "", `{"cniVersion":"1.0.0"}`)
		if err != nil || !strings.Contains(out, `"1.0.0"`) {
			t.Fatalf("VERSION = %q, %v", out, err)
		}
	})

	t.Run("ADD passes the previous result through for a non-Kubernetes container", func(t *testing.T) {
		out, err := runPlugin(t, "ADD", "IgnoreUnknown=1", conf(missingKubeconfig))
		if err != nil {
			t.Fatalf("ADD: %v (%s)", err, out)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(out), &got); err != nil || len(got["ips"].([]any)) != 1 {
			t.Fatalf("ADD printed %q, want the previous result %s", out, prevResult)
		}
	})

	t.Run("ADD fails closed with a CNI error when the pod cannot be read", func(t *testing.T) {
		out, err := runPlugin(t, "ADD", "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web", conf(missingKubeconfig))
		if err == nil {
			t.Fatalf("ADD succeeded: %s", out)
		}
		var cniErr struct {
			Code uint   `json:"code"`
			Msg  string `json:"msg"`
		}
		if jsonErr := json.Unmarshal([]byte(out), &cniErr); jsonErr != nil || cniErr.Code == 0 ||
			!strings.Contains(cniErr.Msg, "failing closed") || !strings.Contains(cniErr.Msg, "missing.kubeconfig") {
			t.Errorf("ADD printed %q, want a CNI error that says it fails closed and names the kubeconfig", out)
		}
	})

	t.Run("ADD starts a kube-system pod when the pod cannot be read", func(t *testing.T) {
		out, err := runPlugin(t, "ADD", "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns", conf(missingKubeconfig))
		if err != nil || !strings.Contains(out, "10.99.0.2/24") {
			t.Fatalf("ADD = %q, %v; want the previous result", out, err)
		}
	})

	t.Run("DEL succeeds when the namespace is gone", func(t *testing.T) {
		if out, err := runPlugin(t, "DEL", "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web", conf(missingKubeconfig)); err != nil {
			t.Fatalf("DEL: %v (%s)", err, out)
		}
	})
}
