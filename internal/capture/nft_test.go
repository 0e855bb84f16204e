package capture

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/meshlift/meshlift/internal/capture/origdst"

	"github.com/meshlift/meshlift/internal/capture/netnstest"
)

const (
	podIPv4      = "10.99.0.2"
	podIPv6      = "fd99::2"
	peerIPv4     = "10.99.0.1"
	peerIPv6     = "fd99::1"
	excludedPeer = "10.99.0.3" // a second address of the peer, excluded by CIDR
	appUID       = 1000
	appPort      = 8080
	excludedPort = 8081
	peerPort     = 9090
	excludedOut  = 9091
)

// arrival is where a test connection ended up.
type arrival struct {
	listener    string
	originalDst netip.AddrPort
	err         error
}

// tracker serves test listeners: each accepted connection sends a token line, and the tracker
// reports on which listener the token arrived and with which original destination.
type tracker struct {
	t       *testing.T
	mu      sync.Mutex
	waiting map[string]chan arrival
	next    atomic.Int64
}

func newTracker(t *testing.T) *tracker {
	return &tracker{t: t, waiting: map[string]chan arrival{}}
}

func (tr *tracker) serve(name string, ln net.Listener) {
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				token, err := bufio.NewReader(conn).ReadString('\n')
				if err != nil {
					return
				}
				dst, err := origdst.OriginalDst(conn)
				tr.mu.Lock()
				ch := tr.waiting[strings.TrimSpace(token)]
				tr.mu.Unlock()
				if ch != nil {
					ch <- arrival{listener: name, originalDst: dst, err: err}
				}
			}()
		}
	}()
}

// send dials address from ns (as fsUID when >= 0) and reports where the connection arrived.
func (tr *tracker) send(ns *netnstest.NetNS, fsUID int, address string) arrival {
	tr.t.Helper()
	token := fmt.Sprintf("token-%d", tr.next.Add(1))
	ch := make(chan arrival, 1)
	tr.mu.Lock()
	tr.waiting[token] = ch
	tr.mu.Unlock()
	conn, err := ns.Dial(fsUID, "tcp", address)
	if err != nil {
		tr.t.Fatalf("dial %s: %v", address, err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "%s\n", token); err != nil {
		tr.t.Fatalf("write to %s: %v", address, err)
	}
	select {
	case a := <-ch:
		return a
	case <-time.After(5 * time.Second):
		tr.t.Fatalf("the connection to %s arrived on no test listener", address)
		return arrival{}
	}
}

// testNetwork is a pod namespace linked to a peer namespace, with listeners in both.
type testNetwork struct {
	pod, peer *netnstest.NetNS
	tracker   *tracker
}

func newTestNetwork(t *testing.T) *testNetwork {
	pod, peer := netnstest.New(t), netnstest.New(t)
	netnstest.Link(t, pod, "eth0", []string{podIPv4 + "/24", podIPv6 + "/64"},
		peer, "eth0", []string{peerIPv4 + "/24", excludedPeer + "/24", peerIPv6 + "/64"})
	tr := newTracker(t)
	for name, address := range map[string]string{
		"inbound":   fmt.Sprintf(":%d", DefaultInboundPort), // dual stack, as the proxy binds it
		"outbound":  fmt.Sprintf("127.0.0.1:%d", DefaultOutboundPort),
		"outbound6": fmt.Sprintf("[::1]:%d", DefaultOutboundPort),
		"admin":     ":15000",
		"app":       fmt.Sprintf(":%d", appPort),
		"excluded":  fmt.Sprintf(":%d", excludedPort),
	} {
		tr.serve(name, pod.Listen(t, "tcp", address))
	}
	for name, address := range map[string]string{
		"peer":          fmt.Sprintf(":%d", peerPort),
		"peer-excluded": fmt.Sprintf(":%d", excludedOut),
		"peer-dns":      ":53",
	} {
		tr.serve(name, peer.Listen(t, "tcp", address))
	}
	return &testNetwork{pod: pod, peer: peer, tracker: tr}
}

func testConfig() Config {
	c := DefaultConfig()
	c.Inbound, c.Outbound = true, true
	c.ExcludeInboundPorts = []uint16{excludedPort}
	c.ExcludeOutboundPorts = []uint16{excludedOut}
	c.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix(excludedPeer + "/32")}
	return c
}

func mustRuleset(t *testing.T, c Config) Ruleset {
	t.Helper()
	rs, err := NewRuleset(c)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, fmt.Sprint(port)) }

