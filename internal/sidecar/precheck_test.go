package sidecar_test

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshlift/meshlift/internal/sidecar"
	"github.com/meshlift/meshlift/internal/testutil/gen"
)

func TestPodsThatMountAReservedVolumeAreNotInjected(t *testing.T) {
	mount := func(volume string) []corev1.VolumeMount {
		return []corev1.VolumeMount{{Name: volume, MountPath: "/mnt"}}
	}
	tests := []struct {
		name        string
		change      func(pod *corev1.Pod)
		wantReason  string // "" when the pod may be injected
		wantMessage string
	}{
		{"refuses an app container that mounts the run directory it does not declare",
			func(pod *corev1.Pod) { pod.Spec.Containers[0].VolumeMounts = mount(sidecar.RunVolume) },
			sidecar.SkipReservedVolume, "container app mounts volume meshlift-run, which only the sidecar may mount"},
		{"refuses an app container that mounts the proxy's token",
			func(pod *corev1.Pod) { pod.Spec.Containers[0].VolumeMounts = mount(sidecar.TokenVolume) },
			sidecar.SkipReservedVolume, "container app mounts volume meshlift-token"},
		{"refuses an app container that mounts the pod info volume",
			func(pod *corev1.Pod) { pod.Spec.Containers[0].VolumeMounts = mount(sidecar.PodInfoVolume) },
			sidecar.SkipReservedVolume, "mounts volume meshlift-podinfo"},
		{"refuses an init container that mounts the run directory",
			func(pod *corev1.Pod) {
				pod.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: "setup:1", VolumeMounts: mount(sidecar.RunVolume)}}
			},
			sidecar.SkipReservedVolume, "container setup mounts volume meshlift-run"},
		{"refuses an ephemeral container that mounts the run directory",
			func(pod *corev1.Pod) {
				pod.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
					Name: "debug", Image: "busybox", VolumeMounts: mount(sidecar.RunVolume)}}}
			},
			sidecar.SkipReservedVolume, "container debug mounts volume meshlift-run"},
		{"refuses a block device named like the run directory",
			func(pod *corev1.Pod) {
				pod.Spec.Containers[0].VolumeDevices = []corev1.VolumeDevice{{Name: sidecar.RunVolume, DevicePath: "/dev/x"}}
			},
			sidecar.SkipReservedVolume, "mounts volume meshlift-run"},
		{"says what to fix when the pod declares and mounts a reserved volume of its own",
			func(pod *corev1.Pod) {
				pod.Spec.Volumes = []corev1.Volume{{Name: sidecar.RunVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
				pod.Spec.Containers[0].VolumeMounts = mount(sidecar.RunVolume)
			},
			sidecar.SkipReservedVolume, "give the pod's own volume another name"},
		{"still refuses a pod that only declares a reserved volume",
			func(pod *corev1.Pod) {
				pod.Spec.Volumes = []corev1.Volume{{Name: sidecar.TokenVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			},
			sidecar.SkipNameConflict, "volume named meshlift-token"},
		{"injects a pod whose containers mount volumes of other names",
			func(pod *corev1.Pod) {
				pod.Spec.Volumes = []corev1.Volume{{Name: "meshlift-runtime", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
				pod.Spec.Containers[0].VolumeMounts = mount("meshlift-runtime")
			},
			"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := gen.Pod("p")
			pod.Spec.Containers[0].Name = "app"
			tt.change(pod)
			reason, message := sidecar.Precheck(pod)
			if reason != tt.wantReason || !strings.Contains(message, tt.wantMessage) {
				t.Fatalf("Precheck() = %q, %q; want %q and a message containing %q", reason, message, tt.wantReason, tt.wantMessage)
			}
			result := sidecar.Inject(pod, gen.MeshService("web"), gen.SidecarVersion("proxy-v1", "1.0.0"), sidecar.DefaultOptions())
			if result.Skipped != tt.wantReason {
				t.Errorf("Inject() skipped = %q, want %q", result.Skipped, tt.wantReason)
			}
		})
	}
}

// The reserved names are exactly the volumes injection adds, so a volume added later is
// reserved too.
func TestTheReservedVolumesAreTheVolumesInjectionAdds(t *testing.T) {
	pod := gen.Pod("p")
	result := sidecar.Inject(pod, gen.MeshService("web"), gen.SidecarVersion("proxy-v1", "1.0.0"), sidecar.DefaultOptions())
	if result.Skipped != "" {
		t.Fatalf("not injected: %s", result.Message)
	}
	var added []string
	for _, v := range result.Pod.Spec.Volumes[len(pod.Spec.Volumes):] {
		added = append(added, v.Name)
	}
	reserved := sidecar.ReservedVolumes()
	slices.Sort(added)
	slices.Sort(reserved)
	if !slices.Equal(added, reserved) {
		t.Errorf("injection adds volumes %v, ReservedVolumes() = %v", added, reserved)
	}
}
