package controlplane

import (
	"testing"
	"time"
)

func TestRotationDelay(t *testing.T) {
	for _, tc := range []struct {
		name     string
		lifetime time.Duration
		random   float64
		want     time.Duration
	}{
		{"renews at half life without jitter", 24 * time.Hour, 0.5, 12 * time.Hour},
		{"renews up to 10% earlier", 24 * time.Hour, 0, 12*time.Hour - 72*time.Minute},
		{"renews up to 10% later", 24 * time.Hour, 1, 12*time.Hour + 72*time.Minute},
		{"never renews within a second", 500 * time.Millisecond, 0.5, time.Second},
		{"does not spin on a leaf that has already expired", -time.Minute, 0.5, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rotationDelay(tc.lifetime, 0.5, 0.1, tc.random); got != tc.want {
				t.Fatalf("rotationDelay(%s) = %s, want %s", tc.lifetime, got, tc.want)
			}
		})
	}
}

func TestValidity(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 700_000_000, time.UTC)
	for _, tc := range []struct {
		name     string
		lifetime time.Duration
		notAfter time.Time
		want     time.Duration
	}{
		{"takes the lifetime asked for when NotAfter lost its fraction of a second",
			4 * time.Second, now.Add(4 * time.Second).Truncate(time.Second), 4 * time.Second},
		{"takes the signer's expiry when it cut the leaf short",
			24 * time.Hour, now.Add(time.Hour), time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := validity(now, tc.notAfter, tc.lifetime); got != tc.want {
				t.Fatalf("validity() = %s, want %s", got, tc.want)
			}
		})
	}
}
