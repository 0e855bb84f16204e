package proxyadmin_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshlift/meshlift/internal/proxyadmin"
)

func TestMayServe(t *testing.T) {
	var (
		loopback4 = netip.MustParseAddr("127.0.0.1")
		loopback8 = netip.MustParseAddr("127.8.9.10")
		loopback6 = netip.MustParseAddr("::1")
		mapped    = netip.MustParseAddr("::ffff:127.0.0.1")
		node      = netip.MustParseAddr("10.244.0.1")
		pod6      = netip.MustParseAddr("fd00::17")
		unknown   = netip.Addr{}
	)
	tests := []struct {
		name   string
		path   string
		remote netip.Addr
		want   bool
	}{
		{"the kubelet may probe /ready from the node", "/ready", node, true},
		{"the kubelet may probe /healthz from the node", "/healthz", node, true},
		{"/ready answers a peer whose address is unknown", "/ready", unknown, true},
		{"/stats answers the pod's loopback", "/stats", loopback4, true},
		{"/stats answers any 127/8 address", "/stats", loopback8, true},
		{"/stats answers the IPv6 loopback", "/stats", loopback6, true},
		{"/stats answers an IPv4-mapped loopback (a dual-stack listener)", "/stats", mapped, true},
		{"/stats is refused to another pod or the node", "/stats", node, false},
		{"/stats is refused to an IPv6 peer", "/stats", pod6, false},
		{"/stats is refused when the peer's address is unknown", "/stats", unknown, false},
		{"a future debug path is refused outside the pod", "/debug/pprof/", node, false},
		{"a path that cleans to /stats is not /ready", "/ready/../stats", node, false},
		{"a path with a trailing slash is not /ready", "/ready/", node, false},
		{"the root is refused outside the pod", "/", node, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := proxyadmin.MayServe(tt.path, tt.remote); got != tt.want {
				t.Fatalf("MayServe(%q, %v) = %v, want %v", tt.path, tt.remote, got, tt.want)
			}
		})
	}
}

// nonLoopbackAddr is an address of this machine outside the loopback: connecting to it from
// here makes a peer address the server sees as not loopback, as the kubelet's or another pod's.
func nonLoopbackAddr(t *testing.T) net.IP {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ipNet, ok := a.(*net.IPNet); ok && !ipNet.IP.IsLoopback() && ipNet.IP.To4() != nil && !ipNet.IP.IsLinkLocalUnicast() {
			return ipNet.IP
		}
	}
	t.Skip("needs a non-loopback IPv4 address on this machine (net.InterfaceAddrs found none)")
	return nil
}

// TestStatsAreServedOnTheLoopbackOnly serves the admin handler on every address, as the proxy
// does, and asks it over real connections from the loopback and from a non-loopback address.
func TestStatsAreServedOnTheLoopbackOnly(t *testing.T) {
	external := nonLoopbackAddr(t)
	state := proxyadmin.NewState("2.0.0", 1)
	state.SetCertificate(true)
	state.SetRole(proxyadmin.RoleActive)
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	server := &http.Server{Handler: state.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = server.Serve(l) }()
	t.Cleanup(func() { _ = server.Shutdown(context.Background()) })
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	fetch := func(host, path string) (int, string) {
		t.Helper()
		res, err := client.Get("http://" + net.JoinHostPort(host, port) + path)
		if err != nil {
			t.Fatalf("GET %s from %s: %v", path, host, err)
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		return res.StatusCode, string(body)
	}

	outside := external.String()
	for _, path := range []string{"/ready", "/healthz"} {
		if code, body := fetch(outside, path); code != http.StatusOK {
			t.Errorf("%s from %s = %d %q, want 200 (the kubelet's probe)", path, outside, code, body)
		}
	}
	for _, path := range []string{"/stats", "/debug/pprof/", "/ready/../stats", "/nothing"} {
		code, body := fetch(outside, path)
		if code != http.StatusForbidden || strings.Contains(body, "meshlift_proxy") {
			t.Errorf("%s from %s = %d %q, want 403 without metrics", path, outside, code, body)
		}
	}
	code, body := fetch("127.0.0.1", "/stats")
	if code != http.StatusOK || !strings.Contains(body, "meshlift_proxy_admin_refused_total 4") {
		t.Errorf("/stats from 127.0.0.1 = %d, want 200 counting the 4 refusals:\n%s", code, body)
	}
}
