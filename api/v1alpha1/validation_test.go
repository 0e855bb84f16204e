package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/repo"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// These tests run the CRDs' schemas and CEL rules in envtest's real kube-apiserver.

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

const (
	validSidecarVersion = `
apiVersion: mesh.meshlift.io/v1alpha1
kind: SidecarVersion
metadata: {generateName: sv-}
spec:
  version: 1.2.3
  image: meshlift/meshlift-proxy:1.2.3
  idleImage: meshlift/meshlift-idle:1.2.3
  hotUpgrade: {protocol: "1"}
  env: [{name: GOMAXPROCS, value: "1"}]
`
	validMeshService = `
apiVersion: mesh.meshlift.io/v1alpha1
kind: MeshService
metadata: {generateName: ms-, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  ports: [{name: http, port: 8080, protocol: HTTP}, {name: grpc, port: 9090, protocol: GRPC}]
  upstreams: [{meshService: api, port: http, localPort: 7001}, {meshService: db.storage, port: sql, localPort: 7002}]
`
	validUpgradePlan = `
apiVersion: mesh.meshlift.io/v1alpha1
kind: UpgradePlan
metadata: {generateName: up-, namespace: default}
spec:
  meshServices: [web]
  targetVersion: proxy-v2
  strategy:
    maxUnavailable: 10%
    steps: [{partition: 1}, {partition: 25%, pause: {duration: 1m30s}}, {partition: 100%, pause: {}}]
`
)

// mutation changes one field of a valid object; a nil value removes the field.
type mutation struct {
	path  string
	value any
}

func set(path string, value any) mutation { return mutation{path: path, value: value} }
func remove(path string) mutation         { return mutation{path: path} }

func build(t *testing.T, base string, mutations ...mutation) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(base), &obj.Object); err != nil {
		t.Fatalf("bad base object: %v", err)
	}
	for _, m := range mutations {
		fields := strings.Split(m.path, ".")
		if m.value == nil {
			unstructured.RemoveNestedField(obj.Object, fields...)
			continue
		}
		if err := unstructured.SetNestedField(obj.Object, m.value, fields...); err != nil {
			t.Fatalf("cannot set %s: %v", m.path, err)
		}
	}
	return obj
}

// list and object make nested values readable in the table below.
func list(items ...any) []any { return items }

// repeated is a list of n copies of value.
func repeated(value any, n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = value
	}
	return out
}

func object(kv ...any) map[string]any {
	m := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

func TestValidObjectsAreAccepted(t *testing.T) {
	for name, base := range map[string]string{"SidecarVersion": validSidecarVersion, "MeshService": validMeshService, "UpgradePlan": validUpgradePlan} {
		t.Run(name, func(t *testing.T) {
			if err := env.Client.Create(context.Background(), build(t, base)); err != nil {
				t.Fatalf("a valid %s was rejected: %v", name, err)
			}
		})
	}
}

func TestEdgeCasesThatAreValid(t *testing.T) {
	tests := []struct {
		name      string
		base      string
		mutations []mutation
	}{
		{"a SidecarVersion that cannot hot-upgrade needs no idle image", validSidecarVersion,
			[]mutation{remove("spec.hotUpgrade"), remove("spec.idleImage")}},
		{"args and env may reach their length limits", validSidecarVersion,
			[]mutation{set("spec.args", append(repeated("--v", 63), "--x="+strings.Repeat("a", 1020))),
				set("spec.env", list(object("name", strings.Repeat("A", 256), "value", strings.Repeat("a", 4096))))}},
		{"a version may carry a leading v, a pre-release and build metadata", validSidecarVersion,
			[]mutation{set("spec.version", "v2.0.0-rc.1+build.7")}},
		{"a MeshService may have no ports (a pure client)", validMeshService, []mutation{remove("spec.ports")}},
		{"a selector may use matchExpressions only", validMeshService,
			[]mutation{set("spec.selector", object("matchExpressions", list(object("key", "app", "operator", "In", "values", list("web")))))}},
		{"steps may end with the full count instead of 100%", validUpgradePlan,
			[]mutation{set("spec.strategy.steps", list(object("partition", int64(1)), object("partition", int64(3)), object("partition", int64(10))))}},
		{"maxUnavailable may be 100%", validUpgradePlan, []mutation{set("spec.strategy.maxUnavailable", "100%")}},
		{"a drain budget may be from 1s to 24h", validSidecarVersion, []mutation{set("spec.drain.maxDuration", "24h")}},
		{"a MeshService may set its own drain budget", validMeshService, []mutation{set("spec.drain.maxDuration", "1s")}},
		{"an empty plan selector selects every MeshService", validUpgradePlan,
			[]mutation{remove("spec.meshServices"), set("spec.selector", object())}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := env.Client.Create(context.Background(), build(t, tt.base, tt.mutations...)); err != nil {
				t.Fatalf("rejected: %v", err)
			}
		})
	}
}

