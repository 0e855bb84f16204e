// Package repo locates the checkout and names the tool versions that several commands share.
package repo

import (
	"errors"
	"os"
	"path/filepath"
)

// KubeVersion is the Kubernetes version built by hack/kube for envtest and the local cluster;
// keep it in step with KUBE_VERSION in the Makefile.
const KubeVersion = "1.36.3"

// Root returns the directory of the repository's go.mod, searching upwards from the working
// directory.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "config", "crd")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the repository root (a go.mod beside config/crd) above the working directory")
		}
		dir = parent
	}
}

// KubeBinDir is where hack/kube's binaries are built.
func KubeBinDir(root string) string {
	return filepath.Join(root, "bin", "k8s", KubeVersion)
}
