package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxEchoLine bounds a line the echo server reads: the streams client sends a few dozen bytes.
const maxEchoLine = 64 << 10

// serveTCPEcho answers every line a connection sends with the same line, until the client
// closes, ctx is done (the connections are closed then: a TCP stream has no graceful end the
// server could wait for), or a line is longer than maxEchoLine.
func serveTCPEcho(ctx context.Context, ln net.Listener, logger *slog.Logger) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	stop := context.AfterFunc(ctx, func() {
		_ = ln.Close()
		mu.Lock()
		for c := range open {
			_ = c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("TCP echo on %s stopped: %w", ln.Addr(), err)
		}
		mu.Lock()
		open[conn] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(open, conn)
				mu.Unlock()
				_ = conn.Close()
			}()
			if err := echoLines(conn); err != nil && ctx.Err() == nil {
				logger.Warn("TCP echo connection ended", "remote", conn.RemoteAddr().String(), "error", err)
			}
		})
	}
}

func echoLines(conn net.Conn) error {
	r := bufio.NewReaderSize(conn, 4096)
	for {
		line, err := readLine(r)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if _, err := conn.Write(line); err != nil {
			return err
		}
	}
}

// readLine reads one line with its newline, at most maxEchoLine bytes.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxEchoLine {
			return nil, fmt.Errorf("a line longer than %d bytes", maxEchoLine)
		}
		if err == nil {
			return line, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if len(line) > 0 && errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// streamsOptions are the flags of "streams".
type streamsOptions struct {
	target   string
	streams  int
	interval time.Duration
	duration time.Duration
	timeout  time.Duration
	output   string
}

// streamsSummary is what "streams" prints: how many streams stayed up for the whole run, how
// many broke and why (reason: count), and how many lines made the round trip.
type streamsSummary struct {
	Target   string         `json:"target"`
	Streams  int            `json:"streams"`
	Lines    int64          `json:"lines"`
	Broken   int            `json:"broken"`
	Failures map[string]int `json:"failures,omitempty"`
	Seconds  float64        `json:"seconds"`
}

// runStreams keeps --streams long-lived TCP connections to --target for --duration, each sending
// a numbered line every --interval and expecting it back: the kind of connection a database
// client or a WebSocket keeps. A stream that breaks (EOF, reset, a wrong or late answer) is
// counted with its reason and not reopened. Exit code 1 when any broke.
func runStreams(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshlift-demo streams", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts streamsOptions
	fs.StringVar(&opts.target, "target", "", "host:port of a line echo server (meshlift-demo serve --tcp-echo-listen). Required.")
	fs.IntVar(&opts.streams, "streams", 4, "Connections to keep open (1 to 1000).")
	fs.DurationVar(&opts.interval, "interval", 10*time.Millisecond, "Time between two lines on a connection.")
	fs.DurationVar(&opts.duration, "duration", 30*time.Second, "How long the connections stay open (at most 1h).")
	fs.DurationVar(&opts.timeout, "timeout", 5*time.Second, "How long an answer may take before the stream counts as broken.")
	fs.StringVar(&opts.output, "output", "text", "Summary format: text or json.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if err := opts.validate(); err != nil {
		_, _ = fmt.Fprintf(stderr, "meshlift-demo streams: %v\n", err)
		return exitUsage
	}
	summary := keepStreams(ctx, opts)
	if opts.output == "json" {
		_ = json.NewEncoder(stdout).Encode(summary)
	} else {
		_, _ = fmt.Fprintf(stdout, "streams %d to %s for %.1fs: %d lines echoed, %d broken\n", summary.Streams, summary.Target, summary.Seconds, summary.Lines, summary.Broken)
		for reason, n := range summary.Failures {
			_, _ = fmt.Fprintf(stdout, "  %d: %s\n", n, reason)
		}
	}
	if summary.Broken > 0 {
		return exitFailure
	}
	return exitOK
}

func (opts streamsOptions) validate() error {
	var problems []string
	if _, _, err := net.SplitHostPort(opts.target); err != nil {
		problems = append(problems, fmt.Sprintf("--target %q is not host:port", opts.target))
	}
	if opts.streams < 1 || opts.streams > 1000 {
		problems = append(problems, "--streams must be from 1 to 1000")
	}
	if opts.interval < time.Millisecond || opts.duration <= 0 || opts.duration > time.Hour || opts.timeout <= 0 {
		problems = append(problems, "--interval must be at least 1ms, --duration from 1ns to 1h and --timeout positive")
	}
	if opts.output != "text" && opts.output != "json" {
		problems = append(problems, "--output must be text or json")
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

func keepStreams(ctx context.Context, opts streamsOptions) streamsSummary {
	start := time.Now()
	runCtx, cancel := context.WithTimeout(ctx, opts.duration)
	defer cancel()
	var lines atomic.Int64
	var mu sync.Mutex
	failures := map[string]int{}
	var wg sync.WaitGroup
	for i := range opts.streams {
		wg.Go(func() {
			if err := keepStream(runCtx, opts, i, &lines); err != nil {
				mu.Lock()
				failures[err.Error()]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	broken := 0
	for _, n := range failures {
		broken += n
	}
	return streamsSummary{Target: opts.target, Streams: opts.streams, Lines: lines.Load(), Broken: broken, Failures: failures,
		Seconds: time.Since(start).Seconds()}
}

// keepStream runs one stream until ctx ends; it returns why the stream broke, or nil. The
// reasons are short and stable, so that the summary groups them.
func keepStream(ctx context.Context, opts streamsOptions, id int, lines *atomic.Int64) error {
	dialer := net.Dialer{Timeout: opts.timeout}
	conn, err := dialer.DialContext(ctx, "tcp", opts.target)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("dial: %s", errorKind(err))
	}
	defer func() { _ = conn.Close() }()
	r := bufio.NewReader(conn)
	ticker := time.NewTicker(opts.interval)
	defer ticker.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		want := "stream " + strconv.Itoa(id) + " line " + strconv.Itoa(seq) + "\n"
		_ = conn.SetDeadline(time.Now().Add(opts.timeout))
		if _, err := io.WriteString(conn, want); err != nil {
			return fmt.Errorf("write: %s", errorKind(err))
		}
		got, err := readLine(r)
		if err != nil {
			return fmt.Errorf("read: %s", errorKind(err))
		}
		if string(got) != want {
			return errors.New("read: a wrong answer")
		}
		lines.Add(1)
	}
}

// errorKind names an error without its addresses, which differ from stream to stream.
func errorKind(err error) string {
	var netErr net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the connection was closed (EOF)"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case strings.Contains(err.Error(), "connection reset"):
		return "connection reset"
	case strings.Contains(err.Error(), "connection refused"):
		return "connection refused"
	case strings.Contains(err.Error(), "broken pipe"):
		return "broken pipe"
	}
	return "other error"
}
