// Command meshlift is the Meshlift operator: one manager running the controllers and the
// admission webhooks, the mesh CA and the control-plane (SDS+EDS) server.
package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
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
	"github.com/meshlift/meshlift/internal/cniready"
	"github.com/meshlift/meshlift/internal/controlplane"
	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/identity/builtin"
	"github.com/meshlift/meshlift/internal/identity/certmanager"
	"github.com/meshlift/meshlift/internal/lameduck"
	"github.com/meshlift/meshlift/internal/memlimit"
	"github.com/meshlift/meshlift/internal/operatorpod"
	"github.com/meshlift/meshlift/internal/podcache"
	"github.com/meshlift/meshlift/internal/rollout"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/webhookcert"
	"github.com/meshlift/meshlift/webhooks"
)

// The metrics endpoint authenticates and authorizes its callers.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

type options struct {
	namespace     string
	cniDaemonSet  string
	webhooks      bool
	webhookPort   int
	certs         webhookcert.Options
	injection     sidecar.Options
	metricsAddr   string
	metricsSecure bool
	probeAddr     string
	pprofAddr     string
	leaderElect   bool
	// repairUninjectedPods runs the repair controller (controllers.RepairReconciler).
	repairUninjectedPods bool
	leaderElectNS        string
	trustDomain          string
	caBackend            identity.Backend
	caSecretName         string
	caAllowNewRoot       bool
	caIssuer             cmmeta.IssuerReference
	caDuration           time.Duration
	caTrustAnchor        certmanager.TrustAnchor
	caUnsafe             certmanager.Risks
	controlPlane         string
	replicaName          string
	leafLifetime         time.Duration
	maxConnAge           time.Duration
	logLevel             string
	logFormat            string
	logDevelopment       bool
	// shutdownDelay and gracefulShutdown: see the flags; lameDuck delays the stop.
	shutdownDelay    time.Duration
	gracefulShutdown time.Duration
	lameDuck         *lameduck.Handler
}

