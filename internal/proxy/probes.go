package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/meshlift/meshlift/internal/proxyconfig"
)

// The app probe listener (AppProbesListener) answers the kubelet's rewritten probes of the app
// (proxyconfig.AppProbePath): it reads the original probe from the pod's annotations file at each
// request (the file is small and the kubelet rewrites it when the annotation changes) and runs it
// against the app on AppHost the way the kubelet would have, so probes keep working when inbound
// capture would send the kubelet's own connection to the inbound listener (STRICT refuses it).

const (
	// defaultProbeTimeout is the kubelet's default timeoutSeconds.
	defaultProbeTimeout = time.Second
	// maxProbeBody is how much of an httpGet answer is read (the kubelet reads up to 10 KiB).
	maxProbeBody = 10 << 10
	// probeUserAgent is sent when the kubelet's request had no User-Agent (the kubelet sends
	// "kube-probe/<version>", which is passed on).
	probeUserAgent = "kube-probe/meshlift"
)

// appProbes serves AppProbesListener. Its connections carry one request each (no keep-alive)
// and are not part of a generation: a process that handed its listeners off answers the probes
// it accepted before, and the next process accepts the ones that queue after.
type appProbes struct {
	p      *Proxy
	server *http.Server
	conns  *connQueue
	client *http.Client
}

func (p *Proxy) newAppProbes() *appProbes {
	a := &appProbes{p: p, conns: newConnQueue(queueAddr{name: AppProbesListener})}
	a.server = &http.Server{
		Handler:           a,
		ReadHeaderTimeout: p.opts.HandshakeTimeout,
		ErrorLog:          p.httpErrorLog,
	}
	a.server.SetKeepAlivesEnabled(false)
	a.client = &http.Client{
		Transport: &http.Transport{
			// As the kubelet: no keep-alive, HTTPS not verified, no proxy from the environment.
			DisableKeepAlives:  true,
			DisableCompression: true,
			TLSClientConfig:    &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the kubelet does not verify probes either
			DialContext:        (&net.Dialer{}).DialContext,
		},
		// A redirect is not followed: its 3xx is the answer, a success as for the kubelet's
		// redirects it does not follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return a
}

func (a *appProbes) start() {
	go a.server.Serve(a.conns) //nolint:errcheck // returns when closed
}

// serve hands an accepted connection to the server.
func (a *appProbes) serve(c net.Conn) {
	if !a.conns.push(c) {
		_ = c.Close()
	}
}

func (a *appProbes) close() {
	_ = a.conns.Close()
	_ = a.server.Close()
}

func (a *appProbes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	container, kind, ok := proxyconfig.ParseAppProbePath(r.URL.Path)
	if !ok {
		probeAnswer(w, http.StatusNotFound, "not an app probe path: the listener serves "+proxyconfig.AppProbePath("CONTAINER", "KIND"))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		probeAnswer(w, http.StatusMethodNotAllowed, "app probes are GET")
		return
	}
	probe, err := a.lookup(container, kind)
	if err != nil {
		a.p.log.Error(err, "Cannot read the app's original probes", "container", container, "kind", kind,
			"file", a.p.opts.AnnotationsFile)
		probeAnswer(w, http.StatusInternalServerError, "cannot read the app's original probes: "+err.Error())
		return
	}
	if probe == nil {
		probeAnswer(w, http.StatusNotFound, "no "+kind+" probe for container "+container)
		return
	}
	timeout := defaultProbeTimeout
	if probe.TimeoutSeconds > 0 {
		timeout = time.Duration(probe.TimeoutSeconds) * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	if err := a.run(ctx, probe, r.Header.Get("User-Agent")); err != nil {
		a.p.log.V(1).Info("App probe failed", "container", container, "kind", kind, "reason", err.Error())
		probeAnswer(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	probeAnswer(w, http.StatusOK, "ok")
}

func probeAnswer(w http.ResponseWriter, status int, message string) {
	w.Header()["Content-Type"] = textPlain
	w.Header()["X-Content-Type-Options"] = noSniff
	w.WriteHeader(status)
	_, _ = io.WriteString(w, message+"\n")
}

// lookup reads container's original probe of kind from the annotations file: nil when there is
// none (or no annotations file), an error when the file or the annotation cannot be read.
func (a *appProbes) lookup(container, kind string) (*proxyconfig.AppProbe, error) {
	if a.p.opts.AnnotationsFile == "" {
		return nil, nil
	}
	data, err := os.ReadFile(a.p.opts.AnnotationsFile)
	if err != nil {
		return nil, fmt.Errorf("failed to read the annotations file: %w", err)
	}
	annotations, err := proxyconfig.ParseAnnotations(data)
	if err != nil {
		return nil, err
	}
	probes, err := proxyconfig.ParseOriginalProbes(annotations[proxyconfig.OriginalProbesAnnotation])
	if err != nil {
		return nil, err
	}
	return probes[container].Probe(kind), nil
}

// run runs one original probe against the app; nil is a success.
func (a *appProbes) run(ctx context.Context, probe *proxyconfig.AppProbe, userAgent string) error {
	if probe.TCPSocket != nil {
		address := net.JoinHostPort(a.p.opts.AppHost, strconv.Itoa(probe.TCPSocket.Port))
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", address)
		if err != nil {
			return fmt.Errorf("tcpSocket %s: %w", address, probeError(ctx, err))
		}
		_ = conn.Close()
		return nil
	}
	h := probe.HTTPGet
	scheme := "http"
	if h.Scheme == "HTTPS" {
		scheme = "https"
	}
	path := h.Path
	if path == "" {
		path = "/"
	}
	target, err := url.Parse(scheme + "://" + net.JoinHostPort(a.p.opts.AppHost, strconv.Itoa(h.Port)) + path)
	if err != nil {
		return fmt.Errorf("httpGet path %q: %w", h.Path, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return fmt.Errorf("httpGet %s: %w", target, err)
	}
	if h.Host != "" {
		req.Host = h.Host
	}
	for _, header := range h.Headers {
		if strings.EqualFold(header.Name, "Host") {
			req.Host = header.Value
			continue
		}
		req.Header.Add(header.Name, header.Value)
	}
	// The kubelet's defaults, unless the probe sets them.
	if userAgent == "" {
		userAgent = probeUserAgent
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header.Set("User-Agent", userAgent)
	}
	if _, ok := req.Header["Accept"]; !ok {
		req.Header.Set("Accept", "*/*")
	}
	res, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("httpGet %s: %w", target, probeError(ctx, err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, maxProbeBody))
	_ = res.Body.Close()
	if res.StatusCode < http.StatusOK || res.StatusCode >= http.StatusBadRequest {
		return fmt.Errorf("httpGet %s answered %d", target, res.StatusCode)
	}
	return nil
}

// probeError says "timed out" for a probe that ran out of time, whatever layer noticed.
func probeError(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("timed out: %w", err)
	}
	return err
}
