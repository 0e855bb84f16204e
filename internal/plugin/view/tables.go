package view

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	meshv1alpha1 "github.com/meshlift/meshlift/api/v1alpha1"
	"github.com/meshlift/meshlift/internal/sidecar"
)

// PlanRow is one line of `get plans`.
type PlanRow struct {
	Namespace string     `json:"namespace"`
	Name      string     `json:"name"`
	Target    string     `json:"target"`
	Strategy  string     `json:"strategy"`
	Phase     string     `json:"phase"`
	Step      int32      `json:"step"`
	Steps     int32      `json:"steps"`
	Progress  Progress   `json:"progress"`
	Paused    bool       `json:"paused"`
	Created   *time.Time `json:"created,omitempty"`
}

// Plans builds the rows of `get plans`, sorted by namespace and name.
func Plans(plans []meshv1alpha1.UpgradePlan) []PlanRow {
	rows := make([]PlanRow, 0, len(plans))
	for i := range plans {
		s := BuildStatus(StatusInput{Plan: &plans[i]})
		created := plans[i].CreationTimestamp.UTC()
		rows = append(rows, PlanRow{Namespace: s.Namespace, Name: s.Name, Target: s.Target, Strategy: s.Strategy, Phase: s.Phase,
			Step: s.Step, Steps: s.Steps, Progress: s.Progress, Paused: plans[i].Spec.Paused, Created: &created})
	}
	slices.SortFunc(rows, func(a, b PlanRow) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return rows
}

// RenderPlans draws `get plans`.
func RenderPlans(rows []PlanRow, allNamespaces bool, now time.Time, o Options) string {
	if len(rows) == 0 {
		return "No UpgradePlans found.\n"
	}
	t := newTable(allNamespaces, "NAME", "TARGET", "STRATEGY", "PHASE", "PROGRESS", "FAILED", "STEP", "AGE")
	for _, r := range rows {
		phase := r.Phase
		if r.Paused && phase != string(meshv1alpha1.PhasePaused) {
			phase += " (paused)"
		}
		cells := []string{r.Name, r.Target, r.Strategy, phase,
			fmt.Sprintf("%d/%d", r.Progress.Updated, r.Progress.Total), fmt.Sprint(r.Progress.Failed),
			fmt.Sprintf("%d/%d", r.Step, r.Steps), age(r.Created, now)}
		t.row(r.Namespace, []string{"", "", "", phaseTone(r.Phase).color()}, cells...)
	}
	return t.String(o, 0)
}

// VersionRow is one line of `get versions`.
type VersionRow struct {
	Name       string `json:"name"`
	Version    string `json:"version"`
	Image      string `json:"image"`
	HotUpgrade string `json:"hotUpgrade,omitempty"`
	Default    bool   `json:"default"`
	Pods       int32  `json:"pods"`
	ReadyPods  int32  `json:"readyPods"`
	// Where lists the MeshServices whose pods run this version, with how many; Drift marks the
	// ones whose current version is another (their pods still have to move).
	Where []Placement `json:"where,omitempty"`
}

// Placement is how many pods of one MeshService run a version.
type Placement struct {
	Namespace   string `json:"namespace"`
	MeshService string `json:"meshService"`
	Pods        int32  `json:"pods"`
	Drift       bool   `json:"drift"`
}

// Versions builds the rows of `get versions` from the SidecarVersions and the MeshServices of the
// namespaces asked for.
func Versions(versions []meshv1alpha1.SidecarVersion, services []meshv1alpha1.MeshService) []VersionRow {
	where := map[string][]Placement{}
	for _, ms := range services {
		for _, v := range ms.Status.Pods.ByVersion {
			if v.Pods <= 0 {
				continue
			}
			where[v.Version] = append(where[v.Version], Placement{Namespace: ms.Namespace, MeshService: ms.Name, Pods: v.Pods,
				Drift: ms.Status.CurrentVersion != "" && ms.Status.CurrentVersion != v.Version})
		}
	}
	rows := make([]VersionRow, 0, len(versions))
	for _, v := range versions {
		r := VersionRow{Name: v.Name, Version: v.Spec.Version, Image: v.Spec.Image, Default: v.Spec.Default,
			Pods: v.Status.Pods, ReadyPods: v.Status.ReadyPods, Where: where[v.Name]}
		if v.Spec.HotUpgrade != nil {
			r.HotUpgrade = v.Spec.HotUpgrade.Protocol
		}
		slices.SortFunc(r.Where, func(a, b Placement) int {
			return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.MeshService, b.MeshService))
		})
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b VersionRow) int { return cmp.Compare(a.Name, b.Name) })
	return rows
}

