package webhooks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	admissionv1 "k8s.io/api/admission/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
	"github.com/meshlift/meshlift/webhooks"
)

// The validating webhooks never reject: every object below is created, with a warning that says
// what is off.
func TestValidatorsWarnButNeverReject(t *testing.T) {
	ctx := context.Background()
	ns, version := meshed(t, "validate", nil)
	inNS := gen.UpgradePlanMeta(gen.SetNamespace(ns))

	tests := []struct {
		name        string
		obj         func() clientObject
		wantWarning string
	}{
		{"an UpgradePlan whose target does not exist yet",
			func() clientObject { return gen.UpgradePlan("early", "not-yet", []string{"web"}, inNS) },
			`spec.targetVersion names SidecarVersion "not-yet", which does not exist (yet)`},
		{"a MeshService pinned to a SidecarVersion that does not exist",
			func() clientObject {
				return gen.MeshService("pinned", gen.PinVersion("missing"), gen.MeshServiceMeta(gen.SetNamespace(ns)),
					func(ms *meshv1alpha1.MeshService) { ms.Spec.Selector.MatchLabels = map[string]string{"app": "pinned"} })
			},
			`spec.sidecar.version names SidecarVersion "missing"`},
		{"a MeshService whose selector overlaps another's",
			func() clientObject {
				return gen.MeshService("web-canary", gen.MeshServiceMeta(gen.SetNamespace(ns)),
					func(ms *meshv1alpha1.MeshService) {
						ms.Spec.Selector.MatchLabels = map[string]string{"app": "web", "track": "canary"}
					})
			},
			"may select the same pods as MeshService web"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			warned.take()
			if err := warnClient.Create(ctx, tt.obj()); err != nil {
				t.Fatalf("rejected: %v", err)
			}
			got := strings.Join(warned.take(), "\n")
			if !strings.Contains(got, tt.wantWarning) {
				t.Errorf("warnings = %q, want one containing %q", got, tt.wantWarning)
			}
			if strings.Contains(got, "could not check") {
				t.Errorf("warnings = %q: a check was skipped although the cache can be read", got)
			}
		})
	}

	t.Run("a second UpgradePlan for a MeshService an older plan governs", func(t *testing.T) {
		testenv.Eventually(t, timeout, func(ctx context.Context) (bool, string) { // the older plan must be in the webhook's cache
			err := mgrCache.Get(ctx, client.ObjectKey{Namespace: ns, Name: "early"}, &meshv1alpha1.UpgradePlan{})
			return err == nil, fmt.Sprint(err)
		})
		warned.take()
		if err := warnClient.Create(ctx, gen.UpgradePlan("late", version.Name, []string{"web"}, inNS)); err != nil {
			t.Fatalf("rejected: %v", err)
		}
		if got := strings.Join(warned.take(), "\n"); !strings.Contains(got, "MeshService web is already governed by the older UpgradePlan early") {
			t.Errorf("warnings = %q", got)
		}
	})

	t.Run("a second default SidecarVersion", func(t *testing.T) {
		first := gen.SidecarVersion(ns+"-default-a", "1.0.0", gen.AsDefault())
		second := gen.SidecarVersion(ns+"-default-b", "1.0.0", gen.AsDefault())
		for _, sv := range []*meshv1alpha1.SidecarVersion{first, second} {
			if err := warnClient.Create(ctx, sv); err != nil {
				t.Fatalf("rejected: %v", err)
			}
			t.Cleanup(func() { _ = warnClient.Delete(context.Background(), sv) })
		}
		// The webhook reads the cache, which may not have the first one yet: update the second
		// until the warning shows (an update is validated the same way).
		waitForWarning(t, func() error {
			second.Spec.Args = append(second.Spec.Args, "--touch")
			return warnClient.Update(ctx, second)
		}, "is already the default")
	})
}

