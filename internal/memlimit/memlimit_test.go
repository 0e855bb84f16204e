package memlimit

import (
	"runtime/debug"
	"testing"
)

func TestLimit(t *testing.T) {
	for _, tc := range []struct {
		name                       string
		goMemLimit, containerLimit string
		want                       int64
		wantErr                    bool
	}{
		{name: "is 90% of the container's limit in bytes", containerLimit: "402653184", want: 362387865},
		{name: "reads a quantity too", containerLimit: "384Mi", want: 362387865},
		{name: "is nothing when the container has no limit", containerLimit: "", want: 0},
		{name: "leaves GOMEMLIMIT to the runtime", goMemLimit: "100MiB", containerLimit: "402653184", want: 0},
		{name: "leaves GOMEMLIMIT=off to the runtime too", goMemLimit: "off", containerLimit: "402653184", want: 0},
		{name: "refuses a limit that is not a byte count", containerLimit: "lots", wantErr: true},
		{name: "refuses a limit of zero", containerLimit: "0", wantErr: true},
		{name: "refuses a negative limit", containerLimit: "-1", wantErr: true},
		{name: "does not overflow on a huge limit", containerLimit: "4Ei", want: 4 << 60 / 100 * 90},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Limit(tc.goMemLimit, tc.containerLimit)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("Limit(%q, %q) = %d, %v; want %d (error: %t)", tc.goMemLimit, tc.containerLimit, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestSetSetsTheRuntimeLimit(t *testing.T) {
	previous := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(previous) })
	env := map[string]string{EnvContainerLimit: "200Mi"}
	got, err := Set(func(name string) string { return env[name] })
	if err != nil || got != 200<<20*9/10 {
		t.Fatalf("Set = %d, %v; want %d", got, err, 200<<20*9/10)
	}
	if runtimeLimit := debug.SetMemoryLimit(-1); runtimeLimit != got {
		t.Errorf("the runtime's limit is %d, want %d", runtimeLimit, got)
	}
}
