package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testServer is an echo server on a loopback port, run by serve() as the binary runs it.
type testServer struct {
	url      string
	addr     string
	echo     *echoServer
	requests atomic.Int64 // requests received
	http2    atomic.Int64 // of which over HTTP/2
	conns    atomic.Int64 // TCP connections accepted
	stop     context.CancelFunc
	done     chan error // serve's result
}

// startEchoServer starts an echo server with the given shutdown timeout; the test's cleanup
// stops it. before, if not nil, runs at the start of every request.
func startEchoServer(t *testing.T, shutdownTimeout time.Duration, before func(r *http.Request)) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{
		url:  "http://" + ln.Addr().String(),
		addr: ln.Addr().String(),
		echo: &echoServer{name: "demo-0", version: "v-test", maxBodyBytes: 4096},
		done: make(chan error, 1),
	}
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	srv := newHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.requests.Add(1)
		if r.ProtoMajor == 2 {
			ts.http2.Add(1)
		}
		if before != nil {
			before(r)
		}
		ts.echo.ServeHTTP(w, r)
	}), logger)
	srv.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			ts.conns.Add(1)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts.stop = cancel
	go func() { ts.done <- serve(ctx, srv, ln, shutdownTimeout, logger) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ts.done:
		case <-time.After(shutdownTimeout + 10*time.Second):
			t.Errorf("the echo server did not stop")
		}
	})
	return ts
}

// testClient is a client speaking HTTP/1.1 (modeKeepAlive) or h2c (modeH2C).
func testClient(mode string) *http.Client {
	client := newLoadClient(loadOptions{mode: mode, concurrency: 4, timeout: 10 * time.Second})
	client.Timeout = 10 * time.Second
	return client
}

