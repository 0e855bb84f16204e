package controllers_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/meshlift/meshlift/controllers"
	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/podcache"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// The controllers run in a real manager against envtest's kube-apiserver. There is no kubelet,
// so tests drive pod status through the status subresource.

var env *testenv.Env

// mesh is the CA whose trust bundle the trust bundle controller publishes; tests may Set
// another Authority.
var mesh = identity.NewHolder()

func TestMain(m *testing.M) {
	testenv.Main(m, &env, startManager)
}

// controlPlane is where the UpgradePlan controller looks for the control-plane replicas that
// acknowledge InPlace drains (no test runs a control plane: the tests write the
// acknowledgements).
var controlPlane = controllers.ControlPlaneReplicas{Namespace: "meshlift-cp-test", Service: "meshlift-control-plane", Self: "operator-self"}

func startManager(e *testenv.Env) (stop func(), err error) {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapLevel())))
	mgr, err := ctrl.NewManager(e.Config, ctrl.Options{
		Scheme:                 e.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  podcache.CacheOptions(),
	})
	if err != nil {
		return nil, fmt.Errorf("failed to create manager: %w", err)
	}
	authority, err := newAuthority()
	if err != nil {
		return nil, err
	}
	mesh.Set(authority)
	ctx, cancel := context.WithCancel(context.Background())
	if err := controllers.Setup(ctx, mgr, controllers.Options{TrustDomain: "test.local", CA: mesh, ControlPlane: &controlPlane,
		RetireProber: proxies.prober()}); err != nil {
		cancel()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "manager stopped with an error:", err)
		}
	}, nil
}

// newAuthority returns a CA with a new root, as the built-in backend creates.
func newAuthority() (*identity.Authority, error) {
	certPEM, keyPEM, err := identity.NewRoot("test.local", time.Hour, time.Now())
	if err != nil {
		return nil, err
	}
	return identity.NewAuthority(certPEM, keyPEM, nil, certPEM)
}

// zapLevel keeps the manager quiet unless MESHLIFT_TEST_LOG=debug asks for its logs.
func zapLevel() zapcore.Level {
	if os.Getenv("MESHLIFT_TEST_LOG") == "debug" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel
}
