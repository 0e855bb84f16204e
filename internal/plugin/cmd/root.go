// Package cmd holds the commands of kubectl-meshlift. Each command fetches objects with a
// controller-runtime client, hands them to the pure internal/plugin/view package and prints the
// result; gestures (pause, resume, ...) patch the UpgradePlan and say what they did.
package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/plugin/view"
)

// FieldManager is the field manager of every write the plugin makes.
const FieldManager = "kubectl-meshlift"

// Exit codes of the plugin (documented in docs/kubectl-plugin.md).
const (
	// ExitError is a usage, connection or API error, or a refused gesture.
	ExitError = 1
	// ExitPlanFailed: the plan ended Failed or RolledBack (status -w), or check found a problem.
	ExitPlanFailed = 2
	// ExitTimeout: status -w ran out of --timeout before the plan ended.
	ExitTimeout = 3
)

// ExitCodeError carries the process exit code of a failed command.
type ExitCodeError struct {
	Code int
	Err  error
}

func (e *ExitCodeError) Error() string { return e.Err.Error() }
func (e *ExitCodeError) Unwrap() error { return e.Err }

// ExitCode is the exit code for err (0 for nil).
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var coded *ExitCodeError
	if errors.As(err, &coded) {
		return coded.Code
	}
	return ExitError
}

// Scheme holds every kind the plugin reads.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(corev1.AddToScheme(s))
	utilruntime.Must(appsv1.AddToScheme(s))
	utilruntime.Must(admissionregistrationv1.AddToScheme(s))
	utilruntime.Must(apiextensionsv1.AddToScheme(s))
	utilruntime.Must(discoveryv1.AddToScheme(s))
	utilruntime.Must(meshv1alpha1.AddToScheme(s))
	return s
}

// Env is what every command needs: the cluster, the namespace, the output and the clock. Tests
// build it around envtest's API server (NewEnv) and a buffer.
type Env struct {
	Streams genericiooptions.IOStreams
	flags   *genericclioptions.ConfigFlags

	// Client is set by tests; otherwise it is built from the flags on first use.
	Client client.WithWatch
	// Config is the REST config the client was built from (check uses it for TLS details).
	Config *rest.Config
	// Namespace is set by tests; otherwise it comes from -n or the kubeconfig context.
	Namespace string
	// Now is the clock (time.Now unless a test sets it).
	Now func() time.Time
	// Terminal says whether Out is a terminal and its width; nil means detect.
	Terminal *Terminal
	// NoColor is --no-color.
	NoColor bool
}

// Terminal describes the output when it is a terminal.
type Terminal struct {
	IsTerminal bool
	Width      int
}

// NewEnv is the Env of a command-line run.
func NewEnv(streams genericiooptions.IOStreams) *Env {
	return &Env{Streams: streams, flags: genericclioptions.NewConfigFlags(true), Now: time.Now}
}

func (e *Env) client() (client.WithWatch, error) {
	if e.Client != nil {
		return e.Client, nil
	}
	cfg, err := e.flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	cfg.UserAgent = "kubectl-meshlift"
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return nil, fmt.Errorf("connecting to the cluster at %s: %w", cfg.Host, err)
	}
	e.Client, e.Config = c, cfg
	return c, nil
}

func (e *Env) namespace() (string, error) {
	if e.flags != nil && e.flags.Namespace != nil && *e.flags.Namespace != "" {
		return *e.flags.Namespace, nil
	}
	if e.Namespace != "" {
		return e.Namespace, nil
	}
	ns, _, err := e.flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", fmt.Errorf("finding the namespace (set -n): %w", err)
	}
	e.Namespace = ns
	return ns, nil
}

func (e *Env) terminal() Terminal {
	if e.Terminal != nil {
		return *e.Terminal
	}
	t := Terminal{Width: view.DefaultWidth}
	if f, ok := e.Streams.Out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		t.IsTerminal = true
		if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 0 {
			t.Width = w
		}
	}
	e.Terminal = &t
	return t
}

// viewOptions: colours and symbols only on a terminal, without --no-color, NO_COLOR or TERM=dumb.
func (e *Env) viewOptions() view.Options {
	t := e.terminal()
	color := t.IsTerminal && !e.NoColor && os.Getenv("TERM") != "dumb" && os.Getenv("NO_COLOR") == ""
	return view.Options{Color: color, Width: t.Width}
}

func (e *Env) now() time.Time {
	if e.Now == nil {
		return time.Now()
	}
	return e.Now()
}

func (e *Env) out() io.Writer { return e.Streams.Out }

// NewRootCommand is `kubectl meshlift`.
func NewRootCommand(env *Env) *cobra.Command {
	root := &cobra.Command{
		Use:   "kubectl-meshlift",
		Short: "Watch and steer Meshlift sidecar upgrades",
		Long: `kubectl meshlift shows and steers the Meshlift service mesh: the status of an UpgradePlan
(live with -w), tables of plans, sidecar versions and MeshServices, the proxy of each pod,
the gestures of a rollout (pause, resume, abort, rollback, retry) and a pre-flight check.`,
		Example: `  kubectl meshlift status demo-upgrade -n meshlift-demo -w
  kubectl meshlift get plans -A
  kubectl meshlift resume demo-upgrade -n meshlift-demo
  kubectl meshlift proxy-status -n meshlift-demo
  kubectl meshlift check`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// kubectl runs plugins as kubectl-meshlift; help shows the command users type.
		Annotations: map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl meshlift"},
	}
	if env.flags == nil {
		env.flags = genericclioptions.NewConfigFlags(true)
	}
	env.flags.AddFlags(root.PersistentFlags())
	root.PersistentFlags().BoolVar(&env.NoColor, "no-color", false, "Print plain text without colours or symbols (also NO_COLOR=1 or TERM=dumb).")

	root.AddCommand(newStatusCommand(env), newGetCommand(env), newProxyStatusCommand(env), newCheckCommand(env), newVersionCommand(env))
	root.AddCommand(newGestureCommands(env)...)
	upgrade := &cobra.Command{
		Use:   "upgrade",
		Short: "The UpgradePlan commands, grouped (status, pause, resume, abort, rollback, retry)",
	}
	upgrade.AddCommand(newStatusCommand(env))
	upgrade.AddCommand(newGestureCommands(env)...)
	root.AddCommand(upgrade)
	return root
}

// Execute runs the plugin with os.Args and returns the process exit code.
func Execute(ctx context.Context) int {
	env := NewEnv(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	root := NewRootCommand(env)
	err := root.ExecuteContext(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
	}
	return ExitCode(err)
}
