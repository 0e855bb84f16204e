// Package operator_test measures the operator binary, built from this tree and run as a process
// of its own against envtest's kube-apiserver and etcd (with the webhook configurations, which
// call the operator's webhooks), under the load of a large cluster
// (BenchmarkOperatorMemory10kPods). It has benchmarks only: without -bench nothing is started.
package operator_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/meshlift/meshlift/internal/repo"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

var (
	env *testenv.Env
	// operatorBinary is the operator built from the tree (main.go).
	operatorBinary string
)

func TestMain(m *testing.M) {
	flag.Parse()
	if flag.Lookup("test.bench").Value.String() == "" {
		os.Exit(m.Run()) // no benchmark asked for: no API server, no build
	}
	testenv.MainWith(m, &env, []testenv.Option{testenv.WithWebhooks()}, buildOperator)
}

func buildOperator(*testenv.Env) (func(), error) {
	root, err := repo.Root()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "meshlift-operator-test-")
	if err != nil {
		return nil, err
	}
	operatorBinary = filepath.Join(dir, "meshlift-operator")
	cmd := exec.Command("go", "build", "-o", operatorBinary, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("building the operator: %w\n%s", err, out)
	}
	return func() { _ = os.RemoveAll(dir) }, nil
}
