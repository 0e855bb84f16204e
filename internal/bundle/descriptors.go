package bundle

import (
	"github.com/operator-framework/api/pkg/operators/v1alpha1"
)

// The console's widgets for a field (x-descriptors), as OLM's descriptor reference names them.
const (
	xText            = "urn:alm:descriptor:com.tectonic.ui:text"
	xNumber          = "urn:alm:descriptor:com.tectonic.ui:number"
	xBoolean         = "urn:alm:descriptor:com.tectonic.ui:booleanSwitch"
	xResources       = "urn:alm:descriptor:com.tectonic.ui:resourceRequirements"
	xAdvanced        = "urn:alm:descriptor:com.tectonic.ui:advanced"
	xPodSelector     = "urn:alm:descriptor:com.tectonic.ui:selector:core:v1:Pod"
	xMeshServiceSel  = "urn:alm:descriptor:com.tectonic.ui:selector:mesh.meshlift.io:v1alpha1:MeshService"
	xSidecarVersion  = "urn:alm:descriptor:io.kubernetes:mesh.meshlift.io:v1alpha1:SidecarVersion"
	xMeshService     = "urn:alm:descriptor:io.kubernetes:mesh.meshlift.io:v1alpha1:MeshService"
	xConditions      = "urn:alm:descriptor:io.kubernetes.conditions"
	xPhase           = "urn:alm:descriptor:io.kubernetes.phase"
	xStatusText      = "urn:alm:descriptor:text"
	xTimestamp       = "urn:alm:descriptor:timestamp"
	selectPrefix     = "urn:alm:descriptor:com.tectonic.ui:select:"
	fieldGroupPrefix = "urn:alm:descriptor:com.tectonic.ui:fieldGroup:"
)

// kindDescription is what the CSV says about one owned kind, beyond what the CRD says.
type kindDescription struct {
	displayName string
	description string
	// resources are the kinds of objects instances of this kind make the operator create or
	// change (shown as the instance's resources in the console).
	resources []v1alpha1.APIResourceReference
	spec      []v1alpha1.SpecDescriptor
	status    []v1alpha1.StatusDescriptor
}

func spec(path, name, description string, xs ...string) v1alpha1.SpecDescriptor {
	return v1alpha1.SpecDescriptor{Path: path, DisplayName: name, Description: description, XDescriptors: xs}
}

func status(path, name, description string, xs ...string) v1alpha1.StatusDescriptor {
	return v1alpha1.StatusDescriptor{Path: path, DisplayName: name, Description: description, XDescriptors: xs}
}

