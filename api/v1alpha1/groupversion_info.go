// Package v1alpha1 holds the Meshlift API: SidecarVersion (a release of the sidecar proxy),
// MeshService (a set of pods in the mesh) and UpgradePlan (the version those pods should run and
// how to get there).
//
// +kubebuilder:object:generate=true
// +groupName=mesh.meshlift.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "mesh.meshlift.io", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the kinds of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
