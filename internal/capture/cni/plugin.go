// Package cni is meshlift-cni, a chained CNI plugin that sets up traffic capture (package
// capture) in the network namespace of each pod the injector marked with
// capture.AnnotationCapture, when the pod is created, so app pods need no NET_ADMIN.
//
// ADD runs after the network plugin (it must be chained: it passes the prevResult through).
// It gets the pod from the API server. For a marked pod it applies the rules, and any failure
// fails ADD, so the pod does not start with its traffic uncaptured (a STRICT MeshService would be
// reachable around its proxy). A pod that cannot be fetched fails ADD too ("fail closed": the
// plugin cannot tell whether it is meshed), except in the namespaces of NetConf.ExcludeNamespaces
// (kube-system by default), whose pods must start while the API server is unreachable (its own,
// DNS, the network plugin); those pods start without capture and the failure is logged.
//
// An unmarked pod is left alone, unless it carries no sidecar and a STRICT MeshService selects
// it (Isolate): the injector fails open, so a pod created while every operator replica was down
// gets no sidecar, and would serve plaintext where STRICT promises mTLS only. Such a pod is
// isolated (IsolationConfig: every inbound TCP connection is refused, so it never becomes Ready)
// until the operator's repair controller has it recreated with the sidecar. Deciding that takes
// a list of the namespace's MeshServices; when the list fails, ADD fails as when the pod cannot
// be fetched (the kubelet retries). Pods of the excluded and system namespaces, pods that opted
// out of injection (meshlift.io/inject: "false") and injected pods need no list and are never
// isolated.
//
// DEL deletes the table and never fails: the rules die with the namespace anyway, and a failed
// DEL would block the pod's deletion. CHECK verifies the rules of a marked or isolated pod.
package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/meshlift/meshlift/internal/capture"
)

// PluginName is the plugin's "type" in a CNI configuration, and its binary's name.
const PluginName = "meshlift-cni"

// SupportedVersions are the CNI specification versions the plugin speaks (CHECK needs 0.4.0).
var SupportedVersions = version.PluginSupports("0.4.0", "1.0.0", "1.1.0")

// DefaultExcludeNamespaces is NetConf.ExcludeNamespaces when the configuration does not set it.
var DefaultExcludeNamespaces = []string{"kube-system"}

// DefaultLookupTimeout bounds the pod lookup of one CNI call, retries included, and the
// MeshService lookup of one CNI call the same.
const DefaultLookupTimeout = 10 * time.Second

// NetConf is the plugin's entry in a CNI configuration list, for example
//
//	{"type": "meshlift-cni", "kubeconfig": "/etc/cni/net.d/meshlift-cni.kubeconfig",
//	 "excludeNamespaces": ["kube-system"]}
type NetConf struct {
	types.PluginConf
	// Kubeconfig is the path of the kubeconfig the plugin reads pods and MeshServices with (get
	// pods and list meshservices.mesh.meshlift.io, cluster-wide: config/cni/rbac.yaml).
	Kubeconfig string `json:"kubeconfig"`
	// ExcludeNamespaces are namespaces whose pods start without capture when the plugin cannot
	// get them from the API server, and whose pods are never isolated (the installer adds its
	// own namespace, the operator's in the default install: the operator must start while it is
	// down). Unset means DefaultExcludeNamespaces; [] means none.
	ExcludeNamespaces *[]string `json:"excludeNamespaces,omitempty"`
}

// excluded reports whether namespace is in ExcludeNamespaces.
func (c *NetConf) excluded(namespace string) bool {
	namespaces := DefaultExcludeNamespaces
	if c.ExcludeNamespaces != nil {
		namespaces = *c.ExcludeNamespaces
	}
	return slices.Contains(namespaces, namespace)
}

// podArgs are the CNI_ARGS the kubelet (through the container runtime) passes.
type podArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE types.UnmarshallableString //nolint:revive,staticcheck // the CNI_ARGS key
	K8S_POD_NAME      types.UnmarshallableString //nolint:revive,staticcheck // the CNI_ARGS key
	K8S_POD_UID       types.UnmarshallableString //nolint:revive,staticcheck // the CNI_ARGS key
}