func main() {
	opts := options{injection: sidecar.DefaultOptions(), certs: webhookcert.Options{Mode: webhookcert.SelfManaged}, caBackend: identity.BackendBuiltin, caTrustAnchor: certmanager.DefaultTrustAnchor()}
	flag.StringVar(&opts.namespace, "namespace", envOr("POD_NAMESPACE", "meshlift-system"), "The operator's namespace (default: $POD_NAMESPACE).")
	flag.BoolVar(&opts.webhooks, "enable-webhooks", true, "Serve the admission webhooks (the pod injector and the validators).")
	flag.IntVar(&opts.webhookPort, "webhook-port", 9443, "Port of the webhook server.")
	flag.Var(&opts.certs.Mode, "webhook-cert-mode", "Who issues the webhook serving certificate: self-managed (the operator, default), cert-manager, or external (OLM, or whoever mounts it; the operator then writes no webhook configuration).")
	flag.StringVar(&opts.certs.CertDir, "webhook-cert-dir", "", "Directory of tls.crt and tls.key in cert-manager and external modes (default: "+
		webhookcert.DefaultCertManagerCertDir+" for cert-manager, "+webhookcert.DefaultExternalCertDir+", where OLM mounts them, for external).")
	flag.StringVar(&opts.certs.ServiceName, "webhook-service-name", "meshlift-webhook-service", "Service the API server calls the webhooks through; the self-managed certificate is issued for its names (self-managed mode).")
	flag.StringVar(&opts.certs.SecretName, "webhook-secret-name", "meshlift-webhook-certs", "Secret of the self-managed webhook CA and serving certificate (self-managed mode).")
	flag.StringVar(&opts.certs.MutatingWebhookConfiguration, "mutating-webhook-configuration", "meshlift-mutating-webhook-configuration", "MutatingWebhookConfiguration that gets the CA bundle (self-managed mode).")
	flag.StringVar(&opts.certs.ValidatingWebhookConfiguration, "validating-webhook-configuration", "meshlift-validating-webhook-configuration", "ValidatingWebhookConfiguration that gets the CA bundle (self-managed mode).")
	flag.StringVar(&opts.injection.ControlPlaneAddress, "control-plane-address", opts.injection.ControlPlaneAddress, "Address (host:port) proxies reach the control plane (SDS/EDS) on.")
	flag.BoolVar(&opts.injection.NativeSidecar, "native-sidecar", opts.injection.NativeSidecar, "Inject native sidecars (restartable init containers) unless a MeshService says otherwise.")
	flag.BoolVar(&opts.injection.HoldApplicationUntilProxyStarts, "hold-application-until-proxy-starts", opts.injection.HoldApplicationUntilProxyStarts, "Start applications only once their proxy is ready (native sidecars), unless a MeshService says otherwise.")
	opts.injection.CaptureMode = sidecar.CaptureModeAuto
	flag.Var(&opts.injection.CaptureMode, "capture-mode", "Traffic capture of injected pods: auto (the default: cni while the meshlift-cni DaemonSet of --capture-cni-daemonset has a ready pod, none otherwise), cni (mark pods for the chained CNI plugin meshlift-cni, which the cluster must run, and rewrite their probes), init-container (the same, with the rules set by an init container with NET_ADMIN, for clusters that cannot run the plugin) or none (pods are not marked and probes stay as they are). See docs/traffic.md.")
	flag.StringVar(&opts.cniDaemonSet, "capture-cni-daemonset", cniready.DefaultDaemonSet, "The meshlift-cni DaemonSet in the operator's namespace that --capture-mode=auto looks for (the operator may only read that name: config/rbac).")
	flag.BoolVar(&opts.injection.CaptureOutbound, "capture-outbound", true, "With --capture-mode, mark pods for outbound capture too (unless their MeshService sets spec.capture.outbound: false): their proxies take the app's connections to MeshService addresses (Service ClusterIP:port, pod IP:port) and originate mTLS, and pass the others through (docs/traffic.md). false: inbound capture only.")
	flag.StringVar(&opts.injection.CaptureInitImage, "capture-init-image", opts.injection.CaptureInitImage, "Image of the capture init container (--capture-mode=init-container): meshlift-cni, whose init subcommand sets the rules.")
	flag.BoolVar(&opts.injection.FullIdleResources, "full-idle-resources", false, "Give the idle hot-upgrade slot the version's full resources (for clusters without in-place pod resize).")
	flag.StringVar(&opts.metricsAddr, "metrics-bind-address", ":8443", "Address of the metrics endpoint; \"0\" disables it.")
	flag.BoolVar(&opts.metricsSecure, "metrics-secure", true, "Serve metrics over HTTPS with authentication and authorization (TokenReview and SubjectAccessReview).")
	flag.StringVar(&opts.probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	flag.StringVar(&opts.pprofAddr, "pprof-bind-address", "0", "Address of the Go profiling endpoints (/debug/pprof/); \"0\" (the default) disables them.")
	flag.BoolVar(&opts.repairUninjectedPods, "repair-uninjected-pods", true, "Evict the pods that a STRICT MeshService selects but that were created without the sidecar while the injector was unavailable (its webhook fails open), so that their controllers recreate them with it; pods without a controller get a NotInjected event only (docs/traffic.md).")
	flag.BoolVar(&opts.leaderElect, "leader-elect", false, "Elect a leader so only one replica runs the controllers.")
	flag.StringVar(&opts.leaderElectNS, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the operator's namespace).")
	flag.StringVar(&opts.trustDomain, "trust-domain", identity.DefaultTrustDomain, "SPIFFE trust domain of workload identities.")
	flag.Var(&opts.caBackend, "ca-backend", "Who signs workload certificates: builtin (a root kept in a Secret, default) or cert-manager (an intermediate from an Issuer).")
	flag.StringVar(&opts.caSecretName, "ca-secret-name", builtin.DefaultSecretName, "Secret of the built-in CA's root certificate and key (builtin backend).")
	flag.BoolVar(&opts.caAllowNewRoot, "ca-allow-new-root", false, "Let the built-in CA mint a new root when its Secret is missing though this installation had one (recorded in the ConfigMap meshlift-ca-root of the operator's namespace); every proxy then needs the new trust bundle. Without it the CA waits for the Secret to be restored. Remove it once the new Secret exists.")
	flag.StringVar(&opts.caIssuer.Name, "ca-issuer-name", "", "cert-manager Issuer dedicated to the mesh that signs its intermediate CA (cert-manager backend; required there).")
	flag.StringVar(&opts.caIssuer.Kind, "ca-issuer-kind", "Issuer", "Kind of --ca-issuer-name: Issuer (in the operator's namespace) or ClusterIssuer (refused unless --ca-i-understand-unsafe=cluster-issuer).")
	flag.StringVar(&opts.caIssuer.Group, "ca-issuer-group", "cert-manager.io", "API group of --ca-issuer-name (for external issuers).")
	flag.DurationVar(&opts.caDuration, "ca-duration", certmanager.DefaultDuration, "Lifetime requested for the intermediate CA (cert-manager backend); it is renewed at two thirds.")
	flag.Var(&opts.caTrustAnchor, "ca-trust-anchor", "configmap/<name> or secret/<name> in the operator's namespace holding the PEM roots proxies trust (cert-manager backend; default configmap/"+certmanager.DefaultTrustAnchorName+", e.g. written by a trust-manager Bundle); empty takes the issuer's status.ca, refused unless --ca-i-understand-unsafe=issuer-ca.")
	flag.StringVar(&opts.caTrustAnchor.Key, "ca-trust-anchor-key", certmanager.DefaultTrustAnchorKey, "Key of --ca-trust-anchor holding the PEM roots.")
	flag.Var(&opts.caUnsafe, "ca-i-understand-unsafe", "Comma-separated unsafe cert-manager configurations to accept anyway: cluster-issuer (an issuer serving every namespace), issuer-ca (no pinned trust anchor).")
	flag.StringVar(&opts.controlPlane, "control-plane-bind-address", controlplane.DefaultAddress, "Address of the control-plane gRPC server (SDS and EDS for the proxies); \"0\" disables it.")
	flag.StringVar(&opts.replicaName, "replica-name", envOr("POD_NAME", hostname()), "This replica's name (default: $POD_NAME, else the host name): its control plane acknowledges InPlace drains under it.")
	flag.DurationVar(&opts.leafLifetime, "leaf-lifetime", controlplane.DefaultLeafLifetime, "Lifetime of workload certificates; proxies rotate them at half of it.")
	flag.DurationVar(&opts.maxConnAge, "control-plane-max-connection-age", controlplane.DefaultMaxConnectionAge, "How long a proxy's connection to the control plane lives (give or take 10%) before the server asks it to reconnect, so that proxies spread again over the replicas after one restarts.")
	flag.DurationVar(&opts.shutdownDelay, "shutdown-delay", defaultShutdownDelay(), "How long a replica keeps serving webhooks and the control plane, reporting itself not ready, after SIGTERM before it stops (default 5s in a pod, 0 elsewhere); a second signal stops it at once.")
	flag.DurationVar(&opts.gracefulShutdown, "graceful-shutdown-timeout", 30*time.Second, "How long the manager waits for its runnables to stop after the shutdown delay.")
	flag.StringVar(&opts.logLevel, "log-level", "info", "Log level: debug, info, warn, error, or a number (higher is more verbose: 1 = debug).")
	flag.StringVar(&opts.logFormat, "log-format", "json", "Log format: json or console.")
	flag.BoolVar(&opts.logDevelopment, "log-development", false, "Development logging: console format, debug level, stack traces on warnings.")
	flag.Parse()
	opts.injection.TrustDomain = opts.trustDomain
	opts.certs.Namespace = opts.namespace
	if err := checkWebhookCertFlags(opts.certs.Mode, setFlags()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	opts.certs.CertDir = cmp.Or(opts.certs.CertDir, webhookcert.DefaultCertDir(opts.certs.Mode))
	logger, err := newLogger(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctrl.SetLogger(logger)
	klog.SetLogger(logger.WithName("client-go"))

	opts.lameDuck = &lameduck.Handler{Delay: opts.shutdownDelay, Log: logger.WithName("shutdown")}
	if err := run(opts.lameDuck.Context(context.Background()), opts); err != nil {
		logger.Error(err, "Operator stopped with an error")
		os.Exit(1)
	}
}

func run(ctx context.Context, opts options) error {
	log := ctrl.Log.WithName("setup")
	log.Info("Starting Meshlift operator", "version", buildinfo.Version, "leaderElect", opts.leaderElect, "trustDomain", opts.trustDomain)
	setMemoryLimit(log)

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(meshv1alpha1.AddToScheme(scheme))
	if opts.caBackend == identity.BackendCertManager {
		utilruntime.Must(cmapi.AddToScheme(scheme))
	}

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
		// The certificate comes from memory (self-managed) or from the files cert-manager or OLM
		// mount, always through webhookcert rather than controller-runtime's own file watcher,
		// so that the readiness check knows whether a certificate is loaded.
		webhookServer = webhook.NewServer(webhook.Options{Port: opts.webhookPort, TLSOpts: []func(*tls.Config){certs.ConfigureTLS}})
	}
	cfg := ctrl.GetConfigOrDie()
	// Pods are the bulk of the cache: only what the operator reads of them is decoded and kept.
	cacheOpts, err := podcache.CacheOptionsFor(cfg)
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		WebhookServer:                 webhookServer,
		Scheme:                        scheme,
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        opts.probeAddr,
		PprofBindAddress:              opts.pprofAddr,
		LeaderElection:                opts.leaderElect,
		LeaderElectionID:              "meshlift.mesh.meshlift.io",
		LeaderElectionNamespace:       cmp.Or(opts.leaderElectNS, opts.namespace),
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       &opts.gracefulShutdown,
		Cache:                         cacheOpts,
	})
	if err != nil {
		return fmt.Errorf("failed to create manager: %w", err)
	}

	holder := identity.NewHolder()
	if err := setupCA(mgr, opts, holder); err != nil {
		return err
	}
	rolloutOpts := rollout.DefaultOptions()
	rolloutOpts.IdleResources, rolloutOpts.FullIdleResources = opts.injection.IdleResources, opts.injection.FullIdleResources
	controllerOpts := controllers.Options{TrustDomain: opts.trustDomain, CA: holder, Rollout: &rolloutOpts,
		RepairUninjectedPods: opts.repairUninjectedPods, Repair: controllers.RepairOptions{OperatorNamespace: opts.namespace}}
	if opts.controlPlane != "0" {
		// InPlace drains wait for every control-plane replica to acknowledge them.
		controllerOpts.ControlPlane = &controllers.ControlPlaneReplicas{
			Namespace: opts.namespace, Service: controlplane.DefaultServiceName, Self: opts.replicaName,
		}
	}
	if err := controllers.Setup(ctx, mgr, controllerOpts); err != nil {
		return err
	}
	if opts.controlPlane != "0" {
		// Proxies dial --control-plane-address: its host is in the serving certificate too.
		host, _, _ := net.SplitHostPort(opts.injection.ControlPlaneAddress)
		cp, err := controlplane.Setup(ctx, mgr, holder, controlplane.Options{
			Address: opts.controlPlane, TrustDomain: opts.trustDomain, Namespace: opts.namespace, LeafLifetime: opts.leafLifetime,
			ExtraNames: []string{host}, ReplicaName: opts.replicaName, MaxConnectionAge: opts.maxConnAge,
		})
		if err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("control-plane", cp.Ready); err != nil {
			return fmt.Errorf("failed to add readiness check: %w", err)
		}
	}

	if opts.webhooks {
		if err := certs.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("failed to set up webhook certificates: %w", err)
		}
		var cniInstalled func() bool
		if opts.injection.CaptureMode == sidecar.CaptureModeAuto {
			watcher := &cniready.Watcher{Reader: mgr.GetAPIReader(), Key: types.NamespacedName{Namespace: opts.namespace, Name: opts.cniDaemonSet},
				Log: ctrl.Log.WithName("capture")}
			if err := mgr.Add(watcher); err != nil {
				return fmt.Errorf("failed to add the meshlift-cni watcher: %w", err)
			}
			if err := mgr.AddReadyzCheck("capture-plugin", watcher.Checked); err != nil {
				return fmt.Errorf("failed to add readiness check: %w", err)
			}
			cniInstalled = watcher.Ready
		}
		if err := webhooks.Setup(ctx, mgr, webhooks.Options{
			Injection:         opts.injection,
			OperatorNamespace: opts.namespace,
			Recorder:          mgr.GetEventRecorder("meshlift-injector"),
			CNIInstalled:      cniInstalled,
		}); err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("webhook-certificate", certs.Ready); err != nil {
			return fmt.Errorf("failed to add readiness check: %w", err)
		}
	}

	// kubectl meshlift version reads each replica's version from its Pod; outside a pod there
	// is none to annotate.
	if podName := os.Getenv("POD_NAME"); podName != "" {
		if err := mgr.Add(&operatorpod.VersionPublisher{
			Writer:  mgr.GetClient(),
			Pod:     types.NamespacedName{Namespace: envOr("POD_NAMESPACE", opts.namespace), Name: podName},
			Version: buildinfo.Version,
			Log:     mgr.GetLogger().WithName("operator-pod"),
		}); err != nil {
			return fmt.Errorf("failed to add the operator version publisher to the manager: %w", err)
		}
	}

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("failed to add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("cache-synced", cacheSynced(mgr.GetCache())); err != nil {
		return fmt.Errorf("failed to add readiness check: %w", err)
	}
	if opts.lameDuck != nil {
		if err := mgr.AddReadyzCheck("shutdown", opts.lameDuck.Ready); err != nil {
			return fmt.Errorf("failed to add readiness check: %w", err)
		}
	}

	log.Info("Starting manager")
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("manager failed: %w", err)
	}
	return nil
}

