package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
)

// Labels and annotations of the pod contract (ARCHITECTURE.md section 4). They live in the API
// package because the webhook, the controllers, the proxy and the kubectl plugin all read them.
const (
	// AnnotationInject set to "false" on a pod opts it out of injection.
	AnnotationInject = "meshlift.io/inject"

	// AnnotationVersion names the SidecarVersion whose proxy runs in the pod's active slot.
	AnnotationVersion = "meshlift.io/version"

	// AnnotationActiveSlot names the slot ("1" or "2") whose container owns the listeners.
	AnnotationActiveSlot = "meshlift.io/active-slot"

	// AnnotationMeshService names the MeshService the pod was injected for.
	AnnotationMeshService = "meshlift.io/meshservice"

	// AnnotationInjectionHash is a digest of the injected layout; it makes injection idempotent.
	AnnotationInjectionHash = "meshlift.io/injection-hash"

	// AnnotationUpgrade holds the in-flight per-pod upgrade state as JSON, so a restarted
	// operator resumes exactly where it stopped.
	AnnotationUpgrade = "meshlift.io/upgrade"

	// AnnotationResume on an UpgradePlan releases a step pause without a duration. Its value is
	// "<targetVersion>/<step>" and releases the pauses of that step and the steps before it, for
	// that target only, so a value left over from an earlier rollout releases nothing.
	// kubectl meshlift upgrade resume writes it.
	AnnotationResume = "meshlift.io/resume"

	// AnnotationEDSExcluded set to "true" takes the pod out of the endpoints (EDS) the control
	// plane sends to client proxies. The InPlace rollout sets it before it restarts a pod's proxy
	// cold and removes it once the new proxy is ready.
	AnnotationEDSExcluded = "meshlift.io/eds-excluded"

	// AnnotationPrefixEDSAck prefixes the annotation each control-plane replica writes on a pod
	// excluded from EDS once every proxy connected to it has acknowledged endpoints without the
	// pod (EDSAckAnnotation names it). The InPlace rollout waits for the replicas that serve
	// proxies, then restarts the pod's proxy, and removes these annotations with the exclusion.
	AnnotationPrefixEDSAck = "eds-ack.meshlift.io/"

	// AnnotationCertificateNotAfter is when the newest workload certificate the control plane
	// sent one of the pod's proxies expires: its NotAfter in RFC 3339, UTC, whole seconds
	// ("2026-01-02T15:04:05Z"). The control plane writes it after each issuance, coalesced per
	// pod and rate-limited, so it may lag a rotation by seconds (by minutes when thousands of
	// pods get certificates at once). kubectl meshlift proxy-status reads it.
	AnnotationCertificateNotAfter = "meshlift.io/certificate-not-after"

	// AnnotationOperatorVersion is the version the operator running in the pod was built as (the
	// one it logs when it starts); each operator replica writes it on its own Pod when it starts.
	// kubectl meshlift version reads it.
	AnnotationOperatorVersion = "meshlift.io/operator-version"

	// ReadinessGateProxyReady is the pod readiness gate the operator sets once the active proxy
	// is ready (opt-in per MeshService).
	ReadinessGateProxyReady = "meshlift.io/proxy-ready"
)

// Condition types shared by the kinds of this package.
const (
	// ConditionReady says whether the object is doing its job; see each kind for the details.
	ConditionReady = "Ready"
)

// EDSAckAnnotation is the drain acknowledgement annotation of the control-plane replica named
// replica (its pod name): AnnotationPrefixEDSAck + the name, or + "r-" and a digest of it when
// the name is not a valid annotation name (more than 63 characters, or other characters).
func EDSAckAnnotation(replica string) string {
	if len(replica) <= 63 && qualifiedName.MatchString(replica) {
		return AnnotationPrefixEDSAck + replica
	}
	sum := sha256.Sum256([]byte(replica))
	return AnnotationPrefixEDSAck + "r-" + hex.EncodeToString(sum[:10])
}

// qualifiedName is the name part of an annotation key.
var qualifiedName = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
