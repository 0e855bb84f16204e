// Package rollout is the decision logic of the UpgradePlan controller (ARCHITECTURE.md section 7):
// given a plan, the pods of its MeshServices and the clock, Plan says what to do next to each
// pod, as data (Action), and what to write to the plan's status (Result). It is pure: it imports
// no Kubernetes client, keeps no memory between calls and never modifies its input, so a restarted
// operator (or a new leader) decides exactly as the old one would have.
//
// # State
//
// Everything a decision needs is in the cluster:
//
//   - the per-pod state of an upgrade (PodState) is JSON in the pod's meshlift.io/upgrade
//     annotation. The controller writes it before it acts, in the same patch as the action when
//     the action is a patch (swap images, set active-slot and version, exclude from EDS), or in a
//     patch right before it when the action is a resize or an eviction. Each phase therefore says
//     what to check next, and an action that was lost (crash, conflict) is simply asked for again;
//     every action is idempotent. The record stays after the upgrade (phase Succeeded, Failed or
//     Aborted): a rollback needs to know where a pod came from, and failures are counted from the
//     pods, so they survive restarts.
//   - the plan's status holds only what pods cannot tell: status.currentStep says which step
//     pauses were released (the step index only moves past a pause once it was released), and
//     the Paused condition's lastTransitionTime says when the current step pause began. Progress
//     itself is always recomputed from the pods. If the status is lost, pauses start over; they are
//     never skipped.
//   - the annotation is untrusted: DecodeState rejects unknown or repeated fields, trailing data,
//     oversized values and values that contradict each other. A pod whose record cannot be read is
//     never acted on; it is reported (Held, MalformedState) and counts against maxUnavailable,
//     since it may be in the middle of an upgrade.
//
// # Per pod
//
// The strategy of a pod is chosen when it starts (PodStrategy): Recreate and InPlace as the plan
// says; HotUpgrade only when the pod has both slots and both versions are known to speak the same
// handoff protocol, InPlace otherwise (a pod whose version cannot hot-upgrade, or whose
// SidecarVersion is gone, is moved in place rather than trusted to hand off).
//
// HotUpgrade: ResizeSlotUp (idle slot to the target's resources) -> SwapSlot (one patch: idle
// slot image := target, active-slot and version annotations, as sidecar.WithSlotRunning renders
// them) -> WaitingReady (the new container ready with the target image = takeover done) ->
// Stabilizing (minReadySeconds) -> RetireSlot (old slot image := the target's idle image, resize
// down) -> Succeeded. Stabilizing lasts at least Options.MinStable (3s) even with
// minReadySeconds 0, since the kubelet can report a restarted container ready for a moment before
// its first probe; a proxy that is not ready any more during it goes back to WaitingReady. On
// failure (not ready within progressDeadlineSeconds counted from the start, or a container in
// CrashLoopBackOff or an image pull error): Revert puts the idle image back into the new slot and makes the old slot,
// which never stopped running the old proxy, active again, in one patch, then resizes the new
// slot down. A pod never lacks an active proxy: the active-slot annotation only ever names a
// slot whose image is a proxy.
//
// A resize counts once the kubelet applied it, not once the spec has it: the container's
// status.containerStatuses[].resources report the resources and the pod has no PodResizeInProgress
// condition, nor a PodResizePending one that could be this resize (slotResize). A resize already in
// the spec is not asked for again while the kubelet works on it or defers it (Deferred: the pod
// waits, its status.pods record says why, until progressDeadlineSeconds); one it refuses
// (Infeasible) fails the pod with the kubelet's message, like any other failure. A kubelet that
// reports no resources in container statuses is trusted with the spec once no resize condition
// is left. The retired slot's shrink does not fail a pod whose new proxy already took over: one
// the kubelet refuses, or does not apply within progressDeadlineSeconds, ends the upgrade with the
// slot's resources as they are and says so in the pod's record.
//
// InPlace: ExcludeFromEndpoints (meshlift.io/eds-excluded, and the proxy-ready gate False when the
// pod has it) -> Draining (until Input.Drain confirms it: every control-plane replica's
// acknowledgement on the pod, and out of its EndpointSlices when it has the gate; at most
// Options.DrainTimeout or half the deadline; Options.DrainDuration without Input.Drain) -> SwapImage -> WaitingReady -> Stabilizing ->
// RestoreEndpoints -> Succeeded. A failure swaps the old image back and restores the endpoints
// once the old proxy is ready again (or after another deadline).
//
// Recreate: Evict (the Eviction API respects PodDisruptionBudgets); the replacement is injected
// with the target by the webhook. An eviction that does not happen within the deadline fails.
//
// # Across pods
//
//   - total counts the injected, non-terminating, unfinished pods. Updated counts pods whose
//     version is the target and that are not in flight: a pod in flight counts as upgraded only
//     after minReadySeconds and the retirement of its old slot.
//   - maxUnavailable (count or percentage of total, rounded up, default 1, at least 1) bounds
//     pods in flight plus pods that are not Ready for other reasons, plus pods this plan evicted
//     that are still terminating. A decision never starts a pod that would exceed it.
//   - steps: a step's partition (count or percentage, rounded up, capped at the pods that did not
//     fail; the last step always means all) is reached when that many pods are updated. Pods in
//     flight count as progress so a step never overshoots. After a reached step the plan pauses
//     for its duration, or until annotation meshlift.io/resume="<target>/<step>" releases it.
//     A pause on the last step is meaningless and ignored.
//   - spec.paused: pods in flight finish (or fail), none starts. It also holds a rollback.
//   - failures: more than maxFailedPods failed pods (counted from Failed records for the current
//     target) apply failurePolicy: Pause stops starting pods (phase Failed; raise maxFailedPods,
//     change the target, or remove the Failed records to go on); Rollback aborts the pods in
//     flight and walks every pod this plan upgraded back to the version it came from, through the
//     same per-pod state machine and within the same budget (phase RollingBack, then RolledBack).
//     Failed pods are not retried automatically.
//   - a target set back (spec.targetVersion changed while pods are in flight) aborts the pods in
//     flight (they revert to where they came from, not counted as failures) and upgrades the rest
//     to the new target; when that walks pods back to the version they came from, the phase is
//     RollingBack and ends as RolledBack, in one stage: the steps and their pauses do not apply.
//   - candidates start in namespace/name order: deterministic, so a log or a test can tell which
//     pod is next.
//
// # Edge cases, decided
//
//   - Terminating pods are never started and not counted in total: their replacement (if any) is
//     counted when it appears. Exception: a pod this plan evicted counts against maxUnavailable
//     until it is gone, since its replacement may not exist yet.
//   - Pods deleted in the middle of an upgrade are abandoned (Ignored, DeletedMidUpgrade): a
//     terminating pod cannot be patched into a better state, its replacement gets the target from
//     the webhook, and its budget is freed (the replacement counts while it is not Ready).
//   - Pods not yet injected (no meshlift.io/version) are outside the plan: not in total, not in the
//     budget (they are not in the mesh and receive no mesh traffic), reported as NotInjected. They
//     get a sidecar when they are recreated.
//   - Pods of a workload that is itself rolling out (a Deployment whose pods belong to more than
//     one ReplicaSet, by pod-template-hash; a StatefulSet or DaemonSet whose pods have more than
//     one controller-revision-hash) are held, not started: their workload replaces them anyway,
//     and the new pods get the target from the webhook, so upgrading them would spend budget and
//     race with the workload controller. They stay in total and block completion until the
//     workload's rollout finishes. Upgrades already in flight finish. (A StatefulSet that keeps a
//     partition forever holds its pods forever; the message says so.)
//   - Pods already on the target count as updated and are not touched, including pods the webhook
//     created with the target; a rollback cannot walk those back (no record of where they came
//     from) and leaves them.
//   - Pods that are not Ready are not started (an unready proxy is a poor handoff partner and would
//     likely fail the health gate); they count against the budget and are started once Ready.
//   - A pod with an active record of another plan is left alone and counts against the budget.
//   - A missing target SidecarVersion is an error (ErrVersionNotFound): nothing can be decided.
package rollout