func TestEchoServer(t *testing.T) {
	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		wantStatus  int
		// wantEcho is the exact body expected back, for echoed requests.
		wantEcho string
		// wantJSON is the expected answer (without proto) for JSON answers.
		wantJSON *echoResponse
		// wantText is a substring of any other answer.
		wantText string
	}{
		{
			name:       "a GET answers with the name, version, method, path and protocol as JSON",
			method:     http.MethodGet,
			path:       "/some/path?x=1",
			wantStatus: http.StatusOK,
			wantJSON:   &echoResponse{Name: "demo-0", Version: "v-test", Method: "GET", Path: "/some/path"},
		},
		{
			name:        "a POST gets its body back byte for byte with its content type",
			method:      http.MethodPost,
			path:        "/echo",
			contentType: "text/plain",
			body:        "hello mesh\x00\xff",
			wantStatus:  http.StatusOK,
			wantEcho:    "hello mesh\x00\xff",
		},
		{
			name:       "a PUT gets its body back",
			method:     http.MethodPut,
			path:       "/",
			body:       strings.Repeat("0123456789", 400),
			wantStatus: http.StatusOK,
			wantEcho:   strings.Repeat("0123456789", 400),
		},
		{
			name:       "a POST without a body answers with JSON and zero bytes",
			method:     http.MethodPost,
			path:       "/empty",
			wantStatus: http.StatusOK,
			wantJSON:   &echoResponse{Name: "demo-0", Version: "v-test", Method: "POST", Path: "/empty"},
		},
		{
			name:       "a DELETE with a body answers with JSON counting the body's bytes",
			method:     http.MethodDelete,
			path:       "/items/7",
			body:       "gone",
			wantStatus: http.StatusOK,
			wantJSON:   &echoResponse{Name: "demo-0", Version: "v-test", Method: "DELETE", Path: "/items/7", Bytes: 4},
		},
		{
			name:       "a short delay is waited out before answering",
			method:     http.MethodGet,
			path:       "/slow?delay=20ms",
			wantStatus: http.StatusOK,
			wantJSON:   &echoResponse{Name: "demo-0", Version: "v-test", Method: "GET", Path: "/slow"},
		},
		{
			name:       "healthz answers ok",
			method:     http.MethodGet,
			path:       "/healthz",
			wantStatus: http.StatusOK,
			wantText:   "ok",
		},
		{
			name:       "a body over the limit is refused with 413",
			method:     http.MethodPost,
			path:       "/",
			body:       strings.Repeat("x", 4097),
			wantStatus: http.StatusRequestEntityTooLarge,
			wantText:   "larger than 4096 bytes",
		},
		{
			name:       "a delay beyond the limit is refused with 400",
			method:     http.MethodGet,
			path:       "/?delay=31s",
			wantStatus: http.StatusBadRequest,
			wantText:   "delay must be a duration",
		},
		{
			name:       "a delay that is not a duration is refused with 400",
			method:     http.MethodGet,
			path:       "/?delay=soon",
			wantStatus: http.StatusBadRequest,
			wantText:   "delay must be a duration",
		},
	}
	for _, protocol := range []struct {
		mode  string
		proto string
	}{{modeKeepAlive, "HTTP/1.1"}, {modeH2C, "HTTP/2.0"}} {
		ts := startEchoServer(t, 5*time.Second, nil)
		client := testClient(protocol.mode)
		for _, tt := range tests {
			t.Run(protocol.proto+" "+tt.name, func(t *testing.T) {
				var body io.Reader
				if tt.body != "" {
					body = strings.NewReader(tt.body)
				}
				request, err := http.NewRequest(tt.method, ts.url+tt.path, body)
				if err != nil {
					t.Fatal(err)
				}
				if tt.contentType != "" {
					request.Header.Set("Content-Type", tt.contentType)
				}
				response, err := client.Do(request)
				if err != nil {
					t.Fatalf("%s %s failed: %v", tt.method, tt.path, err)
				}
				defer func() { _ = response.Body.Close() }()
				answer, err := io.ReadAll(response.Body)
				if err != nil {
					t.Fatal(err)
				}
				if response.Proto != protocol.proto {
					t.Errorf("answer came over %s, want %s", response.Proto, protocol.proto)
				}
				if response.StatusCode != tt.wantStatus {
					t.Fatalf("status = %d, want %d (answer %q)", response.StatusCode, tt.wantStatus, answer)
				}
				switch {
				case tt.wantEcho != "":
					if string(answer) != tt.wantEcho {
						t.Errorf("echo = %q, want %q", answer, tt.wantEcho)
					}
					if tt.contentType != "" && response.Header.Get("Content-Type") != tt.contentType {
						t.Errorf("Content-Type = %q, want %q", response.Header.Get("Content-Type"), tt.contentType)
					}
					if response.Header.Get(headerName) != "demo-0" || response.Header.Get(headerVersion) != "v-test" {
						t.Errorf("echo headers = %v, want the server's name and version", response.Header)
					}
				case tt.wantJSON != nil:
					var got echoResponse
					if err := json.Unmarshal(answer, &got); err != nil {
						t.Fatalf("answer %q is not JSON: %v", answer, err)
					}
					want := *tt.wantJSON
					want.Proto = protocol.proto
					if got != want {
						t.Errorf("answer = %+v, want %+v", got, want)
					}
				default:
					if !strings.Contains(string(answer), tt.wantText) {
						t.Errorf("answer = %q, want it to contain %q", answer, tt.wantText)
					}
				}
			})
		}
	}
}

