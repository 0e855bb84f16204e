package lameduck

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

func TestTheFirstSignalMakesTheReplicaUnreadyAndStopsItAfterTheDelay(t *testing.T) {
	parent, stop := context.WithCancel(context.Background())
	defer stop()
	h := &Handler{Delay: 200 * time.Millisecond, Log: logr.Discard(), Exit: func(int) { t.Error("exited on a single signal") }}
	signals := make(chan os.Signal, 2)
	ctx := h.watch(parent, signals)
	if err := h.Ready(nil); err != nil {
		t.Fatalf("Ready before any signal = %v, want nil", err)
	}

	signals <- syscall.SIGTERM
	deadline := time.Now().Add(5 * time.Second)
	for !h.Draining() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := h.Ready(nil); err != ErrShuttingDown {
		t.Fatalf("Ready after SIGTERM = %v, want %v", err, ErrShuttingDown)
	}
	select {
	case <-ctx.Done():
		t.Fatal("the context ended at the signal; it must last until the delay ends")
	default:
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the context did not end after the delay")
	}
}

func TestASecondSignalExitsAtOnce(t *testing.T) {
	parent, stop := context.WithCancel(context.Background())
	defer stop()
	exited := make(chan int, 1)
	h := &Handler{Delay: time.Hour, Log: logr.Discard(), Exit: func(code int) { exited <- code }}
	signals := make(chan os.Signal, 2)
	ctx := h.watch(parent, signals)
	signals <- syscall.SIGTERM
	signals <- os.Interrupt
	select {
	case code := <-exited:
		if code != 1 {
			t.Errorf("exit code = %d, want 1", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a second signal did not exit")
	}
	<-ctx.Done()
}

func TestAZeroDelayStopsAtTheSignal(t *testing.T) {
	parent, stop := context.WithCancel(context.Background())
	defer stop()
	h := &Handler{Log: logr.Discard()}
	signals := make(chan os.Signal, 1)
	ctx := h.watch(parent, signals)
	signals <- syscall.SIGTERM
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the context did not end")
	}
}