// RenderVersions draws `get versions`.
func RenderVersions(rows []VersionRow, o Options) string {
	if len(rows) == 0 {
		return "No SidecarVersions found.\n"
	}
	// Narrow terminals get the columns that answer "where does this version run"; wide ones
	// also the image and the handoff protocol. Tables are never cut: a long WHERE wraps.
	wide := o.width() >= 120
	header := []string{"NAME", "VERSION", "DEFAULT", "PODS", "READY", "WHERE (* = drift: pods should move)"}
	if wide {
		header = slices.Insert(header, 2, "IMAGE", "HOT-UPGRADE")
	}
	t := newTable(false, header...)
	for _, r := range rows {
		def := ""
		if r.Default {
			def = o.pick("✔", "yes")
		}
		places := make([]string, 0, len(r.Where))
		for _, p := range r.Where {
			mark := ""
			if p.Drift {
				mark = "*"
			}
			places = append(places, fmt.Sprintf("%s/%s %d%s", p.Namespace, p.MeshService, p.Pods, mark))
		}
		cells := []string{r.Name, r.Version, def, fmt.Sprint(r.Pods), fmt.Sprint(r.ReadyPods), cmp.Or(strings.Join(places, ", "), "-")}
		readyColor := ansiGreen
		if r.ReadyPods < r.Pods {
			readyColor = ansiYellow
		}
		colors := []string{"", "", ansiGreen, "", readyColor}
		if wide {
			cells = slices.Insert(cells, 2, r.Image, cmp.Or(r.HotUpgrade, "-"))
			colors = slices.Insert(colors, 2, "", "")
		}
		t.row("", colors, cells...)
	}
	return t.String(o, 0)
}

// MeshServiceRow is one line of `get meshservices`.
type MeshServiceRow struct {
	Namespace      string        `json:"namespace"`
	Name           string        `json:"name"`
	CurrentVersion string        `json:"currentVersion"`
	VersionSource  string        `json:"versionSource,omitempty"`
	ByVersion      []VersionPods `json:"byVersion,omitempty"`
	Matched        int32         `json:"matched"`
	Injected       int32         `json:"injected"`
	Ready          int32         `json:"ready"`
	MTLS           string        `json:"mtls"`
	// Status is the Ready condition's reason.
	Status  string     `json:"status,omitempty"`
	Created *time.Time `json:"created,omitempty"`
}

// MeshServices builds the rows of `get meshservices`.
func MeshServices(services []meshv1alpha1.MeshService) []MeshServiceRow {
	rows := make([]MeshServiceRow, 0, len(services))
	for _, ms := range services {
		created := ms.CreationTimestamp.UTC()
		r := MeshServiceRow{Namespace: ms.Namespace, Name: ms.Name, CurrentVersion: ms.Status.CurrentVersion,
			VersionSource: string(ms.Status.VersionSource), Matched: ms.Status.Pods.Matched, Injected: ms.Status.Pods.Injected,
			Ready: ms.Status.Pods.Ready, MTLS: string(cmp.Or(ms.Spec.MTLS.Mode, meshv1alpha1.MTLSMode("STRICT"))), Created: &created}
		for _, v := range ms.Status.Pods.ByVersion {
			r.ByVersion = append(r.ByVersion, VersionPods{Version: v.Version, Pods: v.Pods})
		}
		slices.SortFunc(r.ByVersion, func(a, b VersionPods) int { return cmp.Compare(a.Version, b.Version) })
		if c := meta.FindStatusCondition(ms.Status.Conditions, meshv1alpha1.ConditionReady); c != nil {
			r.Status = c.Reason
		}
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b MeshServiceRow) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return rows
}

// RenderMeshServices draws `get meshservices`.
func RenderMeshServices(rows []MeshServiceRow, allNamespaces bool, now time.Time, o Options) string {
	if len(rows) == 0 {
		return "No MeshServices found.\n"
	}
	t := newTable(allNamespaces, "NAME", "VERSION", "PODS BY VERSION", "READY", "MTLS", "STATUS", "AGE")
	for _, r := range rows {
		byVersion := make([]string, 0, len(r.ByVersion))
		for _, v := range r.ByVersion {
			byVersion = append(byVersion, fmt.Sprintf("%s:%d", v.Version, v.Pods))
		}
		if r.Injected < r.Matched {
			byVersion = append(byVersion, fmt.Sprintf("not injected:%d", r.Matched-r.Injected))
		}
		readyColor := ansiGreen
		if r.Ready < r.Matched {
			readyColor = ansiYellow
		}
		statusColor := ansiGreen
		if r.Status != "Ready" && r.Status != meshv1alpha1.ReasonAllPodsCurrent {
			statusColor = ansiYellow
		}
		cells := []string{r.Name, cmp.Or(r.CurrentVersion, "-"), cmp.Or(strings.Join(byVersion, " "), "-"),
			fmt.Sprintf("%d/%d", r.Ready, r.Matched), r.MTLS, cmp.Or(r.Status, "-"), age(r.Created, now)}
		t.row(r.Namespace, []string{"", "", "", readyColor, "", statusColor}, cells...)
	}
	return t.String(o, 0)
}

