package cni

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"

	"github.com/meshlift/meshlift/internal/capture"
	"github.com/meshlift/meshlift/internal/capture/netnstest"
	"github.com/meshlift/meshlift/internal/repo"
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
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"},
			{Name: "meshlift-proxy-1", Image: "proxy", SecurityContext: &corev1.SecurityContext{RunAsUser: ptrTo(int64(65532))}}}},
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
		if got.UID != string(pod.UID) || got.Annotations[capture.AnnotationCapture] != "inbound" || got.ProxyUID == nil || *got.ProxyUID != 65532 || !got.Injected {
			t.Errorf("lookup = %+v, want UID %s, the capture annotation and the proxy's user 65532", got, pod.UID)
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

	t.Run("ADD with the real lookups and the plugin's own RBAC isolates a pod without the sidecar that a STRICT MeshService selects", func(t *testing.T) {
		user := "system:serviceaccount:meshlift-system:meshlift-cni"
		env.Grant(t, "meshlift-cni", user, ns, cniClusterRules(t), nil)
		strict := &meshv1alpha1.MeshService{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "strict-web"},
			Spec:       meshv1alpha1.MeshServiceSpec{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "strict-web"}}},
		}
		permissive := &meshv1alpha1.MeshService{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "permissive-web"},
			Spec: meshv1alpha1.MeshServiceSpec{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "permissive-web"}},
				MTLS: meshv1alpha1.MTLSSpec{Mode: meshv1alpha1.MTLSPermissive}},
		}
		for _, obj := range []client.Object{strict, permissive} {
			if err := env.Client.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
		}
		if strict.Spec.MTLS.Mode != meshv1alpha1.MTLSStrict {
			t.Fatalf("the CRD defaulted spec.mtls.mode to %q, want STRICT", strict.Spec.MTLS.Mode)
		}
		kubeconfig := writeKubeconfig(t, env.As(user))
		plugin := &Plugin{NewPodLookup: NewKubeLookup, NewMeshServiceLookup: NewKubeMeshServiceLookup, Log: io.Discard}
		for _, tt := range []struct {
			app     string
			isolate bool
		}{{"strict-web", true}, {"permissive-web", false}, {"batch", false}} {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: tt.app + "-1", Labels: map[string]string{"app": tt.app}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
			}
			if err := env.Client.Create(ctx, pod); err != nil {
				t.Fatal(err)
			}
			netns := netnstest.New(t)
			stdin := bytes.Replace(withPrevResult(t, ""), []byte(defaultTestKubeconfig), []byte(kubeconfig), 1)
			if _, _, err := plugin.Add(cmdArgs(netns.Path, ns, pod.Name, string(pod.UID), stdin)); err != nil {
				t.Fatalf("ADD of %s: %v", pod.Name, err)
			}
			if got := hasTable(t, netns); got != tt.isolate {
				t.Errorf("pod %s: table installed %v, want %v", pod.Name, got, tt.isolate)
			}
		}
	})

	t.Run("lists the MeshServices of a namespace", func(t *testing.T) {
		lookup, err := NewKubeMeshServiceLookupForConfig(env.Config)
		if err != nil {
			t.Fatal(err)
		}
		got, err := lookup.MeshServices(ctx, ns)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, ms := range got {
			names = append(names, ms.Name+"="+ms.MTLSMode)
		}
		slices.Sort(names)
		if want := []string{"permissive-web=PERMISSIVE", "strict-web=STRICT"}; !slices.Equal(names, want) {
			t.Errorf("MeshServices = %v, want %v", names, want)
		}
	})

	t.Run("does not retry a user that may not list MeshServices", func(t *testing.T) {
		lookup, err := NewKubeMeshServiceLookupForConfig(env.As("no-permissions"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lookup.MeshServices(ctx, ns); !apierrors.IsForbidden(err) {
			t.Fatalf("list without permission = %v, want Forbidden", err)
		}
	})

	t.Run("an API server without the CRD answers the list with NotFound", func(t *testing.T) {
		// The plugin reads NotFound as "no MeshService can select the pod"; this is what a
		// resource the API server does not serve gets.
		lookup, err := newKubeLookupForConfig(env.Config)
		if err != nil {
			t.Fatal(err)
		}
		_, err = lookup.client.RESTClient().Get().AbsPath("/apis", "nothing.meshlift.io", "v1alpha1", "namespaces", ns, meshServiceResource).Do(ctx).Raw()
		if !apierrors.IsNotFound(err) {
			t.Fatalf("a list of a resource the API server does not serve = %v, want NotFound", err)
		}
	})
}

// cniClusterRules are the rules of the meshlift-cni ClusterRole of config/cni/rbac.yaml.
func cniClusterRules(t *testing.T) []rbacv1.PolicyRule {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "config", "cni", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var role rbacv1.ClusterRole
		if err := decoder.Decode(&role); err != nil {
			break
		}
		if role.Kind == "ClusterRole" {
			return role.Rules
		}
	}
	t.Fatal("config/cni/rbac.yaml holds no ClusterRole")
	return nil
}
