// Package view turns Meshlift objects into what kubectl-meshlift prints: the status screen of an
// UpgradePlan, its one-line form for logs, and the tables of `get` and `proxy-status`. It is pure
// (objects and a clock in, text out) so every screen is covered by golden files; the commands in
// internal/plugin/cmd only fetch objects and pick the options.
package view

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Options say how to draw.
type Options struct {
	// Color enables ANSI colours and Unicode symbols; it is set only on a terminal that is not
	// TERM=dumb and without --no-color.
	Color bool
	// Width is the terminal's width in columns (80 when unknown).
	Width int
	// MaxPodRows bounds the per-pod table; the rest is summarized in one line. 0 means 10.
	MaxPodRows int
}

// DefaultWidth is the width used when the output is not a terminal.
const DefaultWidth = 80

func (o Options) width() int {
	if o.Width <= 0 {
		return DefaultWidth
	}
	return o.Width
}

func (o Options) MaxRows() int {
	if o.MaxPodRows <= 0 {
		return 10
	}
	return o.MaxPodRows
}

const (
	ansiReset  = "\x1b[0m"
	ansiBold   = "\x1b[1m"
	ansiDim    = "\x1b[2m"
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiBlue   = "\x1b[34m"
	ansiCyan   = "\x1b[36m"
)

// paint wraps s in an ANSI colour when colours are on.
func (o Options) paint(code, s string) string {
	if !o.Color || code == "" || s == "" {
		return s
	}
	return code + s + ansiReset
}

// tone is how good a state is; it picks a colour and a symbol.
type tone int

const (
	toneNeutral tone = iota
	toneGood
	toneBusy
	toneWait
	toneBad
)

func (t tone) color() string {
	switch t {
	case toneGood:
		return ansiGreen
	case toneBusy:
		return ansiBlue
	case toneWait:
		return ansiYellow
	case toneBad:
		return ansiRed
	}
	return ""
}

func (t tone) symbol() string {
	switch t {
	case toneGood:
		return "✔"
	case toneBusy:
		return "◐"
	case toneWait:
		return "॥"
	case toneBad:
		return "✖"
	}
	return "•"
}

// badge is "✔ Succeeded" in colour on a terminal and "Succeeded" elsewhere.
func (o Options) badge(t tone, s string) string {
	if !o.Color {
		return s
	}
	return o.paint(t.color(), t.symbol()+" "+s)
}

// DisplayWidth counts runes; every symbol we print is one column wide. ANSI sequences are not
// counted.
func DisplayWidth(s string) int {
	n := 0
	inEscape := false
	for _, r := range s {
		switch {
		case inEscape:
			if r == 'm' {
				inEscape = false
			}
		case r == '\x1b':
			inEscape = true
		default:
			n++
		}
	}
	return n
}

// truncate shortens plain text s to at most n columns, ending in "…" (or "..." without Unicode)
// when it had to cut.
func truncate(s string, n int, unicode bool) string {
	if n <= 0 {
		return ""
	}
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	ellipsis := "…"
	if !unicode {
		ellipsis = "..."
	}
	if n <= utf8.RuneCountInString(ellipsis) {
		return string([]rune(s)[:n])
	}
	return string([]rune(s)[:n-utf8.RuneCountInString(ellipsis)]) + ellipsis
}

// Duration prints d the way kubectl prints ages, coarse enough to read at a glance: 45s, 3m12s,
// 2h5m, 3d4h.
func Duration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 10*time.Minute:
		s := int(d.Seconds())
		if s%60 == 0 {
			return fmt.Sprintf("%dm", s/60)
		}
		return fmt.Sprintf("%dm%ds", s/60, s%60)
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		h := int(d.Hours())
		m := int(d.Minutes()) % 60
		if m == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%dm", h, m)
	default:
		days := int(d.Hours()) / 24
		h := int(d.Hours()) % 24
		if h == 0 {
			return fmt.Sprintf("%dd", days)
		}
		return fmt.Sprintf("%dd%dh", days, h)
	}
}

// table lays out rows in columns separated by three spaces, like kubectl. The last column is
// cut to fit width (when width > 0); earlier columns are never cut, so narrow terminals lose the
// tail of free text (reasons, messages) first.
type table struct {
	// namespaced tables start with a NAMESPACE column (-A).
	namespaced bool
	header     []string
	rows       [][]string
	// colors per cell, parallel to rows (optional).
	colors [][]string
}

// newTable is a table with these columns, after a NAMESPACE column when namespaced.
func newTable(namespaced bool, header ...string) *table {
	if namespaced {
		header = append([]string{"NAMESPACE"}, header...)
	}
	return &table{namespaced: namespaced, header: header}
}

// row adds a row of an object in namespace ns (shown when the table is namespaced).
func (t *table) row(ns string, colors []string, cells ...string) {
	if t.namespaced {
		cells = append([]string{ns}, cells...)
		colors = append([]string{""}, colors...)
	}
	t.addColored(colors, cells...)
}

// String renders the table; width > 0 cuts the last column to fit.
func (t *table) String(o Options, width int) string {
	var b strings.Builder
	t.render(&b, o, width)
	return b.String()
}

func (t *table) addColored(colors []string, cells ...string) {
	for len(t.colors) < len(t.rows) {
		t.colors = append(t.colors, nil)
	}
	t.rows = append(t.rows, cells)
	t.colors = append(t.colors, colors)
}

func (t *table) render(b *strings.Builder, o Options, width int) {
	widths := make([]int, len(t.header))
	for i, h := range t.header {
		widths[i] = utf8.RuneCountInString(h)
	}
	for _, r := range t.rows {
		for i, c := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	line := func(cells []string, colors []string, header bool) {
		var sb strings.Builder
		col := 0
		for i, c := range cells {
			last := i == len(cells)-1
			if last && width > 0 {
				c = truncate(c, width-col, o.Color)
			}
			text := c
			if !last {
				text = c + strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+3)
			}
			switch {
			case header:
				sb.WriteString(o.paint(ansiBold, strings.TrimRight(text, " ")))
				if !last {
					sb.WriteString(text[len(strings.TrimRight(text, " ")):])
				}
			case i < len(colors) && colors[i] != "":
				sb.WriteString(o.paint(colors[i], c))
				if !last {
					sb.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+3))
				}
			default:
				sb.WriteString(text)
			}
			col += widths[i] + 3
		}
		b.WriteString(strings.TrimRight(sb.String(), " "))
		b.WriteString("\n")
	}
	line(t.header, nil, true)
	for i, r := range t.rows {
		var colors []string
		if i < len(t.colors) {
			colors = t.colors[i]
		}
		line(r, colors, false)
	}
}
