package controllers_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/argocd"
	"github.com/meshlift/meshlift/internal/repo"
	"github.com/meshlift/meshlift/internal/testutil/gen"
	"github.com/meshlift/meshlift/internal/testutil/testenv"
)

// The Argo CD health checks of config/argocd run on what the real controllers write, so a
// status field or reason that changes breaks these tests rather than a user's Argo CD.

var (
	healthScriptsOnce sync.Once
	healthScripts     map[string]string
	healthScriptsErr  error
)

// argoHealth evaluates the Argo CD health check of obj's kind on obj, with the libraries
// argocd-cm scripts get.
func argoHealth(t *testing.T, obj client.Object) argocd.Health {
	t.Helper()
	healthScriptsOnce.Do(func() {
		root, err := repo.Root()
		if err != nil {
			healthScriptsErr = err
			return
		}
		cs, err := argocd.LoadCustomizations(filepath.Join(root, "config", "argocd", "resource_customizations"))
		healthScripts = map[string]string{}
		for _, c := range cs {
			healthScripts[c.Kind] = c.Script
		}
		healthScriptsErr = err
	})
	if healthScriptsErr != nil {
		t.Fatal(healthScriptsErr)
	}
	var kind string
	switch obj.(type) {
	case *meshv1alpha1.UpgradePlan:
		kind = "UpgradePlan"
	case *meshv1alpha1.MeshService:
		kind = "MeshService"
	case *meshv1alpha1.SidecarVersion:
		kind = "SidecarVersion"
	default:
		t.Fatalf("no health check for %T", obj)
	}
	h, err := argocd.EvaluateObject(healthScripts[kind], obj, argocd.ConfigMapLibraries)
	if err != nil {
		t.Fatalf("%s %s: %v", kind, obj.GetName(), err)
	}
	return h
}

// waitForHealth waits until the health of obj (read again each time) has status and a message
// containing text, and returns it.
func waitForHealth(t *testing.T, obj client.Object, status, text string) argocd.Health {
	t.Helper()
	var h argocd.Health
	testenv.Eventually(t, time.Minute, func(ctx context.Context) (bool, string) {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return false, err.Error()
		}
		h = argoHealth(t, obj)
		return h.Status == status && strings.Contains(h.Message, text), fmt.Sprintf("health %+v, want %s with %q", h, status, text)
	})
	return h
}

func TestArgoCDHealthFollowsARealPlanThroughProgressingAndAStepPauseToHealthy(t *testing.T) {
	f := newRolloutFixture(t, "argo-hot", 3)
	ctx := context.Background()
	plan := gen.UpgradePlan("to-v2", f.to.Name, []string{"web"}, gen.UpgradePlanMeta(gen.SetNamespace(f.ns)))
	plan.Spec.Strategy.Steps = []meshv1alpha1.UpgradeStep{
		{Partition: intstr.FromInt32(1), Pause: &meshv1alpha1.StepPause{}},
		{Partition: intstr.FromString("100%")},
	}
	if err := env.Client.Create(ctx, plan); err != nil {
		t.Fatal(err)
	}
	// What the API server answers the create with has no status yet.
	if h := argoHealth(t, plan); h.Status != argocd.StatusProgressing || !strings.Contains(h.Message, "Waiting for the operator") {
		t.Errorf("a new plan: health %+v, want Progressing, waiting for the operator", h)
	}
	ms := &meshv1alpha1.MeshService{}
	ms.Namespace, ms.Name = f.ns, "web"

	// Play the kubelet and follow both objects' health until the plan holds after step 1.
	seen := map[string]bool{}
	var suspended argocd.Health
	testenv.Eventually(t, 2*time.Minute, func(ctx context.Context) (bool, string) {
		f.sync(t, func(*corev1.Pod, string) bool { return true })
		p := f.plan(t, "to-v2")
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ms), ms); err != nil {
			return false, err.Error()
		}
		planHealth, msHealth := argoHealth(t, p), argoHealth(t, ms)
		seen["plan "+planHealth.Status] = true
		seen["meshservice "+msHealth.Status] = true
		if planHealth.Status == argocd.StatusProgressing && strings.Contains(planHealth.Message, "pods updated to "+f.to.Name) {
			seen["plan progress"] = true
		}
		suspended = planHealth
		return planHealth.Status == argocd.StatusSuspended, fmt.Sprintf("plan %s: health %+v", p.Status.Phase, planHealth)
	})
	for _, want := range []string{"plan progress", "meshservice " + argocd.StatusProgressing} {
		if !seen[want] {
			t.Errorf("never saw %q on the way to the step pause; saw %v", want, seen)
		}
	}

	// The message says how to resume; do exactly that.
	command := fmt.Sprintf("kubectl -n %s annotate upgradeplan to-v2 meshlift.io/resume=%s/0 --overwrite", f.ns, f.to.Name)
	if !strings.Contains(suspended.Message, command) {
		t.Fatalf("the step pause's health %+v does not name the command %q", suspended, command)
	}
	update(t, f.plan(t, "to-v2"), func(p *meshv1alpha1.UpgradePlan) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations["meshlift.io/resume"] = f.to.Name + "/0"
	})
	testenv.Eventually(t, 2*time.Minute, func(context.Context) (bool, string) {
		f.sync(t, func(*corev1.Pod, string) bool { return true })
		p := f.plan(t, "to-v2")
		h := argoHealth(t, p)
		return h.Status == argocd.StatusHealthy, fmt.Sprintf("plan %s: health %+v", p.Status.Phase, h)
	})
	waitForHealth(t, ms, argocd.StatusHealthy, "AllPodsReady")
	waitForHealth(t, f.to, argocd.StatusHealthy, "The proxy is ready in all 3 pods")

	// A spec change the operator has not seen yet is Progressing, whatever the phase says.
	p := f.plan(t, "to-v2")
	p.Spec.Health.MinReadySeconds = 1
	if err := env.Client.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	if p.Status.ObservedGeneration < p.Generation {
		if h := argoHealth(t, p); h.Status != argocd.StatusProgressing || !strings.Contains(h.Message, fmt.Sprintf("observe generation %d", p.Generation)) {
			t.Errorf("a plan whose status is behind its spec: health %+v", h)
		}
	}
	waitForHealth(t, p, argocd.StatusHealthy, "Completed")
}

