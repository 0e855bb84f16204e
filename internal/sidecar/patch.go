package sidecar

import (
	"encoding/json"
	"fmt"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
)

// CreatePatch returns the JSON patch that turns original into injected. The order of operations
// on different object keys is not stable between calls (operations on one array are); compare
// patches by applying them.
func CreatePatch(original, injected *corev1.Pod) ([]jsonpatch.Operation, error) {
	before, err := json.Marshal(original)
	if err != nil {
		return nil, fmt.Errorf("failed to encode the pod: %w", err)
	}
	after, err := json.Marshal(injected)
	if err != nil {
		return nil, fmt.Errorf("failed to encode the injected pod: %w", err)
	}
	patch, err := jsonpatch.CreatePatch(before, after)
	if err != nil {
		return nil, fmt.Errorf("failed to compute the injection patch: %w", err)
	}
	return patch, nil
}
