// Command meshlift-demo is the application Meshlift's end-to-end tests and docs put into the
// mesh. It owns three things: "serve", an HTTP/1.1 and h2c echo server that shuts down
// gracefully (and, with --tcp-echo-listen, a TCP line echo), "load", a bounded load generator
// that sends traffic to exactly one target and reports every failed request by kind, so that a
// hot upgrade can be shown to drop nothing, and "streams", long-lived TCP connections that
// report every one that broke, so that a hot upgrade can be shown to keep them.
//
//	meshlift-demo serve [--listen :8080] [--tcp-echo-listen :9000] [--name NAME] [--version VERSION]
//	meshlift-demo load --target http://HOST:PORT/PATH [--rps 50] [--duration 10s] ...
//	meshlift-demo streams --target HOST:PORT [--streams 4] [--interval 10ms] [--duration 30s] ...
//
// Without a subcommand (or when the first argument is a flag) it serves, so the image works
// with or without "serve" as its command.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/meshlift/meshlift/internal/buildinfo"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches to a subcommand and returns the process's exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	command := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		command, args = args[0], args[1:]
	}
	switch command {
	case "serve":
		return runServe(ctx, args, stderr)
	case "load":
		return runLoad(ctx, args, stdout, stderr)
	case "streams":
		return runStreams(ctx, args, stdout, stderr)
	case "get":
		return runGet(ctx, args, stdout, stderr)
	case "version":
		_, _ = fmt.Fprintln(stdout, buildinfo.Version)
		return exitOK
	case "help":
		usage(stdout)
		return exitOK
	default:
		_, _ = fmt.Fprintf(stderr, "meshlift-demo: unknown command %q\n\n", command)
		usage(stderr)
		return exitUsage
	}
}

func usage(w io.Writer) {
	_, _ = fmt.Fprint(w, `Usage: meshlift-demo <command> [flags]

Commands:
  serve     HTTP/1.1 and h2c echo server (the default)
  load      bounded load generator against one target
  streams   long-lived TCP streams to a line echo server, reporting every one that broke
  get       one GET of a URL, its status and body printed (for kubectl exec)
  version   print the version
  help      print this help

Run "meshlift-demo <command> -h" for the flags of a command.
`)
}
