// Package memlimit gives the operator's Go runtime a soft memory limit below its container's
// memory limit, which the downward API passes in MESHLIFT_MEMORY_LIMIT
// (resourceFieldRef limits.memory): near the limit the collector runs more often instead of the
// kernel killing the container. GOMEMLIMIT, when set, wins: the runtime already honours it.
package memlimit

import (
	"fmt"
	"math"
	"runtime/debug"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

const (
	// EnvContainerLimit is the variable that holds the container's memory limit in bytes.
	EnvContainerLimit = "MESHLIFT_MEMORY_LIMIT"
	// EnvGoMemLimit is the Go runtime's own soft memory limit.
	EnvGoMemLimit = "GOMEMLIMIT"
	// Percent of the container's limit the Go runtime may use: the rest is for what the runtime
	// does not count (stacks of the OS threads, the binary) and its lag behind the limit.
	Percent = 90
)

// Limit is the soft memory limit, in bytes, to set for a container memory limit given as
// MESHLIFT_MEMORY_LIMIT is (bytes; a quantity such as 256Mi is read too), 0 when there is
// nothing to set: GOMEMLIMIT is set (goMemLimit), or the container's limit is not.
func Limit(goMemLimit, containerLimit string) (int64, error) {
	containerLimit = strings.TrimSpace(containerLimit)
	if goMemLimit != "" || containerLimit == "" {
		return 0, nil
	}
	q, err := resource.ParseQuantity(containerLimit)
	if err != nil {
		return 0, fmt.Errorf("%s=%q is not a byte count: %w", EnvContainerLimit, containerLimit, err)
	}
	bytes := q.Value()
	if bytes <= 0 {
		return 0, fmt.Errorf("%s=%q is not a positive byte count", EnvContainerLimit, containerLimit)
	}
	if bytes > math.MaxInt64/Percent {
		return bytes / 100 * Percent, nil
	}
	return bytes * Percent / 100, nil
}

// Set sets the runtime's soft memory limit from the environment (getenv: os.Getenv) as Limit
// says, and returns what it set (0: nothing).
func Set(getenv func(string) string) (int64, error) {
	limit, err := Limit(getenv(EnvGoMemLimit), getenv(EnvContainerLimit))
	if err != nil || limit == 0 {
		return 0, err
	}
	debug.SetMemoryLimit(limit)
	return limit, nil
}
