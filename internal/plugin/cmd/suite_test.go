package cmd

import (
	"bytes"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// The commands run against envtest's real kube-apiserver (CRDs from config/crd/bases). There is
// no operator: tests write the status the operator would.

var testEnv *testenv.Env

func TestMain(m *testing.M) {
	testenv.Main(m, &testEnv)
}

// testNow is the clock of every command test.
var testNow = time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC)

// newTestEnv is an Env on envtest's API server in namespace ns: plain output (not a terminal,
// 80 columns) into the returned buffer.
func newTestEnv(t *testing.T, ns string) (*Env, *bytes.Buffer) {
	t.Helper()
	c, err := client.NewWithWatch(testEnv.Config, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	out := &bytes.Buffer{}
	return &Env{
		Streams:   genericiooptions.IOStreams{In: &bytes.Buffer{}, Out: out, ErrOut: out},
		Client:    c,
		Config:    testEnv.Config,
		Namespace: ns,
		Now:       func() time.Time { return testNow },
		Terminal:  &Terminal{IsTerminal: false, Width: 80},
	}, out
}

// run executes the plugin's command line args in env and returns the error.
func run(t *testing.T, env *Env, args ...string) error {
	t.Helper()
	root := NewRootCommand(env)
	root.SetArgs(args)
	root.SetOut(env.Streams.Out)
	root.SetErr(env.Streams.ErrOut)
	return root.ExecuteContext(t.Context())
}
