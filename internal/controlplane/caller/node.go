package caller

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshlift/meshlift/internal/identity"
)

// Keys of node.metadata (docs/control-plane.md).
const (
	MetaPodName      = "POD_NAME"
	MetaPodNamespace = "POD_NAMESPACE"
	MetaCSR          = "CSR"
	MetaMeshService  = "MESHSERVICE"
	MetaSlot         = "SLOT"
	MetaVersion      = "VERSION"
)

// maxNodeString bounds node.id and the informational metadata values.
const maxNodeString = 512

// Node is what a caller says about itself in its xDS node. Only the CSR is used as such;
// POD_NAME and POD_NAMESPACE are checked against the token (CheckNode), the rest is logged.
type Node struct {
	ID           string
	PodName      string
	PodNamespace string
	// CSR is the PEM certificate request, nil when the caller wants a server-generated key.
	CSR         []byte
	MeshService string
	Slot        string
	Version     string
}

// ParseNode reads a node. It must name its pod in POD_NAME and POD_NAMESPACE; the known keys
// must hold strings; other keys are ignored.
func ParseNode(node *corev3.Node) (Node, error) {
	if node == nil {
		return Node{}, identity.Refuse(identity.ReasonMalformedRequest, "the first request of a stream must carry node")
	}
	if len(node.GetId()) > maxNodeString {
		return Node{}, identity.Refuse(identity.ReasonMalformedRequest, "node.id has %d bytes, more than %d", len(node.GetId()), maxNodeString)
	}
	fields := node.GetMetadata().GetFields()
	n := Node{ID: node.GetId()}
	for _, f := range []struct {
		key   string
		into  *string
		limit int
	}{
		{MetaPodName, &n.PodName, 253},
		{MetaPodNamespace, &n.PodNamespace, 63},
		{MetaMeshService, &n.MeshService, 253},
		{MetaSlot, &n.Slot, 8},
		{MetaVersion, &n.Version, 253},
	} {
		value, err := stringField(fields, f.key, f.limit)
		if err != nil {
			return Node{}, err
		}
		*f.into = value
	}
	if n.PodName == "" || n.PodNamespace == "" {
		return Node{}, identity.Refuse(identity.ReasonMalformedRequest,
			"node.metadata must name the caller's pod in %s and %s", MetaPodName, MetaPodNamespace)
	}
	csr, err := stringField(fields, MetaCSR, identity.MaxCSRSize)
	if err != nil {
		return Node{}, err
	}
	if csr != "" {
		n.CSR = []byte(csr)
	}
	return n, nil
}

func stringField(fields map[string]*structpb.Value, key string, limit int) (string, error) {
	value, ok := fields[key]
	if !ok {
		return "", nil
	}
	s, isString := value.GetKind().(*structpb.Value_StringValue)
	if !isString {
		return "", identity.Refuse(identity.ReasonMalformedRequest, "node.metadata.%s must be a string", key)
	}
	if len(s.StringValue) > limit {
		return "", identity.Refuse(identity.ReasonMalformedRequest, "node.metadata.%s has %d bytes, more than %d", key, len(s.StringValue), limit)
	}
	return s.StringValue, nil
}
