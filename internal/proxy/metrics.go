package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// direction is inbound (from other proxies or plaintext clients to the app) or outbound (from the
// app to an upstream).
type direction uint8

const (
	inbound direction = iota
	outbound
)

var directionNames = [...]string{inbound: "inbound", outbound: "outbound"}

func (d direction) String() string { return directionNames[d] }

// Reasons a request fails in the proxy (meshlift_proxy_request_errors_total).
const (
	reasonNoEndpoints = "no_endpoints"
	reasonConnect     = "connect"
	reasonUpstream    = "upstream"
	reasonCanceled    = "canceled"
	// reasonResponseHeadTooLarge: the upstream's response head exceeded the head limits (502).
	reasonResponseHeadTooLarge = "response_head_too_large"
)

// metrics are the data path's collectors. Every label is bounded by the configuration (ports,
// upstreams) or by a fixed set of values; per-request counters are resolved once per target.
type metrics struct {
	requests          *prometheus.CounterVec
	requestErrors     *prometheus.CounterVec
	requestDuration   *prometheus.HistogramVec
	connections       [2]prometheus.Counter
	activeConnections [2]prometheus.Gauge
	handshakeFailures *prometheus.CounterVec
	connectFailures   *prometheus.CounterVec
	certificateExpiry prometheus.Gauge
	plaintextRefused  prometheus.Counter
	unknownSNI        prometheus.Counter
	endpoints         *prometheus.GaugeVec
	outboundRoutes    prometheus.Gauge
	captureRefused    prometheus.Counter
	appTLSPassthrough prometheus.Counter

	connectionsVec       *prometheus.CounterVec
	activeConnectionsVec *prometheus.GaugeVec

	retiringVec    *prometheus.GaugeVec
	retiring       [numKinds]prometheus.Gauge
	connectionsCut *prometheus.CounterVec
}

// cut is the counter of connections of kind cut for reason.
func (m *metrics) cut(reason string, kind connKind) prometheus.Counter {
	return m.connectionsCut.WithLabelValues(reason, kind.String())
}

func newMetrics() *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlift_proxy_requests_total",
			Help: "HTTP requests proxied, by direction, target (inbound port name or upstream cluster) and status class.",
		}, []string{"direction", "target", "code"}),
		requestErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlift_proxy_request_errors_total",
			Help: "HTTP requests the proxy could not complete, by direction, target and reason (no_endpoints, connect, upstream, response_head_too_large, canceled).",
		}, []string{"direction", "target", "reason"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshlift_proxy_request_duration_seconds",
			Help:    "Time from a request's arrival to the end of its response body, by direction.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"direction"}),
		connectionsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlift_proxy_connections_total",
			Help: "Connections accepted, by direction.",
		}, []string{"direction"}),
		activeConnectionsVec: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshlift_proxy_active_connections",
			Help: "Accepted connections still open, by direction.",
		}, []string{"direction"}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlift_proxy_tls_handshake_failures_total",
			Help: "Failed mTLS handshakes, by direction and reason.",
		}, []string{"direction", "reason"}),
		connectFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlift_proxy_upstream_connect_failures_total",
			Help: "Failed connections to the app (inbound) or to an upstream endpoint (outbound, dial or handshake), by target.",
		}, []string{"direction", "target"}),
		certificateExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshlift_proxy_certificate_expiry_timestamp_seconds",
			Help: "When the workload certificate in use expires (Unix time); 0 without one.",
		}),
		plaintextRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshlift_proxy_plaintext_refused_total",
			Help: "Inbound plaintext connections refused because mTLS is STRICT.",
		}),
		unknownSNI: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshlift_proxy_unknown_sni_total",
			Help: "Inbound TLS connections closed because their server name is not a port of this MeshService.",
		}),
		retiringVec: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshlift_proxy_retiring_connections",
			Help: "Connections still served after a takeover or during a shutdown drain, by kind (http1, http2, tcp, upgraded, other).",
		}, []string{"kind"}),
		connectionsCut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlift_proxy_connections_cut_total",
			Help: "Connections closed by the proxy while their clients still used them, by reason (drain_budget, drain_timeout) and kind.",
		}, []string{"reason", "kind"}),
		outboundRoutes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshlift_proxy_outbound_routes",
			Help: "Destinations (Service ClusterIP:port, pod IP:port) in the outbound routes that captured connections are routed by.",
		}),
		captureRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshlift_proxy_capture_refused_total",
			Help: "Connections to the outbound capture port that capture did not redirect (closed).",
		}),
		appTLSPassthrough: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshlift_proxy_app_tls_passthrough_total",
			Help: "Captured inbound TLS connections without a server name of this MeshService, piped to the app port they were addressed to (PERMISSIVE: the app serves TLS itself).",
		}),
		endpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshlift_proxy_endpoints",
			Help: "Endpoints known for each upstream cluster.",
		}, []string{"cluster"}),
	}
	for _, d := range []direction{inbound, outbound} {
		m.connections[d] = m.connectionsVec.WithLabelValues(d.String())
		m.activeConnections[d] = m.activeConnectionsVec.WithLabelValues(d.String())
	}
	for k := range m.retiring {
		m.retiring[k] = m.retiringVec.WithLabelValues(connKind(k).String())
	}
	for _, reason := range []string{CutReasonDrainBudget, CutReasonDrainTimeout} {
		for k := range numKinds {
			m.cut(reason, k)
		}
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.requestErrors, m.requestDuration, m.connectionsVec,
		m.activeConnectionsVec, m.handshakeFailures, m.connectFailures, m.certificateExpiry,
		m.plaintextRefused, m.unknownSNI, m.endpoints, m.retiringVec, m.connectionsCut, m.outboundRoutes, m.captureRefused,
		m.appTLSPassthrough}
}

// targetStats are the per-request counters of one target, resolved once.
type targetStats struct {
	codes          [6]prometheus.Counter // by status/100; [0] for anything outside 1xx..5xx
	duration       prometheus.Observer
	noEndpoints    prometheus.Counter
	connectErrors  prometheus.Counter
	upstreamErrors prometheus.Counter
	headTooLarge   prometheus.Counter
	canceled       prometheus.Counter
	connectFailure prometheus.Counter
}

func (m *metrics) forTarget(dir direction, name string) *targetStats {
	s := &targetStats{duration: m.requestDuration.WithLabelValues(dir.String())}
	for class := range s.codes {
		label := "other"
		if class > 0 {
			label = string(rune('0'+class)) + "xx"
		}
		s.codes[class] = m.requests.WithLabelValues(dir.String(), name, label)
	}
	s.noEndpoints = m.requestErrors.WithLabelValues(dir.String(), name, reasonNoEndpoints)
	s.connectErrors = m.requestErrors.WithLabelValues(dir.String(), name, reasonConnect)
	s.upstreamErrors = m.requestErrors.WithLabelValues(dir.String(), name, reasonUpstream)
	s.headTooLarge = m.requestErrors.WithLabelValues(dir.String(), name, reasonResponseHeadTooLarge)
	s.canceled = m.requestErrors.WithLabelValues(dir.String(), name, reasonCanceled)
	s.connectFailure = m.connectFailures.WithLabelValues(dir.String(), name)
	return s
}

func (s *targetStats) code(status int) prometheus.Counter {
	class := status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	return s.codes[class]
}
