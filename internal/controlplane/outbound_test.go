package controlplane_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshlift/meshlift/internal/controlplane"
	"github.com/meshlift/meshlift/internal/outbound"
)

// The listener holds the MeshServices of every namespace, those other tests left too: tests look
// only at the chains of their own namespace.

var outboundNames = []string{outbound.ListenerName}

// createService creates a Service in ns selecting app=name, with TCP ports "port>targetPort".
func createService(t *testing.T, ns, name string, ports ...string) *corev1.Service {
	t.Helper()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}}}
	for _, p := range ports {
		port, target, _ := strings.Cut(p, ">")
		sp := corev1.ServicePort{Name: "p" + port, Protocol: corev1.ProtocolTCP, TargetPort: intstr.Parse(target)}
		fmt.Sscan(port, &sp.Port)
		svc.Spec.Ports = append(svc.Spec.Ports, sp)
	}
	if err := env.Client.Create(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		t.Fatalf("the API server gave Service %s no ClusterIP", name)
	}
	return svc
}

// routesIn renders a listener response's filter chains of namespace ns as
// "cluster/protocol port: addr/len ..." lines, checking what every chain must hold.
func routesIn(t *testing.T, resp *discoveryv3.DiscoveryResponse, ns string) []string {
	t.Helper()
	if resp.GetTypeUrl() != controlplane.TypeListener {
		t.Fatalf("got a response of type %s, want listeners", resp.GetTypeUrl())
	}
	if len(resp.GetResources()) != 1 {
		t.Fatalf("got %d listeners, want only %s", len(resp.GetResources()), outbound.ListenerName)
	}
	listener := &listenerv3.Listener{}
	if err := resp.GetResources()[0].UnmarshalTo(listener); err != nil {
		t.Fatal(err)
	}
	if listener.GetName() != outbound.ListenerName {
		t.Fatalf("the listener is named %q", listener.GetName())
	}
	if _, err := outbound.FromListener(listener); err != nil {
		t.Fatalf("the proxy would refuse the listener: %v", err)
	}
	var lines []string
	for _, fc := range listener.GetFilterChains() {
		proxy := &tcpproxyv3.TcpProxy{}
		if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(proxy); err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(proxy.GetCluster(), "."+ns) {
			continue
		}
		var ranges []string
		for _, r := range fc.GetFilterChainMatch().GetPrefixRanges() {
			ranges = append(ranges, fmt.Sprintf("%s/%d", r.GetAddressPrefix(), r.GetPrefixLen().GetValue()))
		}
		protocol := fc.GetMetadata().GetFilterMetadata()[outbound.MetadataNamespace].GetFields()[outbound.MetadataProtocol].GetStringValue()
		lines = append(lines, fmt.Sprintf("%s/%s %d: %s", proxy.GetCluster(), protocol, fc.GetFilterChainMatch().GetDestinationPort().GetValue(), strings.Join(ranges, " ")))
	}
	slices.Sort(lines)
	return lines
}

// waitRoutes ACKs listener responses until the chains of ns are want (a change of several
// objects may arrive in several responses), and returns the last response.
func (c *xds) waitRoutes(t *testing.T, ns string, want ...string) *discoveryv3.DiscoveryResponse {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	var last []string
	for range 8 {
		resp := c.recv(t, timeout)
		c.ack(t, resp, outboundNames)
		if last = routesIn(t, resp, ns); slices.Equal(last, want) {
			return resp
		}
	}
	t.Fatalf("the outbound routes did not reach\n%s\nlast:\n%s", strings.Join(want, "\n"), strings.Join(last, "\n"))
	return nil
}

