package handoff

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// serve answers every connection on l with name until l is closed.
func serve(l net.Listener, name string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_, _ = c.Write([]byte(name + "\n"))
		_ = c.Close()
	}
}

// clientLoop opens new connections to addr one after another until stop is closed (at most
// 20,000) and counts who answered and what failed.
type clientLoop struct {
	mu       sync.Mutex
	answered map[string]int
	failures []string
	done     chan struct{}
}

func startClients(addr string, stop <-chan struct{}) *clientLoop {
	loop := &clientLoop{answered: map[string]int{}, done: make(chan struct{})}
	go func() {
		defer close(loop.done)
		for range 20000 {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				loop.record("", err)
				continue
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			_ = c.Close()
			loop.record(strings.TrimSpace(line), err)
		}
	}()
	return loop
}

func (l *clientLoop) record(answer string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.failures = append(l.failures, err.Error())
		return
	}
	l.answered[answer]++
}

func (l *clientLoop) count(name string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.answered[name]
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// handoffPair connects an "old" and a "new" side over a real Unix socket.
func handoffPair(t *testing.T) (oldConn, newConn *Conn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "handoff.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	accepted := make(chan *net.UnixConn, 1)
	go func() {
		c, err := ln.AcceptUnix()
		if err == nil {
			accepted <- c
		}
	}()
	dialed, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	oldConn, newConn = NewConn(<-accepted, 5*time.Second), NewConn(dialed, 5*time.Second)
	t.Cleanup(func() { _ = oldConn.Close(); _ = newConn.Close() })
	return oldConn, newConn
}

func TestListenerIsHandedOverWithoutRefusingAConnection(t *testing.T) {
	oldListener, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go serve(oldListener, "old")
	stop := make(chan struct{})
	clients := startClients(oldListener.Addr().String(), stop)
	waitFor(t, "the old process to serve", func() bool { return clients.count("old") > 50 })

	oldConn, newConn := handoffPair(t)
	offered := make(chan error, 1)
	go func() {
		hello, err := Offer(oldConn, 1, []NamedListener{{Name: "inbound", Listener: oldListener}})
		if err == nil && (hello.Version != "2.0.0" || hello.Slot != 2) {
			err = errors.New("unexpected HELLO")
		}
		if err == nil {
			// Stop accepting (the socket lives on in the new process), drain, report.
			err = oldListener.Close()
		}
		if err == nil {
			err = Drained(oldConn)
		}
		offered <- err
	}()

	listeners, err := Request(newConn, "2.0.0", 2)
	if err != nil {
		t.Fatal(err)
	}
	inbound := listeners["inbound"]
	if inbound == nil || inbound.Addr().String() != oldListener.Addr().String() {
		t.Fatalf("received listeners %v, want inbound on %s", listeners, oldListener.Addr())
	}
	go serve(inbound, "new")
	if err := Takeover(newConn); err != nil {
		t.Fatal(err)
	}
	if err := <-offered; err != nil {
		t.Fatal(err)
	}
	seenNew := clients.count("new")
	waitFor(t, "the new process to serve", func() bool { return clients.count("new") > seenNew+200 })
	close(stop)
	<-clients.done
	_ = inbound.Close()

	if len(clients.failures) != 0 {
		t.Errorf("%d connections failed during the handoff, first: %s", len(clients.failures), clients.failures[0])
	}
	t.Logf("answered by old: %d, by new: %d", clients.count("old"), clients.count("new"))
}

func TestAFailedHandoffLeavesTheOldProcessServing(t *testing.T) {
	tests := []struct {
		name      string
		newSide   func(t *testing.T, c *Conn)
		wantOffer string
	}{
		{
			name: "the new process speaks another protocol",
			newSide: func(t *testing.T, c *Conn) {
				if err := c.Send(Message{Type: TypeHello, Version: "3.0.0", Protocol: 2, Slot: 2}); err != nil {
					t.Error(err)
				}
				m, _, err := c.Receive()
				if err != nil || m.Type != TypeError || !strings.Contains(m.Reason, "protocol 2 is not supported") {
					t.Errorf("new side got %+v, %v; want an ERROR about the protocol", m, err)
				}
			},
			wantOffer: "protocol 2 is not supported",
		},
		{
			name: "the new process claims the old one's slot",
			newSide: func(t *testing.T, c *Conn) {
				if _, err := Request(c, "2.0.0", 1); !errors.Is(err, ErrPeer) {
					t.Errorf("Request() error = %v, want ErrPeer", err)
				}
			},
			wantOffer: "own slot",
		},
		{
			name: "the new process dies before TAKEOVER",
			newSide: func(t *testing.T, c *Conn) {
				listeners, err := Request(c, "2.0.0", 2)
				if err != nil {
					t.Error(err)
				}
				for _, l := range listeners {
					_ = l.Close()
				}
				_ = c.Close()
			},
			wantOffer: "no TAKEOVER",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oldListener, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer oldListener.Close()
			go serve(oldListener, "old")
			oldConn, newConn := handoffPair(t)
			done := make(chan struct{})
			go func() { defer close(done); tt.newSide(t, newConn) }()
			_, err = Offer(oldConn, 1, []NamedListener{{Name: "inbound", Listener: oldListener}})
			<-done
			if err == nil || !strings.Contains(err.Error(), tt.wantOffer) {
				t.Fatalf("Offer() error = %v, want one mentioning %q", err, tt.wantOffer)
			}
			// Nothing was given away: the old process still answers.
			stop := make(chan struct{})
			clients := startClients(oldListener.Addr().String(), stop)
			waitFor(t, "the old process to keep serving", func() bool { return clients.count("old") > 20 })
			close(stop)
			<-clients.done
			if len(clients.failures) != 0 {
				t.Errorf("connections failed after a failed handoff: %s", clients.failures[0])
			}
		})
	}
}

func TestReceiveGivesUpOnASilentPeer(t *testing.T) {
	oldConn, _ := handoffPair(t)
	oldConn.timeout = 100 * time.Millisecond
	start := time.Now()
	if _, _, err := oldConn.Receive(); err == nil {
		t.Fatal("Receive() returned without a message")
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("Receive() waited %s for a silent peer", waited)
	}
}

func TestWaitPeerGoneReturnsWhenThePeerDiesAndHonorsContext(t *testing.T) {
	old, successor := handoffPair(t)
	done := make(chan error, 1)
	go func() { done <- old.WaitPeerGone(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("returned before the peer closed: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	_ = successor.Close()
	if err := <-done; err != nil {
		t.Errorf("peer closed: got %v, want nil", err)
	}

	idle, _ := handoffPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- idle.WaitPeerGone(ctx) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: got %v, want context.Canceled", err)
	}
}
