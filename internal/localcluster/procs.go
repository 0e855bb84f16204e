package localcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Supervisor starts the cluster's processes detached from the caller, records their PIDs and
// stops exactly those processes later, so `down` never touches anything it did not start.
type Supervisor struct {
	RunDir string
	LogDir string
}

// PIDRecord is the content of a PID file: the process and the binary it was started from, which
// guards against a recycled PID.
type PIDRecord struct {
	PID  int
	Path string
}

// FormatPIDRecord and ParsePIDRecord convert a record to and from its file form "<pid> <path>\n".
func FormatPIDRecord(r PIDRecord) string { return fmt.Sprintf("%d %s\n", r.PID, r.Path) }

func ParsePIDRecord(data string) (PIDRecord, error) {
	pidText, path, ok := strings.Cut(strings.TrimSpace(data), " ")
	if !ok || path == "" {
		return PIDRecord{}, fmt.Errorf("malformed PID record %q: want \"<pid> <path>\"", data)
	}
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 {
		return PIDRecord{}, fmt.Errorf("malformed PID record %q: bad PID", data)
	}
	return PIDRecord{PID: pid, Path: path}, nil
}

func (s Supervisor) pidFile(name string) string { return filepath.Join(s.RunDir, name+".pid") }

// LogFile is where a process's output goes.
func (s Supervisor) LogFile(name string) string { return filepath.Join(s.LogDir, name+".log") }

// Start runs p in its own session with its output appended to its log file and records its PID.
func (s Supervisor) Start(p Process) (int, error) {
	for _, dir := range []string{s.RunDir, s.LogDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return 0, fmt.Errorf("failed to create %s: %w", dir, err)
		}
	}
	logFile, err := os.OpenFile(s.LogFile(p.Name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("failed to open log of %s: %w", p.Name, err)
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "---- %s starting: %s %s\n", time.Now().Format(time.RFC3339), p.Path, strings.Join(p.Args, " "))

	cmd := exec.Command(p.Path, p.Args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("failed to start %s (%s): %w", p.Name, p.Path, err)
	}
	pid := cmd.Process.Pid
	record := FormatPIDRecord(PIDRecord{PID: pid, Path: p.Path})
	if err := os.WriteFile(s.pidFile(p.Name), []byte(record), 0o644); err != nil {
		_ = cmd.Process.Kill()
		return 0, fmt.Errorf("failed to record PID of %s: %w", p.Name, err)
	}
	// Reap the child if it exits while we are still running; it keeps running after we exit.
	go func() { _ = cmd.Wait() }()
	return pid, nil
}

// Running returns the PID of the named process if it was started by a Supervisor with this
// RunDir and is still alive.
func (s Supervisor) Running(name string) (int, bool) {
	data, err := os.ReadFile(s.pidFile(name))
	if err != nil {
		return 0, false
	}
	record, err := ParsePIDRecord(string(data))
	if err != nil {
		return 0, false
	}
	return record.PID, processRuns(record)
}

// Stop sends SIGTERM to the named process, waits up to grace for it to exit, then kills it. It
// returns whether a process was running.
func (s Supervisor) Stop(name string, grace time.Duration) (bool, error) {
	pid, ok := s.Running(name)
	defer os.Remove(s.pidFile(name))
	if !ok {
		return false, nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return true, fmt.Errorf("failed to stop %s (pid %d): %w", name, pid, err)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if _, alive := s.Running(name); !alive {
			return true, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return true, fmt.Errorf("failed to kill %s (pid %d): %w", name, pid, err)
	}
	for range 100 {
		if _, alive := s.Running(name); !alive {
			return true, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true, fmt.Errorf("%s (pid %d) survived SIGKILL", name, pid)
}

// processRuns reports whether the PID runs the recorded binary and is not a zombie.
func processRuns(r PIDRecord) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", r.PID))
	if err != nil {
		return false
	}
	// A binary rebuilt while the process runs shows up as "<path> (deleted)".
	if strings.TrimSuffix(exe, " (deleted)") != r.Path {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", r.PID))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name: "pid (comm) S ...".
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return false
}
