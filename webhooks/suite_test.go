package webhooks_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
	"github.com/meshlift/meshlift/webhooks"
)

// The webhooks run in a real manager's webhook server; the real kube-apiserver calls them through
// the configurations of config/webhook/manifests.yaml (envtest points them at the local server).

var (
	env      *testenv.Env
	mgrCache client.Reader
	// warned collects the admission warnings the API server passes back to warnClient.
	warned     = &warnings{}
	warnClient client.Client
)

const operatorNamespace = "meshlift-system"

func TestMain(m *testing.M) {
	testenv.MainWith(m, &env, []testenv.Option{testenv.WithWebhooks()}, startManager)
}

func startManager(e *testenv.Env) (func(), error) {
	mgr, err := ctrl.NewManager(e.Config, ctrl.Options{
		Scheme:                 e.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		WebhookServer:          webhook.NewServer(e.WebhookServerOptions()),
	})
	if err != nil {
		return nil, fmt.Errorf("failed to create manager: %w", err)
	}
	if err := webhooks.Setup(context.Background(), mgr, webhooks.Options{
		Injection:         sidecar.DefaultOptions(),
		OperatorNamespace: operatorNamespace,
		Recorder:          mgr.GetEventRecorder("meshlift-injector"),
	}); err != nil {
		return nil, err
	}
	mgrCache = mgr.GetClient()

	cfg := rest.CopyConfig(e.Config)
	cfg.WarningHandlerWithContext = warned
	if warnClient, err = client.New(cfg, client.Options{Scheme: e.Scheme}); err != nil {
		return nil, err
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		cancel()
		return nil, fmt.Errorf("cache did not sync")
	}
	return func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "manager stopped with an error:", err)
		}
	}, nil
}

type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

// take returns and forgets the warnings collected so far.
func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	list := w.list
	w.list = nil
	return list
}

type clientObject = client.Object

// waitForWarning repeats an action until the API server passes back a warning containing want.
func waitForWarning(t *testing.T, action func() error, want string) {
	t.Helper()
	testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) {
		warned.take()
		if err := action(); err != nil {
			return false, err.Error()
		}
		got := strings.Join(warned.take(), "\n")
		return strings.Contains(got, want), "warnings: " + got
	})
}
