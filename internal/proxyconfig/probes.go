package proxyconfig

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// Probes of the application under traffic capture. The kubelet probes an app port from the
// node; with inbound capture that connection would be redirected to the proxy's inbound listener,
// where STRICT mTLS refuses it. So the injector rewrites the HTTP and TCP probes of the app's
// containers to ask the proxy instead, on AppProbePort at AppProbePath(container, kind), and keeps
// the originals in the pod's OriginalProbesAnnotation; the proxy (whichever slot is active: the
// probe listener is handed over like the others) reads them from the downward-API annotations
// file and runs each one against the app on localhost, as the kubelet would have.

// AppProbePort is the proxy's listener for the app's rewritten probes (plain HTTP, reachable
// from the node, never captured).
const AppProbePort = 15020

// OriginalProbesAnnotation holds the app's original probes (OriginalProbes, JSON), written by the
// injector.
const OriginalProbesAnnotation = "meshlift.io/original-probes"

// Probe kinds, as in AppProbePath.
const (
	ProbeLiveness  = "liveness"
	ProbeReadiness = "readiness"
	ProbeStartup   = "startup"
)

// AppProbePath is the path the rewritten probe of container's probe kind asks for.
func AppProbePath(container, kind string) string {
	return "/app-health/" + container + "/" + kind
}

// ParseAppProbePath is the inverse of AppProbePath; ok is false for any other path.
func ParseAppProbePath(path string) (container, kind string, ok bool) {
	rest, found := strings.CutPrefix(path, "/app-health/")
	if !found {
		return "", "", false
	}
	container, kind, found = strings.Cut(rest, "/")
	if !found || !dnsLabel.MatchString(container) || (kind != ProbeLiveness && kind != ProbeReadiness && kind != ProbeStartup) {
		return "", "", false
	}
	return container, kind, true
}

// OriginalProbes are the app's original probes by container name.
type OriginalProbes map[string]ContainerProbes

// ContainerProbes are one container's original probes (nil: the container has none of that kind,
// or it was not rewritten).
type ContainerProbes struct {
	Liveness  *AppProbe `json:"liveness,omitempty"`
	Readiness *AppProbe `json:"readiness,omitempty"`
	Startup   *AppProbe `json:"startup,omitempty"`
}

// Probe returns the probe of kind ("" when none).
func (c ContainerProbes) Probe(kind string) *AppProbe {
	switch kind {
	case ProbeLiveness:
		return c.Liveness
	case ProbeReadiness:
		return c.Readiness
	case ProbeStartup:
		return c.Startup
	}
	return nil
}

// AppProbe is one original probe: exactly one of HTTPGet and TCPSocket. Ports are numbers (the
// injector resolves named ports).
type AppProbe struct {
	HTTPGet   *HTTPGetProbe   `json:"httpGet,omitempty"`
	TCPSocket *TCPSocketProbe `json:"tcpSocket,omitempty"`
	// TimeoutSeconds is the probe's timeout (the kubelet's default: 1).
	TimeoutSeconds int32 `json:"timeoutSeconds,omitempty"`
}

// HTTPGetProbe is an HTTP GET against the app on localhost (Host, when set, is sent as the Host
// header only: the proxy always connects to the pod's loopback).
type HTTPGetProbe struct {
	Path    string       `json:"path,omitempty"`
	Port    int          `json:"port"`
	Scheme  string       `json:"scheme,omitempty"` // HTTP (default) or HTTPS (not verified, as the kubelet)
	Host    string       `json:"host,omitempty"`
	Headers []HTTPHeader `json:"httpHeaders,omitempty"`
}

// HTTPHeader is a header of an HTTP probe.
type HTTPHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// TCPSocketProbe connects to the app's port on localhost.
type TCPSocketProbe struct {
	Port int `json:"port"`
}

// MaxOriginalProbesSize bounds the annotation (it is read from a file any container of the pod
// can see, and written by the injector from the pod's own spec).
const MaxOriginalProbesSize = 64 << 10

