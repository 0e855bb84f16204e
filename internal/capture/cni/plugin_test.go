package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/google/nftables"

	"github.com/meshlift/meshlift/internal/capture"
	"github.com/meshlift/meshlift/internal/capture/netnstest"
)

// The plugin's logic is tested with a pod lookup backed by a map: the API-server lookup is not
// the subject here (kube_test.go tests it against envtest's kube-apiserver), while the rules
// are applied to, checked in and removed from real network namespaces the test creates.

const defaultTestKubeconfig = "/etc/cni/net.d/meshlift-cni.kubeconfig"

const prevResult = `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/test"}],"ips":[{"address":"10.99.0.2/24","interface":0}]}`

func netconf(t *testing.T, extra string) []byte {
	t.Helper()
	conf := `{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"meshlift-cni","kubeconfig":"` + defaultTestKubeconfig + `"` + extra + `}`
	var probe map[string]any
	if err := json.Unmarshal([]byte(conf), &probe); err != nil {
		t.Fatalf("bad test netconf %s: %v", conf, err)
	}
	return []byte(conf)
}

func withPrevResult(t *testing.T, extra string) []byte {
	return netconf(t, `,"prevResult":`+prevResult+extra)
}

func cmdArgs(netnsPath, namespace, name, uid string, stdin []byte) *skel.CmdArgs {
	args := "IgnoreUnknown=1"
	if namespace != "" {
		args += ";K8S_POD_NAMESPACE=" + namespace + ";K8S_POD_NAME=" + name
	}
	if uid != "" {
		args += ";K8S_POD_UID=" + uid
	}
	return &skel.CmdArgs{ContainerID: "c0ffee", Netns: netnsPath, IfName: "eth0", Args: args, StdinData: stdin}
}

// fakePods is the pod and MeshService lookup of these tests.
type fakePods struct {
	pods    map[string]Pod // by namespace/name
	err     error          // returned for every lookup when set
	lookups int

	meshServices map[string][]MeshService // by namespace
	listErr      error                    // returned for every MeshService list when set
	lists        int
}

func (f *fakePods) plugin(log *bytes.Buffer) *Plugin {
	return &Plugin{
		NewPodLookup: func(*NetConf) (PodLookup, error) {
			return PodLookupFunc(func(_ context.Context, namespace, name string) (Pod, error) {
				f.lookups++
				if f.err != nil {
					return Pod{}, f.err
				}
				pod, ok := f.pods[namespace+"/"+name]
				if !ok {
					return Pod{}, fmt.Errorf("pods %q not found", name)
				}
				return pod, nil
			}), nil
		},
		NewMeshServiceLookup: func(*NetConf) (MeshServiceLookup, error) {
			return MeshServiceLookupFunc(func(_ context.Context, namespace string) ([]MeshService, error) {
				f.lists++
				if f.listErr != nil {
					return nil, f.listErr
				}
				return f.meshServices[namespace], nil
			}), nil
		},
		Log: log,
	}
}

func hasTable(t *testing.T, ns *netnstest.NetNS) bool {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, table := range tables {
		if table.Name == capture.TableName {
			return true
		}
	}
	return false
}

var (
	markedPod = Pod{UID: "uid-1", Annotations: map[string]string{
		capture.AnnotationCapture:             "inbound,outbound",
		capture.AnnotationExcludeInboundPorts: "8081",
	}}
	unmarkedPod = Pod{UID: "uid-2", Annotations: map[string]string{"team": "payments"}}
	invalidPod  = Pod{UID: "uid-3", Annotations: map[string]string{
		capture.AnnotationCapture:             "inbound",
		capture.AnnotationExcludeInboundPorts: "http",
	}}
)

func TestAddCheckDelOfAMarkedPod(t *testing.T) {
	ns := netnstest.New(t)
	pods := &fakePods{pods: map[string]Pod{"shop/web": markedPod}}
	var log, stdout bytes.Buffer
	plugin := pods.plugin(&log)
	plugin.Stdout = &stdout
	args := cmdArgs(ns.Path, "shop", "web", markedPod.UID, withPrevResult(t, ""))

	if err := plugin.Funcs().Add(args); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	var got, want map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("ADD printed %q: %v", stdout.String(), err)
	}
	_ = json.Unmarshal([]byte(prevResult), &want)
	if fmt.Sprint(got["ips"]) != fmt.Sprint(want["ips"]) || fmt.Sprint(got["interfaces"]) != fmt.Sprint(want["interfaces"]) || got["cniVersion"] != "1.0.0" {
		t.Errorf("ADD did not pass the previous result through:\n got %s\nwant %s", stdout.String(), prevResult)
	}
	if !hasTable(t, ns) {
		t.Fatal("ADD of a marked pod left no capture table")
	}
	// ADD again (a runtime retry) is idempotent.
	if err := plugin.Funcs().Add(args); err != nil {
		t.Fatalf("second ADD: %v", err)
	}
	if err := plugin.Check(args); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := plugin.Del(args); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if hasTable(t, ns) {
		t.Fatal("DEL left the capture table")
	}
	if err := plugin.Check(args); !errors.Is(err, capture.ErrNotApplied) {
		t.Errorf("CHECK after DEL = %v, want ErrNotApplied", err)
	}
	if err := plugin.Del(args); err != nil {
		t.Errorf("second DEL: %v", err)
	}
}

