package controlplane

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics, served on the operator's metrics endpoint.
var (
	certificatesIssued = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshlift_control_plane_certificates_issued_total",
		Help: "Workload certificates signed, by reason: initial (first on a stream), rotation, csr (the proxy sent a new CSR), authority (the mesh CA changed).",
	}, []string{"reason"})
	refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshlift_control_plane_refusals_total",
		Help: "Streams refused or ended because of what the caller presented or asked for, by reason.",
	}, []string{"reason"})
	activeStreams = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshlift_control_plane_streams",
		Help: "Open streams, by service: ads (SDS and EDS) or sds.",
	}, []string{"service"})
	timeToFirstCertificate = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "meshlift_control_plane_time_to_first_certificate_seconds",
		Help:    "Time from a stream's start to the first certificate sent on it (authentication included).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})
	nacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshlift_control_plane_nacks_total",
		Help: "Responses the proxies rejected (NACK), by resource type: secret or endpoints.",
	}, []string{"type"})
	tokenReviews = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshlift_control_plane_token_reviews_total",
		Help: "Bearer tokens checked, by result: cached (verified earlier, not expired), authenticated, rejected or error (the API server could not be asked).",
	}, []string{"result"})
	certificateExpiryAnnotations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshlift_control_plane_certificate_expiry_annotations_total",
		Help: "Pods looked at to record the expiry of the certificate their proxies were sent (meshlift.io/certificate-not-after), by result: patched, unchanged (the pod had it already), gone (the pod was deleted or replaced) or error (retried).",
	}, []string{"result"})
)

// liveServers are the serving Servers, whose streams the leaf expiry gauge reads.
var liveServers sync.Map

var leafExpiryDesc = prometheus.NewDesc("meshlift_control_plane_leaf_expiry_seconds",
	"Seconds until the earliest expiry among the workload certificates held by open streams (absent without such streams).", nil, nil)

// leafExpiryCollector computes the earliest leaf expiry at scrape time.
type leafExpiryCollector struct{}

func (leafExpiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- leafExpiryDesc }

func (leafExpiryCollector) Collect(ch chan<- prometheus.Metric) {
	var earliest time.Time
	found := false
	var now time.Time
	liveServers.Range(func(key, _ any) bool {
		s := key.(*Server)
		if t, ok := s.earliestLeafExpiry(); ok && (!found || t.Before(earliest)) {
			earliest, found, now = t, true, s.opts.Clock.Now()
		}
		return true
	})
	if found {
		ch <- prometheus.MustNewConstMetric(leafExpiryDesc, prometheus.GaugeValue, earliest.Sub(now).Seconds())
	}
}

func init() {
	metrics.Registry.MustRegister(certificatesIssued, refusals, activeStreams, timeToFirstCertificate, nacks, tokenReviews, certificateExpiryAnnotations, leafExpiryCollector{})
}