func TestInvalidObjectsAreRejectedWithAMessageThatSaysWhatToFix(t *testing.T) {
	tests := []struct {
		name        string
		base        string
		mutations   []mutation
		wantMessage string
	}{
		// SidecarVersion
		{"a version that is not semver", validSidecarVersion, []mutation{set("spec.version", "1.2")},
			"spec.version must be a semantic version such as 1.4.2"},
		{"a version with leading garbage", validSidecarVersion, []mutation{set("spec.version", "latest")},
			"spec.version must be a semantic version"},
		{"a missing version", validSidecarVersion, []mutation{remove("spec.version")}, "spec.version: Required value"},
		{"a missing image", validSidecarVersion, []mutation{remove("spec.image")}, "spec.image: Required value"},
		{"an empty image", validSidecarVersion, []mutation{set("spec.image", "")}, "spec.image: Invalid value"},
		{"an image with spaces", validSidecarVersion, []mutation{set("spec.image", "meshlift proxy")}, "spec.image must not contain spaces"},
		{"hot upgrade without an idle image", validSidecarVersion, []mutation{remove("spec.idleImage")},
			"spec.idleImage is required when spec.hotUpgrade is set"},
		{"a handoff protocol that is not a number", validSidecarVersion, []mutation{set("spec.hotUpgrade.protocol", "v1")},
			"spec.hotUpgrade.protocol must be a positive integer"},
		{"an argument longer than 1024 characters", validSidecarVersion,
			[]mutation{set("spec.args", list("--log-level=debug", "--x="+strings.Repeat("a", 1021)))}, "spec.args[1]: Too long: may not be more than 1024"},
		{"more than 64 arguments", validSidecarVersion, []mutation{set("spec.args", repeated("--v", 65))}, "spec.args: Too many: 65: must have at most 64 items"},
		{"an env value longer than 4096 characters", validSidecarVersion,
			[]mutation{set("spec.env", list(object("name", "CONFIG", "value", strings.Repeat("a", 4097))))}, "spec.env[].value must be at most 4096 characters"},
		{"an env name longer than 256 characters", validSidecarVersion,
			[]mutation{set("spec.env", list(object("name", strings.Repeat("A", 257), "value", "1")))}, "spec.env[].name must be at most 256 characters"},
		{"a drain budget longer than a day", validSidecarVersion, []mutation{set("spec.drain.maxDuration", "25h")},
			"spec.drain.maxDuration must be from 1s to 24h"},
		{"a drain budget that is not a duration", validMeshService, []mutation{set("spec.drain.maxDuration", "ten minutes")},
			"spec.drain.maxDuration"},
		{"env that sets a MESHLIFT_ variable", validSidecarVersion,
			[]mutation{set("spec.env", list(object("name", "MESHLIFT_SLOT", "value", "2")))}, "spec.env must not set MESHLIFT_* variables"},

		// MeshService
		{"an empty selector", validMeshService, []mutation{set("spec.selector", object())}, "spec.selector must not be empty"},
		{"a selector with an unknown operator", validMeshService,
			[]mutation{set("spec.selector", object("matchExpressions", list(object("key", "app", "operator", "Equals", "values", list("web")))))},
			"operator must be In, NotIn, Exists or DoesNotExist"},
		{"a selector with In and no values", validMeshService,
			[]mutation{set("spec.selector", object("matchExpressions", list(object("key", "app", "operator", "In"))))},
			"In and NotIn need values"},
		{"two ports with one name", validMeshService,
			[]mutation{set("spec.ports", list(object("name", "http", "port", int64(80)), object("name", "http", "port", int64(81))))},
			"spec.ports must have unique names"},
		{"two ports with one number", validMeshService,
			[]mutation{set("spec.ports", list(object("name", "a", "port", int64(80)), object("name", "b", "port", int64(80))))},
			"spec.ports must have unique port numbers"},
		{"a port name that is not a DNS label", validMeshService,
			[]mutation{set("spec.ports", list(object("name", "Http_1", "port", int64(80))))}, "spec.ports[].name must be a DNS label"},
		{"port 0", validMeshService, []mutation{set("spec.ports", list(object("name", "http", "port", int64(0))))},
			"should be greater than or equal to 1"},
		{"a port in the proxy's range", validMeshService, []mutation{set("spec.ports", list(object("name", "http", "port", int64(15006))))},
			"that range is reserved for meshlift-proxy"},
		{"an unknown protocol", validMeshService, []mutation{set("spec.ports", list(object("name", "dns", "port", int64(53), "protocol", "UDP")))},
			`Unsupported value: "UDP"`},
		{"an unknown mtls mode", validMeshService, []mutation{set("spec.mtls.mode", "DISABLE")}, `spec.mtls.mode: Unsupported value: "DISABLE"`},
		{"two upstreams on one local port", validMeshService,
			[]mutation{set("spec.upstreams", list(object("meshService", "a", "port", "http", "localPort", int64(7001)),
				object("meshService", "b", "port", "http", "localPort", int64(7001))))},
			"spec.upstreams must use each localPort once"},
		{"an upstream local port in the proxy's range", validMeshService,
			[]mutation{set("spec.upstreams", list(object("meshService", "a", "port", "http", "localPort", int64(15000))))},
			"spec.upstreams[].localPort must not be in 15000-15099"},
		{"an upstream that is not a MeshService name", validMeshService,
			[]mutation{set("spec.upstreams", list(object("meshService", "api.svc.cluster.local", "port", "http", "localPort", int64(7001))))},
			"spec.upstreams[].meshService must be a MeshService name or name.namespace"},
		{"a pinned version that cannot be a name", validMeshService, []mutation{set("spec.sidecar.version", "Proxy V2")},
			"spec.sidecar.version must be the name of a SidecarVersion"},

		// UpgradePlan
		{"a plan without MeshServices or selector", validUpgradePlan, []mutation{remove("spec.meshServices")},
			"set exactly one of spec.selector or spec.meshServices"},
		{"a plan with both MeshServices and a selector", validUpgradePlan, []mutation{set("spec.selector", object("matchLabels", object("a", "b")))},
			"set exactly one of spec.selector or spec.meshServices"},
		{"a missing target version", validUpgradePlan, []mutation{remove("spec.targetVersion")}, "spec.targetVersion: Required value"},
		{"a target version that cannot be a name", validUpgradePlan, []mutation{set("spec.targetVersion", "Proxy V2")},
			"spec.targetVersion must be the name of a SidecarVersion"},
		{"an unknown strategy", validUpgradePlan, []mutation{set("spec.strategy.type", "BlueGreen")}, `Unsupported value: "BlueGreen"`},
		{"maxUnavailable 0", validUpgradePlan, []mutation{set("spec.strategy.maxUnavailable", int64(0))},
			"spec.strategy.maxUnavailable must be an integer >= 1 or a percentage from 1% to 100%"},
		{"maxUnavailable 0%", validUpgradePlan, []mutation{set("spec.strategy.maxUnavailable", "0%")},
			"spec.strategy.maxUnavailable must be an integer >= 1 or a percentage from 1% to 100%"},
		{"maxUnavailable 150%", validUpgradePlan, []mutation{set("spec.strategy.maxUnavailable", "150%")},
			"spec.strategy.maxUnavailable must be an integer >= 1 or a percentage from 1% to 100%"},
		{"maxUnavailable that is not a number", validUpgradePlan, []mutation{set("spec.strategy.maxUnavailable", "a few")},
			"spec.strategy.maxUnavailable must be an integer >= 1 or a percentage from 1% to 100%"},
		{"count partitions that decrease", validUpgradePlan,
			[]mutation{set("spec.strategy.steps", list(object("partition", int64(3)), object("partition", int64(2)), object("partition", "100%")))},
			"spec.strategy.steps partitions must strictly increase"},
		{"percentage partitions that repeat", validUpgradePlan,
			[]mutation{set("spec.strategy.steps", list(object("partition", "50%"), object("partition", "50%"), object("partition", "100%")))},
			"spec.strategy.steps partitions must strictly increase"},
		{"steps that stop short of 100%", validUpgradePlan,
			[]mutation{set("spec.strategy.steps", list(object("partition", "10%"), object("partition", "50%")))},
			"the last of spec.strategy.steps must have partition 100%"},
		{"a partition of 0", validUpgradePlan, []mutation{set("spec.strategy.steps", list(object("partition", int64(0)), object("partition", "100%")))},
			"spec.strategy.steps[].partition must be an integer >= 1 or a percentage from 1% to 100%"},
		{"a pause duration that is not a duration", validUpgradePlan,
			[]mutation{set("spec.strategy.steps", list(object("partition", "100%", "pause", object("duration", "soon"))))},
			"spec.strategy.steps[].pause.duration must be a duration such as 30s"},
		{"an unknown failure policy", validUpgradePlan, []mutation{set("spec.failurePolicy", "Retry")}, `spec.failurePolicy: Unsupported value: "Retry"`},
		{"a negative maxFailedPods", validUpgradePlan, []mutation{set("spec.maxFailedPods", int64(-1))}, "should be greater than or equal to 0"},
		{"a progress deadline of 0", validUpgradePlan, []mutation{set("spec.health.progressDeadlineSeconds", int64(0))},
			"spec.health.progressDeadlineSeconds: Invalid value"},
		{"duplicate MeshService names", validUpgradePlan, []mutation{set("spec.meshServices", list("web", "web"))}, "Duplicate value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := env.Client.Create(context.Background(), build(t, tt.base, tt.mutations...))
			if err == nil {
				t.Fatalf("accepted, want a rejection containing %q", tt.wantMessage)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("error = %v, want an Invalid error", err)
			}
			if !strings.Contains(err.Error(), tt.wantMessage) {
				t.Fatalf("error = %q\nwant it to contain %q", err, tt.wantMessage)
			}
		})
	}
}

