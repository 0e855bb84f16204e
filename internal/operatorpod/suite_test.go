package operatorpod_test

import (
	"os"
	"testing"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// The tests patch pods created in envtest's kube-apiserver.

var env *testenv.Env

func TestMain(m *testing.M) {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapLevel())))
	testenv.Main(m, &env)
}

// zapLevel keeps the tests quiet unless MESHLIFT_TEST_LOG=debug asks for their logs.
func zapLevel() zapcore.Level {
	if os.Getenv("MESHLIFT_TEST_LOG") == "debug" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel
}
