// Command meshlift-idle occupies the idle hot-upgrade slot of an injected pod. The slot container
// carries the proxy's arguments and environment (only its image changes in place), so this
// program ignores all of them: it blocks until SIGTERM or SIGINT and then exits 0 at once. It
// uses nothing beyond os/signal (no fmt, no net), so the stripped binary stays about 1.4 MB.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
