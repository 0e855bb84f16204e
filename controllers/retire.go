package controllers

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/proxyadmin"
	"github.com/meshlift/meshlift/internal/rollout"
	"github.com/meshlift/meshlift/internal/sidecar"
)

// EventReasonConnectionsCut is the Warning event on a pod whose old proxy closed long-lived
// connections at the end of its drain budget during a hot upgrade.
const EventReasonConnectionsCut = "ConnectionsCut"

// RetireProber reads what the old proxy of a hot-upgraded pod says about itself.
type RetireProber interface {
	// Probe asks the proxy of pod's slot; it reports a failure in RetireReport.Error.
	Probe(ctx context.Context, pod *corev1.Pod, slot int) rollout.RetireReport
}

// HTTPRetireProber asks the slot's admin endpoint for /ready at the pod's IP, as the kubelet's
// readiness probe does: /ready is the one admin path a proxy serves outside its pod, and its body
// says how many connections a retiring proxy still serves.
type HTTPRetireProber struct {
	// Client is the HTTP client (nil: one with a 2 s timeout and no proxy from the environment).
	Client *http.Client
}

var defaultProbeClient = &http.Client{
	Timeout:   2 * time.Second,
	Transport: &http.Transport{Proxy: nil, DialContext: (&net.Dialer{Timeout: time.Second}).DialContext, DisableKeepAlives: true},
	// /ready never redirects; a redirect is not followed anywhere.
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// Probe implements RetireProber.
func (p HTTPRetireProber) Probe(ctx context.Context, pod *corev1.Pod, slot int) rollout.RetireReport {
	if pod.Status.PodIP == "" {
		return rollout.RetireReport{Error: "the pod has no IP"}
	}
	client := p.Client
	if client == nil {
		client = defaultProbeClient
	}
	url := "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(sidecar.AdminPort(slot)))) + "/ready"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return rollout.RetireReport{Error: err.Error()}
	}
	resp, err := client.Do(req)
	if err != nil {
		return rollout.RetireReport{Error: err.Error()}
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, proxyadmin.MaxReadyBody+1))
	if err != nil {
		return rollout.RetireReport{Error: fmt.Sprintf("failed to read %s: %v", url, err)}
	}
	return retireReport(resp.StatusCode, string(body))
}

// retireReport turns the answer of an old proxy's /ready into what the planner reads.
func retireReport(status int, body string) rollout.RetireReport {
	ready, err := proxyadmin.ParseReady(status, body)
	switch {
	case err != nil:
		return rollout.RetireReport{Error: err.Error()}
	case ready.Role == proxyadmin.RoleIdle:
		return rollout.RetireReport{Idle: true, Cut: clamp32(ready.Cut)}
	case ready.Connections >= 0:
		return rollout.RetireReport{Connections: clamp32(ready.Connections)}
	default:
		// Active again (the new proxy died and the old one resumed), draining, or not ready:
		// not idle, and no count to show.
		return rollout.RetireReport{}
	}
}

func clamp32(n int) int32 {
	return int32(min(n, 1<<31-1))
}

// maxProbes bounds the /ready requests of one decision that run at once.
const maxProbes = 8

// retireReports asks the old proxy of every pod of plan past its takeover (phases Stabilizing
// and Retiring of a hot upgrade) how many connections it still serves. nil when the reconciler
// has no prober (the planner then retires old slots at once).
func (r *UpgradePlanReconciler) retireReports(ctx context.Context, plan *meshv1alpha1.UpgradePlan, pods []corev1.Pod) map[types.UID]rollout.RetireReport {
	if r.Prober == nil {
		return nil
	}
	type probe struct {
		pod  *corev1.Pod
		slot int
	}
	var probes []probe
	for i := range pods {
		value, ok := pods[i].Annotations[meshv1alpha1.AnnotationUpgrade]
		if !ok {
			continue
		}
		state, err := rollout.DecodeState(value)
		if err != nil || state.Plan != plan.Name || state.Strategy != meshv1alpha1.StrategyHotUpgrade ||
			(state.Phase != rollout.PodStabilizing && state.Phase != rollout.PodRetiring) {
			continue
		}
		probes = append(probes, probe{pod: &pods[i], slot: state.FromSlot})
	}
	reports := make(map[types.UID]rollout.RetireReport, len(probes))
	if len(probes) == 0 {
		return reports
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxProbes)
	for _, p := range probes {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			report := r.Prober.Probe(ctx, p.pod, p.slot)
			mu.Lock()
			reports[p.pod.UID] = report
			mu.Unlock()
		})
	}
	wg.Wait()
	return reports
}
