// Command meshlift-cni is a chained CNI plugin that redirects a meshed pod's TCP traffic to its
// meshlift-proxy (see docs/traffic.md and package internal/capture/cni). The container
// runtime runs it with the CNI_* environment and the network configuration on stdin.
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/meshlift/meshlift/internal/buildinfo"
	"github.com/meshlift/meshlift/internal/capture/cni"
)

func main() {
	plugin := &cni.Plugin{NewPodLookup: cni.NewKubeLookup, Log: os.Stderr}
	skel.PluginMainFuncs(plugin.Funcs(), cni.SupportedVersions, cni.PluginName+" "+buildinfo.Version+": traffic capture for meshlift pods")
}
