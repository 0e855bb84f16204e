// Package argocd runs Meshlift's Argo CD health checks (config/argocd/resource_customizations,
// in Argo CD's own layout) the way Argo CD runs them, and renders the argocd-cm snippet that
// installs them. It never talks to a cluster: the tests feed it objects from testdata, from the
// real controllers in envtest and from the local cluster.
package argocd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// Health statuses Argo CD accepts from a health script.
const (
	StatusHealthy     = "Healthy"
	StatusProgressing = "Progressing"
	StatusDegraded    = "Degraded"
	StatusSuspended   = "Suspended"
	StatusMissing     = "Missing"
	StatusUnknown     = "Unknown"
)

// Health is what a health script returns.
type Health struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

// Libraries says which Lua libraries a script gets.
type Libraries int

const (
	// ConfigMapLibraries is what Argo CD gives a script from argocd-cm unless useOpenLibs is set
	// for its kind: the package, base and table libraries (and a reduced os library, which
	// Meshlift's scripts do not use, so it is left out here: a script that needs it fails).
	ConfigMapLibraries Libraries = iota
	// OpenLibraries is every standard library, as Argo CD gives its built-in scripts.
	OpenLibraries
)

// scriptTimeout is how long Argo CD lets a health script run.
const scriptTimeout = time.Second

// invalidStatus is the message Argo CD reports for a status outside the known ones.
const invalidStatus = "Lua returned an invalid health status"

// Evaluate runs a health script on obj (an object as decoded from JSON) with the global obj
// set, as Argo CD does, and returns its result. A script that fails or returns no table is an
// error; a table whose status is not one Argo CD knows is Unknown, as in Argo CD.
func Evaluate(script string, obj map[string]any, libs Libraries) (Health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: libs == ConfigMapLibraries})
	defer l.Close()
	if libs == ConfigMapLibraries {
		for _, lib := range []struct {
			name string
			open lua.LGFunction
		}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
			if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
				return Health{}, fmt.Errorf("failed to open the Lua library %q: %w", lib.name, err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return Health{}, fmt.Errorf("the health script failed: %w", err)
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return Health{}, fmt.Errorf("the health script returned %s, not a table", l.Get(-1).Type())
	}
	var h Health
	for key, field := range map[string]*string{"status": &h.Status, "message": &h.Message} {
		switch v := table.RawGetString(key).(type) {
		case lua.LString:
			*field = string(v)
		case *lua.LNilType:
		default:
			return Health{}, fmt.Errorf("the health script returned %s %s, not a string", key, v.Type())
		}
	}
	switch h.Status {
	case StatusHealthy, StatusProgressing, StatusDegraded, StatusSuspended, StatusMissing, StatusUnknown:
		return h, nil
	}
	return Health{Status: StatusUnknown, Message: invalidStatus}, nil
}

// EvaluateObject is Evaluate for any object that marshals to JSON (a typed API object or an
// unstructured one).
func EvaluateObject(script string, obj any, libs Libraries) (Health, error) {
	raw, err := json.Marshal(obj)
	if err != nil {
		return Health{}, fmt.Errorf("failed to encode the object: %w", err)
	}
	var decoded map[string]any
	if err := json.Unmarshal(raw, &decoded); err != nil {
		return Health{}, fmt.Errorf("failed to decode the object: %w", err)
	}
	if decoded == nil {
		return Health{}, errors.New("the object is null")
	}
	return Evaluate(script, decoded, libs)
}

// toLua converts a JSON value to Lua as Argo CD does: objects and arrays become tables (arrays
// with indexes from 1), numbers of every Go kind become numbers, json.Number a string.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case []any:
		table := l.CreateTable(len(v), 0)
		for _, item := range v {
			table.Append(toLua(l, item))
		}
		return table
	case map[string]any:
		table := l.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetString(key, toLua(l, item))
		}
		return table
	}
	return lua.LNil
}
