package olmemu

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// FieldManager is the server-side apply field manager of the emulation (OLM's own is
// olm.install, for the objects it applies rather than creates).
const FieldManager = "olm-emulation"

// Installation is what Apply did: every object in order, and whether it existed before.
type Installation struct {
	Objects []*unstructured.Unstructured
	existed []bool
}

// Apply writes objs (from Install, possibly adapted) in order with server-side apply (field
// manager olm-emulation, forcing conflicts, as OLM's own applies do), and waits for each
// CustomResourceDefinition to be Established before going on, as the InstallPlan does. It
// returns what it applied, for Uninstall, also when it fails part way.
func Apply(ctx context.Context, c client.Client, objs []client.Object) (*Installation, error) {
	inst := &Installation{}
	for _, obj := range objs {
		u, err := toUnstructured(obj)
		if err != nil {
			return inst, err
		}
		existing := &unstructured.Unstructured{}
		existing.SetGroupVersionKind(u.GroupVersionKind())
		err = c.Get(ctx, client.ObjectKeyFromObject(u), existing)
		if err != nil && !apierrors.IsNotFound(err) {
			return inst, fmt.Errorf("%s: %w", describe(u), err)
		}
		inst.Objects = append(inst.Objects, u)
		inst.existed = append(inst.existed, err == nil)
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u.DeepCopy()), client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
			return inst, fmt.Errorf("applying %s: %w", describe(u), err)
		}
		if u.GetKind() == "CustomResourceDefinition" {
			if err := waitEstablished(ctx, c, u); err != nil {
				return inst, err
			}
		}
	}
	return inst, nil
}

// Uninstall deletes, in reverse order, what Apply created, except CustomResourceDefinitions:
// like OLM when a CSV is deleted, it leaves the CRDs (and so every custom resource) in place.
// Objects that existed before Apply (the CRDs, ClusterRoles the bundle shares with another
// install of the operator) are left too. It does not wait for the deletions to finish.
func (inst *Installation) Uninstall(ctx context.Context, c client.Client) error {
	var errs []error
	for i := len(inst.Objects) - 1; i >= 0; i-- {
		u := inst.Objects[i]
		if inst.existed[i] || u.GetKind() == "CustomResourceDefinition" {
			continue
		}
		if err := c.Delete(ctx, u.DeepCopy(), client.PropagationPolicy("Background")); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting %s: %w", describe(u), err))
		}
	}
	return errors.Join(errs...)
}

// Find returns the applied object of kind and name, or nil.
func (inst *Installation) Find(kind, name string) *unstructured.Unstructured {
	for _, u := range inst.Objects {
		if u.GetKind() == kind && u.GetName() == name {
			return u
		}
	}
	return nil
}

func toUnstructured(obj client.Object) (*unstructured.Unstructured, error) {
	var u *unstructured.Unstructured
	if in, ok := obj.(*unstructured.Unstructured); ok {
		u = in.DeepCopy()
	} else {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			return nil, err
		}
		u = &unstructured.Unstructured{Object: m}
	}
	if u.GetAPIVersion() == "" || u.GetKind() == "" {
		return nil, fmt.Errorf("%s: no apiVersion or kind", u.GetName())
	}
	// What the typed structs carry that an apply configuration must not claim.
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "spec", "template", "metadata", "creationTimestamp")
	return u, nil
}

func describe(u *unstructured.Unstructured) string {
	if u.GetNamespace() != "" {
		return fmt.Sprintf("%s %s/%s", u.GetKind(), u.GetNamespace(), u.GetName())
	}
	return fmt.Sprintf("%s %s", u.GetKind(), u.GetName())
}

func waitEstablished(ctx context.Context, c client.Client, crd *unstructured.Unstructured) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(crd.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(crd), got); err == nil {
			conditions, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, cond := range conditions {
				m, _ := cond.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CustomResourceDefinition %s is not Established: %w", crd.GetName(), ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}
