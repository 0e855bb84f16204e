package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Hard bounds of "load": whatever the flags say, a run sends at most maxLoadRequests requests
// and dispatches for at most maxLoadDuration.
const (
	maxLoadRequests    = 100_000
	maxLoadDuration    = time.Hour
	maxLoadRPS         = 100_000
	maxLoadConcurrency = 1_000
	maxLoadBodyBytes   = defaultMaxBodyBytes
	// maxAnswerBytes bounds how much of a JSON answer is read.
	maxAnswerBytes = 64 << 10
)

// Connection modes of "load".
const (
	modeKeepAlive = "keepalive" // HTTP/1.1, connections reused
	modeNewConn   = "newconn"   // HTTP/1.1, a fresh TCP connection per request
	modeH2C       = "h2c"       // HTTP/2 over cleartext with prior knowledge
)

// failureKind says why a request failed.
type failureKind string

const (
	failureConnectRefused failureKind = "connect_refused"
	failureReset          failureKind = "reset"
	failureTimeout        failureKind = "timeout"
	failureBadStatus      failureKind = "bad_status"
	failureBadBody        failureKind = "bad_body"
	failureOther          failureKind = "other"
)

// failureKinds is the order in which summaries list the kinds.
var failureKinds = []failureKind{
	failureConnectRefused, failureReset, failureTimeout, failureBadStatus, failureBadBody, failureOther,
}

// Why a run stopped dispatching.
const (
	stoppedByMaxRequests = "max-requests"
	stoppedByDuration    = "duration"
	stoppedBySignal      = "signal"
)

// loadOptions are the flags of "load".
type loadOptions struct {
	target        string
	rps           int
	duration      time.Duration
	maxRequests   int
	concurrency   int
	mode          string
	bodyBytes     int
	timeout       time.Duration
	output        string
	allowFailures int
	checkBody     bool
}

// errFlagsReported means the flag package has already printed what was wrong with the flags.
var errFlagsReported = errors.New("invalid flags")

func parseLoadOptions(args []string, stderr io.Writer) (loadOptions, error) {
	fs := flag.NewFlagSet("meshlift-demo load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts loadOptions
	fs.StringVar(&opts.target, "target", "", "URL every request goes to (http:// only; required). Redirects are not followed.")
	fs.IntVar(&opts.rps, "rps", 50, fmt.Sprintf("Requests per second to start (1..%d).", maxLoadRPS))
	fs.DurationVar(&opts.duration, "duration", 10*time.Second, fmt.Sprintf("How long to send (at most %s).", maxLoadDuration))
	fs.IntVar(&opts.maxRequests, "max-requests", maxLoadRequests, fmt.Sprintf("Stop after this many requests (at most %d).", maxLoadRequests))
	fs.IntVar(&opts.concurrency, "concurrency", 4, fmt.Sprintf("Requests in flight at most (1..%d).", maxLoadConcurrency))
	fs.StringVar(&opts.mode, "mode", modeKeepAlive, "keepalive (HTTP/1.1, reused connections), newconn (a new TCP connection per request) or h2c (HTTP/2 over cleartext).")
	fs.IntVar(&opts.bodyBytes, "body-bytes", 0, fmt.Sprintf("0 sends GET; otherwise POST this many bytes and check they are echoed (at most %d).", maxLoadBodyBytes))
	fs.DurationVar(&opts.timeout, "timeout", 2*time.Second, "Timeout of each request, from connecting to reading the whole answer.")
	fs.StringVar(&opts.output, "output", "text", "Summary format: text or json.")
	fs.IntVar(&opts.allowFailures, "allow-failures", 0, "Exit 0 even if up to this many requests failed.")
	fs.BoolVar(&opts.checkBody, "check-body", true, "Check answers: the echoed body for POST, the echo server's JSON for GET.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return loadOptions{}, err
		}
		return loadOptions{}, errFlagsReported
	}
	if fs.NArg() > 0 {
		return loadOptions{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return opts, opts.validate()
}

func (opts loadOptions) validate() error {
	var problems []error
	if opts.target == "" {
		problems = append(problems, errors.New("--target is required"))
	} else if target, err := url.Parse(opts.target); err != nil {
		problems = append(problems, fmt.Errorf("--target %q is not a URL: %w", opts.target, err))
	} else if target.Scheme != "http" || target.Host == "" || target.User != nil {
		problems = append(problems, fmt.Errorf("--target %q must be http://HOST[:PORT][/PATH] (no https, no credentials)", opts.target))
	}
	if opts.rps < 1 || opts.rps > maxLoadRPS {
		problems = append(problems, fmt.Errorf("--rps %d must be between 1 and %d", opts.rps, maxLoadRPS))
	}
	if opts.duration <= 0 || opts.duration > maxLoadDuration {
		problems = append(problems, fmt.Errorf("--duration %s must be positive and at most %s", opts.duration, maxLoadDuration))
	}
	if opts.maxRequests < 1 || opts.maxRequests > maxLoadRequests {
		problems = append(problems, fmt.Errorf("--max-requests %d must be between 1 and %d", opts.maxRequests, maxLoadRequests))
	}
	if opts.concurrency < 1 || opts.concurrency > maxLoadConcurrency {
		problems = append(problems, fmt.Errorf("--concurrency %d must be between 1 and %d", opts.concurrency, maxLoadConcurrency))
	}
	if !slices.Contains([]string{modeKeepAlive, modeNewConn, modeH2C}, opts.mode) {
		problems = append(problems, fmt.Errorf("--mode %q must be %s, %s or %s", opts.mode, modeKeepAlive, modeNewConn, modeH2C))
	}
	if opts.bodyBytes < 0 || opts.bodyBytes > maxLoadBodyBytes {
		problems = append(problems, fmt.Errorf("--body-bytes %d must be between 0 and %d", opts.bodyBytes, maxLoadBodyBytes))
	}
	if opts.timeout <= 0 {
		problems = append(problems, fmt.Errorf("--timeout %s must be positive", opts.timeout))
	}
	if opts.output != "text" && opts.output != "json" {
		problems = append(problems, fmt.Errorf("--output %q must be text or json", opts.output))
	}
	if opts.allowFailures < 0 {
		problems = append(problems, fmt.Errorf("--allow-failures %d must not be negative", opts.allowFailures))
	}
	return errors.Join(problems...)
}

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parseLoadOptions(args, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errFlagsReported):
		return exitUsage
	case err != nil:
		_, _ = fmt.Fprintf(stderr, "meshlift-demo load: %v\n", err)
		return exitUsage
	}
	summary := newLoadGenerator(opts).run(ctx)
	if opts.output == "json" {
		err = json.NewEncoder(stdout).Encode(summary)
	} else {
		err = summary.writeText(stdout)
	}
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "meshlift-demo load: failed to print the summary: %v\n", err)
		return exitFailure
	}
	if !summary.Passed {
		return exitFailure
	}
	return exitOK
}

