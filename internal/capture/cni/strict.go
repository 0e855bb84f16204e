package cni

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshlift/meshlift/internal/capture"
)

// A pod the injector did not see (the mutating webhook fails open, so a pod created while every
// operator replica is down is admitted as it is) carries no sidecar and no capture annotation.
// If a STRICT MeshService selects it, it would serve plaintext on its ports: the plugin isolates
// it instead (Isolate, IsolationConfig), and the operator's repair controller has it recreated
// with the sidecar once the operator is back (controllers/repair.go).
//
// The plugin does not import the API package (it would bring controller-runtime into a binary
// the container runtime runs for every pod): these are the few names it needs, and
// strict_test.go checks that they agree with api/v1alpha1 and internal/sidecar.
const (
	// meshServiceGroup, meshServiceVersion and meshServiceResource name the MeshService API
	// (meshv1alpha1.GroupVersion).
	meshServiceGroup    = "mesh.meshlift.io"
	meshServiceVersion  = "v1alpha1"
	meshServiceResource = "meshservices"
	meshServiceListKind = "MeshServiceList"

	// mtlsStrict and mtlsPermissive are meshv1alpha1.MTLSStrict (which the CRD defaults an
	// empty mode to) and MTLSPermissive.
	mtlsStrict     = "STRICT"
	mtlsPermissive = "PERMISSIVE"

	// annotationInject "false" opts a pod out of injection (meshv1alpha1.AnnotationInject).
	annotationInject = "meshlift.io/inject"
	// annotationVersion and annotationInjectionHash are set on every injected pod
	// (meshv1alpha1.AnnotationVersion, AnnotationInjectionHash).
	annotationVersion       = "meshlift.io/version"
	annotationInjectionHash = "meshlift.io/injection-hash"
)

// proxyContainers are the names of the injected proxy containers (sidecar.ContainerName and
// sidecar.SlotContainerName(1) and (2)).
var proxyContainers = []string{"meshlift-proxy", "meshlift-proxy-1", "meshlift-proxy-2"}

// systemNamespaces are Kubernetes' own namespaces (sidecar.SystemNamespaces), whose pods are
// never injected, so never isolated either.
var systemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}

// MeshService is what the plugin reads of a MeshService.
type MeshService struct {
	Name              string
	CreationTimestamp time.Time
	// Deleting is set once the MeshService has a deletion timestamp: it selects nothing then.
	Deleting bool
	Selector metav1.LabelSelector
	// MTLSMode is spec.mtls.mode as the API server returns it.
	MTLSMode string
}

// Strict reports whether the MeshService accepts only mTLS: every mode but PERMISSIVE. An empty
// mode is STRICT (the CRD's default), and so is a mode this build does not know, so that a
// newer API never opens a pod.
func (ms MeshService) Strict() bool {
	return ms.MTLSMode != mtlsPermissive
}

// carriesSidecar reports whether the injector injected the pod: its annotations, or a proxy
// container (kubeLookup fills Pod.Injected from both).
func carriesSidecar(annotations map[string]string, containerNames []string) bool {
	if annotations[annotationVersion] != "" || annotations[annotationInjectionHash] != "" {
		return true
	}
	for _, name := range containerNames {
		if slices.Contains(proxyContainers, name) {
			return true
		}
	}
	return false
}

// Isolate decides whether a pod that is not marked for capture must be isolated: it carries no
// sidecar, did not opt out of injection, and the MeshService the injector would have injected it
// for (SelectMeshService: the oldest one whose selector matches, as sidecar.SelectMeshService
// picks it) is STRICT. meshServices are those of the pod's namespace. It returns that
// MeshService's name, or "" when the pod is left alone.
func Isolate(pod Pod, meshServices []MeshService) string {
	if capture.Marked(pod.Annotations) || pod.Injected || pod.Annotations[annotationInject] == "false" {
		return ""
	}
	ms := SelectMeshService(pod.Labels, meshServices)
	if ms == nil || !ms.Strict() {
		return ""
	}
	return ms.Name
}

// SelectMeshService returns the oldest (then first by name) of meshServices whose selector
// matches podLabels, or nil. Empty and invalid selectors match nothing, as in the injector.
func SelectMeshService(podLabels map[string]string, meshServices []MeshService) *MeshService {
	var selected *MeshService
	for i := range meshServices {
		ms := &meshServices[i]
		if ms.Deleting {
			continue
		}
		selector, err := metav1.LabelSelectorAsSelector(&ms.Selector)
		if err != nil || selector.Empty() || !selector.Matches(labels.Set(podLabels)) {
			continue
		}
		if selected == nil || olderThan(ms, selected) {
			selected = ms
		}
	}
	return selected
}

func olderThan(a, b *MeshService) bool {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp); c != 0 {
		return c < 0
	}
	return cmp.Less(a.Name, b.Name)
}

// IsolationConfig is the ruleset of an isolated pod: inbound capture to the proxy's inbound port,
// where nothing listens in a pod without the proxy, so every TCP connection that does not come
// in on loopback is refused (reset), the kubelet's probes of the app's ports included: the pod
// never becomes Ready, so it never becomes a Service endpoint. Unlike a meshed pod's, no proxy
// port is let through (but the inbound and outbound capture ports, which NewRuleset always lets
// through and where nothing listens either): an app listening in 15000-15099 is refused too.
// Outbound is left alone.
func IsolationConfig() capture.Config {
	return capture.Config{
		Inbound:      true,
		InboundPort:  capture.DefaultInboundPort,
		OutboundPort: capture.DefaultOutboundPort,
		ProxyUID:     capture.DefaultProxyUID,
	}
}

// meshServiceListWire is the part of a MeshServiceList the plugin decodes.
type meshServiceListWire struct {
	Kind  string `json:"kind"`
	Items []struct {
		Metadata struct {
			Name              string       `json:"name"`
			CreationTimestamp metav1.Time  `json:"creationTimestamp"`
			DeletionTimestamp *metav1.Time `json:"deletionTimestamp"`
		} `json:"metadata"`
		Spec struct {
			Selector metav1.LabelSelector `json:"selector"`
			MTLS     struct {
				Mode string `json:"mode"`
			} `json:"mtls"`
		} `json:"spec"`
	} `json:"items"`
}

// DecodeMeshServiceList reads a MeshServiceList as the API server returns it (JSON). It is the
// one place the plugin parses what it gets from the network; FuzzDecodeMeshServiceList checks
// it against the API package's types.
func DecodeMeshServiceList(data []byte) ([]MeshService, error) {
	var list meshServiceListWire
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("failed to decode the MeshService list: %w", err)
	}
	if list.Kind != meshServiceListKind {
		return nil, fmt.Errorf("the API server answered the MeshService list with a %q, not a %s", truncate(list.Kind, 64), meshServiceListKind)
	}
	out := make([]MeshService, 0, len(list.Items))
	for _, item := range list.Items {
		if item.Metadata.Name == "" {
			return nil, errors.New("the MeshService list holds an item without a name")
		}
		out = append(out, MeshService{
			Name:              item.Metadata.Name,
			CreationTimestamp: item.Metadata.CreationTimestamp.Time,
			Deleting:          item.Metadata.DeletionTimestamp != nil,
			Selector:          item.Spec.Selector,
			MTLSMode:          item.Spec.MTLS.Mode,
		})
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
