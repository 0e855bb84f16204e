package cni

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/meshlift/meshlift/internal/capture"
	"github.com/meshlift/meshlift/internal/capture/netnstest"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// writeKubeconfig writes cfg (envtest's admin: client certificate, or impersonation) as the
// kubeconfig file the plugin's netconf names.
func writeKubeconfig(t *testing.T, cfg *rest.Config) string {
	t.Helper()
	kubeconfig := clientcmdapi.NewConfig()
	kubeconfig.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kubeconfig.AuthInfos["meshlift-cni"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken,
		Impersonate: cfg.Impersonate.UserName,
	}
	kubeconfig.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "meshlift-cni"}
	kubeconfig.CurrentContext = "envtest"
	path := filepath.Join(t.TempDir(), "meshlift-cni.kubeconfig")
	if err := clientcmd.WriteToFile(*kubeconfig, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestKubeLookupAgainstAnAPIServer(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	ns := env.Namespace(t, "cni")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web", Annotations: map[string]string{
			capture.AnnotationCapture: "inbound", capture.AnnotationExcludeInboundPorts: "8081",
		}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	kubeconfig := writeKubeconfig(t, env.Config)

	t.Run("gets the pod's UID and annotations with the netconf's kubeconfig", func(t *testing.T) {
		lookup, err := NewKubeLookup(&NetConf{Kubeconfig: kubeconfig})
		if err != nil {
			t.Fatal(err)
		}
		got, err := lookup.Pod(ctx, ns, "web")
		if err != nil {
			t.Fatal(err)
		}
		if got.UID != string(pod.UID) || got.Annotations[capture.AnnotationCapture] != "inbound" {
			t.Errorf("lookup = %+v, want UID %s and the capture annotation", got, pod.UID)
		}
	})

	t.Run("does not retry a pod that does not exist", func(t *testing.T) {
		lookup, err := NewKubeLookupForConfig(env.Config)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = lookup.Pod(ctx, ns, "missing")
		if !apierrors.IsNotFound(err) {
			t.Fatalf("lookup of a missing pod = %v, want NotFound", err)
		}
		if elapsed := time.Since(start); elapsed >= retryDelay {
			t.Errorf("lookup of a missing pod took %v; NotFound must not be retried", elapsed)
		}
	})

	t.Run("does not retry a user that may not get pods", func(t *testing.T) {
		lookup, err := NewKubeLookupForConfig(env.As("no-permissions"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lookup.Pod(ctx, ns, "web"); !apierrors.IsForbidden(err) {
			t.Fatalf("lookup without permission = %v, want Forbidden", err)
		}
	})

	t.Run("retries an unreachable API server within the deadline", func(t *testing.T) {
		unreachable := rest.CopyConfig(env.Config)
		unreachable.Host = "https://127.0.0.1:1" // nothing listens on port 1
		lookup, err := NewKubeLookupForConfig(unreachable)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = lookup.Pod(ctx, ns, "web")
		if err == nil {
			t.Fatal("lookup through an unreachable API server succeeded")
		}
		// Three refused connections with 250ms and 500ms between them.
		if elapsed := time.Since(start); elapsed < 3*retryDelay || elapsed > 5*time.Second {
			t.Errorf("lookup gave up after %v, want about %v (%d attempts)", elapsed, 3*retryDelay, lookupAttempts)
		}
		deadline, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		start = time.Now()
		if _, err := lookup.Pod(deadline, ns, "web"); err == nil || time.Since(start) > time.Second {
			t.Errorf("lookup with a 100ms deadline = %v after %v, want an error within the deadline", err, time.Since(start))
		}
	})

	t.Run("ADD with the real lookup sets up capture for the pod", func(t *testing.T) {
		netns := netnstest.New(t)
		var log bytes.Buffer
		plugin := &Plugin{NewPodLookup: NewKubeLookup, Log: &log}
		stdin := bytes.Replace(withPrevResult(t, ""), []byte(defaultTestKubeconfig), []byte(kubeconfig), 1)
		args := cmdArgs(netns.Path, ns, "web", string(pod.UID), stdin)
		if _, _, err := plugin.Add(args); err != nil {
			t.Fatalf("ADD: %v", err)
		}
		if err := plugin.Check(args); err != nil {
			t.Fatalf("CHECK: %v", err)
		}
		if err := plugin.Del(args); err != nil {
			t.Fatalf("DEL: %v", err)
		}
	})
}