// payloadPattern fills the bodies of POST requests.
const payloadPattern = "meshlift-demo load payload\n"

// loadGenerator sends requests to opts.target at a steady rate from a fixed pool of workers.
type loadGenerator struct {
	opts    loadOptions
	client  *http.Client
	method  string
	payload []byte
	// wantPath is the path the echo server reports for the target.
	wantPath string
}

func newLoadGenerator(opts loadOptions) *loadGenerator {
	generator := &loadGenerator{opts: opts, client: newLoadClient(opts), method: http.MethodGet, wantPath: "/"}
	if target, err := url.Parse(opts.target); err == nil && target.Path != "" {
		generator.wantPath = target.Path
	}
	if opts.bodyBytes > 0 {
		generator.method = http.MethodPost
		generator.payload = make([]byte, opts.bodyBytes)
		for i := range generator.payload {
			generator.payload[i] = payloadPattern[i%len(payloadPattern)]
		}
	}
	return generator
}

// newLoadClient returns a client that talks to the target only: no proxy from the environment,
// no redirects followed, and the connection handling of opts.mode.
func newLoadClient(opts loadOptions) *http.Client {
	dialer := &net.Dialer{Timeout: opts.timeout, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy:       nil, // never $HTTP_PROXY: every request goes to the target
		DialContext: dialer.DialContext,
		// At most one connection per worker: without the cap the transport may dial a spare
		// connection while another becomes idle.
		MaxConnsPerHost:     opts.concurrency,
		MaxIdleConns:        opts.concurrency,
		MaxIdleConnsPerHost: opts.concurrency,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	var protocols http.Protocols
	switch opts.mode {
	case modeH2C:
		protocols.SetUnencryptedHTTP2(true)
	case modeNewConn:
		protocols.SetHTTP1(true)
		transport.DisableKeepAlives = true
	default:
		protocols.SetHTTP1(true)
	}
	transport.Protocols = &protocols
	return &http.Client{
		Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// requestResult is the outcome of one request.
type requestResult struct {
	latency time.Duration
	failure failureKind // empty when the request succeeded
	err     error
}

// run sends requests until the duration is over, maxRequests were sent or ctx is done, waits for
// the requests in flight and summarizes them. Requests in flight when ctx is done still finish
// (each within opts.timeout), so every request sent is counted as ok or failed.
func (g *loadGenerator) run(ctx context.Context) loadSummary {
	defer g.client.CloseIdleConnections()
	jobs := make(chan struct{})
	workerResults := make([][]requestResult, g.opts.concurrency)
	var workers sync.WaitGroup
	for worker := range g.opts.concurrency {
		workers.Go(func() {
			for range jobs {
				workerResults[worker] = append(workerResults[worker], g.send())
			}
		})
	}
	start := time.Now()
	stoppedBy := g.dispatch(ctx, jobs, start)
	workers.Wait()
	return g.summarize(slices.Concat(workerResults...), time.Since(start), stoppedBy)
}

// dispatch hands out one job per 1/rps seconds, starting at start, and closes jobs when it stops.
// It never hands out more than maxRequests jobs nor any after start+duration. When every worker
// is busy it falls behind rather than queueing, so the achieved rate may be lower than --rps.
func (g *loadGenerator) dispatch(ctx context.Context, jobs chan<- struct{}, start time.Time) string {
	defer close(jobs)
	interval := time.Second / time.Duration(g.opts.rps)
	deadline := start.Add(g.opts.duration)
	durationOver := time.NewTimer(time.Until(deadline))
	defer durationOver.Stop()
	pace := time.NewTimer(0)
	defer pace.Stop()
	for sent := 0; sent < g.opts.maxRequests; sent++ {
		next := start.Add(time.Duration(sent) * interval)
		if !next.Before(deadline) {
			return stoppedByDuration
		}
		pace.Reset(time.Until(next))
		select {
		case <-pace.C:
		case <-durationOver.C:
			return stoppedByDuration
		case <-ctx.Done():
			return stoppedBySignal
		}
		select {
		case jobs <- struct{}{}:
		case <-durationOver.C:
			return stoppedByDuration
		case <-ctx.Done():
			return stoppedBySignal
		}
	}
	return stoppedByMaxRequests
}

// send sends one request and checks its answer.
func (g *loadGenerator) send() requestResult {
	ctx, cancel := context.WithTimeout(context.Background(), g.opts.timeout)
	defer cancel()
	var body io.Reader
	if g.payload != nil {
		body = bytes.NewReader(g.payload)
	}
	request, err := http.NewRequestWithContext(ctx, g.method, g.opts.target, body)
	if err != nil {
		return requestResult{failure: failureOther, err: err}
	}
	if g.payload != nil {
		request.Header.Set("Content-Type", "application/octet-stream")
	}

	start := time.Now()
	response, err := g.client.Do(request)
	if err != nil {
		return requestResult{failure: classifyError(ctx, err), err: err}
	}
	defer func() { _ = response.Body.Close() }()
	limit := int64(maxAnswerBytes)
	if g.payload != nil {
		limit = int64(len(g.payload)) + 1
	}
	answer, err := io.ReadAll(io.LimitReader(response.Body, limit))
	latency := time.Since(start)
	if err != nil {
		return requestResult{failure: classifyError(ctx, err), err: fmt.Errorf("failed to read the answer: %w", err)}
	}
	if response.StatusCode < 200 || response.StatusCode > 299 {
		return requestResult{failure: failureBadStatus, err: fmt.Errorf("%s %s answered %s", g.method, g.opts.target, response.Status)}
	}
	if g.opts.checkBody {
		if err := g.checkAnswer(answer); err != nil {
			return requestResult{failure: failureBadBody, err: err}
		}
	}
	return requestResult{latency: latency}
}

// checkAnswer checks that a POST got its body back and a GET got the echo server's JSON.
func (g *loadGenerator) checkAnswer(answer []byte) error {
	if g.payload != nil {
		if !bytes.Equal(answer, g.payload) {
			return fmt.Errorf("the echo of a %d-byte body has %d bytes or differs", len(g.payload), len(answer))
		}
		return nil
	}
	var echo echoResponse
	if err := json.Unmarshal(answer, &echo); err != nil {
		return fmt.Errorf("the answer is not the echo server's JSON: %w", err)
	}
	if echo.Method != http.MethodGet || echo.Path != g.wantPath {
		return fmt.Errorf("the answer describes %s %s, want GET %s", echo.Method, echo.Path, g.wantPath)
	}
	return nil
}

// classifyError says why a request failed from the error of sending it or reading its answer;
// ctx is the request's context.
func classifyError(ctx context.Context, err error) failureKind {
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return failureConnectRefused
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout(), errors.Is(ctx.Err(), context.DeadlineExceeded):
		return failureTimeout
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return failureReset
	}
	// HTTP/2 reports a lost connection or an unprocessed stream without a typed error.
	message := err.Error()
	for _, reset := range []string{"connection reset", "broken pipe", "connection lost", "server closed", "GOAWAY", "stream error"} {
		if strings.Contains(message, reset) {
			return failureReset
		}
	}
	return failureOther
}

// latencySummary holds latency percentiles of the successful requests in milliseconds.
type latencySummary struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// loadSummary is what a run reports.
type loadSummary struct {
	Target string `json:"target"`
	Mode   string `json:"mode"`
	Method string `json:"method"`
	Sent   int    `json:"sent"`
	OK     int    `json:"ok"`
	Failed int    `json:"failed"`
	// Failures counts failed requests by kind; every kind is present.
	Failures map[failureKind]int `json:"failures"`
	// FirstErrors holds the first error of every kind that occurred.
	FirstErrors map[failureKind]string `json:"firstErrors,omitempty"`
	LatencyMs   latencySummary         `json:"latencyMs"`
	ElapsedSec  float64                `json:"elapsedSeconds"`
	AchievedRPS float64                `json:"achievedRPS"`
	StoppedBy   string                 `json:"stoppedBy"`
	Allowed     int                    `json:"allowedFailures"`
	// Passed is false when more requests failed than allowed.
	Passed bool `json:"passed"`
}

func (g *loadGenerator) summarize(results []requestResult, elapsed time.Duration, stoppedBy string) loadSummary {
	summary := loadSummary{
		Target:      g.opts.target,
		Mode:        g.opts.mode,
		Method:      g.method,
		Sent:        len(results),
		Failures:    map[failureKind]int{},
		FirstErrors: map[failureKind]string{},
		ElapsedSec:  elapsed.Seconds(),
		StoppedBy:   stoppedBy,
		Allowed:     g.opts.allowFailures,
	}
	for _, kind := range failureKinds {
		summary.Failures[kind] = 0
	}
	latencies := make([]time.Duration, 0, len(results))
	for _, result := range results {
		if result.failure == "" {
			summary.OK++
			latencies = append(latencies, result.latency)
			continue
		}
		summary.Failed++
		summary.Failures[result.failure]++
		if _, seen := summary.FirstErrors[result.failure]; !seen {
			summary.FirstErrors[result.failure] = result.err.Error()
		}
	}
	slices.Sort(latencies)
	summary.LatencyMs = latencySummary{
		P50: milliseconds(percentile(latencies, 0.50)),
		P90: milliseconds(percentile(latencies, 0.90)),
		P99: milliseconds(percentile(latencies, 0.99)),
		Max: milliseconds(percentile(latencies, 1)),
	}
	if elapsed > 0 {
		summary.AchievedRPS = math.Round(float64(summary.Sent)/elapsed.Seconds()*10) / 10
	}
	summary.Passed = summary.Failed <= g.opts.allowFailures
	return summary
}

// percentile returns the nearest-rank percentile of sorted latencies, 0 when there are none.
func percentile(sorted []time.Duration, fraction float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(fraction*float64(len(sorted)))) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

func milliseconds(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

func (s loadSummary) writeText(w io.Writer) error {
	var text strings.Builder
	fmt.Fprintf(&text, "target        %s %s (%s)\n", s.Method, s.Target, s.Mode)
	fmt.Fprintf(&text, "sent          %d\n", s.Sent)
	fmt.Fprintf(&text, "ok            %d\n", s.OK)
	fmt.Fprintf(&text, "failed        %d (allowed %d)\n", s.Failed, s.Allowed)
	kinds := make([]string, 0, len(failureKinds))
	for _, kind := range failureKinds {
		kinds = append(kinds, fmt.Sprintf("%s=%d", kind, s.Failures[kind]))
	}
	fmt.Fprintf(&text, "failures      %s\n", strings.Join(kinds, " "))
	for _, kind := range failureKinds {
		if message, ok := s.FirstErrors[kind]; ok {
			fmt.Fprintf(&text, "first error   %s: %s\n", kind, message)
		}
	}
	fmt.Fprintf(&text, "latency       p50=%.3fms p90=%.3fms p99=%.3fms max=%.3fms (successful requests)\n",
		s.LatencyMs.P50, s.LatencyMs.P90, s.LatencyMs.P99, s.LatencyMs.Max)
	fmt.Fprintf(&text, "elapsed       %.2fs (stopped by %s)\n", s.ElapsedSec, s.StoppedBy)
	fmt.Fprintf(&text, "achieved rps  %.1f\n", s.AchievedRPS)
	if s.Passed {
		fmt.Fprintf(&text, "result        PASS\n")
	} else {
		fmt.Fprintf(&text, "result        FAIL: %d requests failed, %d allowed\n", s.Failed, s.Allowed)
	}
	_, err := io.WriteString(w, text.String())
	return err
}
