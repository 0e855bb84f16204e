// Package proxyconfig is meshlift-proxy's side of the pod contract: it parses the arguments the
// injector renders (internal/sidecar.ProxyArgs), routes inbound TLS connections by SNI
// (<port-name>.<meshservice>.<namespace>), and reads the downward-API annotations file to decide
// whether this slot may own the listeners. It is pure: the proxy's main package does the I/O.
package proxyconfig

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Protocols of an inbound port (as in MeshService.spec.ports[].protocol).
var protocols = map[string]bool{"HTTP": true, "HTTP2": true, "GRPC": true, "TCP": true}

// Port is an application port served inbound.
type Port struct {
	Name     string
	Port     int
	Protocol string
}

// Upstream is a MeshService this workload calls through a localhost listener.
type Upstream struct {
	MeshService string // name
	Namespace   string
	Port        string // port name of the upstream
	LocalPort   int
}

// SNI is the server name the proxy sends when it calls the upstream.
func (u Upstream) SNI() string { return u.Port + "." + u.MeshService + "." + u.Namespace }

// Config is what the injector's arguments say.
type Config struct {
	MeshService  string
	ControlPlane string
	InboundPort  int
	MTLSMode     string // STRICT or PERMISSIVE
	Ports        []Port
	Upstreams    []Upstream
	// Extra are arguments this package does not own (the SidecarVersion's spec.args), in order.
	Extra []string
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// ErrInvalid wraps every reason arguments or inputs are refused.
var ErrInvalid = errors.New("invalid proxy configuration")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Parse reads the injector's arguments. Arguments it does not know are kept in Extra.
func Parse(args []string) (Config, error) {
	c := Config{MTLSMode: "STRICT"}
	seenPort, seenLocal := map[string]bool{}, map[int]bool{}
	for _, arg := range args {
		key, value, ok := strings.Cut(arg, "=")
		switch {
		case !ok:
			c.Extra = append(c.Extra, arg)
		case key == "--meshservice":
			if !dnsLabel.MatchString(value) {
				return Config{}, invalid("--meshservice %q is not a DNS label", value)
			}
			c.MeshService = value
		case key == "--control-plane":
			if _, _, err := splitHostPort(value); err != nil {
				return Config{}, invalid("--control-plane %q: %v", value, err)
			}
			c.ControlPlane = value
		case key == "--inbound-port":
			port, err := parsePort(value)
			if err != nil {
				return Config{}, invalid("--inbound-port: %v", err)
			}
			c.InboundPort = port
		case key == "--mtls-mode":
			if value != "STRICT" && value != "PERMISSIVE" {
				return Config{}, invalid("--mtls-mode must be STRICT or PERMISSIVE, not %q", value)
			}
			c.MTLSMode = value
		case key == "--port":
			p, err := parsePortArg(value)
			if err != nil {
				return Config{}, err
			}
			if seenPort[p.Name] {
				return Config{}, invalid("--port %s is given twice", p.Name)
			}
			seenPort[p.Name] = true
			c.Ports = append(c.Ports, p)
		case key == "--upstream":
			u, err := parseUpstreamArg(value)
			if err != nil {
				return Config{}, err
			}
			if seenLocal[u.LocalPort] {
				return Config{}, invalid("local port %d is used by two upstreams", u.LocalPort)
			}
			seenLocal[u.LocalPort] = true
			c.Upstreams = append(c.Upstreams, u)
		default:
			c.Extra = append(c.Extra, arg)
		}
	}
	if c.MeshService == "" || c.ControlPlane == "" || c.InboundPort == 0 {
		return Config{}, invalid("--meshservice, --control-plane and --inbound-port are required")
	}
	return c, nil
}

// parsePortArg reads NAME:PORT:PROTOCOL.
func parsePortArg(value string) (Port, error) {
	parts := strings.Split(value, ":")
	if len(parts) != 3 {
		return Port{}, invalid("--port %q is not NAME:PORT:PROTOCOL", value)
	}
	if !dnsLabel.MatchString(parts[0]) {
		return Port{}, invalid("--port name %q is not a DNS label", parts[0])
	}
	port, err := parsePort(parts[1])
	if err != nil {
		return Port{}, invalid("--port %s: %v", parts[0], err)
	}
	if !protocols[parts[2]] {
		return Port{}, invalid("--port %s: protocol %q is not HTTP, HTTP2, GRPC or TCP", parts[0], parts[2])
	}
	return Port{Name: parts[0], Port: port, Protocol: parts[2]}, nil
}

// parseUpstreamArg reads MESHSERVICE.NAMESPACE:PORT-NAME:LOCAL-PORT.
func parseUpstreamArg(value string) (Upstream, error) {
	parts := strings.Split(value, ":")
	if len(parts) != 3 {
		return Upstream{}, invalid("--upstream %q is not MESHSERVICE.NAMESPACE:PORT-NAME:LOCAL-PORT", value)
	}
	name, namespace, ok := strings.Cut(parts[0], ".")
	if !ok || !dnsLabel.MatchString(name) || !dnsLabel.MatchString(namespace) {
		return Upstream{}, invalid("--upstream %q: %q is not MESHSERVICE.NAMESPACE", value, parts[0])
	}
	if !dnsLabel.MatchString(parts[1]) {
		return Upstream{}, invalid("--upstream %q: port name %q is not a DNS label", value, parts[1])
	}
	local, err := parsePort(parts[2])
	if err != nil {
		return Upstream{}, invalid("--upstream %q: %v", value, err)
	}
	return Upstream{MeshService: name, Namespace: namespace, Port: parts[1], LocalPort: local}, nil
}

func parsePort(s string) (int, error) {
	port, err := strconv.Atoi(s)
	if err != nil || port < 1 || port > 65535 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return port, nil
}

func splitHostPort(s string) (string, int, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return "", 0, errors.New("not host:port")
	}
	port, err := parsePort(s[i+1:])
	return s[:i], port, err
}

// Route returns the inbound port a TLS connection with server name sni is for:
// <port-name>.<meshservice>.<namespace> of this proxy's MeshService. Anything else is not ours.
func (c Config) Route(sni, namespace string) (Port, bool) {
	portName, rest, ok := strings.Cut(sni, ".")
	if !ok || rest != c.MeshService+"."+namespace {
		return Port{}, false
	}
	for _, p := range c.Ports {
		if p.Name == portName {
			return p, true
		}
	}
	return Port{}, false
}
