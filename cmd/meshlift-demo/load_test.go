package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// runLoadJSON runs "load" in-process with --output json and returns its summary and exit code.
func runLoadJSON(t *testing.T, ctx context.Context, args ...string) (loadSummary, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := runLoad(ctx, append(args, "--output", "json"), &stdout, &stderr)
	var summary loadSummary
	if err := json.Unmarshal(stdout.Bytes(), &summary); err != nil {
		t.Fatalf("load printed no JSON summary (exit code %d): %v\nstdout: %s\nstderr: %s", code, err, stdout.String(), stderr.String())
	}
	if summary.Sent != summary.OK+summary.Failed {
		t.Errorf("sent %d != ok %d + failed %d", summary.Sent, summary.OK, summary.Failed)
	}
	byKind := 0
	for _, count := range summary.Failures {
		byKind += count
	}
	if byKind != summary.Failed {
		t.Errorf("failures by kind %v add up to %d, want failed = %d", summary.Failures, byKind, summary.Failed)
	}
	return summary, code
}

// closedPortURL returns a loopback URL nothing listens on.
func closedPortURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr + "/"
}

func TestLoadCountsEveryRequest(t *testing.T) {
	tests := []struct {
		name      string
		mode      string
		bodyBytes int
		// wantConns checks the number of TCP connections the server accepted.
		wantConns func(conns int64) bool
		wantHTTP2 bool
	}{
		{
			name:      "keepalive GETs reuse at most one connection per worker",
			mode:      modeKeepAlive,
			wantConns: func(conns int64) bool { return conns >= 1 && conns <= 4 },
		},
		{
			name:      "keepalive POSTs get their 1 KiB bodies echoed",
			mode:      modeKeepAlive,
			bodyBytes: 1024,
			wantConns: func(conns int64) bool { return conns >= 1 && conns <= 4 },
		},
		{
			name:      "newconn opens a TCP connection per request",
			mode:      modeNewConn,
			wantConns: func(conns int64) bool { return conns == 40 },
		},
		{
			name:      "newconn POSTs get their bodies echoed",
			mode:      modeNewConn,
			bodyBytes: 100,
			wantConns: func(conns int64) bool { return conns == 40 },
		},
		{
			name:      "h2c sends every request over HTTP/2",
			mode:      modeH2C,
			wantConns: func(conns int64) bool { return conns >= 1 && conns <= 4 },
			wantHTTP2: true,
		},
		{
			name:      "h2c POSTs get their bodies echoed",
			mode:      modeH2C,
			bodyBytes: 3000,
			wantConns: func(conns int64) bool { return conns >= 1 && conns <= 4 },
			wantHTTP2: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startEchoServer(t, 5*time.Second, nil)
			summary, code := runLoadJSON(t, context.Background(),
				"--target", ts.url+"/count", "--rps", "1000", "--duration", "1m", "--max-requests", "40",
				"--concurrency", "4", "--mode", tt.mode, "--body-bytes", strconv.Itoa(tt.bodyBytes))
			if code != exitOK || !summary.Passed {
				t.Errorf("exit code = %d, passed = %v, want 0 and true (first errors %v)", code, summary.Passed, summary.FirstErrors)
			}
			if summary.Sent != 40 || summary.OK != 40 || summary.Failed != 0 {
				t.Errorf("sent/ok/failed = %d/%d/%d, want 40/40/0", summary.Sent, summary.OK, summary.Failed)
			}
			if got := ts.requests.Load(); got != 40 {
				t.Errorf("the server received %d requests, want exactly 40", got)
			}
			if summary.StoppedBy != stoppedByMaxRequests {
				t.Errorf("stopped by %q, want %q", summary.StoppedBy, stoppedByMaxRequests)
			}
			if conns := ts.conns.Load(); !tt.wantConns(conns) {
				t.Errorf("the server accepted %d connections", conns)
			}
			if got := ts.http2.Load(); tt.wantHTTP2 && got != 40 || !tt.wantHTTP2 && got != 0 {
				t.Errorf("%d of the requests came over HTTP/2 (want all: %v)", got, tt.wantHTTP2)
			}
			if summary.LatencyMs.Max <= 0 || summary.LatencyMs.P50 > summary.LatencyMs.P99 || summary.LatencyMs.P99 > summary.LatencyMs.Max {
				t.Errorf("latency percentiles %+v are not ordered", summary.LatencyMs)
			}
		})
	}
}

