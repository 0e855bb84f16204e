package proxyadmin_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meshlift/meshlift/internal/proxyadmin"
)

// TestParseReadyReadsWhatTheHandlerWrites reads /ready as the rollout does, from the handler
// itself, through every role a proxy goes through in a hot upgrade.
func TestParseReadyReadsWhatTheHandlerWrites(t *testing.T) {
	held, cut := 0, 0
	tests := []struct {
		name  string
		setup func(*proxyadmin.State)
		want  proxyadmin.Report
	}{
		{"starting", func(*proxyadmin.State) {}, proxyadmin.Report{Connections: -1}},
		{"waiting", func(s *proxyadmin.State) { s.SetRole(proxyadmin.RoleWaiting) }, proxyadmin.Report{Connections: -1}},
		{"active", func(s *proxyadmin.State) { s.SetRole(proxyadmin.RoleActive); s.SetCertificate(true) },
			proxyadmin.Report{Ready: true, Role: proxyadmin.RoleActive, Connections: -1}},
		{"draining without a count", func(s *proxyadmin.State) { s.SetRole(proxyadmin.RoleDraining) },
			proxyadmin.Report{Ready: true, Role: proxyadmin.RoleDraining, Connections: -1}},
		{"draining", func(s *proxyadmin.State) {
			held = 7
			s.SetHeldConnections(func() int { return held })
			s.SetRole(proxyadmin.RoleDraining)
		}, proxyadmin.Report{Ready: true, Role: proxyadmin.RoleDraining, Connections: 7}},
		{"retiring", func(s *proxyadmin.State) {
			held = 120
			s.SetHeldConnections(func() int { return held })
			s.SetRole(proxyadmin.RoleRetiring)
		}, proxyadmin.Report{Ready: true, Role: proxyadmin.RoleRetiring, Connections: 120}},
		{"idle", func(s *proxyadmin.State) { s.SetRole(proxyadmin.RoleIdle) },
			proxyadmin.Report{Ready: true, Role: proxyadmin.RoleIdle}},
		{"idle after nothing was cut", func(s *proxyadmin.State) {
			cut = 0
			s.SetCutConnections(func() int { return cut })
			s.SetRole(proxyadmin.RoleIdle)
		}, proxyadmin.Report{Ready: true, Role: proxyadmin.RoleIdle}},
		{"idle after a cut", func(s *proxyadmin.State) {
			cut = 3
			s.SetCutConnections(func() int { return cut })
			s.SetRole(proxyadmin.RoleIdle)
		}, proxyadmin.Report{Ready: true, Role: proxyadmin.RoleIdle, Cut: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := proxyadmin.NewState("1.0.0", 1)
			tt.setup(state)
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, "/ready", nil)
			req.RemoteAddr = "10.0.0.9:41000" // the operator, from outside the pod
			state.Handler().ServeHTTP(rec, req)
			got, err := proxyadmin.ParseReady(rec.Code, rec.Body.String())
			if err != nil {
				t.Fatalf("ParseReady(%d, %q): %v", rec.Code, rec.Body.String(), err)
			}
			if got != tt.want {
				t.Errorf("ParseReady(%d, %q) = %+v, want %+v", rec.Code, rec.Body.String(), got, tt.want)
			}
		})
	}
}

func TestParseReadyRefusesWhatItDoesNotKnow(t *testing.T) {
	for _, tt := range []struct {
		status int
		body   string
	}{
		{http.StatusOK, "ok\n"},
		{http.StatusOK, "ready: leaving\n"},
		{http.StatusOK, "ready: retiring: many connections\n"},
		{http.StatusOK, "ready: retiring: -1 connections\n"},
		{http.StatusOK, "ready: retiring:  12 connections\n"},
		{http.StatusOK, "ready: retiring: 12 connections and more\n"},
		{http.StatusOK, "ready: active: 12 connections\n"},
		{http.StatusOK, "ready: idle; cut +3 connections at the drain budget\n"},
		{http.StatusOK, "ready: retiring: 99999999999999999999 connections\n"},
		{http.StatusServiceUnavailable, "gateway timeout\n"},
		{http.StatusForbidden, "meshlift-proxy: only /ready and /healthz are served outside the pod\n"},
		{http.StatusOK, "ready: idle" + string(make([]byte, 2000))},
	} {
		if got, err := proxyadmin.ParseReady(tt.status, tt.body); err == nil {
			t.Errorf("ParseReady(%d, %q) = %+v, want an error", tt.status, tt.body, got)
		}
	}
}

// FuzzParseReady: the body comes from the network; ParseReady never panics, and what it accepts
// is consistent (an idle proxy serves no connection, counts are never negative but for unknown).
func FuzzParseReady(f *testing.F) {
	for _, body := range []string{"ready: active\n", "ready: retiring: 12 connections\n", "ready: idle; cut 3 connections at the drain budget\n",
		"not ready: starting\n", "ready: draining\n", "ready: idle\n"} {
		f.Add(http.StatusOK, body)
	}
	f.Add(http.StatusServiceUnavailable, "not ready: waiting to take over the listeners\n")
	f.Fuzz(func(t *testing.T, status int, body string) {
		report, err := proxyadmin.ParseReady(status, body)
		if err != nil {
			return
		}
		if report.Connections < -1 || report.Cut < 0 {
			t.Fatalf("negative counts from %q: %+v", body, report)
		}
		if report.Role == proxyadmin.RoleIdle && report.Connections != 0 {
			t.Fatalf("an idle proxy with connections from %q: %+v", body, report)
		}
		if !report.Ready && report.Role != "" {
			t.Fatalf("a role without readiness from %q: %+v", body, report)
		}
	})
}
