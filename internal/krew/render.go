package krew

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"sigs.k8s.io/yaml"
)

// Render returns the manifest as YAML with its keys in the order krew's documentation and the
// krew index use (a generic marshaller would sort them), description and caveats as literal
// blocks. The output depends on nothing but m, so the same release renders byte for byte the same.
func Render(m Manifest) []byte {
	var out strings.Builder
	w := yamlWriter{out: &out}
	w.scalar(0, "apiVersion", m.APIVersion)
	w.scalar(0, "kind", m.Kind)
	w.key(0, "metadata")
	w.scalar(2, "name", m.Metadata.Name)
	w.key(0, "spec")
	w.scalar(2, "version", m.Spec.Version)
	w.optionalScalar(2, "homepage", m.Spec.Homepage)
	w.scalar(2, "shortDescription", m.Spec.ShortDescription)
	w.optionalScalar(2, "description", m.Spec.Description)
	w.optionalScalar(2, "caveats", m.Spec.Caveats)
	if len(m.Spec.Platforms) == 0 {
		w.raw(2, "platforms: []")
	} else {
		w.key(2, "platforms")
	}
	for _, platform := range m.Spec.Platforms {
		// "- " opens the item; its keys continue at the column after it.
		w.raw(2, "- selector:")
		w.selector(6, platform.Selector)
		w.scalar(4, "uri", platform.URI)
		// Quoted always: a digest starting with a digit would need it, and all alike read better.
		w.raw(4, "sha256: "+doubleQuoted(platform.SHA256))
		if platform.Files != nil {
			if len(platform.Files) == 0 {
				w.raw(4, "files: []")
			} else {
				w.key(4, "files")
			}
			for _, file := range platform.Files {
				w.raw(4, "- from: "+yamlScalar(file.From))
				w.scalar(6, "to", file.To)
			}
		}
		w.scalar(4, "bin", platform.Bin)
	}
	return []byte(out.String())
}

// ParseManifest reads a manifest, refusing unknown and duplicate fields so that a misspelt key
// is an error rather than a silently missing value.
func ParseManifest(data []byte) (Manifest, error) {
	var m Manifest
	if err := yaml.UnmarshalStrict(data, &m); err != nil {
		return Manifest{}, fmt.Errorf("failed to parse the plugin manifest: %w", err)
	}
	return m, nil
}

// yamlWriter writes block-style YAML line by line.
type yamlWriter struct {
	out *strings.Builder
}

func (w yamlWriter) raw(indent int, text string) {
	w.out.WriteString(strings.Repeat(" ", indent))
	w.out.WriteString(text)
	w.out.WriteByte('\n')
}

func (w yamlWriter) key(indent int, key string) { w.raw(indent, key+":") }

func (w yamlWriter) optionalScalar(indent int, key, value string) {
	if value != "" {
		w.scalar(indent, key, value)
	}
}

// scalar writes key: value, as a literal block when value is several lines that a block keeps
// exactly, else as a plain or double-quoted scalar.
func (w yamlWriter) scalar(indent int, key, value string) {
	header, lines, ok := literalBlock(value)
	if !ok {
		w.raw(indent, key+": "+yamlScalar(value))
		return
	}
	w.raw(indent, key+": "+header)
	for _, line := range lines {
		if line == "" {
			w.out.WriteByte('\n')
			continue
		}
		w.raw(indent+2, line)
	}
}

func (w yamlWriter) selector(indent int, selector Selector) {
	if selector.MatchLabels != nil {
		if len(selector.MatchLabels) == 0 {
			w.raw(indent, "matchLabels: {}")
		} else {
			w.key(indent, "matchLabels")
		}
		for _, label := range selectorKeys(selector.MatchLabels) {
			w.scalar(indent+2, yamlScalar(label), selector.MatchLabels[label])
		}
	}
	if selector.MatchExpressions != nil {
		if len(selector.MatchExpressions) == 0 {
			w.raw(indent, "matchExpressions: []")
		} else {
			w.key(indent, "matchExpressions")
		}
		for _, requirement := range selector.MatchExpressions {
			w.raw(indent, "- key: "+yamlScalar(requirement.Key))
			w.scalar(indent+2, "operator", requirement.Operator)
			if requirement.Values != nil {
				if len(requirement.Values) == 0 {
					w.raw(indent+2, "values: []")
				} else {
					w.key(indent+2, "values")
				}
				for _, value := range requirement.Values {
					w.raw(indent+2, "- "+yamlScalar(value))
				}
			}
		}
	}
	if selector.MatchLabels == nil && selector.MatchExpressions == nil {
		// An empty selector still needs a value for the key that opened it; Validate refuses it.
		w.raw(indent, "matchLabels: {}")
	}
}

