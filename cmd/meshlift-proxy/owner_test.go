package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshlift/meshlift/internal/handoff"
	"github.com/meshlift/meshlift/internal/proxyadmin"
)

// logLines collects a logger's lines.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) add(prefix, args string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, prefix+" "+args)
}

func (l *logLines) find(substrings ...string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, line := range l.lines {
		for _, s := range substrings {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		return line
	}
	return ""
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// refusingOwner is an owner of slot 1 whose own UID is not this test process's: the kernel
// reports this process's real credentials for the test's connections (SO_PEERCRED is not
// faked), and the owner must take them for another UID's. The refusal of real processes of
// another UID is TestAnotherUIDIsRefused in internal/handoff, which needs root.
func refusingOwner(t *testing.T) (*owner, *logLines) {
	t.Helper()
	logs := &logLines{}
	o := &owner{
		s:      settings{slot: 1, handoffSocket: filepath.Join(t.TempDir(), "handoff.sock"), handoffTimeout: 5 * time.Second, drainTimeout: time.Second},
		state:  proxyadmin.NewState("1.0.0", 1),
		log:    funcr.New(logs.add, funcr.Options{}),
		ownUID: handoff.OwnUID() + 1,
	}
	if err := o.registerMetrics(); err != nil {
		t.Fatal(err)
	}
	return o, logs
}

func TestTheServingProxyRefusesAPeerOfAnotherUID(t *testing.T) {
	o, logs := refusingOwner(t)
	l, err := handoff.Listen(o.s.handoffSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := o.acceptHandoff(ctx, l)
		done <- err
	}()

	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: o.s.handoffSocket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := handoff.NewConn(conn, 5*time.Second)
	_ = c.Send(handoff.Message{Type: handoff.TypeHello, Version: "2.0.0", Protocol: handoff.ProtocolVersion, Slot: 2})
	if m, files, err := c.Receive(); err == nil {
		t.Fatalf("the refused peer received %s with %d files, want the connection closed", m.Type, len(files))
	}
	if n := counterValue(t, o.refusedPeers.WithLabelValues(sideServing)); n != 1 {
		t.Fatalf("meshlift_proxy_handoff_peers_refused_total{side=serving} = %v, want 1", n)
	}
	if line := logs.find("Refused a handoff peer of another UID", fmt.Sprintf(`"peerUID"=%d`, os.Geteuid()),
		fmt.Sprintf(`"peerPID"=%d`, os.Getpid())); line == "" {
		t.Fatalf("no log line names the refused peer's uid and pid:\n%s", strings.Join(logs.lines, "\n"))
	}
	// The refusal ends nothing: the proxy keeps serving the socket until it is stopped.
	select {
	case err := <-done:
		t.Fatalf("acceptHandoff returned %v after a refusal, want it to keep serving", err)
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("acceptHandoff = %v after the stop", err)
	}
}

func TestTheNewProxyRefusesASocketServedByAnotherUID(t *testing.T) {
	o, logs := refusingOwner(t)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: o.s.handoffSocket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	configured := make(chan struct{})
	close(configured)
	o.configured = configured

	err = o.acquire(context.Background())
	if !errors.Is(err, handoff.ErrPeerRefused) {
		t.Fatalf("acquire = %v, want a refusal of the socket's owner", err)
	}
	if o.listeners != nil {
		t.Fatalf("the new proxy holds listeners %v after refusing the socket", o.listeners)
	}
	if n := counterValue(t, o.refusedPeers.WithLabelValues(sideConnecting)); n != 1 {
		t.Fatalf("meshlift_proxy_handoff_peers_refused_total{side=connecting} = %v, want 1", n)
	}
	if line := logs.find("Refused a handoff peer of another UID", fmt.Sprintf(`"peerPID"=%d`, os.Getpid())); line == "" {
		t.Fatalf("no log line names the refused listener:\n%s", strings.Join(logs.lines, "\n"))
	}
}