// setMemoryLimit sets the Go runtime's soft memory limit to 90% of the container's memory limit
// (MESHLIFT_MEMORY_LIMIT, from the downward API) unless GOMEMLIMIT is set. A limit it cannot read
// is logged, not fatal: the operator runs as it would without one.
func setMemoryLimit(log logr.Logger) {
	limit, err := memlimit.Set(os.Getenv)
	switch {
	case err != nil:
		log.Error(err, "Not setting a Go memory limit")
	case limit > 0:
		log.Info("Set the Go memory limit from the container's memory limit", "goMemoryLimitBytes", limit,
			"containerMemoryLimit", os.Getenv(memlimit.EnvContainerLimit), "percent", memlimit.Percent)
	case os.Getenv(memlimit.EnvGoMemLimit) != "":
		log.Info("Using the Go memory limit of GOMEMLIMIT", "goMemoryLimitBytes", debug.SetMemoryLimit(-1))
	}
}

// setupCA starts the CA backend that fills holder, on every replica, with its readiness check
// "mesh-ca".
func setupCA(mgr ctrl.Manager, opts options, holder *identity.Holder) error {
	type backend interface {
		SetupWithManager(ctrl.Manager) error
		Ready(*http.Request) error
	}
	var ca backend
	switch opts.caBackend {
	case identity.BackendCertManager:
		if opts.caIssuer.Name == "" {
			return errors.New("--ca-backend=cert-manager needs --ca-issuer-name (an Issuer of the operator's namespace, dedicated to the mesh, that may sign CA certificates)")
		}
		c, err := certmanager.New(certmanager.Options{
			Namespace: opts.namespace, TrustDomain: opts.trustDomain, Duration: opts.caDuration, IssuerRef: opts.caIssuer,
			TrustAnchor: opts.caTrustAnchor, AcceptRisks: opts.caUnsafe,
		}, holder)
		if err != nil {
			return err
		}
		ca = c
	default:
		c, err := builtin.New(builtin.Options{Namespace: opts.namespace, SecretName: opts.caSecretName, TrustDomain: opts.trustDomain, AllowNewRoot: opts.caAllowNewRoot}, holder)
		if err != nil {
			return err
		}
		ca = c
	}
	if err := ca.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("failed to set up the %s CA: %w", opts.caBackend, err)
	}
	if err := mgr.AddReadyzCheck("mesh-ca", ca.Ready); err != nil {
		return fmt.Errorf("failed to add readiness check: %w", err)
	}
	return nil
}

