package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildIdle builds the binary the way the image does (static, stripped) and returns its path.
func buildIdle(t *testing.T) string {
	t.Helper()
	binary := filepath.Join(t.TempDir(), "meshlift-idle")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build failed: %v\n%s", err, out)
	}
	info, err := os.Stat(binary)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stripped meshlift-idle binary: %d bytes", info.Size())
	return binary
}

func TestIdleExitsZeroOnTermination(t *testing.T) {
	binary := buildIdle(t)
	tests := []struct {
		name   string
		args   []string
		signal syscall.Signal
	}{
		{
			name:   "exits 0 on SIGTERM and ignores the proxy's arguments",
			args:   []string{"--listen=:15006", "--admin", ":15000", "-v=9", "run", "--", "unknown"},
			signal: syscall.SIGTERM,
		},
		{
			name:   "exits 0 on SIGINT without any arguments",
			signal: syscall.SIGINT,
		},
		{
			name:   "exits 0 on SIGTERM with an argument that looks like help",
			args:   []string{"-h"},
			signal: syscall.SIGTERM,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idle := exec.Command(binary, tt.args...)
			idle.Env = []string{"MESHLIFT_SLOT=2", "MESHLIFT_ADMIN_PORT=0", "MESHLIFT_LOG_LEVEL=bogus", "POD_NAME=web-0"}
			startWithSIGINTIgnored(t, idle)
			done := make(chan error, 1)
			go func() { done <- idle.Wait() }()
			t.Cleanup(func() { _ = idle.Process.Kill() })

			waitUntilSIGINTCaught(t, idle.Process.Pid, done)
			select {
			case err := <-done:
				t.Fatalf("meshlift-idle exited before it was signalled: %v", err)
			default:
			}

			if err := idle.Process.Signal(tt.signal); err != nil {
				t.Fatalf("failed to send %v: %v", tt.signal, err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("meshlift-idle exited with %v after %v, want exit status 0", err, tt.signal)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("meshlift-idle still runs 5s after %v", tt.signal)
			}
		})
	}
}

// startWithSIGINTIgnored starts cmd with SIGINT ignored: an ignored disposition survives exec and
// the Go runtime respects it until signal.Notify asks for SIGINT. So the moment the child catches
// SIGINT, it has registered its handlers and a signal can no longer kill it by default action.
func startWithSIGINTIgnored(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	signal.Ignore(syscall.SIGINT)
	err := cmd.Start()
	signal.Reset(syscall.SIGINT)
	if err != nil {
		t.Fatalf("failed to start %s: %v", cmd.Path, err)
	}
}

// waitUntilSIGINTCaught polls /proc/PID/status until the process has a handler for SIGINT.
func waitUntilSIGINTCaught(t *testing.T, pid int, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("meshlift-idle exited before it registered its signal handlers: %v", err)
		default:
		}
		caught, err := signalCaught(pid, syscall.SIGINT)
		if err != nil {
			t.Fatal(err)
		}
		if caught {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("meshlift-idle did not register a SIGINT handler within 10s")
}

// signalCaught reports whether the SigCgt mask in /proc/PID/status contains sig.
func signalCaught(pid int, sig syscall.Signal) (bool, error) {
	status, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false, fmt.Errorf("failed to read the status of process %d: %w", pid, err)
	}
	defer func() { _ = status.Close() }()
	scanner := bufio.NewScanner(status)
	for scanner.Scan() {
		mask, ok := strings.CutPrefix(scanner.Text(), "SigCgt:")
		if !ok {
			continue
		}
		bits, err := strconv.ParseUint(strings.TrimSpace(mask), 16, 64)
		if err != nil {
			return false, fmt.Errorf("failed to parse SigCgt %q of process %d: %w", mask, pid, err)
		}
		return bits&(1<<(uint(sig)-1)) != 0, nil
	}
	if err := scanner.Err(); err != nil {
		return false, fmt.Errorf("failed to read the status of process %d: %w", pid, err)
	}
	return false, errors.New("no SigCgt line in /proc/PID/status")
}

func TestIdleAnswersTheSlotsReadinessProbe(t *testing.T) {
	binary := buildIdle(t)
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := listener.Addr().(*net.TCPAddr).Port
	_ = listener.Close()

	idle := exec.Command(binary, "--inbound-port=15006", "--meshservice=web")
	idle.Env = []string{"MESHLIFT_SLOT=2", "MESHLIFT_ADMIN_PORT=" + strconv.Itoa(port)}
	if err := idle.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = idle.Process.Kill(); _ = idle.Wait() })

	client := &http.Client{Timeout: 2 * time.Second}
	var body []byte
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/ready")
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("/ready answered %s", resp.Status)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("idle never answered on port %d: %v", port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if string(body) != "idle\n" {
		t.Errorf("/ready body = %q, want \"idle\\n\"", body)
	}
	if err := idle.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Errorf("idle exited with %v after SIGTERM, want 0", err)
	}
}
