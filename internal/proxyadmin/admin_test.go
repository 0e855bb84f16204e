package proxyadmin_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshlift/meshlift/internal/proxyadmin"
)

// get asks h for path as a process of the pod would, over the loopback.
func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.RemoteAddr = "127.0.0.1:40000"
	h.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Body)
	return rec.Code, string(body)
}

func TestReadyMeansHealthyInTheRole(t *testing.T) {
	tests := []struct {
		name        string
		role        proxyadmin.Role
		certificate bool
		wantCode    int
		wantBody    string
	}{
		{"a starting proxy is not ready", proxyadmin.RoleStarting, false, 503, "starting"},
		{"a proxy waiting to take over is not ready, so its slot's readiness marks the takeover", proxyadmin.RoleWaiting, true, 503, "waiting to take over"},
		{"an active proxy without a certificate is not ready", proxyadmin.RoleActive, false, 503, "without a workload certificate"},
		{"an active proxy with a certificate is ready", proxyadmin.RoleActive, true, 200, "ready: active"},
		{"a draining proxy stays ready", proxyadmin.RoleDraining, true, 200, "ready: draining: 7 connections"},
		{"an idle proxy that handed off stays ready", proxyadmin.RoleIdle, false, 200, "ready: idle"},
		{"a retiring proxy stays ready and says how many connections it holds", proxyadmin.RoleRetiring, true, 200, "ready: retiring: 7 connections"},
		{"an idle proxy says how many connections it cut at a drain budget", proxyadmin.RoleIdle, false, 200, "ready: idle; cut 3 connections at the drain budget"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := proxyadmin.NewState("2.0.0", 2)
			state.SetCertificate(tt.certificate)
			state.SetHeldConnections(func() int { return 7 })
			state.SetCutConnections(func() int { return 3 })
			state.SetRole(tt.role)
			code, body := get(t, state.Handler(), "/ready")
			if code != tt.wantCode || !strings.Contains(body, tt.wantBody) {
				t.Errorf("/ready = %d %q, want %d containing %q", code, body, tt.wantCode, tt.wantBody)
			}
			if code, _ := get(t, state.Handler(), "/healthz"); code != 200 {
				t.Errorf("/healthz = %d, want 200 in every role", code)
			}
		})
	}
}

func TestStatsArePrometheusText(t *testing.T) {
	state := proxyadmin.NewState("2.0.0", 2)
	requests := prometheus.NewCounter(prometheus.CounterOpts{Name: "meshlift_proxy_requests_total", Help: "Requests."})
	if err := state.Register(requests); err != nil {
		t.Fatal(err)
	}
	requests.Add(3)
	state.SetCertificate(true)
	state.SetRole(proxyadmin.RoleActive)
	code, body := get(t, state.Handler(), "/stats")
	for _, want := range []string{
		`meshlift_proxy_role{role="active"} 1`, `meshlift_proxy_role{role="waiting"} 0`, "meshlift_proxy_ready 1",
		`meshlift_proxy_info{slot="2",version="2.0.0"} 1`, "meshlift_proxy_requests_total 3",
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/stats (%d) lacks %q:\n%s", code, want, body)
		}
	}
}