func TestOutboundRoutesFollowServicesPodsAndMeshServices(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{})
	ns := env.Namespace(t, "outbound")
	ctx := context.Background()
	api := createMeshService(t, ns, "api")
	createMeshService(t, ns, "web", "api:http")
	web := cp.workload(t, ns, "web-1", "web", "web")
	api1 := cp.createPod(t, ns, "api-1", "api", "api")
	setStatus(t, api1, "10.2.0.1", true)
	svc := createService(t, ns, "api", "80>8080")
	clusterIP := svc.Spec.ClusterIP + "/32"
	cluster := "http.api." + ns + "/HTTP"

	c := cp.openADS(t, web.token)
	c.send(t, &discoveryv3.DiscoveryRequest{Node: node(web.pod, nil), TypeUrl: controlplane.TypeListener, ResourceNames: outboundNames})
	c.waitRoutes(t, ns, cluster+" 80: "+clusterIP, cluster+" 8080: 10.2.0.1/32")

	// A new pod becomes ready.
	api2 := cp.createPod(t, ns, "api-2", "api", "api")
	setStatus(t, api2, "10.2.0.2", true)
	c.waitRoutes(t, ns, cluster+" 80: "+clusterIP, cluster+" 8080: 10.2.0.1/32 10.2.0.2/32")

	// The Service's port changes.
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}
	svc.Spec.Ports[0].Port = 81
	if err := env.Client.Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	c.waitRoutes(t, ns, cluster+" 81: "+clusterIP, cluster+" 8080: 10.2.0.1/32 10.2.0.2/32")

	// Another Service, annotated for api, leads to it by the port's name.
	public := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api-public", Annotations: map[string]string{"meshlift.io/meshservice": "api"}},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 443, TargetPort: intstr.FromString("http")}}}}
	if err := env.Client.Create(ctx, public); err != nil {
		t.Fatal(err)
	}
	c.waitRoutes(t, ns, cluster+" 443: "+public.Spec.ClusterIP+"/32", cluster+" 81: "+clusterIP, cluster+" 8080: 10.2.0.1/32 10.2.0.2/32")

	// The Services are deleted: the pods stay.
	for _, obj := range []client.Object{svc, public} {
		if err := env.Client.Delete(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	c.waitRoutes(t, ns, cluster+" 8080: 10.2.0.1/32 10.2.0.2/32")

	// The MeshService is deleted: nothing of it is left.
	if err := env.Client.Delete(ctx, api); err != nil {
		t.Fatal(err)
	}
	c.waitRoutes(t, ns)
}

func TestOutboundRoutesGoOnlyToStreamsThatAskForThem(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{})
	ns := env.Namespace(t, "outbound")
	createMeshService(t, ns, "api")
	createMeshService(t, ns, "web", "api:http")
	web := cp.workload(t, ns, "web-1", "web", "web")
	other := cp.workload(t, ns, "web-2", "web", "web")

	// One stream asks for endpoints only, another for a listener of another name.
	endpointsOnly := cp.openADS(t, web.token)
	endpointsOnly.send(t, &discoveryv3.DiscoveryRequest{Node: node(web.pod, nil), TypeUrl: controlplane.TypeClusterLoadAssignment})
	endpointsOnly.expectAssignments(t, nil, "http.api."+ns+":")
	otherName := cp.openADS(t, other.token)
	otherName.send(t, &discoveryv3.DiscoveryRequest{Node: node(other.pod, nil), TypeUrl: controlplane.TypeListener, ResourceNames: []string{"ingress"}})
	resp := otherName.recv(t, timeout)
	if resp.GetTypeUrl() != controlplane.TypeListener || len(resp.GetResources()) != 0 {
		t.Fatalf("a stream that asked for listener %q got %d %s resources", "ingress", len(resp.GetResources()), resp.GetTypeUrl())
	}
	otherName.ack(t, resp, []string{"ingress"})

	createService(t, ns, "api", "80>8080")
	endpointsOnly.expectNothing(t, quiet)
	otherName.expectNothing(t, quiet)

	// Once it asks, it gets them.
	otherName.send(t, &discoveryv3.DiscoveryRequest{TypeUrl: controlplane.TypeListener, ResourceNames: outboundNames,
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
	if got := routesIn(t, otherName.recv(t, timeout), ns); len(got) != 1 || !strings.HasPrefix(got[0], "http.api."+ns+"/HTTP 80: ") {
		t.Fatalf("routes %v, want the Service's", got)
	}
}

func TestARejectedVersionOfTheOutboundRoutesIsNotSentAgain(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{})
	ns := env.Namespace(t, "outbound")
	createMeshService(t, ns, "api")
	web := cp.workload(t, ns, "web-1", "web", "web")
	nacked := metricValue(t, "meshlift_control_plane_nacks_total", map[string]string{"type": "listeners"})

	c := cp.openADS(t, web.token)
	c.send(t, &discoveryv3.DiscoveryRequest{Node: node(web.pod, nil), TypeUrl: controlplane.TypeListener, ResourceNames: outboundNames})
	good := c.recv(t, timeout)
	routesIn(t, good, ns)
	c.ack(t, good, outboundNames)

	svc := createService(t, ns, "api", "80>8080")
	bad := c.recv(t, timeout)
	if bad.GetVersionInfo() == good.GetVersionInfo() {
		t.Fatalf("a changed listener kept version %s", good.GetVersionInfo())
	}
	// The proxy refuses it and keeps the good version: the server does not send it again.
	c.send(t, &discoveryv3.DiscoveryRequest{TypeUrl: controlplane.TypeListener, ResourceNames: outboundNames,
		VersionInfo: good.GetVersionInfo(), ResponseNonce: bad.GetNonce(), ErrorDetail: &rpcstatus.Status{Message: "refused for the test"}})
	c.expectNothing(t, quiet)
	if got := metricValue(t, "meshlift_control_plane_nacks_total", map[string]string{"type": "listeners"}); got != nacked+1 {
		t.Fatalf("listener NACKs counted %v, want %v", got, nacked+1)
	}

	// The next change is a new version.
	if err := env.Client.Delete(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	next := c.recv(t, timeout)
	if next.GetVersionInfo() == bad.GetVersionInfo() || next.GetNonce() == bad.GetNonce() {
		t.Fatalf("after the NACK the server sent version %s (nonce %s) again", next.GetVersionInfo(), next.GetNonce())
	}
}
