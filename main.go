// Command meshlift is the Meshlift operator: one manager running the controllers and the
// admission webhooks (and, in later releases, the SDS server).
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/controllers"
	"github.com/meshlift/meshlift/internal/buildinfo"
	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/webhookcert"
	"github.com/meshlift/meshlift/webhooks"
)

// The metrics endpoint authenticates and authorizes its callers.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

type options struct {
	namespace      string
	webhooks       bool
	webhookPort    int
	certs          webhookcert.Options
	injection      sidecar.Options
	metricsAddr    string
	metricsSecure  bool
	probeAddr      string
	leaderElect    bool
	leaderElectNS  string
	trustDomain    string
	logLevel       string
	logFormat      string
	logDevelopment bool
}

func main() {
	opts := options{injection: sidecar.DefaultOptions(), certs: webhookcert.Options{Mode: webhookcert.SelfManaged}}
	flag.StringVar(&opts.namespace, "namespace", envOr("POD_NAMESPACE", "meshlift-system"), "The operator's namespace (default: $POD_NAMESPACE).")
	flag.BoolVar(&opts.webhooks, "enable-webhooks", true, "Serve the admission webhooks (the pod injector and the validators).")
	flag.IntVar(&opts.webhookPort, "webhook-port", 9443, "Port of the webhook server.")
	flag.Var(&opts.certs.Mode, "webhook-cert-mode", "Who issues the webhook serving certificate: self-managed (the operator, default) or cert-manager.")
	flag.StringVar(&opts.certs.CertDir, "webhook-cert-dir", "/etc/meshlift/webhook-certs", "Directory of tls.crt and tls.key in cert-manager mode.")
	flag.StringVar(&opts.certs.ServiceName, "webhook-service-name", "meshlift-webhook-service", "Service the API server calls the webhooks through.")
	flag.StringVar(&opts.certs.SecretName, "webhook-secret-name", "meshlift-webhook-certs", "Secret of the self-managed webhook CA and serving certificate.")
	flag.StringVar(&opts.certs.MutatingWebhookConfiguration, "mutating-webhook-configuration", "meshlift-mutating-webhook-configuration", "MutatingWebhookConfiguration that gets the CA bundle.")
	flag.StringVar(&opts.certs.ValidatingWebhookConfiguration, "validating-webhook-configuration", "meshlift-validating-webhook-configuration", "ValidatingWebhookConfiguration that gets the CA bundle.")
	flag.StringVar(&opts.injection.ControlPlaneAddress, "control-plane-address", opts.injection.ControlPlaneAddress, "Address (host:port) proxies reach the control plane (SDS/EDS) on.")
	flag.BoolVar(&opts.injection.NativeSidecar, "native-sidecar", opts.injection.NativeSidecar, "Inject native sidecars (restartable init containers) unless a MeshService says otherwise.")
	flag.BoolVar(&opts.injection.HoldApplicationUntilProxyStarts, "hold-application-until-proxy-starts", opts.injection.HoldApplicationUntilProxyStarts, "Start applications only once their proxy is ready (native sidecars), unless a MeshService says otherwise.")
	flag.BoolVar(&opts.injection.FullIdleResources, "full-idle-resources", false, "Give the idle hot-upgrade slot the version's full resources (for clusters without in-place pod resize).")
	flag.StringVar(&opts.metricsAddr, "metrics-bind-address", ":8443", "Address of the metrics endpoint; \"0\" disables it.")
	flag.BoolVar(&opts.metricsSecure, "metrics-secure", true, "Serve metrics over HTTPS with authentication and authorization (TokenReview and SubjectAccessReview).")
	flag.StringVar(&opts.probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	flag.BoolVar(&opts.leaderElect, "leader-elect", false, "Elect a leader so only one replica runs the controllers.")
	flag.StringVar(&opts.leaderElectNS, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the operator's namespace).")
	flag.StringVar(&opts.trustDomain, "trust-domain", identity.DefaultTrustDomain, "SPIFFE trust domain of workload identities.")
	flag.StringVar(&opts.logLevel, "log-level", "info", "Log level: debug, info, warn, error, or a number (higher is more verbose: 1 = debug).")
	flag.StringVar(&opts.logFormat, "log-format", "json", "Log format: json or console.")
	flag.BoolVar(&opts.logDevelopment, "log-development", false, "Development logging: console format, debug level, stack traces on warnings.")
	flag.Parse()
	opts.injection.TrustDomain = opts.trustDomain
	opts.certs.Namespace = opts.namespace

	logger, err := newLogger(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctrl.SetLogger(logger)
	klog.SetLogger(logger.WithName("client-go"))

	if err := run(ctrl.SetupSignalHandler(), opts); err != nil {
		logger.Error(err, "Operator stopped with an error")
		os.Exit(1)
	}
}

func run(ctx context.Context, opts options) error {
	log := ctrl.Log.WithName("setup")
	log.Info("Starting Meshlift operator", "version", buildinfo.Version, "leaderElect", opts.leaderElect, "trustDomain", opts.trustDomain)

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(meshv1alpha1.AddToScheme(scheme))

	metricsOpts := metricsserver.Options{BindAddress: opts.metricsAddr, SecureServing: opts.metricsSecure}
	if opts.metricsSecure {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	var certs *webhookcert.Manager
	webhookServer := webhook.NewServer(webhook.Options{Port: opts.webhookPort})
	if opts.webhooks {
		var err error
		if certs, err = webhookcert.New(opts.certs); err != nil {
			return err
		}
		// The certificate comes from memory (self-managed) or from cert-manager's files, never
		// from controller-runtime's default directory: the root filesystem is read-only.
		webhookServer = webhook.NewServer(webhook.Options{Port: opts.webhookPort, TLSOpts: []func(*tls.Config){certs.ConfigureTLS}})
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		WebhookServer:                 webhookServer,
		Scheme:                        scheme,
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        opts.probeAddr,
		LeaderElection:                opts.leaderElect,
		LeaderElectionID:              "meshlift.mesh.meshlift.io",
		LeaderElectionNamespace:       opts.leaderElectNS,
		LeaderElectionReleaseOnCancel: true,
		// Pods are the bulk of the cache; managed fields are never read, so drop them.
		Cache: cache.Options{DefaultTransform: cache.TransformStripManagedFields()},
	})
	if err != nil {
		return fmt.Errorf("failed to create manager: %w", err)
	}

	if err := controllers.Setup(ctx, mgr, controllers.Options{TrustDomain: opts.trustDomain}); err != nil {
		return err
	}

	if opts.webhooks {
		if err := certs.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("failed to set up webhook certificates: %w", err)
		}
		if err := webhooks.Setup(ctx, mgr, webhooks.Options{
			Injection:          opts.injection,
			ExcludedNamespaces: []string{metav1.NamespaceSystem, corev1.NamespaceNodeLease, opts.namespace},
			Recorder:           mgr.GetEventRecorder("meshlift-injector"),
		}); err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("webhook-certificate", certs.Ready); err != nil {
			return fmt.Errorf("failed to add readiness check: %w", err)
		}
	}

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("failed to add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("cache-synced", cacheSynced(mgr.GetCache())); err != nil {
		return fmt.Errorf("failed to add readiness check: %w", err)
	}

	log.Info("Starting manager")
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("manager failed: %w", err)
	}
	return nil
}

// cacheSynced is ready once the informers have synced, so a new replica is not marked ready
// while it still sees an empty cluster.
func cacheSynced(c cache.Cache) healthz.Checker {
	return func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !c.WaitForCacheSync(ctx) {
			return errors.New("informer caches have not synced yet")
		}
		return nil
	}
}