// selfManagedOnlyFlags configure what the operator issues and where it writes caBundle: in
// external mode it does neither, so setting one means the operator is not run the way its
// user thinks.
var selfManagedOnlyFlags = []string{"webhook-secret-name", "webhook-service-name", "mutating-webhook-configuration", "validating-webhook-configuration"}

// checkWebhookCertFlags refuses, in external mode, the flags (set, by name) that only the
// self-managed mode reads. cert-manager mode ignores them, as it always has.
func checkWebhookCertFlags(mode webhookcert.Mode, set map[string]bool) error {
	if mode != webhookcert.External {
		return nil
	}
	var given []string
	for _, name := range selfManagedOnlyFlags {
		if set[name] {
			given = append(given, "--"+name)
		}
	}
	if len(given) == 0 {
		return nil
	}
	return fmt.Errorf("--webhook-cert-mode=%s issues no certificate and writes no webhook configuration, so %s would do nothing: remove them or choose another mode",
		webhookcert.External, strings.Join(given, ", "))
}

// setFlags are the names of the flags given on the command line.
func setFlags() map[string]bool {
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
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

// defaultShutdownDelay is 5s in a pod (POD_NAME set by the Deployment), where the endpoints of
// the webhook and control-plane Services take a moment to drop a terminating replica, and 0 for
// a run on a workstation.
func defaultShutdownDelay() time.Duration {
	if os.Getenv("POD_NAME") != "" {
		return 5 * time.Second
	}
	return 0
}

// hostname is the host's name, "" when it cannot be read.
func hostname() string {
	name, _ := os.Hostname()
	return name
}