func TestLoadHonorsItsBounds(t *testing.T) {
	tests := []struct {
		name          string
		args          []string
		wantStoppedBy string
		// maxSent is the most requests the pacing allows, whatever the machine's speed.
		maxSent  int
		wantSent int
	}{
		{
			name:          "max-requests stops a run that could go on for an hour",
			args:          []string{"--rps", "1000", "--duration", "1h", "--max-requests", "25"},
			wantStoppedBy: stoppedByMaxRequests,
			maxSent:       25,
			wantSent:      25,
		},
		{
			name:          "duration stops a run long before max-requests",
			args:          []string{"--rps", "20", "--duration", "500ms", "--max-requests", "100000"},
			wantStoppedBy: stoppedByDuration,
			// Requests start at 0, 50ms, ..., 450ms: never more than 10.
			maxSent: 10,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startEchoServer(t, 5*time.Second, nil)
			start := time.Now()
			summary, code := runLoadJSON(t, context.Background(), append([]string{"--target", ts.url + "/"}, tt.args...)...)
			// Generous: the bound is what matters, not the machine's speed.
			if elapsed := time.Since(start); elapsed > 60*time.Second {
				t.Errorf("the run took %s", elapsed)
			}
			if code != exitOK {
				t.Errorf("exit code = %d, want 0 (first errors %v)", code, summary.FirstErrors)
			}
			if summary.StoppedBy != tt.wantStoppedBy {
				t.Errorf("stopped by %q, want %q", summary.StoppedBy, tt.wantStoppedBy)
			}
			if summary.Sent < 1 || summary.Sent > tt.maxSent {
				t.Errorf("sent %d requests, want between 1 and %d", summary.Sent, tt.maxSent)
			}
			if tt.wantSent != 0 && summary.Sent != tt.wantSent {
				t.Errorf("sent %d requests, want exactly %d", summary.Sent, tt.wantSent)
			}
			if got := ts.requests.Load(); got != int64(summary.Sent) {
				t.Errorf("the server received %d requests, the summary says %d were sent", got, summary.Sent)
			}
		})
	}
}

func TestLoadStopsOnSignalAndFinishesInFlightRequests(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var received atomic.Int64
	ts := startEchoServer(t, 5*time.Second, func(*http.Request) {
		if received.Add(1) == 5 {
			cancel()
		}
	})
	summary, code := runLoadJSON(t, ctx, "--target", ts.url+"/?delay=50ms", "--rps", "100", "--duration", "1m", "--max-requests", "1000", "--concurrency", "2")
	if summary.StoppedBy != stoppedBySignal {
		t.Errorf("stopped by %q, want %q", summary.StoppedBy, stoppedBySignal)
	}
	if code != exitOK || summary.Failed != 0 {
		t.Errorf("exit code %d with %d failures (%v), want requests in flight to finish", code, summary.Failed, summary.FirstErrors)
	}
	if summary.Sent < 5 || summary.Sent >= 1000 {
		t.Errorf("sent %d requests, want at least 5 and far fewer than 1000", summary.Sent)
	}
}

