package rollout_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/rollout"
)

func validState() *rollout.PodState {
	return &rollout.PodState{
		Plan: "web-v2", From: "proxy-v1", To: "proxy-v2", Strategy: meshv1alpha1.StrategyHotUpgrade,
		Phase: rollout.PodStabilizing, Slot: 2, FromSlot: 1,
		FromImage: "meshlift/meshlift-proxy:1.0.0", IdleImage: "meshlift/meshlift-idle:1.0.0",
		ToImage: "meshlift/meshlift-proxy:2.0.0", ToIdleImage: "meshlift/meshlift-idle:2.0.0",
		StartedAt: t0, PhaseSince: t0.Add(3 * time.Second), ReadySince: ptr.To(t0.Add(3 * time.Second)), Attempt: 1,
	}
}

func TestStateRoundTrip(t *testing.T) {
	value, err := rollout.EncodeState(validState())
	if err != nil {
		t.Fatal(err)
	}
	got, err := rollout.DecodeState(value)
	if err != nil {
		t.Fatal(err)
	}
	again, err := rollout.EncodeState(got)
	if err != nil || again != value {
		t.Fatalf("round trip changed the value:\n%s\n%s (%v)", value, again, err)
	}
	if len(value) > 600 {
		t.Errorf("the annotation takes %d bytes; keep it small", len(value))
	}
}

func TestDecodeStateRejectsMalformedInput(t *testing.T) {
	valid, err := rollout.EncodeState(validState())
	if err != nil {
		t.Fatal(err)
	}
	edit := func(from, to string) string { return strings.Replace(valid, from, to, 1) }
	tests := []struct {
		name, value, wantIn string
	}{
		{"rejects an empty value", "", "not a JSON object"},
		{"rejects JSON that is not an object", `["plan"]`, "not a JSON object"},
		{"rejects a field given twice", edit(`{"plan":"web-v2"`, `{"plan":"web-v2","plan":"other"`), "duplicate field"},
		{"rejects a field spelled in another case", edit(`{"plan"`, `{"PLAN"`), "unknown field"},
		{"rejects invalid UTF-8", edit(`web-v2`, "web-\xff"), "invalid UTF-8"},
		{"rejects a fractional attempt", edit(`"attempt":1`, `"attempt":1.0`), "integer"},
		{"rejects null", `null`, "not a JSON object"},
		{"rejects unknown fields, which a newer or forged writer may add", edit(`{"plan"`, `{"evil":1,"plan"`), "unknown field"},
		{"rejects trailing data after the object", valid + `{}`, "trailing data"},
		{"rejects an unknown phase", edit(`"Stabilizing"`, `"Bogus"`), "unknown phase"},
		{"rejects an unknown strategy", edit(`"HotUpgrade"`, `"Teleport"`), "unknown strategy"},
		{"rejects a plan name that is not an object name", edit(`"web-v2"`, `"../etc"`), "not an object name"},
		{"rejects a hot upgrade within one slot", edit(`"slot":2`, `"slot":1`), "between slots"},
		{"rejects an image with spaces", edit(`meshlift/meshlift-proxy:2.0.0`, `a b`), "not an image reference"},
		{"rejects a phase that started before the upgrade", edit(`"startedAt":"2026-03-01T12:00:00Z"`, `"startedAt":"2026-03-01T13:00:00Z"`), "phaseSince"},
		{"rejects times before 2000", edit(`"startedAt":"2026-03-01T12:00:00Z"`, `"startedAt":"0001-01-01T00:00:00Z"`), "times after 2000"},
		{"rejects a stabilizing pod without readySince", edit(`,"readySince":"2026-03-01T12:00:03Z"`, ``), "needs readySince"},
		{"rejects attempt 0", edit(`"attempt":1`, `"attempt":0`), "attempt"},
		{"rejects a reverting pod without outcome", edit(`"Stabilizing"`, `"Reverting"`), "outcome"},
		{"rejects oversized values", `{"plan":"` + strings.Repeat("a", rollout.MaxStateSize) + `"}`, "more than"},
		{"rejects the same version as from and to", edit(`"to":"proxy-v2"`, `"to":"proxy-v1"`), "both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rollout.DecodeState(tt.value)
			if !errors.Is(err, rollout.ErrMalformedState) {
				t.Fatalf("got %v, want an error wrapping ErrMalformedState", err)
			}
			if !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("error %q does not mention %q", err, tt.wantIn)
			}
		})
	}
}

func TestEncodeStateRefusesWhatDecodeWouldReject(t *testing.T) {
	s := validState()
	s.Attempt = 0
	if _, err := rollout.EncodeState(s); !errors.Is(err, rollout.ErrMalformedState) {
		t.Fatalf("got %v, want ErrMalformedState", err)
	}
	if _, err := rollout.EncodeState(nil); !errors.Is(err, rollout.ErrMalformedState) {
		t.Fatalf("got %v for nil, want ErrMalformedState", err)
	}
}

func TestPlanTimesStartAgainWhenAnEndedPlanMovesPodsAgain(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC)
	t1, now := t0.Add(time.Minute), t0.Add(10*time.Minute)
	for _, tc := range []struct {
		name                 string
		from, to             meshv1alpha1.UpgradePhase
		start, completion    *time.Time
		wantStart, wantCompl *time.Time
	}{
		{"a new plan starts when it first moves pods", meshv1alpha1.PhasePending, meshv1alpha1.PhaseProgressing, nil, nil, &now, nil},
		{"progress keeps the start", meshv1alpha1.PhaseProgressing, meshv1alpha1.PhaseProgressing, &t0, nil, &t0, nil},
		{"a pause keeps it", meshv1alpha1.PhasePaused, meshv1alpha1.PhaseProgressing, &t0, nil, &t0, nil},
		{"success completes it", meshv1alpha1.PhaseProgressing, meshv1alpha1.PhaseSucceeded, &t0, nil, &t0, &now},
		{"success stays completed", meshv1alpha1.PhaseSucceeded, meshv1alpha1.PhaseSucceeded, &t0, &t1, &t0, &t1},
		{"a new target after success starts again", meshv1alpha1.PhaseSucceeded, meshv1alpha1.PhaseProgressing, &t0, &t1, &now, nil},
		{"a target set back after success starts again", meshv1alpha1.PhaseSucceeded, meshv1alpha1.PhaseRollingBack, &t0, &t1, &now, nil},
		{"a new target after a rollback starts again", meshv1alpha1.PhaseRolledBack, meshv1alpha1.PhaseProgressing, &t0, nil, &now, nil},
		{"an abort in flight keeps the start", meshv1alpha1.PhaseProgressing, meshv1alpha1.PhaseRollingBack, &t0, nil, &t0, nil},
		{"a failed plan that goes on keeps it", meshv1alpha1.PhaseFailed, meshv1alpha1.PhaseProgressing, &t0, nil, &t0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start, completion := rollout.PlanTimes(tc.from, tc.to, tc.start, tc.completion, now)
			if !sameTime(start, tc.wantStart) || !sameTime(completion, tc.wantCompl) {
				t.Errorf("PlanTimes = %v, %v; want %v, %v", start, completion, tc.wantStart, tc.wantCompl)
			}
		})
	}
}

func sameTime(a, b *time.Time) bool {
	return (a == nil) == (b == nil) && (a == nil || a.Equal(*b))
}