func envOr(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

func newLogger(opts options) (logr.Logger, error) {
	level, err := parseLevel(opts.logLevel)
	if err != nil {
		return logr.Logger{}, err
	}
	cfg := zap.NewProductionConfig()
	if opts.logDevelopment {
		cfg = zap.NewDevelopmentConfig()
		if opts.logLevel == "info" {
			level = zapcore.DebugLevel
		}
	}
	switch opts.logFormat {
	case "json":
		if !opts.logDevelopment {
			cfg.Encoding = "json"
		}
	case "console":
		cfg.Encoding = "console"
	default:
		return logr.Logger{}, fmt.Errorf("--log-format must be json or console, not %q", opts.logFormat)
	}
	cfg.Level = zap.NewAtomicLevelAt(level)
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	cfg.Sampling = nil
	zl, err := cfg.Build()
	if err != nil {
		return logr.Logger{}, fmt.Errorf("failed to build logger: %w", err)
	}
	return zapr.NewLogger(zl), nil
}

// parseLevel accepts zap level names or a logr verbosity (1 = debug, 2 = more detail...).
func parseLevel(s string) (zapcore.Level, error) {
	var level zapcore.Level
	if err := level.UnmarshalText([]byte(s)); err == nil {
		return level, nil
	}
	var verbosity int
	if _, err := fmt.Sscanf(s, "%d", &verbosity); err == nil && verbosity >= 0 && verbosity <= 126 {
		return zapcore.Level(-verbosity), nil
	}
	return 0, fmt.Errorf("--log-level must be debug, info, warn, error or a verbosity number, not %q", s)
}
