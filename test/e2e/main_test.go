//go:build e2e

// Package e2e tests Meshlift on a real single-node cluster (hack/local-cluster: kubelet,
// containerd, kube-proxy) with the operator installed from config/default and images built from
// this tree. Run it with `make test-e2e`, which brings the cluster up, loads the images and
// installs the operator first, then passes the cluster's location in E2E_* variables.
package e2e

import (
	"fmt"
	"os"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
)

var (
	cfg          *rest.Config
	k8s          client.Client
	localCluster string // the hack/local-cluster binary
	clusterState string // its state directory
)

func TestMain(m *testing.M) {
	kubeconfig := os.Getenv("E2E_KUBECONFIG")
	localCluster, clusterState = os.Getenv("E2E_LOCAL_CLUSTER"), os.Getenv("E2E_CLUSTER_STATE")
	if kubeconfig == "" || localCluster == "" || clusterState == "" {
		fmt.Fprintln(os.Stderr, "E2E_KUBECONFIG, E2E_LOCAL_CLUSTER and E2E_CLUSTER_STATE are not set: run the suite with `make test-e2e`")
		os.Exit(1)
	}
	// API warnings (e.g. the validating webhook's) are logged through controller-runtime.
	ctrllog.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	var err error
	if cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig); err != nil {
		fmt.Fprintln(os.Stderr, "cannot load", kubeconfig, err)
		os.Exit(1)
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(meshv1alpha1.AddToScheme(scheme))
	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, "cannot create client:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}