func TestCaptureRedirectsRealTraffic(t *testing.T) {
	n := newTestNetwork(t)
	if err := Apply(n.pod.Path, mustRuleset(t, testConfig())); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	tests := []struct {
		name         string
		from         *netnstest.NetNS
		fsUID        int
		address      string
		wantListener string
		wantOrigDst  string // empty: not checked
	}{
		{"an IPv4 connection to an app port goes to the inbound listener", n.peer, -1, hostPort(podIPv4, appPort), "inbound", hostPort(podIPv4, appPort)},
		{"an IPv6 connection to an app port goes to the inbound listener", n.peer, -1, hostPort(podIPv6, appPort), "inbound", hostPort(podIPv6, appPort)},
		{"a connection to an excluded inbound port reaches the app", n.peer, -1, hostPort(podIPv4, excludedPort), "excluded", ""},
		{"a connection to the admin port reaches the proxy's admin listener", n.peer, -1, hostPort(podIPv4, 15000), "admin", ""},
		{"a connection to the inbound port is not redirected twice", n.peer, -1, hostPort(podIPv4, int(DefaultInboundPort)), "inbound", hostPort(podIPv4, int(DefaultInboundPort))},
		{"a connection to localhost reaches the app directly", n.pod, appUID, hostPort("127.0.0.1", appPort), "app", ""},
		{"a connection to the pod's own address reaches the app directly", n.pod, appUID, hostPort(podIPv4, appPort), "app", ""},
		{"an app's IPv4 connection goes to the outbound listener", n.pod, appUID, hostPort(peerIPv4, peerPort), "outbound", hostPort(peerIPv4, peerPort)},
		{"an app's IPv6 connection goes to the outbound listener on ::1", n.pod, appUID, hostPort(peerIPv6, peerPort), "outbound6", hostPort(peerIPv6, peerPort)},
		{"a root process's connection is captured too", n.pod, -1, hostPort(peerIPv4, peerPort), "outbound", hostPort(peerIPv4, peerPort)},
		{"the proxy's own connection is not captured", n.pod, int(DefaultProxyUID), hostPort(peerIPv4, peerPort), "peer", ""},
		{"the proxy's own IPv6 connection is not captured", n.pod, int(DefaultProxyUID), hostPort(peerIPv6, peerPort), "peer", ""},
		{"a connection to an excluded outbound port is not captured", n.pod, appUID, hostPort(peerIPv4, excludedOut), "peer-excluded", ""},
		{"a connection to an excluded CIDR is not captured", n.pod, appUID, hostPort(excludedPeer, peerPort), "peer", ""},
		{"DNS over TCP is not captured", n.pod, appUID, hostPort(peerIPv4, 53), "peer-dns", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := n.tracker.send(tt.from, tt.fsUID, tt.address)
			if got.listener != tt.wantListener {
				t.Fatalf("connection to %s arrived on %q, want %q", tt.address, got.listener, tt.wantListener)
			}
			if tt.wantOrigDst == "" {
				return
			}
			if got.err != nil {
				t.Fatalf("OriginalDst: %v", got.err)
			}
			if got.originalDst.String() != tt.wantOrigDst {
				t.Errorf("OriginalDst = %s, want %s", got.originalDst, tt.wantOrigDst)
			}
		})
	}

	t.Run("after Remove nothing is redirected", func(t *testing.T) {
		if err := Remove(n.pod.Path); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		if got := n.tracker.send(n.peer, -1, hostPort(podIPv4, appPort)); got.listener != "app" {
			t.Errorf("inbound connection arrived on %q after Remove, want app", got.listener)
		}
		if got := n.tracker.send(n.pod, appUID, hostPort(peerIPv4, peerPort)); got.listener != "peer" {
			t.Errorf("outbound connection arrived on %q after Remove, want peer", got.listener)
		}
	})
}

func TestInboundOnlyLeavesOutboundAlone(t *testing.T) {
	n := newTestNetwork(t)
	c := testConfig()
	c.Outbound = false
	if err := Apply(n.pod.Path, mustRuleset(t, c)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got := n.tracker.send(n.peer, -1, hostPort(podIPv4, appPort)); got.listener != "inbound" {
		t.Errorf("inbound connection arrived on %q, want inbound", got.listener)
	}
	if got := n.tracker.send(n.pod, appUID, hostPort(peerIPv4, peerPort)); got.listener != "peer" {
		t.Errorf("outbound connection arrived on %q, want peer (outbound capture is off)", got.listener)
	}
}

func ourTables(t *testing.T, ns *netnstest.NetNS) (ours int, names []string) {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := conn.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, table := range tables {
		names = append(names, table.Name)
		if table.Family == nftables.TableFamilyINet && table.Name == TableName {
			ours++
		}
	}
	return ours, names
}

// addForeignTable creates a table that is not ours, as another plugin would.
func addForeignTable(t *testing.T, ns *netnstest.NetNS) {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	table := conn.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "someone-else"})
	conn.AddChain(&nftables.Chain{Name: "filter", Table: table})
	if err := conn.Flush(); err != nil {
		t.Fatalf("failed to add a foreign table: %v", err)
	}
}