func TestServeShutsDownGracefully(t *testing.T) {
	tests := []struct {
		name            string
		mode            string
		shutdownTimeout time.Duration
		// finishBody says whether the in-flight request's body is completed after shutdown began.
		finishBody bool
		wantErr    string
	}{
		{
			name:            "an HTTP/1.1 request in flight when shutdown starts still gets its whole answer",
			mode:            modeKeepAlive,
			shutdownTimeout: 10 * time.Second,
			finishBody:      true,
		},
		{
			name:            "an h2c request in flight when shutdown starts still gets its whole answer",
			mode:            modeH2C,
			shutdownTimeout: 10 * time.Second,
			finishBody:      true,
		},
		{
			name:            "a request that outlives the shutdown timeout is cut off and serve reports it",
			mode:            modeKeepAlive,
			shutdownTimeout: 200 * time.Millisecond,
			wantErr:         "in-flight requests did not finish within 200ms",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startEchoServer(t, tt.shutdownTimeout, nil)
			client := testClient(tt.mode)

			// The request's body comes through a pipe, so the request stays in flight until the
			// test completes the body.
			bodyReader, bodyWriter := io.Pipe()
			defer func() { _ = bodyWriter.Close() }()
			request, err := http.NewRequest(http.MethodPost, ts.url+"/in-flight", bodyReader)
			if err != nil {
				t.Fatal(err)
			}
			type answer struct {
				status int
				body   string
				err    error
			}
			answers := make(chan answer, 1)
			go func() {
				response, err := client.Do(request)
				if err != nil {
					answers <- answer{err: err}
					return
				}
				defer func() { _ = response.Body.Close() }()
				body, err := io.ReadAll(response.Body)
				answers <- answer{status: response.StatusCode, body: string(body), err: err}
			}()
			if _, err := bodyWriter.Write([]byte("first half, ")); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the request to be in flight", func() bool { return ts.echo.inFlight.Load() == 1 })

			ts.stop()
			waitFor(t, "the server to refuse new connections", func() bool {
				conn, err := net.DialTimeout("tcp", ts.addr, time.Second)
				if err != nil {
					return true
				}
				_ = conn.Close()
				return false
			})

			if tt.finishBody {
				if _, err := bodyWriter.Write([]byte("second half")); err != nil {
					t.Fatal(err)
				}
				_ = bodyWriter.Close()
			}
			select {
			case err := <-ts.done:
				if tt.wantErr == "" && err != nil {
					t.Errorf("serve() error = %v, want nil", err)
				}
				if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
					t.Errorf("serve() error = %v, want one containing %q", err, tt.wantErr)
				}
			case <-time.After(tt.shutdownTimeout + 10*time.Second):
				t.Fatal("serve() did not return after the shutdown")
			}
			ts.done <- nil // for the cleanup

			if !tt.finishBody {
				// The client keeps streaming the body of the cut-off request until it ends.
				_ = bodyWriter.CloseWithError(errors.New("the test stopped sending"))
			}
			var got answer
			select {
			case got = <-answers:
			case <-time.After(10 * time.Second):
				t.Fatal("the in-flight request neither got an answer nor failed")
			}
			if tt.finishBody {
				if got.err != nil || got.status != http.StatusOK || got.body != "first half, second half" {
					t.Errorf("in-flight request got status %d, body %q, error %v; want 200 with its body echoed", got.status, got.body, got.err)
				}
			} else if got.err == nil {
				t.Errorf("the cut-off request got status %d and body %q, want an error", got.status, got.body)
			}
		})
	}
}

func TestServeReportsAServerThatCannotServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_ = ln.Close()
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	err = serve(context.Background(), newHTTPServer(http.NotFoundHandler(), logger), ln, time.Second, logger)
	if err == nil || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("serve() on a closed listener error = %v, want one wrapping net.ErrClosed", err)
	}
}

// waitFor polls condition every 10ms for up to 10s.
func waitFor(t *testing.T, what string, condition func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !condition() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunDispatchesCommands(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "version prints the build version", args: []string{"version"}, wantCode: exitOK, wantStdout: "dev\n"},
		{name: "help lists the commands", args: []string{"help"}, wantCode: exitOK, wantStdout: "load      bounded load generator"},
		{name: "an unknown command is a usage error", args: []string{"bogus"}, wantCode: exitUsage, wantStderr: `unknown command "bogus"`},
		{name: "flags without a command go to serve", args: []string{"--no-such-flag"}, wantCode: exitUsage, wantStderr: "meshlift-demo serve"},
		{name: "serve refuses positional arguments", args: []string{"serve", "extra"}, wantCode: exitUsage, wantStderr: `unexpected arguments ["extra"]`},
		{name: "serve reports an address it cannot listen on", args: []string{"serve", "--listen", "256.0.0.1:0"}, wantCode: exitFailure, wantStderr: "Failed to listen"},
		{name: "load without a target is a usage error", args: []string{"load"}, wantCode: exitUsage, wantStderr: "--target is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) {
				t.Errorf("stdout = %q, want it to contain %q", stdout.String(), tt.wantStdout)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}