func TestAddLeavesUnmarkedPodsAlone(t *testing.T) {
	ns := netnstest.New(t)
	pods := &fakePods{pods: map[string]Pod{"shop/batch": unmarkedPod}}
	var log bytes.Buffer
	plugin := pods.plugin(&log)
	args := cmdArgs(ns.Path, "shop", "batch", unmarkedPod.UID, withPrevResult(t, ""))
	_, result, err := plugin.Add(args)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if result == nil {
		t.Fatal("ADD returned no result to pass on")
	}
	if hasTable(t, ns) {
		t.Error("ADD of an unmarked pod created the capture table")
	}
	if err := plugin.Check(args); err != nil {
		t.Errorf("CHECK of an unmarked pod: %v", err)
	}
}

func TestAddFailsClosed(t *testing.T) {
	apiDown := errors.New("dial tcp 10.96.0.1:443: connect: connection refused")
	tests := []struct {
		name      string
		pods      *fakePods
		namespace string
		uid       string
		stdin     func(t *testing.T) []byte
		wantErr   []string // substrings; none means ADD succeeds without rules
	}{
		{
			name: "fails when the API server cannot be reached", pods: &fakePods{err: apiDown}, namespace: "shop",
			stdin: func(t *testing.T) []byte { return withPrevResult(t, "") }, wantErr: []string{"failing closed", "shop/web", "connection refused"},
		},
		{
			name: "fails when the pod is not found", pods: &fakePods{}, namespace: "shop",
			stdin: func(t *testing.T) []byte { return withPrevResult(t, "") }, wantErr: []string{"failed to get pod shop/web", "not found"},
		},
		{
			name: "starts a kube-system pod without rules when the API server cannot be reached", pods: &fakePods{err: apiDown}, namespace: "kube-system",
			stdin: func(t *testing.T) []byte { return withPrevResult(t, "") },
		},
		{
			name: "fails for kube-system too when excludeNamespaces is empty", pods: &fakePods{err: apiDown}, namespace: "kube-system",
			stdin: func(t *testing.T) []byte { return withPrevResult(t, `,"excludeNamespaces":[]`) }, wantErr: []string{"failing closed"},
		},
		{
			name: "starts a pod of a listed namespace without rules", pods: &fakePods{err: apiDown}, namespace: "infra",
			stdin: func(t *testing.T) []byte { return withPrevResult(t, `,"excludeNamespaces":["infra"]`) },
		},
		{
			name: "fails for a marked pod with malformed annotations", pods: &fakePods{pods: map[string]Pod{"shop/web": invalidPod}}, namespace: "shop",
			stdin: func(t *testing.T) []byte { return withPrevResult(t, "") }, wantErr: []string{"invalid capture annotations", capture.AnnotationExcludeInboundPorts, `"http"`},
		},
		{
			name: "fails when the API server has another pod of that name", pods: &fakePods{pods: map[string]Pod{"shop/web": markedPod}}, namespace: "shop", uid: "uid-old",
			stdin: func(t *testing.T) []byte { return withPrevResult(t, "") }, wantErr: []string{"was the pod recreated"},
		},
		{
			name: "fails without a prevResult, since the plugin must be chained", pods: &fakePods{pods: map[string]Pod{"shop/web": markedPod}}, namespace: "shop",
			stdin: func(t *testing.T) []byte { return netconf(t, "") }, wantErr: []string{"chained plugin", "prevResult"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := netnstest.New(t)
			var log bytes.Buffer
			_, result, err := tt.pods.plugin(&log).Add(cmdArgs(ns.Path, tt.namespace, "web", tt.uid, tt.stdin(t)))
			if len(tt.wantErr) == 0 {
				if err != nil || result == nil {
					t.Fatalf("ADD = %v, %v; want the previous result", result, err)
				}
				if !strings.Contains(log.String(), "starting without traffic capture") {
					t.Errorf("the tolerated failure was not logged: %q", log.String())
				}
			} else {
				if err == nil {
					t.Fatal("ADD succeeded, want an error")
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("ADD error %q does not contain %q", err, want)
					}
				}
			}
			if hasTable(t, ns) {
				t.Error("ADD created the capture table")
			}
		})
	}
}

