package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// runGet is "meshlift-demo get URL": one GET, its status line and body on stdout, exit code 1
// when it fails or the status is not 2xx. For a look from inside a pod (kubectl exec).
func runGet(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshlift-demo get", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 5*time.Second, "How long the request may take.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() != 1 {
		_, _ = fmt.Fprintln(stderr, "meshlift-demo get: give exactly one URL")
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fs.Arg(0), nil)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "meshlift-demo get: %v\n", err)
		return exitUsage
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "meshlift-demo get: %v\n", err)
		return exitFailure
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = fmt.Fprintln(stdout, resp.Status)
	_, _ = io.Copy(stdout, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return exitFailure
	}
	return exitOK
}
