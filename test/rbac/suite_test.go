// Package rbac_test checks the operator's RBAC against what the operator really does: the operator
// binary, built from this tree (main.go wires everything), runs against envtest's kube-apiserver
// as its ServiceAccount (impersonated), with exactly the roles and bindings the install's
// kustomization gives that ServiceAccount. The API server's audit log records every request the
// operator makes and the answer; the tests drive the reconcile paths and then compare the two:
// no request was refused, and every permission the roles grant was used by some request (or is in
// the commented allowlist of paths envtest cannot reach).
package rbac_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/go-logr/logr"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/bundle/kustomize"
	"github.com/meshlift/meshlift/internal/repo"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

const (
	// operatorNamespace and serviceAccount are what config/default names them.
	operatorNamespace = "meshlift-system"
	serviceAccount    = "meshlift-controller-manager"
)

// operatorUser is the ServiceAccount's user name, which the operator's kubeconfig impersonates.
var operatorUser = "system:serviceaccount:" + operatorNamespace + ":" + serviceAccount

// operatorBinary is the operator built from the tree.
var operatorBinary string

func TestMain(m *testing.M) {
	// envtest logs through controller-runtime; its messages are not what these tests check.
	log.SetLogger(logr.Discard())
	root, err := repo.Root()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "meshlift-rbac-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	operatorBinary = filepath.Join(dir, "meshlift-operator")
	cmd := exec.Command("go", "build", "-o", operatorBinary, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the operator: %v\n%s", err, out)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// cluster is an envtest API server that writes an audit log.
type cluster struct {
	env      *envtest.Environment
	cfg      *rest.Config
	client   client.Client
	auditLog string
	// granted are the rules the install binds to the operator's ServiceAccount.
	granted []grant
}

// grant is a rule and where it applies: namespace "" for a ClusterRole bound cluster-wide.
type grant struct {
	role      string
	namespace string
	rule      rbacv1.PolicyRule
}

// auditPolicy records every request's metadata (who, verb, object, response code). The policy
// cannot select the operator's requests by user: it is evaluated before impersonation, so the
// test filters the log on impersonatedUser instead.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
`

// startCluster starts an API server with the CRDs and those of crdPaths (and, withWebhooks, the
// webhook configurations of config/webhook, pointed at a local port), and applies the RBAC objects
// and the admission policies of the kustomization config/<overlay>.
func startCluster(t *testing.T, overlay string, withWebhooks bool, crdPaths ...string) *cluster {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = repo.KubeBinDir(root)
	}
	if _, err := os.Stat(filepath.Join(assets, "kube-apiserver")); err != nil {
		t.Fatalf("kube-apiserver not found in %s: run `make envtest-assets`: %v", assets, err)
	}
	dir := t.TempDir()
	policy := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(meshv1alpha1.AddToScheme(scheme))
	utilruntime.Must(cmapi.AddToScheme(scheme))
	c := &cluster{auditLog: filepath.Join(dir, "audit.log")}
	c.env = &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     append([]string{filepath.Join(root, "config", "crd", "bases")}, crdPaths...),
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	if withWebhooks {
		c.env.WebhookInstallOptions = envtest.WebhookInstallOptions{Paths: []string{filepath.Join(root, "config", "webhook", "manifests.yaml")}}
	}
	c.env.ControlPlane.GetAPIServer().Configure().
		Set("audit-policy-file", policy).
		Set("audit-log-path", c.auditLog).
		Set("audit-log-mode", "blocking")
	if c.cfg, err = c.env.Start(); err != nil {
		t.Fatalf("failed to start envtest: %v", err)
	}
	t.Cleanup(func() { _ = c.env.Stop() })
	if c.client, err = client.New(c.cfg, client.Options{Scheme: scheme}); err != nil {
		t.Fatal(err)
	}
	c.applyRBAC(t, filepath.Join(root, "config", overlay))
	return c
}

// applyRBAC creates the Namespace, ServiceAccount, roles and bindings that the kustomization in
// dir builds, and records the rules bound to the operator's ServiceAccount.
func (c *cluster) applyRBAC(t *testing.T, dir string) {
	t.Helper()
	objs, err := kustomize.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	clusterRoles, roles := map[string][]rbacv1.PolicyRule{}, map[string][]rbacv1.PolicyRule{}
	var bindings []*unstructured.Unstructured
	// Namespaces first: the rest lives in them.
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int {
		return cmp.Compare(boolInt(b.GetKind() == "Namespace"), boolInt(a.GetKind() == "Namespace"))
	})
	for _, obj := range objs {
		switch obj.GetKind() {
		case "Namespace", "ServiceAccount":
		case "ClusterRole", "Role":
			var role rbacv1.ClusterRole // a Role has the same rules
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &role); err != nil {
				t.Fatal(err)
			}
			if obj.GetKind() == "ClusterRole" {
				clusterRoles[obj.GetName()] = role.Rules
			} else {
				roles[obj.GetNamespace()+"/"+obj.GetName()] = role.Rules
			}
		case "ClusterRoleBinding", "RoleBinding":
			bindings = append(bindings, obj)
		case "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
			// The install's limits on what the operator may write (config/policy) apply too: the
			// reconcile paths must pass them.
		default:
			continue
		}
		if err := c.client.Create(context.Background(), obj); err != nil {
			t.Fatalf("failed to create %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
	for _, obj := range bindings {
		var binding rbacv1.RoleBinding // a ClusterRoleBinding has the same fields
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &binding); err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(binding.Subjects, func(s rbacv1.Subject) bool {
			return s.Kind == rbacv1.ServiceAccountKind && s.Namespace == operatorNamespace && s.Name == serviceAccount
		}) {
			continue
		}
		var rules []rbacv1.PolicyRule
		switch {
		case binding.RoleRef.Kind == "ClusterRole":
			rules = clusterRoles[binding.RoleRef.Name]
		default:
			rules = roles[obj.GetNamespace()+"/"+binding.RoleRef.Name]
		}
		if rules == nil {
			t.Fatalf("%s %s binds %s %s, which %s does not build", obj.GetKind(), obj.GetName(), binding.RoleRef.Kind, binding.RoleRef.Name, dir)
		}
		for _, rule := range rules {
			c.granted = append(c.granted, grant{role: binding.RoleRef.Kind + " " + binding.RoleRef.Name, namespace: obj.GetNamespace(), rule: rule})
		}
	}
	if len(c.granted) == 0 {
		t.Fatalf("%s binds no role to %s", dir, operatorUser)
	}
}

// operator is a running operator process.
type operator struct {
	// probes is the address of /healthz and /readyz.
	probes string
	cmd    *exec.Cmd
	output *bytes.Buffer
	done   chan struct{}
}

// startOperator runs the operator binary as its ServiceAccount with args (and the flags every
// run needs) and extra environment variables.
func (c *cluster) startOperator(t *testing.T, args []string, environ ...string) *operator {
	t.Helper()
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	config := clientcmdapi.Config{
		Clusters: map[string]*clientcmdapi.Cluster{"envtest": {Server: c.cfg.Host, CertificateAuthorityData: c.cfg.CAData}},
		AuthInfos: map[string]*clientcmdapi.AuthInfo{"operator": {
			ClientCertificateData: c.cfg.CertData, ClientKeyData: c.cfg.KeyData, Token: c.cfg.BearerToken,
			// The ServiceAccount's identity as the API server gives it to a token of it.
			Impersonate:       operatorUser,
			ImpersonateGroups: []string{"system:serviceaccounts", "system:serviceaccounts:" + operatorNamespace, "system:authenticated"},
		}},
		Contexts:       map[string]*clientcmdapi.Context{"envtest": {Cluster: "envtest", AuthInfo: "operator"}},
		CurrentContext: "envtest",
	}
	if err := clientcmd.WriteToFile(config, kubeconfig); err != nil {
		t.Fatal(err)
	}
	probes := freeAddress(t)
	cmd := exec.Command(operatorBinary, append([]string{
		"--namespace=" + operatorNamespace, "--health-probe-bind-address=" + probes,
		"--log-format=console", "--log-level=info",
	}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "POD_NAMESPACE="+operatorNamespace)
	cmd.Env = append(cmd.Env, environ...)
	op := &operator{probes: probes, cmd: cmd, output: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = op.output, op.output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(op.done) }()
	t.Cleanup(func() {
		op.stop()
		if t.Failed() {
			t.Logf("operator output:\n%s", op.output.String())
		}
	})
	return op
}

// waitReady waits until the operator's /readyz answers 200.
func (o *operator) waitReady(t *testing.T) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) (bool, string) {
		select {
		case <-o.done:
			t.Fatalf("the operator exited: %v", o.cmd.ProcessState)
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+o.probes+"/readyz?verbose", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK, string(body)
	})
}

// stop ends the operator the way the kubelet does (SIGTERM), and kills it if it does not stop.
func (o *operator) stop() {
	select {
	case <-o.done:
		return
	default:
	}
	_ = o.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-o.done:
	case <-time.After(30 * time.Second):
		_ = o.cmd.Process.Kill()
		<-o.done
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func freeAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// request is one request of the operator as the audit log records it.
type request struct {
	verb, group, resource, namespace, name string
	code                                   int
}

func (r request) String() string {
	group := r.group
	if group == "" {
		group = "core"
	}
	s := fmt.Sprintf("%s %s/%s", r.verb, group, r.resource)
	if r.namespace != "" {
		s += " in " + r.namespace
	}
	if r.name != "" {
		s += " named " + r.name
	}
	return s
}

// auditEvent is the part of an audit.k8s.io/v1 Event the test reads.
type auditEvent struct {
	Stage            string `json:"stage"`
	Verb             string `json:"verb"`
	ImpersonatedUser *struct {
		Username string `json:"username"`
	} `json:"impersonatedUser"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		APIGroup    string `json:"apiGroup"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	RequestURI string `json:"requestURI"`
}

// operatorRequests reads the operator's requests to resources from the audit log.
func (c *cluster) operatorRequests(t *testing.T) []request {
	t.Helper()
	f, err := os.Open(c.auditLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []request
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	for scanner.Scan() {
		var e auditEvent
		if err := json.Unmarshal(scanner.Bytes(), &e); err != nil {
			t.Fatalf("audit log line %q: %v", scanner.Text(), err)
		}
		// A watch is logged when it starts and when it ends; every other request once.
		if e.ImpersonatedUser == nil || e.ImpersonatedUser.Username != operatorUser || e.ObjectRef == nil ||
			(e.Stage != "ResponseComplete" && e.Stage != "ResponseStarted") {
			continue
		}
		r := request{verb: e.Verb, group: e.ObjectRef.APIGroup, resource: e.ObjectRef.Resource,
			namespace: e.ObjectRef.Namespace, name: e.ObjectRef.Name}
		if e.ObjectRef.Subresource != "" {
			r.resource += "/" + e.ObjectRef.Subresource
		}
		if e.ResponseStatus != nil {
			r.code = e.ResponseStatus.Code
		}
		out = append(out, r)
	}
	if err := scanner.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// permission is one verb on one resource (and name), granted by a rule.
type permission struct {
	grant
	group, resource, verb, name string
}

func (p permission) String() string {
	r := request{verb: p.verb, group: p.group, resource: p.resource, namespace: p.namespace, name: p.name}
	return r.String() + " (" + p.role + ")"
}

// key identifies a permission in allowlists: "verb group/resource[ name]", core group as "core".
func (p permission) key() string {
	group := p.group
	if group == "" {
		group = "core"
	}
	s := p.verb + " " + group + "/" + p.resource
	if p.name != "" {
		s += " " + p.name
	}
	return s
}

// permissions splits the granted rules into single permissions.
func (c *cluster) permissions() []permission {
	var out []permission
	for _, g := range c.granted {
		names := g.rule.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, group := range g.rule.APIGroups {
			for _, resource := range g.rule.Resources {
				for _, verb := range g.rule.Verbs {
					for _, name := range names {
						out = append(out, permission{grant: g, group: group, resource: resource, verb: verb, name: name})
					}
				}
			}
		}
	}
	return out
}

// usedBy is true when r was allowed by p's rule (ignoring the other rules).
func (p permission) usedBy(r request) bool {
	return r.code != 403 && r.verb == p.verb && r.group == p.group && r.resource == p.resource &&
		(p.namespace == "" || r.namespace == p.namespace) && (p.name == "" || r.name == p.name)
}

// impliedByWatch is true for get and list of what the operator watches (the same rule, resource
// and name): its caches serve every read, so it never sends a get, and client-go's informers
// list through the watch (WatchList), falling back to a list on API servers without it. Neither
// verb shows anything the watch does not.
func impliedByWatch(p permission, requests []request) bool {
	if p.verb != "get" && p.verb != "list" {
		return false
	}
	watch := p
	watch.verb = "watch"
	return slices.ContainsFunc(requests, watch.usedBy)
}

// checkRequests fails the test for every refused request and every permission that no request
// used, unless unreachable names it; it returns how many requests and permissions it compared.
func (c *cluster) checkRequests(t *testing.T, requests []request, unreachable map[string]string, only func(permission) bool) {
	t.Helper()
	refused := map[string]int{}
	for _, r := range requests {
		if r.code == 403 {
			refused[r.String()]++
		}
	}
	for r, n := range refused {
		t.Errorf("the API server refused the operator %d time(s): %s", n, r)
	}
	used, checked := 0, 0
	for _, p := range c.permissions() {
		if only != nil && !only(p) {
			continue
		}
		checked++
		if slices.ContainsFunc(requests, p.usedBy) || impliedByWatch(p, requests) {
			used++
			continue
		}
		if _, ok := unreachable[p.key()]; ok {
			continue
		}
		t.Errorf("the roles grant %s, but the operator never used it: remove it from the role (its +kubebuilder:rbac marker), or, if a path the test cannot drive needs it, add it to the allowlist with that path", p)
	}
	t.Logf("%d requests of the operator recorded, %d refused; %d of %d granted permissions used (get and list through a watch included), %d allowlisted",
		len(requests), len(refused), used, checked, checked-used)
}

// logRequests writes the distinct requests to the test log (go test -v), for whoever changes the
// roles.
func logRequests(t *testing.T, requests []request) {
	t.Helper()
	seen := map[string]bool{}
	var lines []string
	for _, r := range requests {
		line := fmt.Sprintf("%s -> %d", r, r.code)
		if !seen[line] {
			seen[line] = true
			lines = append(lines, line)
		}
	}
	slices.Sort(lines)
	t.Logf("distinct requests of the operator:\n%s", strings.Join(lines, "\n"))
}