// Pod is what the plugin needs to know about a pod.
type Pod struct {
	UID         string
	Annotations map[string]string
	Labels      map[string]string
	// Injected is set when the pod carries the Meshlift sidecar (the injector's annotations or a
	// proxy container).
	Injected bool
	// ProxyUID is the runAsUser of the pod's proxy containers, when they set one: the user whose
	// connections outbound capture leaves alone. A pod injected by an operator that ran its
	// proxies as another user than capture.DefaultProxyUID keeps its own, so its proxy's
	// connections never loop back to itself.
	ProxyUID *int64
}

// PodLookup gets a pod from the API server. NewKubeLookup is the real one; tests of the
// plugin's logic pass their own.
type PodLookup interface {
	Pod(ctx context.Context, namespace, name string) (Pod, error)
}

// PodLookupFunc is a PodLookup.
type PodLookupFunc func(ctx context.Context, namespace, name string) (Pod, error)

// Pod calls f.
func (f PodLookupFunc) Pod(ctx context.Context, namespace, name string) (Pod, error) {
	return f(ctx, namespace, name)
}

// MeshServiceLookup lists the MeshServices of a namespace. NewKubeMeshServiceLookup is the real
// one; tests of the plugin's logic pass their own.
type MeshServiceLookup interface {
	MeshServices(ctx context.Context, namespace string) ([]MeshService, error)
}

// MeshServiceLookupFunc is a MeshServiceLookup.
type MeshServiceLookupFunc func(ctx context.Context, namespace string) ([]MeshService, error)

// MeshServices calls f.
func (f MeshServiceLookupFunc) MeshServices(ctx context.Context, namespace string) ([]MeshService, error) {
	return f(ctx, namespace)
}

// Plugin runs the CNI commands.
type Plugin struct {
	// NewPodLookup makes the pod lookup from the configuration (its kubeconfig).
	NewPodLookup func(conf *NetConf) (PodLookup, error)
	// NewMeshServiceLookup makes the MeshService lookup from the configuration; it decides
	// whether a pod without the sidecar is isolated (Isolate).
	NewMeshServiceLookup func(conf *NetConf) (MeshServiceLookup, error)
	// LookupTimeout bounds the pod lookup, and the MeshService lookup; zero means
	// DefaultLookupTimeout for each.
	LookupTimeout time.Duration
	// Log receives what the plugin did and tolerated (the runtime keeps the plugin's stderr).
	Log io.Writer
	// Stdout receives ADD's result; nil means os.Stdout.
	Stdout io.Writer
}

// Funcs are the plugin's commands for skel.PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{
		Add:   p.cmdAdd,
		Del:   p.Del,
		Check: p.Check,
		// GC has nothing to collect: the rules live in the pod's namespace and die with it.
		GC:     func(*skel.CmdArgs) error { return nil },
		Status: func(*skel.CmdArgs) error { return nil },
	}
}

func (p *Plugin) cmdAdd(args *skel.CmdArgs) error {
	conf, result, err := p.Add(args)
	if err != nil {
		return err
	}
	stdout := p.Stdout
	if stdout == nil {
		stdout = os.Stdout
	}
	versioned, err := result.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return fmt.Errorf("%s: failed to convert the previous result to CNI version %s: %w", PluginName, conf.CNIVersion, err)
	}
	return versioned.PrintTo(stdout)
}

// Add sets up capture for a marked pod and returns the previous plugin's result, to pass on.
func (p *Plugin) Add(args *skel.CmdArgs) (*NetConf, types.Result, error) {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return nil, nil, err
	}
	if conf.PrevResult == nil {
		return nil, nil, fmt.Errorf("%s is a chained plugin and got no prevResult: list it after the network plugin in the CNI configuration list", PluginName)
	}
	decision, err := p.captureConfig(conf, args)
	if err != nil {
		return nil, nil, err
	}
	if decision.config == nil {
		return conf, conf.PrevResult, nil
	}
	pod := decision.pod
	if err := refuseOwnNamespace(args.Netns); err != nil {
		return nil, nil, err
	}
	rs, err := capture.NewRuleset(*decision.config)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: pod %s: %w", PluginName, pod, err)
	}
	if decision.isolatedBy != "" {
		if err := capture.Apply(args.Netns, rs); err != nil {
			return nil, nil, fmt.Errorf("%s: pod %s has no sidecar and MeshService %s, whose mTLS mode is STRICT, selects it; failed to isolate it, "+
				"and it must not serve plaintext: %w", PluginName, pod, decision.isolatedBy, err)
		}
		p.logf("pod %s: ISOLATED: it has no Meshlift sidecar (it was created while the injector was unavailable, or the injector skipped it) "+
			"and MeshService %s, whose mTLS mode is STRICT, selects it, so every inbound TCP connection to it is refused and it does not become Ready; "+
			"the operator evicts it so that its controller recreates it with the sidecar (or fix what the InjectionSkipped event of the MeshService says, or set %s: \"false\" on the pod to keep it out of the mesh)",
			pod, decision.isolatedBy, annotationInject)
		return conf, conf.PrevResult, nil
	}
	if err := capture.Apply(args.Netns, rs); err != nil {
		return nil, nil, fmt.Errorf("%s: failed to set up traffic capture for pod %s, which is marked with %s; the pod must not start uncaptured: %w",
			PluginName, pod, capture.AnnotationCapture, err)
	}
	p.logf("pod %s: traffic capture set up in %s", pod, args.Netns)
	return conf, conf.PrevResult, nil
}

