package localcluster

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestPIDRecordRoundTrips(t *testing.T) {
	r := PIDRecord{PID: 4242, Path: "/opt/bin/kube apiserver"}
	got, err := ParsePIDRecord(FormatPIDRecord(r))
	if err != nil || got != r {
		t.Fatalf("ParsePIDRecord(FormatPIDRecord(%v)) = %v, %v", r, got, err)
	}
	for _, bad := range []string{"", "12", "abc /bin/x", "-3 /bin/x", "0 /bin/x"} {
		if _, err := ParsePIDRecord(bad); err == nil {
			t.Errorf("ParsePIDRecord(%q) accepted a malformed record", bad)
		}
	}
}

func TestSupervisorStopsOnlyTheProcessItStarted(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal("sleep is needed to test process bookkeeping:", err)
	}
	sleep, _ = filepath.EvalSymlinks(sleep)
	dir := t.TempDir()
	s := Supervisor{RunDir: filepath.Join(dir, "run"), LogDir: filepath.Join(dir, "logs")}

	pid, err := s.Start(Process{Name: "sleeper", Path: sleep, Args: []string{"60"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := s.Running("sleeper"); !ok || got != pid {
		t.Fatalf("Running() = %d, %v; want %d, true", got, ok, pid)
	}
	if _, err := os.Stat(s.LogFile("sleeper")); err != nil {
		t.Errorf("no log file: %v", err)
	}

	// A PID file whose PID now runs another binary is not ours: Stop must leave it alone.
	other := exec.Command(sleep, "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	impostor := FormatPIDRecord(PIDRecord{PID: other.Process.Pid, Path: "/usr/bin/not-sleep"})
	if err := os.WriteFile(s.pidFile("impostor"), []byte(impostor), 0o644); err != nil {
		t.Fatal(err)
	}
	if stopped, err := s.Stop("impostor", time.Second); stopped || err != nil {
		t.Errorf("Stop(impostor) = %v, %v; want false, nil", stopped, err)
	}
	if !processRuns(PIDRecord{PID: other.Process.Pid, Path: sleep}) {
		t.Error("Stop killed a process it did not start")
	}

	if stopped, err := s.Stop("sleeper", 5*time.Second); !stopped || err != nil {
		t.Fatalf("Stop(sleeper) = %v, %v; want true, nil", stopped, err)
	}
	if _, ok := s.Running("sleeper"); ok {
		t.Error("sleeper still runs after Stop")
	}
	if _, err := os.Stat(s.pidFile("sleeper")); !os.IsNotExist(err) {
		t.Errorf("PID file left behind: %v", err)
	}
}
