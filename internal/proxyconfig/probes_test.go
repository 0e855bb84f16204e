package proxyconfig_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/meshlift/meshlift/internal/proxyconfig"
)

func TestAppProbePathRoundTrips(t *testing.T) {
	for _, kind := range []string{proxyconfig.ProbeLiveness, proxyconfig.ProbeReadiness, proxyconfig.ProbeStartup} {
		path := proxyconfig.AppProbePath("web-1", kind)
		container, gotKind, ok := proxyconfig.ParseAppProbePath(path)
		if !ok || container != "web-1" || gotKind != kind {
			t.Errorf("ParseAppProbePath(%q) = %q, %q, %v; want web-1, %s, true", path, container, gotKind, ok, kind)
		}
	}
}

func TestParseAppProbePathRefusesOtherPaths(t *testing.T) {
	for _, path := range []string{
		"/", "/app-health", "/app-health/", "/app-health/web", "/app-health/web/", "/app-health/web/ready",
		"/app-health/Web/liveness", "/app-health/web/liveness/x", "/app-health//liveness", "/healthz",
		"/app-health/web_1/liveness", "app-health/web/liveness", "/app-health/-web/readiness",
	} {
		if container, kind, ok := proxyconfig.ParseAppProbePath(path); ok {
			t.Errorf("ParseAppProbePath(%q) = %q, %q, true; want refused", path, container, kind)
		}
	}
}

func TestOriginalProbesRoundTripThroughEncode(t *testing.T) {
	probes := proxyconfig.OriginalProbes{
		"web": {
			Liveness: &proxyconfig.AppProbe{HTTPGet: &proxyconfig.HTTPGetProbe{
				Path: "/healthz?full=1", Port: 8080, Scheme: "HTTPS", Host: "web.example",
				Headers: []proxyconfig.HTTPHeader{{Name: "X-Probe", Value: "liveness"}, {Name: "Accept", Value: "*/*"}},
			}, TimeoutSeconds: 3},
			Readiness: &proxyconfig.AppProbe{TCPSocket: &proxyconfig.TCPSocketProbe{Port: 5432}},
		},
		"sidecar-helper": {Startup: &proxyconfig.AppProbe{HTTPGet: &proxyconfig.HTTPGetProbe{Port: 9000}}},
	}
	encoded, err := probes.Encode()
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	got, err := proxyconfig.ParseOriginalProbes(encoded)
	if err != nil {
		t.Fatalf("ParseOriginalProbes(%s): %v", encoded, err)
	}
	if !reflect.DeepEqual(got, probes) {
		t.Errorf("round trip changed the probes:\n got %#v\nwant %#v", got, probes)
	}
	if p := got["web"].Probe(proxyconfig.ProbeStartup); p != nil {
		t.Errorf("web has no startup probe, Probe returned %#v", p)
	}
	if p := got["web"].Probe("other"); p != nil {
		t.Errorf("Probe of an unknown kind returned %#v", p)
	}
}

func TestParseOriginalProbesOfAnEmptyValueIsNoProbes(t *testing.T) {
	got, err := proxyconfig.ParseOriginalProbes("")
	if err != nil || len(got) != 0 {
		t.Errorf("ParseOriginalProbes(\"\") = %v, %v; want no probes", got, err)
	}
}