func TestArgoCDHealthOfPlansThatCannotGoOn(t *testing.T) {
	broken := func(f *rolloutFixture) func(pod *corev1.Pod, container string) bool {
		return func(pod *corev1.Pod, container string) bool {
			for _, c := range pod.Spec.InitContainers {
				if c.Name == container {
					return c.Image != f.to.Spec.Image
				}
			}
			return true
		}
	}
	tests := []struct {
		name           string
		edit           func(f *rolloutFixture, p *meshv1alpha1.UpgradePlan)
		ready          func(f *rolloutFixture) func(pod *corev1.Pod, container string) bool
		status, reason string
	}{
		{name: "a target that does not exist is Degraded", status: argocd.StatusDegraded, reason: "TargetVersionNotFound",
			edit: func(_ *rolloutFixture, p *meshv1alpha1.UpgradePlan) { p.Spec.TargetVersion = "no-such-version" }},
		{name: "spec.paused is Suspended with the command that resumes", status: argocd.StatusSuspended,
			reason: `patch upgradeplan plan --type merge -p '{"spec":{"paused":false}}'`,
			edit:   func(_ *rolloutFixture, p *meshv1alpha1.UpgradePlan) { p.Spec.Paused = true }},
		{name: "too many failures with failurePolicy Pause is Degraded", status: argocd.StatusDegraded, reason: "TooManyFailures",
			ready: broken, edit: func(_ *rolloutFixture, p *meshv1alpha1.UpgradePlan) { p.Spec.Health.ProgressDeadlineSeconds = 3 }},
		{name: "a plan rolled back after a failure is Degraded", status: argocd.StatusDegraded, reason: "RolledBack",
			ready: broken, edit: func(_ *rolloutFixture, p *meshv1alpha1.UpgradePlan) {
				p.Spec.Health.ProgressDeadlineSeconds = 3
				p.Spec.FailurePolicy = meshv1alpha1.FailurePolicyRollback
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newRolloutFixture(t, "argo-stuck", 2)
			plan := gen.UpgradePlan("plan", f.to.Name, []string{"web"}, gen.UpgradePlanMeta(gen.SetNamespace(f.ns)))
			tc.edit(f, plan)
			if err := env.Client.Create(context.Background(), plan); err != nil {
				t.Fatal(err)
			}
			ready := func(*corev1.Pod, string) bool { return true }
			if tc.ready != nil {
				ready = tc.ready(f)
			}
			testenv.Eventually(t, 2*time.Minute, func(context.Context) (bool, string) {
				f.sync(t, ready)
				p := f.plan(t, "plan")
				h := argoHealth(t, p)
				return h.Status == tc.status && strings.Contains(h.Message, tc.reason), fmt.Sprintf("plan %s: health %+v", p.Status.Phase, h)
			})
		})
	}
}

func TestArgoCDHealthOfTheYoungerOfTwoConflictingPlansIsDegraded(t *testing.T) {
	f := newRolloutFixture(t, "argo-conflict", 1)
	older := gen.UpgradePlan("older", f.from.Name, []string{"web"}, gen.UpgradePlanMeta(gen.SetNamespace(f.ns)))
	create(t, older)
	time.Sleep(1100 * time.Millisecond) // creation timestamps have a resolution of one second
	younger := gen.UpgradePlan("younger", f.to.Name, []string{"web"}, gen.UpgradePlanMeta(gen.SetNamespace(f.ns)))
	create(t, younger)
	waitForHealth(t, younger, argocd.StatusDegraded, "GovernedByOlderPlan")
	waitForHealth(t, older, argocd.StatusHealthy, "Completed")
}