// A check whose read fails is skipped with a warning, never turned into a denial (which
// controller-runtime makes of an error the validator returns, whatever the failurePolicy), and
// the checks that could read still warn.
//
// In the operator the validators read the manager's cache, which cannot be made to fail on
// demand once it has synced. Here they read through the real API server as a user that RBAC
// lets read only some things (or nothing), so the same reads fail, with Forbidden, every time.
func TestValidatorsAdmitWithAWarningWhenAReadFails(t *testing.T) {
	ns := env.Namespace(t, "unreadable")
	const getsVersions, nobody = "meshlift-test-gets-versions", "meshlift-test-nobody"
	env.Grant(t, "gets-versions", getsVersions, ns, []rbacv1.PolicyRule{{
		APIGroups: []string{meshv1alpha1.GroupVersion.Group}, Resources: []string{"sidecarversions"}, Verbs: []string{"get"},
	}}, nil)
	readerAs := func(user string) client.Reader {
		c, err := client.New(env.As(user), client.Options{Scheme: env.Scheme})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	inNS := gen.UpgradePlanMeta(gen.SetNamespace(ns))

	tests := []struct {
		name         string
		validator    func(client.Reader) *admission.Webhook
		reader       client.Reader
		obj          clientObject
		wantWarnings []string
	}{
		{"admits an UpgradePlan whose plans cannot be listed and still warns that its target does not exist",
			upgradePlanWebhook, readerAs(getsVersions), gen.UpgradePlan("plan", "not-yet", []string{"web"}, inNS),
			[]string{
				`spec.targetVersion names SidecarVersion "not-yet", which does not exist (yet)`,
				"meshlift could not check whether an older UpgradePlan governs the same MeshServices: failed to list MeshServices: ",
			}},
		{"admits an UpgradePlan when nothing can be read, with a warning for each check it skipped",
			upgradePlanWebhook, readerAs(nobody), gen.UpgradePlan("plan", "not-yet", []string{"web"}, inNS),
			[]string{
				`meshlift could not check whether spec.targetVersion exists: failed to read SidecarVersion not-yet: `,
				"meshlift could not check whether an older UpgradePlan governs the same MeshServices: failed to list MeshServices: ",
			}},
		{"admits a MeshService whose neighbours cannot be listed and still warns that its version does not exist",
			meshServiceWebhook, readerAs(getsVersions), gen.MeshService("pinned", gen.PinVersion("missing"), gen.MeshServiceMeta(gen.SetNamespace(ns))),
			[]string{
				`spec.sidecar.version names SidecarVersion "missing", which does not exist (yet)`,
				"meshlift could not check whether spec.selector overlaps another MeshService's: failed to list MeshServices: ",
			}},
		{"admits a default SidecarVersion when the other versions cannot be listed",
			sidecarVersionWebhook, readerAs(getsVersions), gen.SidecarVersion(ns+"-default", "1.0.0", gen.AsDefault()),
			[]string{"meshlift could not check whether another SidecarVersion is already the default: failed to list SidecarVersions: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logged := &logLines{}
			wh := tt.validator(tt.reader)
			wh.LogConstructor = func(logr.Logger, *admission.Request) logr.Logger { return logged.logger() }
			resp := wh.Handle(context.Background(), creation(t, tt.obj))
			if !resp.Allowed {
				t.Fatalf("denied: %v", resp.Result)
			}
			if len(resp.Warnings) != len(tt.wantWarnings) {
				t.Errorf("warnings = %q, want %d", resp.Warnings, len(tt.wantWarnings))
			}
			got := strings.Join(resp.Warnings, "\n")
			for _, want := range tt.wantWarnings {
				if !strings.Contains(got, want) {
					t.Errorf("warnings = %q, want one containing %q", got, want)
				}
			}
			for _, w := range resp.Warnings {
				if strings.HasPrefix(w, "meshlift could not check") && (!strings.Contains(w, "forbidden") || !strings.HasSuffix(w, "; admitted without that check")) {
					t.Errorf("warning %q does not say what failed and that the object was admitted anyway", w)
				}
			}
			skipped := strings.Count(got, "meshlift could not check")
			if n := logged.count(`"msg"="Admitting without a check whose read failed"`, "forbidden"); n != skipped {
				t.Errorf("%d errors logged for %d skipped checks:\n%s", n, skipped, strings.Join(logged.all(), "\n"))
			}
		})
	}
}

func upgradePlanWebhook(reader client.Reader) *admission.Webhook {
	return admission.WithValidator[*meshv1alpha1.UpgradePlan](env.Scheme, &webhooks.UpgradePlanValidator{Reader: reader})
}

func meshServiceWebhook(reader client.Reader) *admission.Webhook {
	return admission.WithValidator[*meshv1alpha1.MeshService](env.Scheme, &webhooks.MeshServiceValidator{Reader: reader})
}

func sidecarVersionWebhook(reader client.Reader) *admission.Webhook {
	return admission.WithValidator[*meshv1alpha1.SidecarVersion](env.Scheme, &webhooks.SidecarVersionValidator{Reader: reader})
}

// creation is the admission request the API server sends when obj is created.
func creation(t *testing.T, obj clientObject) admission.Request {
	t.Helper()
	gvk, err := apiutil.GVKForObject(obj, env.Scheme)
	if err != nil {
		t.Fatal(err)
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "test",
		Kind:      metav1.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind},
		Namespace: obj.GetNamespace(),
		Name:      obj.GetName(),
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: raw},
	}}
}

// logLines collects what a logger writes.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, args)
	}, funcr.Options{})
}

func (l *logLines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// count counts the lines that contain every one of parts.
func (l *logLines) count(parts ...string) int {
	n := 0
	for _, line := range l.all() {
		if !slices.ContainsFunc(parts, func(part string) bool { return !strings.Contains(line, part) }) {
			n++
		}
	}
	return n
}