// ProxyRow is one line of `proxy-status`.
type ProxyRow struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	// Version is the SidecarVersion of the active proxy.
	Version string `json:"version"`
	// ActiveSlot is 1 or 2 (0: a single proxy container).
	ActiveSlot int    `json:"activeSlot"`
	Image      string `json:"image"`
	// IdleImage is the image of the slot that does not own the listeners (empty for a single proxy).
	IdleImage string `json:"idleImage,omitempty"`
	Ready     bool   `json:"ready"`
	// CertificateNotAfter is when the certificate the control plane last issued to the pod's
	// proxy expires (from the pod's meshlift.io/certificate-not-after annotation).
	CertificateNotAfter *time.Time `json:"certificateNotAfter,omitempty"`
	EDSExcluded         bool       `json:"edsExcluded"`
	// Upgrade is the phase of an upgrade in flight on the pod, if any.
	Upgrade string `json:"upgrade,omitempty"`
}

// ProxyRows builds the rows of `proxy-status` for the injected pods among pods that have not
// ended.
func ProxyRows(pods []corev1.Pod, upgradePhase func(*corev1.Pod) string) []ProxyRow {
	rows := make([]ProxyRow, 0, len(pods))
	for i := range pods {
		pod := &pods[i]
		// Pods that ended (a finished Job's, say) have no proxy running any more.
		if !sidecar.IsInjected(pod) || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		r := ProxyRow{Namespace: pod.Namespace, Pod: pod.Name, Version: sidecar.Version(pod), ActiveSlot: sidecar.ActiveSlot(pod),
			Ready: sidecar.ProxyReady(pod), EDSExcluded: pod.Annotations[meshv1alpha1.AnnotationEDSExcluded] == "true"}
		r.Image = containerImage(pod, sidecar.ActiveContainerName(pod))
		if idle := sidecar.IdleSlot(pod); idle != 0 {
			r.IdleImage = containerImage(pod, sidecar.SlotContainerName(idle))
		}
		if v := pod.Annotations[meshv1alpha1.AnnotationCertificateNotAfter]; v != "" {
			if t, err := time.Parse(time.RFC3339, v); err == nil {
				t = t.UTC()
				r.CertificateNotAfter = &t
			}
		}
		if upgradePhase != nil {
			r.Upgrade = upgradePhase(pod)
		}
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b ProxyRow) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Pod, b.Pod))
	})
	return rows
}

func containerImage(pod *corev1.Pod, name string) string {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			if c.Name == name {
				return c.Image
			}
		}
	}
	return ""
}

// RenderProxies draws `proxy-status`: images on wide terminals only. Certificates that expire
// within the hour are yellow, expired ones red.
func RenderProxies(rows []ProxyRow, allNamespaces bool, now time.Time, o Options) string {
	if len(rows) == 0 {
		return "No meshed pods found.\n"
	}
	wide := o.width() >= 120
	header := []string{"POD", "VERSION", "SLOT", "READY", "CERT EXPIRES", "EDS", "UPGRADE"}
	if wide {
		header = append(slices.Insert(header, 3, "IMAGE"), "IDLE IMAGE")
	}
	t := newTable(allNamespaces, header...)
	for _, r := range rows {
		ready, readyColor := o.pick("✔", "yes"), ansiGreen
		if !r.Ready {
			ready, readyColor = o.pick("✖", "no"), ansiRed
		}
		cert, certColor := "unknown", ansiYellow
		if r.CertificateNotAfter != nil {
			left := r.CertificateNotAfter.Sub(now)
			switch {
			case left <= 0:
				cert, certColor = "expired "+Duration(-left)+" ago", ansiRed
			case left < time.Hour:
				cert, certColor = "in "+Duration(left), ansiYellow
			default:
				cert, certColor = "in "+Duration(left), ""
			}
		}
		eds, edsColor := "included", ""
		if r.EDSExcluded {
			eds, edsColor = "excluded", ansiYellow
		}
		slot := fmt.Sprint(r.ActiveSlot)
		if r.ActiveSlot == 0 {
			slot = "-"
		}
		cells := []string{r.Pod, r.Version, slot, ready, cert, eds, cmp.Or(r.Upgrade, "-")}
		colors := []string{"", "", "", readyColor, certColor, edsColor}
		if wide {
			cells = slices.Insert(cells, 3, r.Image)
			colors = slices.Insert(colors, 3, "")
			cells = append(cells, cmp.Or(r.IdleImage, "-"))
		}
		t.row(r.Namespace, colors, cells...)
	}
	return t.String(o, 0)
}

func age(t *time.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return Duration(now.Sub(*t))
}
