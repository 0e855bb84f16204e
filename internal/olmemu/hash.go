package olmemu

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/big"

	rbacv1 "k8s.io/api/rbac/v1"
)

// deepHashObject mirrors pkg/lib/kubernetes/pkg/util/hash/hash.go DeepHashObject:
// base62(sha224(json.Encoder output, trailing newline included)).
func deepHashObject(obj any) (string, error) {
	hasher := sha256.New224()
	if err := json.NewEncoder(hasher).Encode(obj); err != nil {
		return "", fmt.Errorf("couldn't encode object: %w", err)
	}
	var i big.Int
	i.SetBytes(hasher.Sum(nil))
	return i.Text(62), nil
}

// generateName mirrors pkg/controller/registry/resolver/rbac.go generateName: base-hash, with
// base cut so the name fits in 63 characters.
func generateName(base string, o any) (string, error) {
	const maxNameLength = 63
	hash, err := deepHashObject(o)
	if err != nil {
		return "", err
	}
	if len(base)+len(hash) > maxNameLength {
		base = base[:maxNameLength-len(hash)-1]
	}
	return fmt.Sprintf("%s-%s", base, hash), nil
}

// policyRuleHash mirrors rbac.go PolicyRuleHashLabelValue: base62(sha224(json.Marshal(rules))).
func policyRuleHash(rules []rbacv1.PolicyRule) (string, error) {
	raw, err := json.Marshal(rules)
	if err != nil {
		return "", err
	}
	return toBase62(sha256.Sum224(raw)), nil
}

// roleRefAndSubjectsHash mirrors rbac.go RoleReferenceAndSubjectHashLabelValue (the container's
// fields have no json tags, so the keys are RoleRef and Subjects).
func roleRefAndSubjectsHash(roleRef rbacv1.RoleRef, subjects []rbacv1.Subject) (string, error) {
	container := struct {
		RoleRef  rbacv1.RoleRef
		Subjects []rbacv1.Subject
	}{RoleRef: roleRef, Subjects: subjects}
	raw, err := json.Marshal(&container)
	if err != nil {
		return "", err
	}
	return toBase62(sha256.Sum224(raw)), nil
}

func toBase62(hash [28]byte) string {
	var i big.Int
	i.SetBytes(hash[:])
	return i.Text(62)
}