// Del removes the capture table if the namespace still exists. It never fails (see the package
// documentation); problems are logged.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	if args.Netns == "" {
		return nil
	}
	err := capture.Remove(args.Netns)
	switch {
	case err == nil, errors.Is(err, fs.ErrNotExist):
	default:
		p.logf("container %s: ignoring a failure to remove the capture rules (they go away with the namespace): %v", args.ContainerID, err)
	}
	return nil
}

// Check verifies that a marked pod's namespace has its capture rules.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	decision, err := p.captureConfig(conf, args)
	if err != nil || decision.config == nil {
		return err
	}
	rs, err := capture.NewRuleset(*decision.config)
	if err != nil {
		return fmt.Errorf("%s: pod %s: %w", PluginName, decision.pod, err)
	}
	if err := capture.Check(args.Netns, rs); err != nil {
		return fmt.Errorf("%s: pod %s: %w", PluginName, decision.pod, err)
	}
	return nil
}

// decision is what captureConfig decided for a pod: config nil means leave it alone.
type decision struct {
	config *capture.Config
	// pod is namespace/name, for messages.
	pod string
	// isolatedBy names the STRICT MeshService an unmarked pod without the sidecar is isolated
	// for (config is IsolationConfig then); "" for a pod marked for capture.
	isolatedBy string
}

// captureConfig decides what the plugin sets up in the pod's namespace: the capture the pod's
// annotations ask for, isolation for a pod without the sidecar that a STRICT MeshService
// selects, or nothing.
func (p *Plugin) captureConfig(conf *NetConf, args *skel.CmdArgs) (decision, error) {
	var k8s podArgs
	if err := types.LoadArgs(args.Args, &k8s); err != nil {
		return decision{}, fmt.Errorf("%s: failed to parse CNI_ARGS: %w", PluginName, err)
	}
	namespace, name := string(k8s.K8S_POD_NAMESPACE), string(k8s.K8S_POD_NAME)
	if namespace == "" || name == "" {
		// Not a Kubernetes pod (the kubelet always passes both): nothing can have marked it.
		return decision{}, nil
	}
	pod := namespace + "/" + name
	found, err := p.lookup(conf, namespace, name)
	if err == nil && k8s.K8S_POD_UID != "" && found.UID != string(k8s.K8S_POD_UID) {
		err = fmt.Errorf("the API server has pod UID %s, the runtime is setting up %s (was the pod recreated?)", found.UID, k8s.K8S_POD_UID)
	}
	if err != nil {
		if conf.excluded(namespace) {
			p.logf("pod %s: starting without traffic capture because namespace %s is in excludeNamespaces and the pod could not be read: %v", pod, namespace, err)
			return decision{pod: pod}, nil
		}
		return decision{pod: pod}, fmt.Errorf("%s: failed to get pod %s, so it cannot tell whether the pod needs traffic capture; failing closed so a meshed pod never starts uncaptured "+
			"(check that the API server is reachable from the node and the kubeconfig %q may get pods, or list the namespace in excludeNamespaces): %w",
			PluginName, pod, conf.Kubeconfig, err)
	}
	if !capture.Marked(found.Annotations) {
		return p.isolation(conf, namespace, pod, found)
	}
	cfg, err := capture.ParseAnnotations(found.Annotations)
	if err != nil {
		return decision{pod: pod}, fmt.Errorf("%s: pod %s has invalid capture annotations; fix them and recreate the pod: %w", PluginName, pod, err)
	}
	if uid := found.ProxyUID; uid != nil && *uid > 0 && *uid <= math.MaxUint32 {
		cfg.ProxyUID = uint32(*uid)
	}
	return decision{config: &cfg, pod: pod}, nil
}

