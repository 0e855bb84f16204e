// Package repo locates the checkout and names the tool versions that several commands share.
package repo

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// KubeVersion is the Kubernetes version built by hack/kube for envtest and the local cluster;
// keep it in step with KUBE_VERSION in the Makefile.
const KubeVersion = "1.36.3"

// Root returns the directory of the repository's go.mod, searching upwards from the working
// directory.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "config", "crd")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the repository root (a go.mod beside config/crd) above the working directory")
		}
		dir = parent
	}
}

// KubeBinDir is where hack/kube's binaries are built.
func KubeBinDir(root string) string {
	return filepath.Join(root, "bin", "k8s", KubeVersion)
}

// ModuleRoot returns the directory of the main module (go env GOMOD), so the hack/ commands work
// from any directory inside the repository.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("failed to find the module root with `go env GOMOD`: %w", err)
	}
	goMod := strings.TrimSpace(string(out))
	if goMod == "" || goMod == os.DevNull {
		return "", errors.New("not inside the Meshlift module: run from the repository")
	}
	return filepath.Dir(goMod), nil
}

// GoCommandLine renders a go command (its arguments after "go") so it can be pasted into a shell.
func GoCommandLine(args []string) string {
	quoted := []string{"go"}
	for _, arg := range args {
		if strings.ContainsAny(arg, " \t\"'$") {
			arg = strconv.Quote(arg)
		}
		quoted = append(quoted, arg)
	}
	return strings.Join(quoted, " ")
}

// HumanSize formats a byte count as the tools people compare it with do (1 MB = 10^6 bytes).
func HumanSize(size int64) string {
	switch {
	case size >= 1_000_000:
		return fmt.Sprintf("%.1fMB", float64(size)/1e6)
	case size >= 1_000:
		return fmt.Sprintf("%.1fkB", float64(size)/1e3)
	default:
		return fmt.Sprintf("%dB", size)
	}
}

// ErrUsage marks an error in the command line of a hack/ command: flag parsing has printed it.
var ErrUsage = errors.New("usage error")

// Main runs the hack/ command name: run with the arguments until it returns or a signal cancels
// it, then exits 0 (also after -help), 2 on ErrUsage, or 1 with the error on stderr.
func Main(name string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, ErrUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}