func TestAddWithoutPodArgumentsDoesNotLookUp(t *testing.T) {
	ns := netnstest.New(t)
	pods := &fakePods{err: errors.New("must not be called")}
	var log bytes.Buffer
	if _, _, err := pods.plugin(&log).Add(cmdArgs(ns.Path, "", "", "", withPrevResult(t, ""))); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if pods.lookups != 0 || hasTable(t, ns) {
		t.Errorf("ADD without K8S_POD_* looked up %d pods, table present %v", pods.lookups, hasTable(t, ns))
	}
}

// These need no network namespace of their own.

func TestDelNeverFailsForAMissingNamespace(t *testing.T) {
	var log bytes.Buffer
	plugin := (&fakePods{err: errors.New("DEL must not look up pods")}).plugin(&log)
	for _, netnsPath := range []string{"", filepath.Join(t.TempDir(), "gone")} {
		if err := plugin.Del(cmdArgs(netnsPath, "shop", "web", "", netconf(t, ""))); err != nil {
			t.Errorf("DEL with CNI_NETNS=%q: %v", netnsPath, err)
		}
	}
}

func TestRefusesTheNodesOwnNamespace(t *testing.T) {
	err := refuseOwnNamespace("/proc/self/ns/net")
	if err == nil || !strings.Contains(err.Error(), "node's network namespace") {
		t.Errorf("refuseOwnNamespace(/proc/self/ns/net) = %v, want a refusal", err)
	}
	if err := refuseOwnNamespace(""); err == nil {
		t.Error("an empty CNI_NETNS was accepted")
	}
}

func TestExcludeNamespacesDefaultsToKubeSystem(t *testing.T) {
	for stdin, want := range map[string]bool{
		`{}`:                                    true,
		`{"excludeNamespaces":[]}`:              false,
		`{"excludeNamespaces":["kube-system"]}`: true,
		`{"excludeNamespaces":["infra"]}`:       false,
	} {
		conf, err := parseConf([]byte(stdin))
		if err != nil {
			t.Fatal(err)
		}
		if got := conf.excluded("kube-system"); got != want {
			t.Errorf("%s: kube-system excluded = %v, want %v", stdin, got, want)
		}
	}
}

// TestAddExemptsThePodsOwnProxyUser: the rules leave alone the user the pod's proxies run as
// (their runAsUser), not a fixed one, so a pod injected when the proxies ran as another user
// keeps its proxy's own connections out of capture.
func TestAddExemptsThePodsOwnProxyUser(t *testing.T) {
	ns := netnstest.New(t)
	older := markedPod
	older.UID = "uid-older"
	older.ProxyUID = ptrTo(int64(65532))
	pods := &fakePods{pods: map[string]Pod{"shop/older": older, "shop/web": markedPod}}
	var log bytes.Buffer
	plugin := pods.plugin(&log)
	args := cmdArgs(ns.Path, "shop", "older", older.UID, withPrevResult(t, ""))
	if _, _, err := plugin.Add(args); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	want, err := capture.ParseAnnotations(older.Annotations)
	if err != nil {
		t.Fatal(err)
	}
	want.ProxyUID = 65532
	rules, err := capture.NewRuleset(want)
	if err != nil {
		t.Fatal(err)
	}
	if err := capture.Check(ns.Path, rules); err != nil {
		t.Fatalf("the table does not exempt the pod's proxy user 65532: %v", err)
	}
	// Without a runAsUser on its proxies, the default user is exempted.
	args = cmdArgs(ns.Path, "shop", "web", markedPod.UID, withPrevResult(t, ""))
	if _, _, err := plugin.Add(args); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	def, _ := capture.ParseAnnotations(markedPod.Annotations)
	rules, err = capture.NewRuleset(def)
	if err != nil {
		t.Fatal(err)
	}
	if def.ProxyUID != capture.DefaultProxyUID {
		t.Fatalf("default proxy user %d, want %d", def.ProxyUID, capture.DefaultProxyUID)
	}
	if err := capture.Check(ns.Path, rules); err != nil {
		t.Fatalf("the table does not exempt the default proxy user: %v", err)
	}
}

func ptrTo[T any](v T) *T { return &v }
