package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/capture"
	"github.com/meshlift/meshlift/internal/capture/netnstest"
	"github.com/meshlift/meshlift/internal/sidecar"
)

// The plugin keeps its own copies of a few names of the API and of the injector (strict.go says
// why): they must be the same.
func TestTheNamesAgreeWithTheAPIAndTheInjector(t *testing.T) {
	for _, c := range []struct{ name, plugin, source string }{
		{"group", meshServiceGroup, meshv1alpha1.GroupVersion.Group},
		{"version", meshServiceVersion, meshv1alpha1.GroupVersion.Version},
		{"STRICT", mtlsStrict, string(meshv1alpha1.MTLSStrict)},
		{"PERMISSIVE", mtlsPermissive, string(meshv1alpha1.MTLSPermissive)},
		{"inject annotation", annotationInject, meshv1alpha1.AnnotationInject},
		{"version annotation", annotationVersion, meshv1alpha1.AnnotationVersion},
		{"injection hash annotation", annotationInjectionHash, meshv1alpha1.AnnotationInjectionHash},
	} {
		if c.plugin != c.source {
			t.Errorf("%s: the plugin has %q, the source of truth %q", c.name, c.plugin, c.source)
		}
	}
	if want := []string{sidecar.ContainerName, sidecar.SlotContainerName(1), sidecar.SlotContainerName(2)}; !slices.Equal(proxyContainers, want) {
		t.Errorf("proxy containers: the plugin has %v, the injector %v", proxyContainers, want)
	}
	if !slices.Equal(systemNamespaces, sidecar.SystemNamespaces) {
		t.Errorf("system namespaces: the plugin has %v, the injector %v", systemNamespaces, sidecar.SystemNamespaces)
	}
	if got := (schema.GroupResource{Group: meshServiceGroup, Resource: meshServiceResource}).String(); got != "meshservices.mesh.meshlift.io" {
		t.Errorf("resource %s", got)
	}
}

var (
	t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	strictWeb     = MeshService{Name: "web", CreationTimestamp: t0, Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, MTLSMode: mtlsStrict}
	defaultedWeb  = MeshService{Name: "web", CreationTimestamp: t0, Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}
	permissiveWeb = MeshService{Name: "web", CreationTimestamp: t0, Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, MTLSMode: mtlsPermissive}
)

func uninjectedPod(labels ...string) Pod {
	pod := Pod{UID: "uid-web", Labels: map[string]string{}, Annotations: map[string]string{"team": "shop"}}
	for i := 0; i+1 < len(labels); i += 2 {
		pod.Labels[labels[i]] = labels[i+1]
	}
	return pod
}

