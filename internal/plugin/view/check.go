package view

import (
	"fmt"
	"strings"

	"github.com/meshlift/meshlift/internal/plugin/preflight"
)

// RenderCheck prints the results of `kubectl meshlift check` by category, as `linkerd check`
// does: one line per check, the hint indented under each warning and error, and a summary line.
// On a terminal the lines start with a coloured ✔, ‼ or ✖; elsewhere with [ok], [warn] or [FAIL],
// which grep and CI logs read without colour.
func RenderCheck(r preflight.Report, o Options) string {
	var b strings.Builder
	var category preflight.Category
	for i, res := range r.Results {
		if i == 0 || res.Category != category {
			if i > 0 {
				b.WriteString("\n")
			}
			category = res.Category
			rule := "-"
			if o.Color {
				rule = "─"
			}
			b.WriteString(o.paint(ansiBold, string(category)) + "\n")
			b.WriteString(strings.Repeat(rule, DisplayWidth(string(category))) + "\n")
		}
		marker := CheckMarker(res.Status, o)
		b.WriteString(marker + " " + res.Description + "\n")
		if res.Status == preflight.StatusOK || res.Hint == "" {
			continue
		}
		indent := strings.Repeat(" ", DisplayWidth(marker)+1)
		for _, line := range strings.Split(res.Hint, "\n") {
			b.WriteString(indent + o.paint(ansiDim, line) + "\n")
		}
	}
	if len(r.Results) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("Status: " + CheckSummary(r, o) + "\n")
	return b.String()
}

// CheckMarker starts the line of a result: a coloured symbol on a terminal, a bracketed word
// of the same width for every status elsewhere.
func CheckMarker(s preflight.Status, o Options) string {
	if o.Color {
		switch s {
		case preflight.StatusError:
			return o.paint(ansiRed, "✖")
		case preflight.StatusWarning:
			return o.paint(ansiYellow, "‼")
		}
		return o.paint(ansiGreen, "✔")
	}
	switch s {
	case preflight.StatusError:
		return "[FAIL]"
	case preflight.StatusWarning:
		return "[warn]"
	}
	return "[ok]  "
}

// CheckSummary is the last line: the worst status and the counts ("✖ 1 error, 2 warnings, 14
// ok"; "[FAIL] 1 error, ..." without colour).
func CheckSummary(r preflight.Report, o Options) string {
	var counts []string
	if r.Errors > 0 {
		counts = append(counts, fmt.Sprintf("%d %s", r.Errors, plural(int32(r.Errors), "error", "errors")))
	}
	if r.Warnings > 0 {
		counts = append(counts, fmt.Sprintf("%d %s", r.Warnings, plural(int32(r.Warnings), "warning", "warnings")))
	}
	counts = append(counts, fmt.Sprintf("%d ok", r.OK))
	return strings.TrimRight(CheckMarker(r.Status, o), " ") + " " + strings.Join(counts, ", ")
}
