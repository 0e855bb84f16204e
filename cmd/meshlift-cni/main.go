// Command meshlift-cni is a chained CNI plugin that redirects a meshed pod's TCP traffic to its
// meshlift-proxy, and isolates a pod created without the sidecar that a STRICT MeshService
// selects (see docs/traffic.md and package internal/capture/cni). The container runtime runs it
// with the CNI_* environment and the network configuration on stdin.
//
// "meshlift-cni init" is the capture init container of --capture-mode=init-container: it sets
// the same rules in its own network namespace from the pod's annotations file and exits.
//
// "meshlift-cni install" is the DaemonSet's installer (config/cni): it puts the plugin into the
// node's CNI configuration, keeps it there and takes it out when its pod is deleted.
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/meshlift/meshlift/internal/buildinfo"
	"github.com/meshlift/meshlift/internal/capture/cni"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "init":
			os.Exit(runInit(os.Args[2:], os.Stderr))
		case "install":
			os.Exit(runInstall(os.Args[2:], os.Stderr))
		}
	}
	plugin := &cni.Plugin{NewPodLookup: cni.NewKubeLookup, NewMeshServiceLookup: cni.NewKubeMeshServiceLookup, Log: os.Stderr}
	skel.PluginMainFuncs(plugin.Funcs(), cni.SupportedVersions, cni.PluginName+" "+buildinfo.Version+": traffic capture for meshlift pods")
}