func TestParseOriginalProbesRefusesWithAReason(t *testing.T) {
	tests := []struct {
		name   string
		value  string
		reason string
	}{
		{"refuses what is not JSON", `web: liveness`, "is not the JSON the injector writes"},
		{"refuses a field the injector does not write", `{"web":{"liveness":{"exec":{"command":["true"]}}}}`, "is not the JSON the injector writes"},
		{"refuses data after the object", `{} {}`, "has data after its JSON object"},
		{"refuses a container name that is not a DNS label", `{"Web":{}}`, `names container "Web"`},
		{"refuses a probe with neither httpGet nor tcpSocket", `{"web":{"liveness":{"timeoutSeconds":1}}}`, "needs exactly one of httpGet and tcpSocket"},
		{"refuses a probe with both httpGet and tcpSocket", `{"web":{"liveness":{"httpGet":{"port":80},"tcpSocket":{"port":80}}}}`, "needs exactly one of httpGet and tcpSocket"},
		{"refuses a negative timeout", `{"web":{"readiness":{"tcpSocket":{"port":80},"timeoutSeconds":-1}}}`, "timeoutSeconds -1 is not from 0 to 3600"},
		{"refuses a tcpSocket port out of range", `{"web":{"readiness":{"tcpSocket":{"port":70000}}}}`, "tcpSocket port 70000 is not from 1 to 65535"},
		{"refuses an httpGet without a port", `{"web":{"startup":{"httpGet":{"path":"/"}}}}`, "httpGet port 0 is not from 1 to 65535"},
		{"refuses a scheme other than HTTP and HTTPS", `{"web":{"liveness":{"httpGet":{"port":80,"scheme":"ftp"}}}}`, `httpGet scheme "ftp" is not HTTP or HTTPS`},
		{"refuses a relative path", `{"web":{"liveness":{"httpGet":{"port":80,"path":"healthz"}}}}`, "is not an absolute path"},
		{"refuses a path with a line break", `{"web":{"liveness":{"httpGet":{"port":80,"path":"/a\r\nX: y"}}}}`, "is not an absolute path"},
		{"refuses a host with a slash", `{"web":{"liveness":{"httpGet":{"port":80,"host":"a/b"}}}}`, "is not a host name"},
		{"refuses a header name that is not a token", `{"web":{"liveness":{"httpGet":{"port":80,"httpHeaders":[{"name":"X Y","value":"1"}]}}}}`, `httpGet header "X Y" is not a valid header`},
		{"refuses a header value with a line break", `{"web":{"liveness":{"httpGet":{"port":80,"httpHeaders":[{"name":"X","value":"1\nY: 2"}]}}}}`, `httpGet header "X" is not a valid header`},
		{"refuses more than 64 headers", `{"web":{"liveness":{"httpGet":{"port":80,"httpHeaders":[` + strings.Repeat(`{"name":"X","value":"1"},`, 64) + `{"name":"X","value":"1"}]}}}}`, "has 65 headers, more than 64"},
		{"refuses a value larger than the limit", `{"web":{}}` + strings.Repeat(" ", proxyconfig.MaxOriginalProbesSize), "more than 65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := proxyconfig.ParseOriginalProbes(tt.value)
			if err == nil {
				t.Fatalf("ParseOriginalProbes accepted %q as %#v", tt.value, got)
			}
			if !errors.Is(err, proxyconfig.ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.reason) || !strings.Contains(err.Error(), proxyconfig.OriginalProbesAnnotation) {
				t.Errorf("error %q does not name the annotation and say %q", err, tt.reason)
			}
		})
	}
}

func TestEncodeRefusesProbesLargerThanTheLimit(t *testing.T) {
	probes := proxyconfig.OriginalProbes{}
	header := proxyconfig.HTTPHeader{Name: "X", Value: strings.Repeat("v", 4096)}
	probe := &proxyconfig.AppProbe{HTTPGet: &proxyconfig.HTTPGetProbe{Port: 80, Headers: []proxyconfig.HTTPHeader{header, header, header, header, header}}}
	for _, name := range []string{"a", "b", "c", "d"} {
		probes[name] = proxyconfig.ContainerProbes{Liveness: probe}
	}
	if _, err := probes.Encode(); err == nil || !errors.Is(err, proxyconfig.ErrInvalid) {
		t.Errorf("Encode of %d containers with 20 KiB of headers each = %v, want an ErrInvalid error", len(probes), err)
	}
}

// FuzzParseOriginalProbes feeds arbitrary annotation values: the parser never panics, and what
// it accepts encodes to a value it reads back to the same probes.
func FuzzParseOriginalProbes(f *testing.F) {
	for _, seed := range []string{
		``,
		`{}`,
		`{"web":{"liveness":{"httpGet":{"path":"/healthz","port":8080,"scheme":"HTTPS","host":"h","httpHeaders":[{"name":"X","value":"1"}]},"timeoutSeconds":2}}}`,
		`{"web":{"readiness":{"tcpSocket":{"port":5432}},"startup":{"httpGet":{"port":1}}}}`,
		`{"web":{"liveness":{"httpGet":{"port":80},"tcpSocket":{"port":80}}}}`,
		`{"web":null}`,
		`{"web":{"liveness":null}}`,
		`[1,2]`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, value string) {
		probes, err := proxyconfig.ParseOriginalProbes(value)
		if err != nil {
			if !errors.Is(err, proxyconfig.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		encoded, err := probes.Encode()
		if err != nil {
			t.Fatalf("accepted %q but cannot encode it: %v", value, err)
		}
		again, err := proxyconfig.ParseOriginalProbes(encoded)
		if err != nil {
			t.Fatalf("accepted %q, encoded it as %q, and refuses that: %v", value, encoded, err)
		}
		if !reflect.DeepEqual(again, probes) {
			t.Fatalf("%q read back as %#v, want %#v", encoded, again, probes)
		}
	})
}
