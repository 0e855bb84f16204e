package identity

import "fmt"

// Backend names the CA backend that publishes the Authority: the built-in CA (package
// identity/builtin) or cert-manager (package identity/certmanager).
type Backend string

const (
	// BackendBuiltin keeps a self-signed root and its key in a Secret of the operator's namespace.
	BackendBuiltin Backend = "builtin"
	// BackendCertManager has a cert-manager Issuer or ClusterIssuer sign an intermediate CA whose
	// key stays in the operator's memory.
	BackendCertManager Backend = "cert-manager"
)

// String makes *Backend a flag.Value.
func (b Backend) String() string { return string(b) }

// Set parses a flag value.
func (b *Backend) Set(s string) error {
	switch Backend(s) {
	case BackendBuiltin, BackendCertManager:
		*b = Backend(s)
		return nil
	}
	return fmt.Errorf("must be %s or %s, not %q", BackendBuiltin, BackendCertManager, s)
}

// Labels of the objects the CA backends and the trust-bundle controller create.
const (
	LabelPartOf = "app.kubernetes.io/part-of"
	PartOf      = "meshlift"
)
