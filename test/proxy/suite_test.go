// Package proxy_test runs real meshlift-proxy processes, built from this tree with two version
// strings, against a real echo backend (meshlift-demo serve) and the real control plane
// (internal/controlplane, in process) that issues their certificates and endpoints after
// envtest's kube-apiserver verified their pod-bound tokens. A bounded load generator
// (meshlift-demo load) sends HTTP/1.1 keep-alive, HTTP/1.1 new-connection and h2c traffic
// through both proxies (app → client proxy → mTLS → server proxy → echo) while the tests hand
// the listeners of one proxy to a new process, or kill that process at the worst moments.
//
// No Kubernetes node is needed: the "pods" are API objects whose files (token, trust bundle,
// downward-API annotations, handoff socket) the tests write where the kubelet would.
package proxy_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/meshlift/meshlift/internal/controlplane"
	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/podcache"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

const (
	operatorNamespace = "meshlift-system"
	trustDomain       = "proxy.test"
	// oldVersion and newVersion are the version strings the two proxy binaries are built with.
	oldVersion = "v1.0.0-old"
	newVersion = "v1.1.0-new"
	timeout    = 60 * time.Second
)

var (
	env *testenv.Env
	// cp is the control plane every proxy of the package talks to.
	cp struct {
		server *controlplane.Server
		holder *identity.Holder
		cache  client.Reader
	}
	// bin holds the binaries built for the package.
	bin struct{ proxyOld, proxyNew, demo string }
)

func TestMain(m *testing.M) {
	if target := os.Getenv(relayTargetEnv); target != "" {
		os.Exit(runRelay(target)) // a relay process of BenchmarkTwoHopsProcesses
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapcore.ErrorLevel)))
	testenv.Main(m, &env, buildBinaries, startControlPlane)
}

// buildBinaries builds meshlift-proxy twice (old and new version strings) and meshlift-demo.
func buildBinaries(*testenv.Env) (func(), error) {
	dir, err := os.MkdirTemp("", "meshlift-proxy-test-")
	if err != nil {
		return nil, err
	}
	// Tests run some proxies as another user (TestHandoffSocketRefusesAnotherUID).
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	bin.proxyOld = filepath.Join(dir, "meshlift-proxy-old")
	bin.proxyNew = filepath.Join(dir, "meshlift-proxy-new")
	bin.demo = filepath.Join(dir, "meshlift-demo")
	for _, b := range []struct{ out, pkg, version string }{
		{bin.proxyOld, "./cmd/meshlift-proxy", oldVersion},
		{bin.proxyNew, "./cmd/meshlift-proxy", newVersion},
		{bin.demo, "./cmd/meshlift-demo", "test"},
	} {
		cmd := exec.Command("go", "build", "-o", b.out,
			"-ldflags", "-X github.com/meshlift/meshlift/internal/buildinfo.Version="+b.version, b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("building %s: %w\n%s", b.pkg, err, out)
		}
	}
	return func() { _ = os.RemoveAll(dir) }, nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module: %w", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// startControlPlane runs the control plane as main.go wires it (controlplane.Setup in a
// manager), with a fresh built-in mesh CA, on a free local port.
func startControlPlane(e *testenv.Env) (func(), error) {
	certPEM, keyPEM, err := identity.NewRoot(trustDomain, 24*time.Hour, time.Now())
	if err != nil {
		return nil, err
	}
	authority, err := identity.NewAuthority(certPEM, keyPEM, nil, certPEM)
	if err != nil {
		return nil, err
	}
	holder := identity.NewHolder()
	holder.Set(authority)
	mgr, err := ctrl.NewManager(e.Config, ctrl.Options{
		Scheme:                 e.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  podcache.CacheOptions(),
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	server, err := controlplane.Setup(ctx, mgr, holder, controlplane.Options{
		Address: "127.0.0.1:0", TrustDomain: trustDomain, Namespace: operatorNamespace,
	})
	if err != nil {
		cancel()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stop := func() {
		cancel()
		<-done
	}
	deadline := time.Now().Add(timeout)
	for server.Addr() == nil || server.Ready(nil) != nil {
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("the control plane did not become ready within %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cp.server, cp.holder, cp.cache = server, holder, mgr.GetCache()
	return stop, nil
}

// controlPlaneServerName is the name in the control plane's serving certificate.
func controlPlaneServerName() string {
	return controlplane.DefaultServiceName + "." + operatorNamespace + ".svc"
}
