package controlplane_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/controlplane"
	"github.com/meshlift/meshlift/internal/controlplane/endpoints"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// createMeshService creates a MeshService with one HTTP port that calls upstreams
// ("name:port" or "name.namespace:port").
func createMeshService(t *testing.T, ns, name string, upstreams ...string) *meshv1alpha1.MeshService {
	t.Helper()
	ms := gen.MeshService(name, gen.MeshServiceMeta(gen.SetNamespace(ns)))
	for i, u := range upstreams {
		service, port, _ := strings.Cut(u, ":")
		ms.Spec.Upstreams = append(ms.Spec.Upstreams, meshv1alpha1.Upstream{MeshService: service, Port: port, LocalPort: int32(7001 + i)})
	}
	if err := env.Client.Create(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	return ms
}

// assignments renders an EDS response as "cluster: ip:port=identity ..." lines, by cluster.
func assignments(t *testing.T, resp *discoveryv3.DiscoveryResponse) []string {
	t.Helper()
	if resp.GetTypeUrl() != controlplane.TypeClusterLoadAssignment {
		t.Fatalf("got a response of type %s, want endpoints", resp.GetTypeUrl())
	}
	var lines []string
	for _, res := range resp.GetResources() {
		cla := &endpointv3.ClusterLoadAssignment{}
		if err := res.UnmarshalTo(cla); err != nil {
			t.Fatal(err)
		}
		var eps []string
		for _, locality := range cla.GetEndpoints() {
			for _, lb := range locality.GetLbEndpoints() {
				sock := lb.GetEndpoint().GetAddress().GetSocketAddress()
				id := lb.GetMetadata().GetFilterMetadata()[endpoints.MetadataNamespace].GetFields()[endpoints.MetadataIdentity].GetStringValue()
				eps = append(eps, fmt.Sprintf("%s:%d=%s/%s", sock.GetAddress(), sock.GetPortValue(), id, lb.GetHealthStatus()))
			}
		}
		lines = append(lines, strings.TrimSpace(cla.GetClusterName()+": "+strings.Join(eps, " ")))
	}
	return lines
}

// expectAssignments waits for the next EDS response, checks it and ACKs it.
func (c *xds) expectAssignments(t *testing.T, names []string, want ...string) {
	t.Helper()
	resp := c.recv(t, timeout)
	if got := assignments(t, resp); !slices.Equal(got, want) {
		t.Fatalf("endpoints:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	c.ack(t, resp, names)
}

func TestEndpointsFollowThePods(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{})
	ns := env.Namespace(t, "eds")
	ctx := context.Background()
	createMeshService(t, ns, "api")
	createMeshService(t, ns, "web", "api:http", "ledger.bank:grpc")
	createMeshService(t, ns, "solo")
	web := cp.workload(t, ns, "web-1", "web", "web")
	solo := cp.workload(t, ns, "solo-1", "solo", "solo")
	api1 := cp.createPod(t, ns, "api-1", "api", "api")
	api2 := cp.createPod(t, ns, "api-2", "api", "api")
	apiID := "spiffe://" + trustDomain + "/ns/" + ns + "/sa/api"
	apiCluster := "http.api." + ns
	endpoint := func(ip string) string { return ip + ":15006=" + apiID + "/HEALTHY" }

	// The web proxy asks for its upstreams, a cluster that is not one of them (as a proxy that
	// captures outbound connections does, for the clusters of the outbound routes: it gets it)
	// and a name that is no cluster (left out).
	soloCluster := "http.solo." + ns + ":"
	names := []string{apiCluster, "grpc.ledger.bank", "http.solo." + ns, "not-a-cluster"}
	c := cp.openADS(t, web.token)
	c.send(t, &discoveryv3.DiscoveryRequest{Node: node(web.pod, nil), TypeUrl: controlplane.TypeClusterLoadAssignment, ResourceNames: names})
	c.expectAssignments(t, names, "grpc.ledger.bank:", apiCluster+":", soloCluster)

	// A proxy whose MeshService calls nothing, subscribed to all it may have, gets nothing to
	// call and is not disturbed by api's changes.
	quietStream := cp.openADS(t, solo.token)
	quietStream.send(t, &discoveryv3.DiscoveryRequest{Node: node(solo.pod, nil), TypeUrl: controlplane.TypeClusterLoadAssignment})
	if got := assignments(t, quietStream.recv(t, timeout)); len(got) != 0 {
		t.Fatalf("a MeshService without upstreams got clusters %v", got)
	}

	setStatus(t, api1, "10.1.0.1", true)
	c.expectAssignments(t, names, "grpc.ledger.bank:", apiCluster+": "+endpoint("10.1.0.1"), soloCluster)

	setStatus(t, api2, "10.1.0.2", true)
	c.expectAssignments(t, names, "grpc.ledger.bank:", apiCluster+": "+endpoint("10.1.0.1")+" "+endpoint("10.1.0.2"), soloCluster)

	setStatus(t, api1, "10.1.0.1", false)
	c.expectAssignments(t, names, "grpc.ledger.bank:", apiCluster+": "+endpoint("10.1.0.2"), soloCluster)

	// An InPlace rollout takes api-2 out before restarting its proxy cold.
	patch := client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"annotations":{"`+meshv1alpha1.AnnotationEDSExcluded+`":"true"}}}`))
	if err := env.Client.Patch(ctx, api2, patch); err != nil {
		t.Fatal(err)
	}
	c.expectAssignments(t, names, "grpc.ledger.bank:", apiCluster+":", soloCluster)

	setStatus(t, api1, "10.1.0.1", true)
	c.expectAssignments(t, names, "grpc.ledger.bank:", apiCluster+": "+endpoint("10.1.0.1"), soloCluster)

	if err := env.Client.Delete(ctx, api1); err != nil {
		t.Fatal(err)
	}
	c.expectAssignments(t, names, "grpc.ledger.bank:", apiCluster+":", soloCluster)

	// A status change that does not change the endpoints is not pushed.
	setStatus(t, api2, "10.1.0.2", false)
	c.expectNothing(t, quiet)
	quietStream.expectNothing(t, 10*time.Millisecond)
}

func TestEndpointsFollowTheMeshServices(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{})
	ns := env.Namespace(t, "eds")
	ctx := context.Background()
	api := createMeshService(t, ns, "api")
	web := createMeshService(t, ns, "web", "api:http")
	webProxy := cp.workload(t, ns, "web-1", "web", "web")
	api1 := cp.createPod(t, ns, "api-1", "api", "api")
	setStatus(t, api1, "10.1.0.1", true)
	endpoint := "10.1.0.1:15006=spiffe://" + trustDomain + "/ns/" + ns + "/sa/api/HEALTHY"

	// Subscribed to everything it may have.
	c := cp.openADS(t, webProxy.token)
	c.send(t, &discoveryv3.DiscoveryRequest{Node: node(webProxy.pod, nil), TypeUrl: controlplane.TypeClusterLoadAssignment})
	c.expectAssignments(t, nil, "http.api."+ns+": "+endpoint)

	// api gets a second port, and web calls it too.
	api.Spec.Ports = append(api.Spec.Ports, meshv1alpha1.MeshServicePort{Name: "admin", Port: 9090})
	if err := env.Client.Update(ctx, api); err != nil {
		t.Fatal(err)
	}
	web.Spec.Upstreams = append(web.Spec.Upstreams, meshv1alpha1.Upstream{MeshService: "api", Port: "admin", LocalPort: 7002})
	if err := env.Client.Update(ctx, web); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, func(lines []string) bool {
		return slices.Equal(lines, []string{"admin.api." + ns + ": " + endpoint, "http.api." + ns + ": " + endpoint})
	})

	// The upstream MeshService goes away: its clusters are empty.
	if err := env.Client.Delete(ctx, api); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, func(lines []string) bool {
		return slices.Equal(lines, []string{"admin.api." + ns + ":", "http.api." + ns + ":"})
	})

	// The caller's MeshService stops calling it: the clusters are gone.
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(web), web); err != nil {
		t.Fatal(err)
	}
	web.Spec.Upstreams = nil
	if err := env.Client.Update(ctx, web); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, func(lines []string) bool { return len(lines) == 0 })
}

// waitFor ACKs EDS responses until one satisfies done (two updates may arrive separately).
func waitFor(t *testing.T, c *xds, done func(lines []string) bool) {
	t.Helper()
	var last []string
	for range 5 {
		resp := c.recv(t, timeout)
		c.ack(t, resp, nil)
		if last = assignments(t, resp); done(last) {
			return
		}
	}
	t.Fatalf("the endpoints did not reach the expected state; last:\n%s", strings.Join(last, "\n"))
}

// TestDrainAcknowledgements: a replica acknowledges a pod's exclusion from EDS on the pod once
// every stream that calls its MeshService acknowledged endpoints without it, and not before.
func TestDrainAcknowledgements(t *testing.T) {
	cp := startControlPlane(t, controlplane.Options{ReplicaName: "replica-a"})
	ns := env.Namespace(t, "drain")
	ctx := context.Background()
	ackKey := meshv1alpha1.EDSAckAnnotation("replica-a")
	createMeshService(t, ns, "api")
	createMeshService(t, ns, "web", "api:http")
	createMeshService(t, ns, "solo")
	web := cp.workload(t, ns, "web-1", "web", "web")
	api1 := cp.createPod(t, ns, "api-1", "api", "api")
	api2 := cp.createPod(t, ns, "api-2", "api", "api")
	solo := cp.createPod(t, ns, "solo-1", "solo", "solo")
	setStatus(t, api1, "10.1.0.1", true)
	setStatus(t, api2, "10.1.0.2", true)
	setStatus(t, solo, "10.1.0.3", true)
	apiCluster := "http.api." + ns
	endpoint := func(ip string) string { return ip + ":15006=spiffe://" + trustDomain + "/ns/" + ns + "/sa/api/HEALTHY" }
	names := []string{apiCluster}
	c := cp.openADS(t, web.token)
	c.send(t, &discoveryv3.DiscoveryRequest{Node: node(web.pod, nil), TypeUrl: controlplane.TypeClusterLoadAssignment, ResourceNames: names})
	c.expectAssignments(t, names, apiCluster+": "+endpoint("10.1.0.1")+" "+endpoint("10.1.0.2"))

	exclude := func(pod *corev1.Pod) {
		t.Helper()
		patch := client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"annotations":{"`+meshv1alpha1.AnnotationEDSExcluded+`":"true"}}}`))
		if err := env.Client.Patch(ctx, pod, patch); err != nil {
			t.Fatal(err)
		}
	}
	acknowledged := func(pod *corev1.Pod) bool {
		t.Helper()
		current := &corev1.Pod{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), current); err != nil {
			t.Fatal(err)
		}
		return current.Annotations[ackKey] == "true"
	}
	waitAcknowledged := func(pod *corev1.Pod) {
		t.Helper()
		testenv.Eventually(t, timeout, func(context.Context) (bool, string) {
			return acknowledged(pod), "no acknowledgement " + ackKey + " on " + pod.Name
		})
	}

	// Nobody calls solo: its exclusion is acknowledged at once.
	exclude(solo)
	waitAcknowledged(solo)

	// web's proxy gets the endpoints without api-2 but has not acknowledged them yet: no
	// acknowledgement, even across a few rechecks.
	exclude(api2)
	resp := c.recv(t, timeout)
	if got := assignments(t, resp); !slices.Equal(got, []string{apiCluster + ": " + endpoint("10.1.0.1")}) {
		t.Fatalf("endpoints after the exclusion: %v", got)
	}
	time.Sleep(3 * time.Second)
	if acknowledged(api2) {
		t.Fatal("the exclusion was acknowledged before the proxy acknowledged the endpoints without the pod")
	}
	// A NACK is not an acknowledgement either.
	c.send(t, &discoveryv3.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce(), ResourceNames: names,
		ErrorDetail: &status.Status{Message: "rejected for the test"}})
	time.Sleep(3 * time.Second)
	if acknowledged(api2) {
		t.Fatal("the exclusion was acknowledged after a NACK")
	}
	c.ack(t, resp, names)
	waitAcknowledged(api2)
	if acknowledged(api1) {
		t.Fatal("a pod still in the endpoints was acknowledged")
	}
}