func TestApplyIsIdempotentAndRemoveLeavesNothingOfOurs(t *testing.T) {
	ns := netnstest.New(t)
	addForeignTable(t, ns)
	rs := mustRuleset(t, testConfig())
	for range 2 {
		if err := Apply(ns.Path, rs); err != nil {
			t.Fatalf("Apply: %v", err)
		}
	}
	if ours, names := ourTables(t, ns); ours != 1 || len(names) != 2 {
		t.Fatalf("after applying twice: %d tables of ours, tables %v; want 1 and [someone-else meshlift]", ours, names)
	}
	if err := Check(ns.Path, rs); err != nil {
		t.Fatalf("Check after applying twice: %v", err)
	}
	for range 2 {
		if err := Remove(ns.Path); err != nil {
			t.Fatalf("Remove: %v", err)
		}
	}
	if ours, names := ourTables(t, ns); ours != 0 || len(names) != 1 || names[0] != "someone-else" {
		t.Fatalf("after Remove: %d tables of ours, tables %v; want 0 and [someone-else]", ours, names)
	}
	if err := Check(ns.Path, rs); !errors.Is(err, ErrNotApplied) {
		t.Errorf("Check after Remove = %v, want ErrNotApplied", err)
	}
}

func TestCheckDetectsDrift(t *testing.T) {
	rs := mustRuleset(t, testConfig())
	tests := []struct {
		name    string
		tamper  func(t *testing.T, conn *nftables.Conn, table *nftables.Table)
		wantErr error
		wantMsg string
	}{
		{
			name: "a deleted rule",
			tamper: func(t *testing.T, conn *nftables.Conn, table *nftables.Table) {
				rules, err := conn.GetRules(table, &nftables.Chain{Name: PreroutingChain, Table: table})
				if err != nil {
					t.Fatal(err)
				}
				if err := conn.DelRule(rules[len(rules)-1]); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrDrift, wantMsg: "chain prerouting has 4 rules, expected 5",
		},
		{
			name: "a rule added in front",
			tamper: func(t *testing.T, conn *nftables.Conn, table *nftables.Table) {
				conn.InsertRule(&nftables.Rule{Table: table, Chain: &nftables.Chain{Name: OutputChain, Table: table},
					Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
			},
			wantErr: ErrDrift, wantMsg: "chain output has",
		},
		{
			name: "a deleted chain",
			tamper: func(t *testing.T, conn *nftables.Conn, table *nftables.Table) {
				conn.DelChain(&nftables.Chain{Name: OutputChain, Table: table})
			},
			wantErr: ErrDrift, wantMsg: "chain output is missing",
		},
		{
			name: "a foreign chain in our table",
			tamper: func(t *testing.T, conn *nftables.Conn, table *nftables.Table) {
				conn.AddChain(&nftables.Chain{Name: "extra", Table: table})
			},
			wantErr: ErrDrift, wantMsg: "unexpected chain extra",
		},
		{
			name: "a deleted table",
			tamper: func(t *testing.T, conn *nftables.Conn, table *nftables.Table) {
				conn.DelTable(table)
			},
			wantErr: ErrNotApplied,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := netnstest.New(t)
			if err := Apply(ns.Path, rs); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			conn, err := nftables.New(nftables.WithNetNSFd(ns.Fd()))
			if err != nil {
				t.Fatal(err)
			}
			tt.tamper(t, conn, ourTable())
			if err := conn.Flush(); err != nil {
				t.Fatalf("tamper: %v", err)
			}
			err = Check(ns.Path, rs)
			if !errors.Is(err, tt.wantErr) || !strings.Contains(fmt.Sprint(err), tt.wantMsg) {
				t.Fatalf("Check = %v, want %v containing %q", err, tt.wantErr, tt.wantMsg)
			}
			if err := Apply(ns.Path, rs); err != nil {
				t.Fatalf("Apply after drift: %v", err)
			}
			if err := Check(ns.Path, rs); err != nil {
				t.Errorf("Check after re-applying: %v", err)
			}
		})
	}

	t.Run("rules of another config", func(t *testing.T) {
		ns := netnstest.New(t)
		for _, edit := range []func(*Config){
			func(c *Config) { c.ExcludeInboundPorts = []uint16{excludedPort, 9999} },
			func(c *Config) { c.OutboundPort = 15008 },
			func(c *Config) { c.ProxyUID = 1337 },
			func(c *Config) { c.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")} },
		} {
			other := testConfig()
			edit(&other)
			if err := Apply(ns.Path, mustRuleset(t, other)); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if err := Check(ns.Path, rs); !errors.Is(err, ErrDrift) {
				t.Errorf("Check of rules for %+v = %v, want ErrDrift", other, err)
			}
		}
	})
}

func TestNamespacePathErrors(t *testing.T) {
	rs := mustRuleset(t, testConfig())
	missing := filepath.Join(t.TempDir(), "no-such-netns")
	if err := Check(missing, rs); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Check(%s) = %v, want an error wrapping fs.ErrNotExist", missing, err)
	}
	if err := Remove(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Remove(%s) = %v, want an error wrapping fs.ErrNotExist", missing, err)
	}
	regular := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Apply(regular, rs); err == nil || !strings.Contains(err.Error(), "is not a network namespace") {
		t.Errorf("Apply(regular file) = %v, want \"is not a network namespace\"", err)
	}
}
