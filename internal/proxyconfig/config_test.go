package proxyconfig_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/proxyconfig"
	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
)

// The proxy reads exactly what the injector writes.
func TestParseReadsWhatTheInjectorRenders(t *testing.T) {
	ms := gen.MeshService("checkout", gen.MeshServiceMeta(gen.SetNamespace("shop")), func(ms *meshv1alpha1.MeshService) {
		ms.Spec.MTLS.Mode = meshv1alpha1.MTLSPermissive
		ms.Spec.Ports = []meshv1alpha1.MeshServicePort{{Name: "http", Port: 8080, Protocol: meshv1alpha1.ProtocolHTTP}, {Name: "grpc", Port: 9090}}
		ms.Spec.Upstreams = []meshv1alpha1.Upstream{{MeshService: "payments.finance", Port: "grpc", LocalPort: 7001}, {MeshService: "web", Port: "http", LocalPort: 7002}}
	})
	version := gen.SidecarVersion("v1", "1.0.0", func(v *meshv1alpha1.SidecarVersion) { v.Spec.Args = []string{"--log-level=debug", "-v"} })
	opts := sidecar.DefaultOptions()

	c, err := proxyconfig.Parse(sidecar.ProxyArgs(ms, version, opts))
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%s %s %d %s %v %v %v", c.MeshService, c.ControlPlane, c.InboundPort, c.MTLSMode, c.Ports, c.Upstreams, c.Extra)
	want := fmt.Sprintf("checkout %s %d PERMISSIVE [{http 8080 HTTP} {grpc 9090 TCP}] [{payments finance grpc 7001} {web shop http 7002}] [--log-level=debug -v]",
		opts.ControlPlaneAddress, sidecar.InboundPort)
	if got != want {
		t.Errorf("Parse(ProxyArgs()) =\n%s\nwant\n%s", got, want)
	}
	if sni := c.Upstreams[0].SNI(); sni != "grpc.payments.finance" {
		t.Errorf("upstream SNI = %s", sni)
	}
}

func TestParseRefusesWhatItCannotServe(t *testing.T) {
	base := []string{"--meshservice=web", "--control-plane=cp.meshlift-system.svc:15012", "--inbound-port=15006"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"required arguments are missing", []string{"--meshservice=web"}, "are required"},
		{"a MeshService name that is not a DNS label", append(base, "--meshservice=Web_1"), "not a DNS label"},
		{"a control plane without a port", append(base, "--control-plane=cp"), "not host:port"},
		{"an unknown mTLS mode", append(base, "--mtls-mode=OFF"), "STRICT or PERMISSIVE"},
		{"a port argument with two fields", append(base, "--port=http:8080"), "NAME:PORT:PROTOCOL"},
		{"port 0", append(base, "--port=http:0:HTTP"), "from 1 to 65535"},
		{"an unknown protocol", append(base, "--port=dns:53:UDP"), "not HTTP, HTTP2, GRPC or TCP"},
		{"a port named twice", append(base, "--port=http:80:HTTP", "--port=http:81:HTTP"), "given twice"},
		{"an upstream without a namespace", append(base, "--upstream=web:http:7001"), "not MESHSERVICE.NAMESPACE"},
		{"two upstreams on one local port", append(base, "--upstream=a.ns:http:7001", "--upstream=b.ns:http:7001"), "used by two upstreams"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := proxyconfig.Parse(tt.args)
			if !errors.Is(err, proxyconfig.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse() error = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

func TestRouteAcceptsOnlyThisMeshServicesPorts(t *testing.T) {
	c, err := proxyconfig.Parse([]string{"--meshservice=web", "--control-plane=cp:1", "--inbound-port=15006",
		"--port=http:8080:HTTP", "--port=admin-api:9000:GRPC"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		sni  string
		want int // 0: refused
	}{
		{"http.web.shop", 8080},
		{"admin-api.web.shop", 9000},
		{"metrics.web.shop", 0},
		{"http.web.other", 0},
		{"http.webx.shop", 0},
		{"http.web.shop.evil.example", 0},
		{"web.shop", 0},
		{"", 0},
	}
	for _, tt := range tests {
		port, ok := c.Route(tt.sni, "shop")
		if (tt.want == 0) == ok || (ok && port.Port != tt.want) {
			t.Errorf("Route(%q) = %v, %v; want port %d", tt.sni, port, ok, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("--meshservice=web\x00--control-plane=cp:15012\x00--inbound-port=15006\x00--port=http:8080:HTTP\x00--upstream=a.b:c:7001")
	f.Add("--port=::::\x00--upstream=.:x:99999999999")
	f.Fuzz(func(t *testing.T, joined string) {
		c, err := proxyconfig.Parse(strings.Split(joined, "\x00"))
		if err != nil {
			if !errors.Is(err, proxyconfig.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		for _, p := range c.Ports {
			if p.Port < 1 || p.Port > 65535 {
				t.Fatalf("accepted port %d", p.Port)
			}
		}
	})
}