// isolation decides whether an unmarked pod is isolated (Isolate). Pods of the excluded and the
// system namespaces, injected pods and pods that opted out are left alone without a request;
// for the others the plugin lists the MeshServices of the namespace. When that fails, ADD fails:
// the plugin cannot tell whether the pod must be isolated, and the kubelet retries the sandbox
// (the pod GET just succeeded, so the API server is reachable and the failure is most likely
// brief; a pod that a STRICT MeshService selects must not serve plaintext meanwhile). When the
// API server does not serve MeshServices at all (the CRD is not installed), nothing selects the
// pod.
func (p *Plugin) isolation(conf *NetConf, namespace, pod string, found Pod) (decision, error) {
	if conf.excluded(namespace) || slices.Contains(systemNamespaces, namespace) ||
		found.Injected || found.Annotations[annotationInject] == "false" {
		return decision{pod: pod}, nil
	}
	meshServices, err := p.meshServices(conf, namespace)
	if apierrors.IsNotFound(err) {
		return decision{pod: pod}, nil
	}
	if err != nil {
		return decision{pod: pod}, fmt.Errorf("%s: pod %s has no Meshlift sidecar and the MeshServices of namespace %s could not be listed, so it cannot tell whether a STRICT MeshService selects it; "+
			"failing closed so it never serves plaintext under STRICT mTLS, the kubelet retries "+
			"(check that the kubeconfig %q may list meshservices.%s, see config/cni/rbac.yaml, or list the namespace in excludeNamespaces): %w",
			PluginName, pod, namespace, conf.Kubeconfig, meshServiceGroup, err)
	}
	ms := Isolate(found, meshServices)
	if ms == "" {
		return decision{pod: pod}, nil
	}
	cfg := IsolationConfig()
	return decision{config: &cfg, pod: pod, isolatedBy: ms}, nil
}

func (p *Plugin) meshServices(conf *NetConf, namespace string) ([]MeshService, error) {
	if p.NewMeshServiceLookup == nil {
		return nil, errors.New("no MeshService lookup configured")
	}
	lookup, err := p.NewMeshServiceLookup(conf)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.lookupTimeout())
	defer cancel()
	return lookup.MeshServices(ctx, namespace)
}

func (p *Plugin) lookupTimeout() time.Duration {
	if p.LookupTimeout == 0 {
		return DefaultLookupTimeout
	}
	return p.LookupTimeout
}

func (p *Plugin) lookup(conf *NetConf, namespace, name string) (Pod, error) {
	if p.NewPodLookup == nil {
		return Pod{}, errors.New("no pod lookup configured")
	}
	lookup, err := p.NewPodLookup(conf)
	if err != nil {
		return Pod{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.lookupTimeout())
	defer cancel()
	return lookup.Pod(ctx, namespace, name)
}

func (p *Plugin) logf(format string, args ...any) {
	if p.Log != nil {
		fmt.Fprintf(p.Log, PluginName+": "+format+"\n", args...)
	}
}

func parseConf(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, fmt.Errorf("%s: failed to parse the network configuration: %w", PluginName, err)
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, fmt.Errorf("%s: failed to parse prevResult: %w", PluginName, err)
	}
	return conf, nil
}

// refuseOwnNamespace makes sure the rules never land in the namespace the plugin runs in (the
// node's), whatever CNI_NETNS says.
func refuseOwnNamespace(netnsPath string) error {
	if netnsPath == "" {
		return fmt.Errorf("%s: CNI_NETNS is empty; the runtime must name the pod's network namespace", PluginName)
	}
	var target, own unix.Stat_t
	if err := unix.Stat(netnsPath, &target); err != nil {
		return fmt.Errorf("%s: network namespace %s: %w", PluginName, netnsPath, err)
	}
	// The calling thread's namespace is where the plugin's goroutines run (a thread of the
	// process could have been moved elsewhere; /proc/self names the main thread's).
	runtime.LockOSThread()
	err := unix.Stat("/proc/thread-self/ns/net", &own)
	runtime.UnlockOSThread()
	if err != nil {
		return fmt.Errorf("%s: failed to read the plugin's own network namespace: %w", PluginName, err)
	}
	if target.Dev == own.Dev && target.Ino == own.Ino {
		return fmt.Errorf("%s: CNI_NETNS %s is the node's network namespace; refusing to capture the node's traffic", PluginName, netnsPath)
	}
	return nil
}