func TestLoadClassifiesFailures(t *testing.T) {
	// Each case builds its target; servers are stopped by the test's cleanup.
	tests := []struct {
		name    string
		target  func(t *testing.T) string
		args    []string
		wantOK  int
		wantBad map[failureKind]int
		// wantCode is the exit code; exitFailure unless --allow-failures covers the failures.
		wantCode int
	}{
		{
			name:     "a closed port fails every request as connect refused",
			target:   closedPortURL,
			args:     []string{"--max-requests", "10"},
			wantBad:  map[failureKind]int{failureConnectRefused: 10},
			wantCode: exitFailure,
		},
		{
			name:     "allow-failures lets exactly that many failures pass",
			target:   closedPortURL,
			args:     []string{"--max-requests", "10", "--allow-failures", "10"},
			wantBad:  map[failureKind]int{failureConnectRefused: 10},
			wantCode: exitOK,
		},
		{
			name:     "one failure more than allowed fails the run",
			target:   closedPortURL,
			args:     []string{"--max-requests", "10", "--allow-failures", "9"},
			wantBad:  map[failureKind]int{failureConnectRefused: 10},
			wantCode: exitFailure,
		},
		{
			name:     "h2c to a closed port is connect refused too",
			target:   closedPortURL,
			args:     []string{"--max-requests", "3", "--mode", "h2c"},
			wantBad:  map[failureKind]int{failureConnectRefused: 3},
			wantCode: exitFailure,
		},
		{
			name: "an answer slower than the timeout is a timeout",
			target: func(t *testing.T) string {
				return startEchoServer(t, 5*time.Second, nil).url + "/?delay=10s"
			},
			args:     []string{"--max-requests", "3", "--timeout", "200ms"},
			wantBad:  map[failureKind]int{failureTimeout: 3},
			wantCode: exitFailure,
		},
		{
			name:     "a connection the server resets is a reset",
			target:   resettingServer,
			args:     []string{"--max-requests", "4", "--mode", "newconn"},
			wantBad:  map[failureKind]int{failureReset: 4},
			wantCode: exitFailure,
		},
		{
			name: "a 503 is a bad status",
			target: func(t *testing.T) string {
				return fixedAnswerServer(t, http.StatusServiceUnavailable, `{"method":"GET","path":"/"}`)
			},
			args:     []string{"--max-requests", "5"},
			wantBad:  map[failureKind]int{failureBadStatus: 5},
			wantCode: exitFailure,
		},
		{
			name: "a POST whose body comes back changed is a bad body",
			target: func(t *testing.T) string {
				return fixedAnswerServer(t, http.StatusOK, "not the body that was sent")
			},
			args:     []string{"--max-requests", "5", "--body-bytes", "26"},
			wantBad:  map[failureKind]int{failureBadBody: 5},
			wantCode: exitFailure,
		},
		{
			name: "a GET answered by something other than the echo server is a bad body",
			target: func(t *testing.T) string {
				return fixedAnswerServer(t, http.StatusOK, "<html>hello</html>")
			},
			args:     []string{"--max-requests", "5"},
			wantBad:  map[failureKind]int{failureBadBody: 5},
			wantCode: exitFailure,
		},
		{
			name: "check-body=false accepts any successful answer",
			target: func(t *testing.T) string {
				return fixedAnswerServer(t, http.StatusOK, "<html>hello</html>")
			},
			args:     []string{"--max-requests", "5", "--check-body=false"},
			wantOK:   5,
			wantCode: exitOK,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--target", tt.target(t), "--rps", "1000", "--duration", "1m"}, tt.args...)
			summary, code := runLoadJSON(t, context.Background(), args...)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d", code, tt.wantCode)
			}
			if summary.Passed != (tt.wantCode == exitOK) {
				t.Errorf("passed = %v with exit code %d", summary.Passed, code)
			}
			if summary.OK != tt.wantOK {
				t.Errorf("ok = %d, want %d", summary.OK, tt.wantOK)
			}
			for _, kind := range failureKinds {
				if summary.Failures[kind] != tt.wantBad[kind] {
					t.Errorf("%s failures = %d, want %d (all: %v, first errors: %v)", kind, summary.Failures[kind], tt.wantBad[kind], summary.Failures, summary.FirstErrors)
				}
				if _, ok := summary.FirstErrors[kind]; ok != (tt.wantBad[kind] > 0) {
					t.Errorf("first error of kind %s is %q", kind, summary.FirstErrors[kind])
				}
			}
		})
	}
}

func TestLoadCountsFailuresWhenTheServerStopsMidRun(t *testing.T) {
	tests := []struct {
		name          string
		allowFailures int
		wantCode      int
	}{
		{name: "the run fails when requests fail after the server stopped", allowFailures: 0, wantCode: exitFailure},
		{name: "the run passes when allow-failures covers every request", allowFailures: 60, wantCode: exitOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			echo := &echoServer{name: "demo-0", version: "v-test", maxBodyBytes: 4096}
			var handled atomic.Int64
			var stopOnce sync.Once
			srv := &http.Server{}
			srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				echo.ServeHTTP(w, r)
				if handled.Add(1) == 10 {
					// Stop abruptly, as a crashed application would: the listener and every
					// connection close at once.
					stopOnce.Do(func() { go func() { _ = srv.Close() }() })
				}
			})
			go func() { _ = srv.Serve(ln) }()
			t.Cleanup(func() { _ = srv.Close() })

			summary, code := runLoadJSON(t, context.Background(),
				"--target", "http://"+ln.Addr().String()+"/", "--mode", "newconn", "--rps", "200", "--duration", "1m",
				"--max-requests", "60", "--concurrency", "2", "--allow-failures", strconv.Itoa(tt.allowFailures))
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d", code, tt.wantCode)
			}
			if summary.Sent != 60 {
				t.Errorf("sent %d, want 60", summary.Sent)
			}
			if summary.OK < 8 || int64(summary.OK) > handled.Load() {
				t.Errorf("ok = %d, want at least 8 and at most the %d requests the server handled", summary.OK, handled.Load())
			}
			if summary.Failures[failureConnectRefused] == 0 {
				t.Errorf("no connect_refused failures after the server stopped: %v (first errors %v)", summary.Failures, summary.FirstErrors)
			}
			if summary.Failures[failureOther] != 0 {
				t.Errorf("unclassified failures: %v", summary.FirstErrors)
			}
		})
	}
}

