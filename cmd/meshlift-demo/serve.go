package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/meshlift/meshlift/internal/buildinfo"
)

const (
	// healthPath answers "ok" without touching the echo logic.
	healthPath = "/healthz"
	// maxDelay bounds the ?delay= a request may ask for.
	maxDelay = 30 * time.Second
	// defaultMaxBodyBytes bounds the request bodies the server reads (and echoes).
	defaultMaxBodyBytes = 1 << 20
)

// Response headers that identify who answered an echoed body (JSON answers carry the same in
// their fields).
const (
	headerName    = "X-Meshlift-Name"
	headerVersion = "X-Meshlift-Version"
	headerBytes   = "X-Meshlift-Bytes"
)

// echoResponse is the JSON body of every answer that does not echo a request body.
type echoResponse struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Method  string `json:"method"`
	Path    string `json:"path"`
	// Bytes is the size of the request body.
	Bytes int `json:"bytes"`
	// Proto is the HTTP version the request arrived with ("HTTP/1.1" or "HTTP/2.0").
	Proto string `json:"proto"`
	// PeerIdentity is the caller's SPIFFE ID as the pod's meshlift-proxy vouches for it (the
	// X-Meshlift-Peer-Identity header; empty for a plaintext caller).
	PeerIdentity string `json:"peerIdentity,omitempty"`
}

// peerIdentityHeader is the header meshlift-proxy sets on requests that arrived over mTLS.
const peerIdentityHeader = "X-Meshlift-Peer-Identity"

// echoServer answers every path: POST and PUT with a body get that body back; every other
// request gets an echoResponse. "?delay=250ms" holds a request in flight before answering (at
// most maxDelay), to observe draining during upgrades.
type echoServer struct {
	name         string
	version      string
	maxBodyBytes int64

	inFlight atomic.Int64
	served   atomic.Int64
}

func (s *echoServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	defer s.served.Add(1)

	if r.URL.Path == healthPath {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok")
		return
	}
	var delay time.Duration
	if value := r.URL.Query().Get("delay"); value != "" {
		parsed, err := time.ParseDuration(value)
		if err != nil || parsed < 0 || parsed > maxDelay {
			http.Error(w, fmt.Sprintf("delay must be a duration between 0 and %s", maxDelay), http.StatusBadRequest)
			return
		}
		delay = parsed
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBodyBytes))
	if err != nil {
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			http.Error(w, fmt.Sprintf("request body is larger than %d bytes", s.maxBodyBytes), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "failed to read the request body", http.StatusBadRequest)
		return
	}
	if delay > 0 {
		timer := time.NewTimer(delay)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-r.Context().Done():
			return // The client gave up.
		}
	}

	w.Header().Set(headerName, s.name)
	w.Header().Set(headerVersion, s.version)
	w.Header().Set(headerBytes, strconv.Itoa(len(body)))
	if (r.Method == http.MethodPost || r.Method == http.MethodPut) && len(body) > 0 {
		contentType := r.Header.Get("Content-Type")
		if contentType == "" {
			contentType = "application/octet-stream"
		}
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
		return
	}
	answer, err := json.Marshal(echoResponse{
		Name:         s.name,
		Version:      s.version,
		Method:       r.Method,
		Path:         r.URL.Path,
		Bytes:        len(body),
		Proto:        r.Proto,
		PeerIdentity: r.Header.Get(peerIdentityHeader),
	})
	if err != nil {
		http.Error(w, "failed to encode the answer", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(answer)+1))
	_, _ = w.Write(append(answer, '\n'))
}

// newHTTPServer serves handler over HTTP/1.1 and over cleartext HTTP/2 with prior knowledge
// (h2c), the two ways a sidecar talks to the application.
func newHTTPServer(handler http.Handler, logger *slog.Logger) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           handler,
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// serve runs srv on ln until ctx is done, then shuts down gracefully: it stops accepting at
// once, lets in-flight requests finish (HTTP/1.1 connections close after their response,
// HTTP/2 connections get a GOAWAY) and gives up after shutdownTimeout.
func serve(ctx context.Context, srv *http.Server, ln net.Listener, shutdownTimeout time.Duration, logger *slog.Logger) error {
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("HTTP server on %s stopped: %w", ln.Addr(), err)
	case <-ctx.Done():
	}

	logger.Info("Shutting down: refusing new connections and finishing in-flight requests", "timeout", shutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		closeErr := srv.Close()
		return errors.Join(fmt.Errorf("in-flight requests did not finish within %s: %w", shutdownTimeout, err), closeErr)
	}
	if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("HTTP server on %s stopped: %w", ln.Addr(), err)
	}
	return nil
}

