package argocd_test

import (
	"strings"
	"testing"

	"github.com/meshlift/meshlift/internal/argocd"
)

func TestEvaluateBehavesAsArgoCD(t *testing.T) {
	obj := map[string]any{"metadata": map[string]any{"name": "x", "generation": int64(2)}, "spec": map[string]any{"items": []any{"a", "b"}}}
	tests := []struct {
		name    string
		script  string
		libs    argocd.Libraries
		want    argocd.Health
		wantErr string
	}{
		{name: "obj is the object, arrays count from 1 and int64 is a number",
			script: `return {status = "Healthy", message = obj.metadata.name .. obj.spec.items[1] .. (obj.metadata.generation + 1)}`,
			want:   argocd.Health{Status: "Healthy", Message: "xa3"}},
		{name: "a status Argo CD does not know is Unknown",
			script: `return {status = "Fine"}`, want: argocd.Health{Status: "Unknown", Message: "Lua returned an invalid health status"}},
		{name: "argocd-cm scripts have no string library",
			script: `return {status = string.upper("healthy")}`, wantErr: "string"},
		{name: "built-in scripts have every library",
			script: `return {status = string.format("%s", "Healthy")}`, libs: argocd.OpenLibraries, want: argocd.Health{Status: "Healthy"}},
		{name: "a script that returns no table is an error",
			script: `return "Healthy"`, wantErr: "not a table"},
		{name: "a script that never ends is stopped",
			script: `while true do end`, wantErr: "context deadline exceeded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := argocd.Evaluate(tc.script, obj, tc.libs)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %+v, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