func TestLoadOnlySendsToTheTarget(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhere.Add(1) }))
	defer other.Close()
	redirecting := httptest.NewServer(http.RedirectHandler(other.URL+"/", http.StatusFound))
	defer redirecting.Close()

	summary, code := runLoadJSON(t, context.Background(), "--target", redirecting.URL+"/", "--rps", "1000", "--max-requests", "5")
	if got := elsewhere.Load(); got != 0 {
		t.Errorf("the redirect target received %d requests, want 0", got)
	}
	if code != exitFailure || summary.Failures[failureBadStatus] != 5 {
		t.Errorf("exit code %d, failures %v; want every redirect counted as a bad status", code, summary.Failures)
	}
}

func TestLoadRejectsInvalidFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "a target is required", args: nil, wantErr: "--target is required"},
		{name: "https targets are refused", args: []string{"--target", "https://127.0.0.1/"}, wantErr: "must be http://"},
		{name: "a target without a host is refused", args: []string{"--target", "http:///path"}, wantErr: "must be http://"},
		{name: "a duration over an hour is refused", args: []string{"--target", "http://127.0.0.1/", "--duration", "61m"}, wantErr: "--duration 1h1m0s must be positive and at most 1h0m0s"},
		{name: "more than 100000 requests are refused", args: []string{"--target", "http://127.0.0.1/", "--max-requests", "100001"}, wantErr: "--max-requests 100001 must be between 1 and 100000"},
		{name: "zero rps is refused", args: []string{"--target", "http://127.0.0.1/", "--rps", "0"}, wantErr: "--rps 0"},
		{name: "an unknown mode is refused", args: []string{"--target", "http://127.0.0.1/", "--mode", "udp"}, wantErr: `--mode "udp"`},
		{name: "an oversized body is refused", args: []string{"--target", "http://127.0.0.1/", "--body-bytes", "1048577"}, wantErr: "--body-bytes 1048577"},
		{name: "an unknown output is refused", args: []string{"--target", "http://127.0.0.1/", "--output", "yaml"}, wantErr: `--output "yaml"`},
		{name: "negative allowed failures are refused", args: []string{"--target", "http://127.0.0.1/", "--allow-failures", "-1"}, wantErr: "--allow-failures -1"},
		{name: "positional arguments are refused", args: []string{"--target", "http://127.0.0.1/", "extra"}, wantErr: `unexpected arguments ["extra"]`},
		{name: "an undefined flag is refused", args: []string{"--rate", "5"}, wantErr: "flag provided but not defined: -rate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := runLoad(context.Background(), tt.args, &stdout, &stderr); code != exitUsage {
				t.Errorf("exit code = %d, want %d", code, exitUsage)
			}
			if !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tt.wantErr)
			}
			if stdout.Len() != 0 {
				t.Errorf("a refused run printed a summary: %q", stdout.String())
			}
		})
	}
}

func TestLoadPrintsATextSummary(t *testing.T) {
	ts := startEchoServer(t, 5*time.Second, nil)
	var stdout, stderr bytes.Buffer
	code := runLoad(context.Background(), []string{"--target", ts.url + "/text", "--rps", "1000", "--max-requests", "3"}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit code = %d, stderr %q", code, stderr.String())
	}
	for _, want := range []string{
		"target        GET " + ts.url + "/text (keepalive)\n",
		"sent          3\n",
		"ok            3\n",
		"failed        0 (allowed 0)\n",
		"failures      connect_refused=0 reset=0 timeout=0 bad_status=0 bad_body=0 other=0\n",
		"latency       p50=",
		"(stopped by max-requests)\n",
		"achieved rps  ",
		"result        PASS\n",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("text summary does not contain %q:\n%s", want, stdout.String())
		}
	}
}

// resettingServer answers every request by resetting its connection.
func resettingServer(t *testing.T) string {
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack failed: %v", err)
			return
		}
		if tcp, ok := conn.(*net.TCPConn); ok {
			_ = tcp.SetLinger(0) // close with RST
		}
		_ = conn.Close()
	}))
	t.Cleanup(server.Close)
	return server.URL + "/"
}

// fixedAnswerServer answers every request with status and body.
func fixedAnswerServer(t *testing.T, status int, body string) string {
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(server.Close)
	return server.URL + "/"
}