// selectorKeys are the labels in the order people write them: os, arch, then any other sorted.
func selectorKeys(labels map[string]string) []string {
	keys := make([]string, 0, len(labels))
	for key := range labels {
		keys = append(keys, key)
	}
	rank := func(key string) int {
		switch key {
		case "os":
			return 0
		case "arch":
			return 1
		}
		return 2
	}
	slices.SortFunc(keys, func(a, b string) int {
		if rank(a) != rank(b) {
			return rank(a) - rank(b)
		}
		return strings.Compare(a, b)
	})
	return keys
}

// plainScalar is what this writer leaves unquoted: no spaces, no quotes, no characters YAML
// gives a meaning at the start of a scalar, and not a number.
var plainScalar = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9._/+-]*(:[A-Za-z0-9._/+-]+)*$`)

// yaml11Keywords are words a YAML 1.1 reader (sigs.k8s.io/yaml, and so krew) turns into booleans
// or null when unquoted.
var yaml11Keywords = []string{"y", "n", "yes", "no", "true", "false", "on", "off", "null"}

// yamlScalar renders s as a one-line scalar: plain when that reads back as the same string,
// double-quoted otherwise.
func yamlScalar(s string) string {
	if plainScalar.MatchString(s) && !slices.Contains(yaml11Keywords, strings.ToLower(s)) {
		return s
	}
	return doubleQuoted(s)
}

// doubleQuoted renders s as a double-quoted scalar, escaping what is not printable.
func doubleQuoted(s string) string {
	var quoted strings.Builder
	quoted.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			quoted.WriteString(`\"`)
		case r == '\\':
			quoted.WriteString(`\\`)
		case r == '\n':
			quoted.WriteString(`\n`)
		case r == '\t':
			quoted.WriteString(`\t`)
		case isYAMLPrintable(r):
			quoted.WriteRune(r)
		case r <= 0xFFFF:
			fmt.Fprintf(&quoted, `\u%04X`, r)
		default:
			fmt.Fprintf(&quoted, `\U%08X`, r)
		}
	}
	quoted.WriteByte('"')
	return quoted.String()
}

// literalBlock splits s into the header and lines of a literal block scalar ("|") when a block
// reads back as exactly s: several lines, all printable, the first starting with a non-space
// character (a block takes its indentation from its first line).
func literalBlock(s string) (header string, lines []string, ok bool) {
	if !strings.Contains(s, "\n") || !utf8.ValidString(s) {
		return "", nil, false
	}
	for _, r := range s {
		if r != '\n' && !isYAMLPrintable(r) {
			return "", nil, false
		}
	}
	if s[0] == ' ' || s[0] == '\n' {
		return "", nil, false
	}
	body := strings.TrimRight(s, "\n")
	switch trailing := len(s) - len(body); trailing {
	case 0:
		header = "|-" // strip: no final line break
	case 1:
		header = "|" // clip: exactly one
	default:
		header = "|+" // keep: every trailing line break
		body = s[:len(s)-1]
	}
	return header, strings.Split(body, "\n"), true
}

// isYAMLPrintable reports whether r may appear unescaped in a scalar: YAML's printable set,
// without the characters YAML 1.1 takes as line breaks (U+0085, U+2028, U+2029), the byte-order
// mark and other characters Go does not consider printable.
func isYAMLPrintable(r rune) bool {
	switch {
	case r >= 0x20 && r <= 0x7E:
		return true
	case r < 0xA0, r == 0xFEFF, r == utf8.RuneError:
		return false
	case r >= 0xD800 && r <= 0xDFFF, r == 0xFFFE, r == 0xFFFF:
		return false
	}
	return unicode.IsPrint(r)
}