func TestIsolate(t *testing.T) {
	older := func(ms MeshService, name string, mode string) MeshService {
		ms.Name, ms.MTLSMode, ms.CreationTimestamp = name, mode, t0.Add(-time.Hour)
		return ms
	}
	tests := []struct {
		name         string
		pod          Pod
		meshServices []MeshService
		want         string
	}{
		{"isolates a pod without the sidecar that a STRICT MeshService selects", uninjectedPod("app", "web"), []MeshService{strictWeb}, "web"},
		{"reads an empty mode as STRICT, the CRD's default", uninjectedPod("app", "web"), []MeshService{defaultedWeb}, "web"},
		{"reads a mode it does not know as STRICT", uninjectedPod("app", "web"), []MeshService{{Name: "web", Selector: strictWeb.Selector, MTLSMode: "MUTUAL"}}, "web"},
		{"leaves a pod that a PERMISSIVE MeshService selects alone", uninjectedPod("app", "web"), []MeshService{permissiveWeb}, ""},
		{"leaves a pod that no MeshService selects alone", uninjectedPod("app", "batch"), []MeshService{strictWeb}, ""},
		{"leaves a pod alone when the namespace has no MeshService", uninjectedPod("app", "web"), nil, ""},
		{"leaves an injected pod alone", func() Pod { p := uninjectedPod("app", "web"); p.Injected = true; return p }(), []MeshService{strictWeb}, ""},
		{"leaves a pod that opted out of injection alone", func() Pod {
			p := uninjectedPod("app", "web")
			p.Annotations[annotationInject] = "false"
			return p
		}(), []MeshService{strictWeb}, ""},
		{"leaves a pod marked for capture to its capture", func() Pod {
			p := uninjectedPod("app", "web")
			p.Annotations[capture.AnnotationCapture] = "inbound"
			return p
		}(), []MeshService{strictWeb}, ""},
		{"ignores a MeshService being deleted", uninjectedPod("app", "web"), []MeshService{func() MeshService { ms := strictWeb; ms.Deleting = true; return ms }()}, ""},
		{"ignores an empty selector, which the injector ignores too", uninjectedPod("app", "web"), []MeshService{{Name: "all", MTLSMode: mtlsStrict}}, ""},
		{"ignores an invalid selector", uninjectedPod("app", "web"), []MeshService{{Name: "bad", Selector: metav1.LabelSelector{
			MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near", Values: []string{"web"}}}}}}, ""},
		{"matches expressions", uninjectedPod("app", "web", "tier", "front"), []MeshService{{Name: "front", Selector: metav1.LabelSelector{
			MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"front"}}}}}}, "front"},
		{"follows the oldest of overlapping MeshServices, as the injector does: a PERMISSIVE oldest leaves it alone",
			uninjectedPod("app", "web"), []MeshService{strictWeb, older(permissiveWeb, "legacy", mtlsPermissive)}, ""},
		{"follows the oldest of overlapping MeshServices, as the injector does: a STRICT oldest isolates it",
			uninjectedPod("app", "web"), []MeshService{permissiveWeb, older(strictWeb, "legacy", mtlsStrict)}, "legacy"},
		{"breaks a tie of creation times by name", uninjectedPod("app", "web"),
			[]MeshService{func() MeshService { ms := permissiveWeb; ms.Name = "b"; return ms }(), func() MeshService { ms := strictWeb; ms.Name = "a"; return ms }()}, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Isolate(tt.pod, tt.meshServices); got != tt.want {
				t.Errorf("Isolate() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCarriesSidecar(t *testing.T) {
	for _, tt := range []struct {
		name        string
		annotations map[string]string
		containers  []string
		want        bool
	}{
		{"a pod with the version annotation", map[string]string{annotationVersion: "v1"}, []string{"app"}, true},
		{"a pod with the injection hash", map[string]string{annotationInjectionHash: "abc"}, []string{"app"}, true},
		{"a pod with a proxy slot container", nil, []string{"meshlift-proxy-1", "app"}, true},
		{"a pod with the single proxy container", nil, []string{"app", "meshlift-proxy"}, true},
		{"a pod with only its own containers", map[string]string{"meshlift.io/meshservice": ""}, []string{"app", "meshlift-capture"}, false},
	} {
		if got := carriesSidecar(tt.annotations, tt.containers); got != tt.want {
			t.Errorf("%s: carriesSidecar = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestDecodeMeshServiceList(t *testing.T) {
	deleted := metav1.NewTime(t0.Add(time.Minute))
	list := meshv1alpha1.MeshServiceList{
		TypeMeta: metav1.TypeMeta{Kind: "MeshServiceList", APIVersion: meshv1alpha1.GroupVersion.String()},
		Items: []meshv1alpha1.MeshService{
			{
				ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", CreationTimestamp: metav1.NewTime(t0)},
				Spec: meshv1alpha1.MeshServiceSpec{
					Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
					MTLS:     meshv1alpha1.MTLSSpec{Mode: meshv1alpha1.MTLSPermissive},
					Ports:    []meshv1alpha1.MeshServicePort{{Name: "http", Port: 8080}},
				},
			},
			{
				ObjectMeta: metav1.ObjectMeta{Name: "old", Namespace: "shop", CreationTimestamp: metav1.NewTime(t0), DeletionTimestamp: &deleted},
				Spec:       meshv1alpha1.MeshServiceSpec{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "old"}}},
			},
		},
	}
	data, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMeshServiceList(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "web" || got[0].MTLSMode != mtlsPermissive || got[0].Strict() || !got[0].CreationTimestamp.Equal(t0) ||
		got[0].Selector.MatchLabels["app"] != "web" || got[0].Deleting || got[1].Name != "old" || !got[1].Deleting || !got[1].Strict() {
		t.Errorf("DecodeMeshServiceList() = %+v", got)
	}

	for _, bad := range []struct{ name, data, want string }{
		{"not JSON", "<html>proxy error</html>", "failed to decode"},
		{"another kind", `{"kind":"Status","status":"Failure"}`, `"Status"`},
		{"an item without a name", `{"kind":"MeshServiceList","items":[{"metadata":{}}]}`, "without a name"},
		{"a selector of the wrong shape", `{"kind":"MeshServiceList","items":[{"metadata":{"name":"a"},"spec":{"selector":"app=web"}}]}`, "failed to decode"},
	} {
		if _, err := DecodeMeshServiceList([]byte(bad.data)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: DecodeMeshServiceList() = %v, want an error with %q", bad.name, err, bad.want)
		}
	}
}

// isolationNamespaces are a pod's network namespace and a client's, linked by a veth pair, with
// an app listening on port 8080 of the pod, as a pod on a node sees it.
type isolationNamespaces struct {
	pod, client *netnstest.NetNS
}

const (
	podIP   = "10.77.0.2"
	appPort = "8080"
)

func newIsolationNamespaces(t *testing.T) isolationNamespaces {
	t.Helper()
	pod, client := netnstest.New(t), netnstest.New(t)
	netnstest.Link(t, pod, "eth0", []string{podIP + "/24"}, client, "eth0", []string{"10.77.0.1/24"})
	ln := pod.Listen(t, "tcp", ":"+appPort)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.Close()
		}
	}()
	return isolationNamespaces{pod: pod, client: client}
}

// connect dials the app from the client's namespace (from the pod's own over loopback when
// loopback is set).
func (n isolationNamespaces) connect(loopback bool) error {
	from, address := n.client, net.JoinHostPort(podIP, appPort)
	if loopback {
		from, address = n.pod, net.JoinHostPort("127.0.0.1", appPort)
	}
	return from.Do(-1, func() error {
		conn, err := net.DialTimeout("tcp", address, 3*time.Second)
		if err == nil {
			_ = conn.Close()
		}
		return err
	})
}

func TestAddIsolatesAPodWithoutTheSidecarThatAStrictMeshServiceSelects(t *testing.T) {
	ns := newIsolationNamespaces(t)
	if err := ns.connect(false); err != nil {
		t.Fatalf("before ADD, the client cannot reach the app: %v", err)
	}
	pod := uninjectedPod("app", "web")
	pods := &fakePods{pods: map[string]Pod{"shop/web-1": pod}, meshServices: map[string][]MeshService{"shop": {strictWeb}}}
	var log bytes.Buffer
	plugin := pods.plugin(&log)
	args := cmdArgs(ns.pod.Path, "shop", "web-1", pod.UID, withPrevResult(t, ""))
	_, result, err := plugin.Add(args)
	if err != nil || result == nil {
		t.Fatalf("ADD = %v, %v; the pod must be created, isolated", result, err)
	}
	if !hasTable(t, ns.pod) {
		t.Fatal("ADD did not install the isolation table")
	}
	if err := ns.connect(false); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("a connection to the app's port from another namespace = %v, want connection refused", err)
	}
	if err := ns.connect(true); err != nil {
		t.Errorf("the pod's own connection to its app over loopback = %v, want it to work", err)
	}
	for _, want := range []string{"shop/web-1", "ISOLATED", "MeshService web", "STRICT"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the log does not say %q: %s", want, log.String())
		}
	}
	if err := plugin.Check(args); err != nil {
		t.Errorf("CHECK of the isolated pod: %v", err)
	}
	if err := plugin.Del(args); err != nil || hasTable(t, ns.pod) {
		t.Errorf("DEL = %v, table left %v", err, hasTable(t, ns.pod))
	}
}

func TestAddLeavesPodsThatNeedNoIsolationAlone(t *testing.T) {
	injected := uninjectedPod("app", "web")
	injected.Injected = true
	optedOut := uninjectedPod("app", "web")
	optedOut.Annotations[annotationInject] = "false"
	tests := []struct {
		name      string
		namespace string
		pod       Pod
		services  []MeshService
		listErr   error
		stdin     string // extra netconf
		wantLists int
	}{
		{name: "a pod that a PERMISSIVE MeshService selects", namespace: "shop", pod: uninjectedPod("app", "web"), services: []MeshService{permissiveWeb}, wantLists: 1},
		{name: "a pod that no MeshService selects", namespace: "shop", pod: uninjectedPod("app", "batch"), services: []MeshService{strictWeb}, wantLists: 1},
		{name: "a pod when the API server does not serve MeshServices (no CRD)", namespace: "shop", pod: uninjectedPod("app", "web"),
			listErr: apierrors.NewNotFound(schema.GroupResource{Group: meshServiceGroup, Resource: meshServiceResource}, ""), wantLists: 1},
		{name: "an injected pod, without listing", namespace: "shop", pod: injected, services: []MeshService{strictWeb}},
		{name: "a pod that opted out, without listing", namespace: "shop", pod: optedOut, services: []MeshService{strictWeb}},
		{name: "a pod of kube-system, without listing", namespace: "kube-system", pod: uninjectedPod("app", "web"), services: []MeshService{strictWeb}},
		{name: "a pod of kube-public, a system namespace, without listing", namespace: "kube-public", pod: uninjectedPod("app", "web"),
			services: []MeshService{strictWeb}, stdin: `,"excludeNamespaces":[]`},
		{name: "a pod of an excluded namespace, without listing", namespace: "meshlift-system", pod: uninjectedPod("app", "web"),
			services: []MeshService{strictWeb}, stdin: `,"excludeNamespaces":["meshlift-system"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := newIsolationNamespaces(t)
			pods := &fakePods{pods: map[string]Pod{tt.namespace + "/web-1": tt.pod}, meshServices: map[string][]MeshService{tt.namespace: tt.services}, listErr: tt.listErr}
			var log bytes.Buffer
			_, result, err := pods.plugin(&log).Add(cmdArgs(ns.pod.Path, tt.namespace, "web-1", tt.pod.UID, withPrevResult(t, tt.stdin)))
			if err != nil || result == nil {
				t.Fatalf("ADD = %v, %v; want the previous result", result, err)
			}
			if hasTable(t, ns.pod) {
				t.Error("ADD installed a table")
			}
			if err := ns.connect(false); err != nil {
				t.Errorf("a connection to the app's port = %v, want it to work", err)
			}
			if pods.lists != tt.wantLists {
				t.Errorf("ADD listed MeshServices %d times, want %d", pods.lists, tt.wantLists)
			}
		})
	}
}

func TestAddFailsClosedWhenTheMeshServicesCannotBeListed(t *testing.T) {
	ns := netnstest.New(t)
	pod := uninjectedPod("app", "web")
	pods := &fakePods{pods: map[string]Pod{"shop/web-1": pod}, listErr: errors.New("the server is currently unable to handle the request")}
	var log bytes.Buffer
	_, _, err := pods.plugin(&log).Add(cmdArgs(ns.Path, "shop", "web-1", pod.UID, withPrevResult(t, "")))
	if err == nil {
		t.Fatal("ADD succeeded, want it to fail so the kubelet retries")
	}
	for _, want := range []string{"shop/web-1", "MeshServices of namespace shop could not be listed", "failing closed", "meshservices.mesh.meshlift.io", "unable to handle"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ADD error %q does not contain %q", err, want)
		}
	}
	if hasTable(t, ns) {
		t.Error("a failed ADD installed a table")
	}
}
