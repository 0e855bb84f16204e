package capture

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Ports and identities of the injected proxy (internal/sidecar owns them; config_test.go checks
// that both packages agree, so this package does not have to import the injector).
const (
	// DefaultInboundPort is the proxy's inbound listener (sidecar.InboundPort). Captured inbound
	// connections go to the same listener the mTLS clients dial: it already tells TLS from
	// plaintext, refuses plaintext under STRICT, and will route captured connections by their
	// original destination port (origdst.OriginalDst), so capture needs no port of its own.
	DefaultInboundPort uint16 = 15006
	// DefaultOutboundPort is where captured outbound connections go: the proxy's capture
	// listeners on 127.0.0.1 and ::1, where REDIRECT sends locally generated connections
	// (proxy.OutboundCapturePort).
	DefaultOutboundPort uint16 = 15007
	// DefaultProxyUID is the user (and group) the proxy runs as, the RunAsUser the injector
	// sets; the proxy's own connections are never captured. It is not 65532, the "nonroot" user
	// of distroless and of many app images: an app running as the proxy's user would bypass
	// outbound capture.
	DefaultProxyUID uint32 = 15532
	// DNSPort is never captured outbound, so name resolution does not depend on the proxy.
	DNSPort uint16 = 53
	// DefaultAppProbePort is the proxy's listener for the kubelet's rewritten probes of the
	// application (proxyconfig.AppProbePort): never captured, so the kubelet reaches it.
	DefaultAppProbePort uint16 = 15020
)

// adminPorts are the admin ports of the two slots (sidecar.AdminPort(1) and AdminPort(2)).
var adminPorts = []uint16{15000, 15001}

// Pod annotations that drive capture. The injector sets AnnotationCapture on the pods it
// injects; the exclusions are the user's.
const (
	// AnnotationCapture lists the directions to capture: "inbound", "outbound" or
	// "inbound,outbound" (any order, spaces allowed). "none", an empty value or no annotation
	// means no capture: the CNI plugin leaves the pod alone.
	AnnotationCapture = "meshlift.io/capture"
	// AnnotationExcludeInboundPorts lists app ports whose inbound connections bypass the
	// proxy, as comma-separated port numbers ("8081,9090"). Connections to them are not
	// protected by STRICT mTLS.
	AnnotationExcludeInboundPorts = "meshlift.io/exclude-inbound-ports"
	// AnnotationExcludeOutboundPorts lists destination ports the app reaches directly,
	// comma-separated ("5432,6379"). Port 53 is always excluded.
	AnnotationExcludeOutboundPorts = "meshlift.io/exclude-outbound-ports"
	// AnnotationExcludeOutboundCIDRs lists destination networks the app reaches directly,
	// comma-separated CIDRs or addresses ("10.0.0.0/8,fd00::/8,192.0.2.10").
	AnnotationExcludeOutboundCIDRs = "meshlift.io/exclude-outbound-cidrs"
)

// Values of AnnotationCapture.
const (
	CaptureInbound  = "inbound"
	CaptureOutbound = "outbound"
	CaptureNone     = "none"
)

// Config says what is captured in one pod's network namespace.
type Config struct {
	// Inbound redirects TCP connections that arrive for the pod's ports to InboundPort.
	Inbound bool
	// Outbound redirects the app's TCP connections to other hosts to OutboundPort.
	Outbound bool
	// InboundPort and OutboundPort are the proxy's capture listeners.
	InboundPort  uint16
	OutboundPort uint16
	// ProxyUID owns the proxy's sockets; its connections are not captured.
	ProxyUID uint32
	// ProxyPorts are the ports the proxy listens on; connections to them are never captured,
	// in either direction (InboundPort and OutboundPort are added by NewRuleset in any case).
	ProxyPorts []uint16
	// ExcludeInboundPorts, ExcludeOutboundPorts and ExcludeOutboundCIDRs are not captured.
	// Sorted, without duplicates (ParseAnnotations produces them that way).
	ExcludeInboundPorts  []uint16
	ExcludeOutboundPorts []uint16
	ExcludeOutboundCIDRs []netip.Prefix
}

// DefaultConfig is the proxy's ports and user with nothing captured yet.
func DefaultConfig() Config {
	return Config{
		InboundPort:  DefaultInboundPort,
		OutboundPort: DefaultOutboundPort,
		ProxyUID:     DefaultProxyUID,
		ProxyPorts:   []uint16{adminPorts[0], adminPorts[1], DefaultInboundPort, DefaultOutboundPort, DefaultAppProbePort},
	}
}

// Enabled reports whether anything is captured.
func (c Config) Enabled() bool { return c.Inbound || c.Outbound }

// Marked reports whether the pod's annotations ask for capture in any direction. It does not
// validate the other annotations: ParseAnnotations does.
func Marked(annotations map[string]string) bool {
	value := strings.TrimSpace(annotations[AnnotationCapture])
	return value != "" && value != CaptureNone
}

// ParseAnnotations is DefaultConfig with the pod's capture annotations applied. Annotations
// are user input: every malformed value is an error that names the annotation and the fix.
func ParseAnnotations(annotations map[string]string) (Config, error) {
	c := DefaultConfig()
	var errs []error
	var err error
	if c.Inbound, c.Outbound, err = parseDirections(annotations[AnnotationCapture]); err != nil {
		errs = append(errs, err)
	}
	if c.ExcludeInboundPorts, err = parsePorts(AnnotationExcludeInboundPorts, annotations[AnnotationExcludeInboundPorts]); err != nil {
		errs = append(errs, err)
	}
	if c.ExcludeOutboundPorts, err = parsePorts(AnnotationExcludeOutboundPorts, annotations[AnnotationExcludeOutboundPorts]); err != nil {
		errs = append(errs, err)
	}
	if c.ExcludeOutboundCIDRs, err = parseCIDRs(annotations[AnnotationExcludeOutboundCIDRs]); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

// Annotations renders the capture part of c as pod annotations, in the canonical form
// ParseAnnotations reads back to the same Config (the proxy's ports and user are not
// annotations). Empty lists are left out.
func (c Config) Annotations() map[string]string {
	var directions []string
	if c.Inbound {
		directions = append(directions, CaptureInbound)
	}
	if c.Outbound {
		directions = append(directions, CaptureOutbound)
	}
	out := map[string]string{AnnotationCapture: CaptureNone}
	if len(directions) > 0 {
		out[AnnotationCapture] = strings.Join(directions, ",")
	}
	if len(c.ExcludeInboundPorts) > 0 {
		out[AnnotationExcludeInboundPorts] = joinPorts(c.ExcludeInboundPorts, ",")
	}
	if len(c.ExcludeOutboundPorts) > 0 {
		out[AnnotationExcludeOutboundPorts] = joinPorts(c.ExcludeOutboundPorts, ",")
	}
	if len(c.ExcludeOutboundCIDRs) > 0 {
		cidrs := make([]string, len(c.ExcludeOutboundCIDRs))
		for i, p := range c.ExcludeOutboundCIDRs {
			cidrs[i] = p.String()
		}
		out[AnnotationExcludeOutboundCIDRs] = strings.Join(cidrs, ",")
	}
	return out
}

// Validate reports settings the rules cannot express or that would capture the proxy itself.
func (c Config) Validate() error {
	var errs []error
	if c.InboundPort == 0 {
		errs = append(errs, errors.New("capture config: the inbound port must not be 0"))
	}
	if c.OutboundPort == 0 {
		errs = append(errs, errors.New("capture config: the outbound port must not be 0"))
	}
	if c.InboundPort != 0 && c.InboundPort == c.OutboundPort {
		errs = append(errs, fmt.Errorf("capture config: inbound and outbound ports are both %d; they must differ", c.InboundPort))
	}
	if c.Outbound && c.ProxyUID == 0 {
		errs = append(errs, errors.New("capture config: the proxy UID must not be 0 (root) when outbound capture is on, or nothing run as root would be captured"))
	}
	for _, p := range c.ExcludeOutboundCIDRs {
		if !p.IsValid() || p != p.Masked() || p.Addr().Zone() != "" {
			errs = append(errs, fmt.Errorf("capture config: excluded CIDR %s must be a valid network address without host bits or zone", p))
		}
	}
	for _, list := range [][]uint16{c.ProxyPorts, c.ExcludeInboundPorts, c.ExcludeOutboundPorts} {
		if slices.Contains(list, 0) {
			errs = append(errs, errors.New("capture config: port 0 is not a port; remove it from the proxy and excluded ports"))
			break
		}
	}
	return errors.Join(errs...)
}

func parseDirections(value string) (inbound, outbound bool, err error) {
	value = strings.TrimSpace(value)
	if value == "" || value == CaptureNone {
		return false, false, nil
	}
	hint := fmt.Sprintf("use %q, %q, %q or %q", CaptureInbound, CaptureOutbound, CaptureInbound+","+CaptureOutbound, CaptureNone)
	for item := range strings.SplitSeq(value, ",") {
		item = strings.TrimSpace(item)
		var seen *bool
		switch item {
		case CaptureInbound:
			seen = &inbound
		case CaptureOutbound:
			seen = &outbound
		default:
			return false, false, fmt.Errorf("annotation %s=%q: %q is not a direction; %s", AnnotationCapture, value, item, hint)
		}
		if *seen {
			return false, false, fmt.Errorf("annotation %s=%q names %q twice; %s", AnnotationCapture, value, item, hint)
		}
		*seen = true
	}
	return inbound, outbound, nil
}

// parsePorts reads comma-separated ports 1-65535; the result is sorted and deduplicated.
func parsePorts(annotation, value string) ([]uint16, error) {
	if strings.TrimSpace(value) == "" {
		return nil, nil
	}
	var ports []uint16
	for item := range strings.SplitSeq(value, ",") {
		item = strings.TrimSpace(item)
		port, err := strconv.ParseUint(item, 10, 16)
		if err != nil || port == 0 {
			return nil, fmt.Errorf("annotation %s=%q: %q is not a port number (1-65535); use comma-separated ports such as \"8081,9090\"",
				annotation, value, item)
		}
		ports = append(ports, uint16(port))
	}
	slices.Sort(ports)
	return slices.Compact(ports), nil
}

// parseCIDRs reads comma-separated CIDRs or addresses (an address is its host network); the
// result is sorted and deduplicated.
func parseCIDRs(value string) ([]netip.Prefix, error) {
	if strings.TrimSpace(value) == "" {
		return nil, nil
	}
	var prefixes []netip.Prefix
	for item := range strings.SplitSeq(value, ",") {
		item = strings.TrimSpace(item)
		prefix, err := parseCIDR(item)
		if err != nil {
			return nil, fmt.Errorf("annotation %s=%q: %w", AnnotationExcludeOutboundCIDRs, value, err)
		}
		prefixes = append(prefixes, prefix)
	}
	slices.SortFunc(prefixes, comparePrefixes)
	return slices.Compact(prefixes), nil
}

func parseCIDR(item string) (netip.Prefix, error) {
	if !strings.Contains(item, "/") {
		addr, err := netip.ParseAddr(item)
		if err != nil || addr.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR or an IP address; use forms such as \"10.0.0.0/8\", \"fd00::/8\" or \"192.0.2.10\"", item)
		}
		return netip.PrefixFrom(addr, addr.BitLen()), nil
	}
	prefix, err := netip.ParsePrefix(item)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR; use forms such as \"10.0.0.0/8\" or \"fd00::/8\"", item)
	}
	if prefix != prefix.Masked() {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %q?", item, prefix.Masked().String())
	}
	return prefix, nil
}

// comparePrefixes orders IPv4 before IPv6, then by address, then by length.
func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func joinPorts(ports []uint16, sep string) string {
	items := make([]string, len(ports))
	for i, p := range ports {
		items[i] = strconv.Itoa(int(p))
	}
	return strings.Join(items, sep)
}
