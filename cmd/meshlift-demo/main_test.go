package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// logLine is the part of a JSON log line the process test reads.
type logLine struct {
	Msg     string `json:"msg"`
	Address string `json:"address"`
	Name    string `json:"name"`
	Version string `json:"version"`
}

// TestServeProcessFinishesInFlightRequestsOnSIGTERM runs the real binary as a container would:
// SIGTERM while a request is in flight, the request still gets its answer, exit code 0.
func TestServeProcessFinishesInFlightRequestsOnSIGTERM(t *testing.T) {
	binary := filepath.Join(t.TempDir(), "meshlift-demo")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-X github.com/meshlift/meshlift/internal/buildinfo.Version=v9.9.9", "-o", binary, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build failed: %v\n%s", err, out)
	}

	demo := exec.Command(binary, "serve", "--listen", "127.0.0.1:0")
	demo.Env = append(os.Environ(), "POD_NAME=web-7")
	stderr, err := demo.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = demo.Process.Kill() })
	logs := make(chan logLine, 100)
	go func() {
		defer close(logs)
		scanner := bufio.NewScanner(stderr)
		for scanner.Scan() {
			var line logLine
			if err := json.Unmarshal(scanner.Bytes(), &line); err != nil {
				t.Errorf("log line %q is not JSON: %v", scanner.Text(), err)
				continue
			}
			logs <- line
		}
	}()

	serving := waitForLog(t, logs, "Serving HTTP/1.1 and h2c")
	if serving.Name != "web-7" || serving.Version != "v9.9.9" {
		t.Errorf("serving as %q version %q, want web-7 (from POD_NAME) and v9.9.9 (from the build)", serving.Name, serving.Version)
	}
	// With "Expect: 100-continue" the server sends "100 Continue" when the handler starts
	// reading the body, which tells the test that the request is in flight in the handler.
	client := testClient(modeKeepAlive)
	client.Transport.(*http.Transport).ExpectContinueTimeout = 15 * time.Second
	handlerStarted := make(chan struct{})
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got100Continue: func() { close(handlerStarted) },
	})
	bodyReader, bodyWriter := io.Pipe()
	defer func() { _ = bodyWriter.Close() }()
	request, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+serving.Address+"/", bodyReader)
	if err != nil {
		t.Fatal(err)
	}
	request.Header.Set("Expect", "100-continue")
	type answer struct {
		body string
		err  error
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
		answers <- answer{body: string(body), err: err}
	}()
	select {
	case <-handlerStarted:
	case got := <-answers:
		t.Fatalf("the request ended before the handler read its body: %q, %v", got.body, got.err)
	case <-time.After(15 * time.Second):
		t.Fatal("the server did not start reading the request body within 15s")
	}

	if err := demo.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitForLog(t, logs, "Shutting down: refusing new connections and finishing in-flight requests")
	if _, err := io.WriteString(bodyWriter, "sent after SIGTERM"); err != nil {
		t.Fatal(err)
	}
	_ = bodyWriter.Close()

	select {
	case got := <-answers:
		if got.err != nil || got.body != "sent after SIGTERM" {
			t.Errorf("in-flight request got %q, %v; want its body echoed", got.body, got.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the in-flight request got no answer")
	}
	exited := make(chan error, 1)
	go func() { exited <- demo.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("meshlift-demo exited with %v after SIGTERM, want status 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("meshlift-demo still runs 15s after SIGTERM")
	}
}

// waitForLog returns the first log line with message msg.
func waitForLog(t *testing.T, logs <-chan logLine, msg string) logLine {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case line, ok := <-logs:
			if !ok {
				t.Fatalf("meshlift-demo exited before logging %q", msg)
			}
			if strings.EqualFold(line.Msg, msg) {
				return line
			}
		case <-timeout:
			t.Fatalf("meshlift-demo did not log %q within 15s", msg)
		}
	}
}
