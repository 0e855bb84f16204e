package argocd

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Customization is the health check of one kind, in Argo CD's layout:
// <dir>/<group>/<kind>/health.lua with health_test.yaml and testdata/ beside it.
type Customization struct {
	Group, Kind string
	// Dir is the kind's folder.
	Dir string
	// Script is health.lua.
	Script string
}

// ConfigMapKey is the argocd-cm key that installs the check.
func (c Customization) ConfigMapKey() string {
	return "resource.customizations.health." + c.Group + "_" + c.Kind
}

// LoadCustomizations reads every <group>/<kind>/health.lua under dir, sorted by group and kind.
func LoadCustomizations(dir string) ([]Customization, error) {
	scripts, err := filepath.Glob(filepath.Join(dir, "*", "*", "health.lua"))
	if err != nil {
		return nil, fmt.Errorf("failed to list the health checks in %s: %w", dir, err)
	}
	if len(scripts) == 0 {
		return nil, fmt.Errorf("no <group>/<kind>/health.lua under %s", dir)
	}
	slices.Sort(scripts)
	out := make([]Customization, 0, len(scripts))
	for _, path := range scripts {
		script, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("failed to read %s: %w", path, err)
		}
		kindDir := filepath.Dir(path)
		out = append(out, Customization{Group: filepath.Base(filepath.Dir(kindDir)), Kind: filepath.Base(kindDir), Dir: kindDir, Script: string(script)})
	}
	return out, nil
}

// configMapHeader explains the generated snippet; it is part of the file.
const configMapHeader = `# GENERATED from config/argocd/resource_customizations by ` + "`make argocd-cm`" + `; do not edit.
# Argo CD health checks for Meshlift's kinds (docs/argocd.md). Merge it into Argo CD's argocd-cm:
#   kubectl -n argocd patch configmap argocd-cm --patch-file config/argocd/argocd-cm.yaml
# The scripts use only Lua's base and table libraries, so they need no useOpenLibs setting.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
`

// RenderConfigMap returns the argocd-cm snippet that installs every customization: one
// resource.customizations.health.<group>_<kind> key each, the script as a literal block.
func RenderConfigMap(customizations []Customization) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(configMapHeader)
	for _, c := range customizations {
		if strings.Contains(c.Script, "\t") {
			return nil, fmt.Errorf("%s/health.lua contains a tab, which a YAML block cannot hold: indent with spaces", c.Dir)
		}
		if !strings.HasSuffix(c.Script, "\n") || strings.HasSuffix(c.Script, "\n\n") {
			return nil, fmt.Errorf("%s/health.lua must end with exactly one newline", c.Dir)
		}
		fmt.Fprintf(&b, "  %s: |\n", c.ConfigMapKey())
		for _, line := range strings.SplitAfter(strings.TrimSuffix(c.Script, "\n"), "\n") {
			if strings.TrimSpace(line) == "" {
				b.WriteString("\n")
				continue
			}
			b.WriteString("    " + line)
		}
		b.WriteString("\n")
	}
	return b.Bytes(), nil
}