func TestImmutableFieldsCannotChange(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		field, value, wantMessage string
	}{
		{"spec.version", "1.2.4", "spec.version is immutable: create a new SidecarVersion for a new release"},
		{"spec.image", "meshlift/meshlift-proxy:other", "spec.image is immutable: create a new SidecarVersion for a new image"},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			obj := build(t, validSidecarVersion)
			if err := env.Client.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
			changed := obj.DeepCopy()
			if err := unstructured.SetNestedField(changed.Object, tt.value, strings.Split(tt.field, ".")...); err != nil {
				t.Fatal(err)
			}
			err := env.Client.Update(ctx, changed)
			if err == nil || !strings.Contains(err.Error(), tt.wantMessage) {
				t.Fatalf("update error = %v, want %q", err, tt.wantMessage)
			}
		})
	}

	t.Run("mutable fields can change", func(t *testing.T) {
		obj := build(t, validSidecarVersion)
		if err := env.Client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
		_ = unstructured.SetNestedField(obj.Object, true, "spec", "default")
		_ = unstructured.SetNestedField(obj.Object, "meshlift/meshlift-idle:other", "spec", "idleImage")
		if err := env.Client.Update(ctx, obj); err != nil {
			t.Fatalf("update of default and idleImage rejected: %v", err)
		}
	})
}

