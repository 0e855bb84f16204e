// Command kubectl-meshlift is the kubectl plugin of Meshlift: put it on the PATH and run
// `kubectl meshlift`. docs/kubectl-plugin.md describes the commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	plugincmd "github.com/meshlift/meshlift/internal/plugin/cmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := plugincmd.Execute(ctx)
	stop()
	os.Exit(code)
}
