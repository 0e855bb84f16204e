// Package latency is what the proxy's latency benchmarks (internal/proxy in process, test/proxy
// with real processes) share: timing one request, reporting what a path adds to the direct one,
// and reading a process's memory.
package latency

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Post sends body to url with c and returns how long the whole exchange took; the answer must
// be 200 with as many bytes as body.
func Post(tb testing.TB, c *http.Client, url string, body []byte) time.Duration {
	tb.Helper()
	start := time.Now()
	res, err := c.Post(url, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	elapsed := time.Since(start)
	if res.StatusCode != http.StatusOK || n != int64(len(body)) {
		tb.Fatalf("%s answered %s with %d bytes", url, res.Status, n)
	}
	return elapsed
}

// ReportAdded sorts the request times of the three paths and reports, for p50 and p99, the
// direct and proxied times and what the proxies and the relays add to the direct one
// (<q>-direct-µs, <q>-proxied-µs, <q>-added-µs, <q>-relays-added-µs).
func ReportAdded(b *testing.B, direct, proxied, relayed []time.Duration) {
	for _, times := range [][]time.Duration{direct, proxied, relayed} {
		slices.Sort(times)
	}
	for _, q := range []struct {
		name string
		p    float64
	}{{"p50", .5}, {"p99", .99}} {
		d, p, r := Percentile(direct, q.p), Percentile(proxied, q.p), Percentile(relayed, q.p)
		b.ReportMetric(micros(d), q.name+"-direct-µs")
		b.ReportMetric(micros(p), q.name+"-proxied-µs")
		b.ReportMetric(micros(p-d), q.name+"-added-µs")
		b.ReportMetric(micros(r-d), q.name+"-relays-added-µs")
	}
}

// Percentile is the p-th (0 to 1) of sorted times, 0 for none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// ResidentMB reads a process's resident set size and its peak, in MiB (Linux /proc).
func ResidentMB(pid int) (rss, peak float64, err error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		for _, field := range []struct {
			prefix string
			value  *float64
		}{{"VmRSS:", &rss}, {"VmHWM:", &peak}} {
			if rest, ok := strings.CutPrefix(line, field.prefix); ok {
				kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
				if err != nil {
					return 0, 0, fmt.Errorf("parsing %q: %w", line, err)
				}
				*field.value = float64(kb) / 1024
			}
		}
	}
	return rss, peak, nil
}