func TestDefaultsAreApplied(t *testing.T) {
	ctx := context.Background()
	plan := build(t, `
apiVersion: mesh.meshlift.io/v1alpha1
kind: UpgradePlan
metadata: {generateName: up-, namespace: default}
spec: {meshServices: [web], targetVersion: proxy-v2}
`)
	if err := env.Client.Create(ctx, plan); err != nil {
		t.Fatal(err)
	}
	typedPlan := &meshv1alpha1.UpgradePlan{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(plan), typedPlan); err != nil {
		t.Fatal(err)
	}
	spec := typedPlan.Spec
	if spec.Strategy.Type != meshv1alpha1.StrategyHotUpgrade || spec.Strategy.MaxUnavailable == nil || spec.Strategy.MaxUnavailable.IntValue() != 1 ||
		spec.FailurePolicy != meshv1alpha1.FailurePolicyPause || spec.Health.ProgressDeadlineSeconds != 300 || spec.MaxFailedPods != 0 {
		t.Errorf("UpgradePlan defaults = %+v", spec)
	}

	ms := build(t, `
apiVersion: mesh.meshlift.io/v1alpha1
kind: MeshService
metadata: {generateName: ms-, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  ports: [{name: raw, port: 5000}]
`)
	if err := env.Client.Create(ctx, ms); err != nil {
		t.Fatal(err)
	}
	typedMS := &meshv1alpha1.MeshService{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ms), typedMS); err != nil {
		t.Fatal(err)
	}
	if typedMS.Spec.MTLS.Mode != meshv1alpha1.MTLSStrict || typedMS.Spec.Ports[0].Protocol != meshv1alpha1.ProtocolTCP {
		t.Errorf("MeshService defaults: mtls %q, port protocol %q; want STRICT, TCP", typedMS.Spec.MTLS.Mode, typedMS.Spec.Ports[0].Protocol)
	}
}

// TestSamplesAreAccepted creates every object of config/samples, the files the README points at.
func TestSamplesAreAccepted(t *testing.T) {
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "config", "samples", "mesh_*.yaml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("want at least 3 sample files, found %v (%v)", files, err)
	}
	ns := env.Namespace(t, "samples")
	kinds := map[string]int{}
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		decoder := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
		for {
			obj := &unstructured.Unstructured{}
			if err := decoder.Decode(&obj.Object); err != nil {
				break
			}
			if obj.Object == nil {
				continue
			}
			if obj.GetKind() != "SidecarVersion" {
				obj.SetNamespace(ns)
			}
			if err := env.Client.Create(context.Background(), obj); err != nil {
				t.Errorf("%s: %s %s rejected: %v", filepath.Base(file), obj.GetKind(), obj.GetName(), err)
			}
			kinds[obj.GetKind()]++
		}
		_ = f.Close()
	}
	for _, kind := range []string{"SidecarVersion", "MeshService", "UpgradePlan"} {
		if kinds[kind] == 0 {
			t.Errorf("no %s sample in config/samples", kind)
		}
	}
}