var headerName = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_` + "`" + `|~-]{1,256}$`)

// ParseOriginalProbes reads the annotation's value; an empty value is no probes. Anything that
// is not what the injector writes is refused with a reason.
func ParseOriginalProbes(value string) (OriginalProbes, error) {
	if value == "" {
		return OriginalProbes{}, nil
	}
	if len(value) > MaxOriginalProbesSize {
		return nil, invalid("%s is %d bytes, more than %d", OriginalProbesAnnotation, len(value), MaxOriginalProbesSize)
	}
	var probes OriginalProbes
	dec := json.NewDecoder(strings.NewReader(value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&probes); err != nil {
		return nil, invalid("%s is not the JSON the injector writes: %v", OriginalProbesAnnotation, err)
	}
	if dec.More() {
		return nil, invalid("%s has data after its JSON object", OriginalProbesAnnotation)
	}
	for container, c := range probes {
		if !dnsLabel.MatchString(container) {
			return nil, invalid("%s names container %q, which is not a container name", OriginalProbesAnnotation, truncateValue(container))
		}
		for _, kind := range []string{ProbeLiveness, ProbeReadiness, ProbeStartup} {
			if probe := c.Probe(kind); probe != nil {
				if err := probe.validate(); err != nil {
					return nil, invalid("%s: the %s probe of container %s: %v", OriginalProbesAnnotation, kind, container, err)
				}
			}
		}
	}
	return probes, nil
}

// Encode is the annotation's value for probes.
func (o OriginalProbes) Encode() (string, error) {
	data, err := json.Marshal(o)
	if err != nil {
		return "", fmt.Errorf("failed to encode the original probes: %w", err)
	}
	if len(data) > MaxOriginalProbesSize {
		return "", invalid("the original probes take %d bytes, more than %d", len(data), MaxOriginalProbesSize)
	}
	return string(data), nil
}

func (p *AppProbe) validate() error {
	validPort := func(port int) bool { return port >= 1 && port <= 65535 }
	switch {
	case (p.HTTPGet == nil) == (p.TCPSocket == nil):
		return fmt.Errorf("needs exactly one of httpGet and tcpSocket")
	case p.TimeoutSeconds < 0 || p.TimeoutSeconds > 3600:
		return fmt.Errorf("timeoutSeconds %d is not from 0 to 3600", p.TimeoutSeconds)
	case p.TCPSocket != nil && !validPort(p.TCPSocket.Port):
		return fmt.Errorf("tcpSocket port %d is not from 1 to 65535", p.TCPSocket.Port)
	case p.TCPSocket != nil:
		return nil
	}
	h := p.HTTPGet
	switch {
	case !validPort(h.Port):
		return fmt.Errorf("httpGet port %d is not from 1 to 65535", h.Port)
	case h.Scheme != "" && h.Scheme != "HTTP" && h.Scheme != "HTTPS":
		return fmt.Errorf("httpGet scheme %q is not HTTP or HTTPS", truncateValue(h.Scheme))
	case len(h.Path) > 2048 || strings.ContainsAny(h.Path, " \r\n\x00") || (h.Path != "" && !strings.HasPrefix(h.Path, "/")):
		return fmt.Errorf("httpGet path %q is not an absolute path", truncateValue(h.Path))
	case len(h.Host) > 253 || strings.ContainsAny(h.Host, " /\r\n\x00"):
		return fmt.Errorf("httpGet host %q is not a host name", truncateValue(h.Host))
	case len(h.Headers) > 64:
		return fmt.Errorf("httpGet has %d headers, more than 64", len(h.Headers))
	}
	for _, header := range h.Headers {
		if !headerName.MatchString(header.Name) || len(header.Value) > 4096 || strings.ContainsAny(header.Value, "\r\n\x00") {
			return fmt.Errorf("httpGet header %q is not a valid header", truncateValue(header.Name))
		}
	}
	return nil
}

func truncateValue(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
