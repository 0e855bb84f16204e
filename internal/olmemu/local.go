package olmemu

import (
	"fmt"
	"net"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// LocalCluster is how the repository's local cluster (hack/local-cluster, docs/local-cluster.md)
// differs from a cluster OLM runs in: images are loaded, not pulled, and there is no cluster
// DNS. It is NOT part of OLM's behaviour: AdaptForLocalCluster changes what Install returns the
// way config/local changes config/default, so a reviewer sees both separately.
type LocalCluster struct {
	// Deployment and Container name the operator's container (meshlift-controller-manager, manager).
	Deployment, Container string
	// Image and PullPolicy replace the CSV's image (the tag the cluster has loaded), as building
	// the bundle with another BUNDLE_OPERATOR_IMAGE would.
	Image      string
	PullPolicy corev1.PullPolicy
	// ControlPlaneService gets the fixed ClusterIP ControlPlaneIP, and the operator's
	// --control-plane-address flag names that IP instead of the Service's DNS name (config/local
	// does the same with 10.96.0.20 for meshlift-system; another install needs another free IP).
	ControlPlaneService string
	ControlPlaneIP      string
}

// AdaptForLocalCluster changes objs in place for the local cluster; it fails when an object or
// flag it must change is missing, so a changed bundle cannot silently skip the adaptation.
// The Deployment's olm.deployment-spec-hash label keeps the value OLM would have written for
// the unadapted spec.
func AdaptForLocalCluster(objs []client.Object, lc LocalCluster) error {
	if net.ParseIP(lc.ControlPlaneIP) == nil {
		return fmt.Errorf("control-plane IP %q is not an IP address", lc.ControlPlaneIP)
	}
	var svcDone, depDone bool
	for _, obj := range objs {
		switch o := obj.(type) {
		case *unstructured.Unstructured:
			if o.GetKind() != "Service" || o.GetName() != lc.ControlPlaneService {
				continue
			}
			if err := unstructured.SetNestedField(o.Object, lc.ControlPlaneIP, "spec", "clusterIP"); err != nil {
				return err
			}
			svcDone = true
		case *appsv1.Deployment:
			if o.Name != lc.Deployment {
				continue
			}
			for i := range o.Spec.Template.Spec.Containers {
				c := &o.Spec.Template.Spec.Containers[i]
				if c.Name != lc.Container {
					continue
				}
				if lc.Image != "" {
					c.Image = lc.Image
				}
				if lc.PullPolicy != "" {
					c.ImagePullPolicy = lc.PullPolicy
				}
				const flag = "--control-plane-address="
				for j, arg := range c.Args {
					if !strings.HasPrefix(arg, flag) {
						continue
					}
					_, port, err := net.SplitHostPort(strings.TrimPrefix(arg, flag))
					if err != nil {
						return fmt.Errorf("container %s: %s: %w", c.Name, arg, err)
					}
					c.Args[j] = flag + net.JoinHostPort(lc.ControlPlaneIP, port)
					depDone = true
				}
			}
		}
	}
	if !svcDone {
		return fmt.Errorf("no Service %s to give the ClusterIP %s", lc.ControlPlaneService, lc.ControlPlaneIP)
	}
	if !depDone {
		return fmt.Errorf("no container %s with --control-plane-address in Deployment %s", lc.Container, lc.Deployment)
	}
	return nil
}
