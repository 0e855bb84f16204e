// Package testenv starts envtest's real kube-apiserver and etcd (built from Go modules by
// `make envtest-assets`) with the Meshlift CRDs installed.
package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/repo"
)

// Env is a running API server with the CRDs installed.
type Env struct {
	Config *rest.Config
	Client client.Client
	Scheme *runtime.Scheme
	env    *envtest.Environment
}

// Option changes how the API server is started.
type Option func(*envtest.Environment, string)

// WithWebhooks installs the webhook configurations of config/webhook/manifests.yaml, pointed at
// a local webhook server that serves with Env.WebhookServerOptions().
func WithWebhooks() Option {
	return func(env *envtest.Environment, root string) {
		env.WebhookInstallOptions = envtest.WebhookInstallOptions{Paths: []string{filepath.Join(root, "config", "webhook", "manifests.yaml")}}
	}
}

// Start starts the API server. Call Stop when done (typically from TestMain).
func Start(opts ...Option) (*Env, error) {
	root, err := repo.Root()
	if err != nil {
		return nil, err
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = repo.KubeBinDir(root)
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
			return nil, fmt.Errorf("%s not found in %s: run `make envtest-assets` (or `make test`), which builds it from Go modules: %w", bin, assets, err)
		}
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(meshv1alpha1.AddToScheme(scheme))

	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	for _, opt := range opts {
		opt(env, root)
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("failed to start envtest (kube-apiserver and etcd from %s): %w", assets, err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("failed to create client: %w", err)
	}
	return &Env{Config: cfg, Client: c, Scheme: scheme, env: env}, nil
}

// WebhookServerOptions are the host, port and certificates the installed webhook configurations
// expect the webhook server to serve with.
func (e *Env) WebhookServerOptions() webhook.Options {
	o := e.env.WebhookInstallOptions
	return webhook.Options{Host: o.LocalServingHost, Port: o.LocalServingPort, CertDir: o.LocalServingCertDir}
}

// Stop stops the API server and etcd.
func (e *Env) Stop() error {
	return e.env.Stop()
}

// Main runs a package's tests against a fresh Env stored in *env; use it from TestMain. Each
// setup function runs after the API server started (e.g. to start a manager); the function it
// returns runs after the tests.
func Main(m *testing.M, env **Env, setups ...func(*Env) (stop func(), err error)) {
	MainWith(m, env, nil, setups...)
}

// MainWith is Main with options for the API server.
func MainWith(m *testing.M, env **Env, opts []Option, setups ...func(*Env) (stop func(), err error)) {
	e, err := Start(opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*env = e
	code := 1
	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		if err := e.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "failed to stop envtest:", err)
		}
		os.Exit(code)
	}()
	for _, setup := range setups {
		stop, err := setup(e)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return
		}
		stops = append(stops, stop)
	}
	code = m.Run()
}

// Eventually polls check until it returns true or timeout passes, then fails the test with the
// last message check gave.
func Eventually(t testing.TB, timeout time.Duration, check func(ctx context.Context) (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last string
	for {
		ok, msg := check(ctx)
		if ok {
			return
		}
		last = msg
		select {
		case <-ctx.Done():
			t.Fatalf("condition not met within %s: %s", timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Namespace creates a namespace with a unique name for one test and returns its name.
func (e *Env) Namespace(t testing.TB, prefix string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := e.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("failed to create namespace: %v", err)
	}
	return ns.Name
}