// kinds describes the three owned kinds by kind name. A test checks every path against the
// CRD's schema.
var kinds = map[string]kindDescription{
	"SidecarVersion": {
		displayName: "Sidecar Version",
		description: "A release of the sidecar proxy (cluster-wide): its image, the idle image of the hot-upgrade slot, " +
			"the hot-upgrade protocol it speaks, and its resources. At most one is the default that pods get when " +
			"nothing else names a version.",
		resources: []v1alpha1.APIResourceReference{{Kind: "Pod", Name: "", Version: "v1"}},
		spec: []v1alpha1.SpecDescriptor{
			spec("version", "Version", "The proxy's semantic version.", xText),
			spec("image", "Image", "The proxy's container image.", xText),
			spec("idleImage", "Idle Image", "The image of the idle hot-upgrade slot.", xText, xAdvanced),
			spec("hotUpgrade.protocol", "Hot-Upgrade Protocol", "The handoff protocol version; hot upgrades only happen between versions that speak the same one.", xText, xAdvanced),
			spec("default", "Default", "Pods whose MeshService names no version, and that no UpgradePlan governs, get this version.", xBoolean),
			spec("resources", "Resources", "The proxy container's resource requests and limits.", xResources),
		},
		status: []v1alpha1.StatusDescriptor{
			status("pods", "Pods", "Pods that run this version.", xStatusText),
			status("readyPods", "Ready Pods", "Pods whose proxy of this version is ready.", xStatusText),
			status("conditions", "Conditions", "Whether the version is valid and whether it is the single default.", xConditions),
		},
	},
	"MeshService": {
		displayName: "Mesh Service",
		description: "Puts the pods it selects into the mesh: they get the sidecar proxy, an mTLS identity and the " +
			"upstreams they may call. Its status counts the pods matched, injected and ready, by version.",
		resources: []v1alpha1.APIResourceReference{{Kind: "Pod", Name: "", Version: "v1"}, {Kind: "ConfigMap", Name: "", Version: "v1"}},
		spec: []v1alpha1.SpecDescriptor{
			spec("selector", "Pod Selector", "The pods of this namespace that belong to the service.", xPodSelector),
			spec("ports", "Ports", "The ports the sidecar serves inbound over mTLS.", fieldGroupPrefix+"ports"),
			spec("mtls.mode", "mTLS Mode", "STRICT accepts only mTLS; PERMISSIVE also plain text.", selectPrefix+"STRICT", selectPrefix+"PERMISSIVE"),
			spec("upstreams", "Upstreams", "The MeshServices the pods call, each on a local port of the sidecar.", fieldGroupPrefix+"upstreams"),
			spec("sidecar.version", "Sidecar Version", "Pins the pods to a SidecarVersion (an UpgradePlan that governs the service takes precedence).", xSidecarVersion),
			spec("injection.nativeSidecar", "Native Sidecar", "Inject the proxy as a native sidecar (restartable init container).", xBoolean, xAdvanced),
			spec("injection.holdApplicationUntilProxyStarts", "Hold Application Until Proxy Starts", "Start the application only once its proxy is ready.", xBoolean, xAdvanced),
			spec("injection.proxyReadinessGate", "Proxy Readiness Gate", "Add the meshlift.io/proxy-ready readiness gate to the pods.", xBoolean, xAdvanced),
		},
		status: []v1alpha1.StatusDescriptor{
			status("currentVersion", "Current Version", "The SidecarVersion new pods get.", xSidecarVersion),
			status("versionSource", "Version Source", "Why: the default, the service's own pin, or an UpgradePlan.", xStatusText),
			status("pods.matched", "Matched Pods", "Pods the selector matches.", xStatusText),
			status("pods.injected", "Injected Pods", "Matched pods that have the sidecar.", xStatusText),
			status("pods.ready", "Ready Pods", "Injected pods whose proxy is ready.", xStatusText),
			status("conditions", "Conditions", "Ready, and why not (e.g. pods admitted without a sidecar).", xConditions),
		},
	},
	"UpgradePlan": {
		displayName: "Upgrade Plan",
		description: "Moves the pods of some MeshServices to a target SidecarVersion, pod by pod: by hot upgrade " +
			"(no application restart, no dropped request), in place or by recreation, in steps with pauses, a budget " +
			"of unavailable pods, health gates, and pause or rollback on failure.",
		resources: []v1alpha1.APIResourceReference{{Kind: "Pod", Name: "", Version: "v1"}},
		spec: []v1alpha1.SpecDescriptor{
			spec("selector", "MeshService Selector", "The MeshServices of this namespace the plan governs, by label.", xMeshServiceSel),
			spec("meshServices", "MeshServices", "Or the MeshServices the plan governs, by name.", xMeshService),
			spec("targetVersion", "Target Version", "The SidecarVersion the pods should run.", xSidecarVersion),
			spec("strategy.type", "Strategy", "HotUpgrade (the default), InPlace or Recreate.", selectPrefix+"HotUpgrade", selectPrefix+"InPlace", selectPrefix+"Recreate"),
			spec("strategy.maxUnavailable", "Max Unavailable", "Pods that may be upgrading at once (a number or a percentage).", xText),
			spec("paused", "Paused", "Start no new pod upgrades; those in flight finish.", xBoolean),
			spec("health.progressDeadlineSeconds", "Progress Deadline (seconds)", "How long a pod may take to become healthy on the new version.", xNumber, xAdvanced),
			spec("health.minReadySeconds", "Min Ready (seconds)", "How long a pod must stay ready to count as upgraded.", xNumber, xAdvanced),
			spec("failurePolicy", "Failure Policy", "What to do once more than Max Failed Pods failed.", selectPrefix+"Pause", selectPrefix+"Rollback"),
			spec("maxFailedPods", "Max Failed Pods", "Failed pods tolerated before the failure policy applies.", xNumber),
		},
		status: []v1alpha1.StatusDescriptor{
			status("phase", "Phase", "Pending, Progressing, Paused, Succeeded, Failed, RollingBack or RolledBack.", xPhase),
			status("counts.total", "Total Pods", "Pods the plan governs.", xStatusText),
			status("counts.updated", "Updated Pods", "Pods on the target version.", xStatusText),
			status("counts.ready", "Ready Pods", "Updated pods that are ready.", xStatusText),
			status("counts.failed", "Failed Pods", "Pods whose upgrade failed.", xStatusText),
			status("currentStep", "Current Step", "The step of the strategy in progress.", xStatusText),
			status("startTime", "Start Time", "When the plan started moving pods.", xTimestamp),
			status("completionTime", "Completion Time", "When every pod reached the target.", xTimestamp),
			status("conditions", "Conditions", "Progressing, Paused, Complete, Failed, RolledBack and Conflict, with their reasons.", xConditions),
		},
	},
}
