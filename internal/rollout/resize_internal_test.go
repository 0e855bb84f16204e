package rollout

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestEnactedCovers(t *testing.T) {
	resources := func(cpuRequest, memoryRequest, cpuLimit, memoryLimit string) corev1.ResourceRequirements {
		r := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
		for _, q := range []struct {
			list  corev1.ResourceList
			name  corev1.ResourceName
			value string
		}{{r.Requests, corev1.ResourceCPU, cpuRequest}, {r.Requests, corev1.ResourceMemory, memoryRequest}, {r.Limits, corev1.ResourceCPU, cpuLimit}, {r.Limits, corev1.ResourceMemory, memoryLimit}} {
			if q.value != "" {
				q.list[q.name] = resource.MustParse(q.value)
			}
		}
		return r
	}
	tests := []struct {
		name          string
		enacted, want corev1.ResourceRequirements
		covers        bool
	}{
		{"compares quantities, not how they are written", resources("0.1", "48Mi", "", "128Mi"), resources("100m", "48Mi", "", "128Mi"), true},
		{"sees a memory limit that is not applied yet", resources("100m", "48Mi", "", "32Mi"), resources("100m", "48Mi", "", "128Mi"), false},
		{"sees a cpu request that is not applied yet", resources("1m", "48Mi", "", "128Mi"), resources("100m", "48Mi", "", "128Mi"), false},
		{"misses a limit the status does not report", resources("100m", "48Mi", "", ""), resources("100m", "48Mi", "", "128Mi"), false},
		{"ignores what the status reports beyond the resources asked for", resources("100m", "48Mi", "1", "128Mi"), resources("100m", "48Mi", "", "128Mi"), true},
		{"takes cpu requests at or below 2m for the 2 shares they all become", resources("2m", "8Mi", "", "32Mi"), resources("1m", "8Mi", "", "32Mi"), true},
		{"takes cpu limits at or below 10m for the kubelet's floor", resources("1m", "8Mi", "10m", "32Mi"), resources("1m", "8Mi", "5m", "32Mi"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := enactedCovers(tt.enacted, tt.want); got != tt.covers {
				t.Errorf("enactedCovers = %v, want %v", got, tt.covers)
			}
		})
	}
}