// serveOptions are the flags of "serve".
type serveOptions struct {
	listen          string
	tcpEchoListen   string
	name            string
	version         string
	shutdownTimeout time.Duration
	maxBodyBytes    int64
}

func runServe(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshlift-demo serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts serveOptions
	fs.StringVar(&opts.listen, "listen", ":8080", "Address to serve HTTP/1.1 and h2c on.")
	fs.StringVar(&opts.tcpEchoListen, "tcp-echo-listen", "", "Address of a TCP line echo (each line is answered with itself), for long-lived stream tests; off when empty.")
	fs.StringVar(&opts.name, "name", defaultName(), "Name in every answer (default: $POD_NAME, else the hostname).")
	fs.StringVar(&opts.version, "version", buildinfo.Version, "Version in every answer.")
	fs.DurationVar(&opts.shutdownTimeout, "shutdown-timeout", 10*time.Second, "How long in-flight requests may take to finish after SIGTERM.")
	fs.Int64Var(&opts.maxBodyBytes, "max-body-bytes", defaultMaxBodyBytes, "Largest request body read and echoed; larger ones get 413.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		_, _ = fmt.Fprintf(stderr, "meshlift-demo serve: unexpected arguments %q\n", fs.Args())
		return exitUsage
	}
	if opts.shutdownTimeout <= 0 || opts.maxBodyBytes <= 0 {
		_, _ = fmt.Fprintln(stderr, "meshlift-demo serve: --shutdown-timeout and --max-body-bytes must be positive")
		return exitUsage
	}

	logger := slog.New(slog.NewJSONHandler(stderr, nil)).With("name", opts.name, "version", opts.version)
	ln, err := net.Listen("tcp", opts.listen)
	if err != nil {
		logger.Error("Failed to listen", "address", opts.listen, "error", err)
		return exitFailure
	}
	echo := &echoServer{name: opts.name, version: opts.version, maxBodyBytes: opts.maxBodyBytes}
	tcpEchoDone := make(chan error, 1)
	tcpEchoCtx, stopTCPEcho := context.WithCancel(ctx)
	defer stopTCPEcho()
	if opts.tcpEchoListen != "" {
		tcpLn, err := net.Listen("tcp", opts.tcpEchoListen)
		if err != nil {
			_ = ln.Close()
			logger.Error("Failed to listen", "address", opts.tcpEchoListen, "error", err)
			return exitFailure
		}
		logger.Info("Serving a TCP line echo", "address", tcpLn.Addr().String())
		go func() { tcpEchoDone <- serveTCPEcho(tcpEchoCtx, tcpLn, logger) }()
	} else {
		tcpEchoDone <- nil
	}
	logger.Info("Serving HTTP/1.1 and h2c", "address", ln.Addr().String())
	err = serve(ctx, newHTTPServer(echo, logger), ln, opts.shutdownTimeout, logger)
	stopTCPEcho()
	if echoErr := <-tcpEchoDone; echoErr != nil {
		err = errors.Join(err, echoErr)
	}
	if err != nil {
		logger.Error("Server failed", "error", err, "served", echo.served.Load(), "inFlight", echo.inFlight.Load())
		return exitFailure
	}
	logger.Info("Shut down", "served", echo.served.Load())
	return exitOK
}

// defaultName is $POD_NAME (set through the downward API), else the hostname.
func defaultName() string {
	if podName := os.Getenv("POD_NAME"); podName != "" {
		return podName
	}
	if hostname, err := os.Hostname(); err == nil {
		return hostname
	}
	return "meshlift-demo"
}
