// Package xdsclient is meshlift-proxy's control-plane client: one gRPC stream (Envoy v3 ADS,
// state of the world) that carries SDS (the proxy's certificate and the trust bundle), EDS
// (the endpoints of its upstreams) and, if asked, the outbound routes (one LDS Listener), as
// docs/control-plane.md specifies. It ACKs what it applied,
// NACKs what it could not, reconnects with backoff, and never forgets the last good state: while
// the operator is unreachable the proxy keeps serving with what it has.
package xdsclient

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlift/meshlift/internal/identity"
	"github.com/meshlift/meshlift/internal/outbound"
)

// Type URLs of the resources on the stream.
const (
	TypeSecret     = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
	TypeAssignment = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	TypeListener   = outbound.TypeListener
)

// Resource names of SDS.
const (
	SecretCertificate = "default"
	SecretTrustBundle = "ROOTCA"
)

// Keys of the node metadata.
const (
	MetaPodName     = "POD_NAME"
	MetaNamespace   = "POD_NAMESPACE"
	MetaCSR         = "CSR"
	MetaMeshService = "MESHSERVICE"
	MetaSlot        = "SLOT"
	MetaVersion     = "VERSION"
)

// IdentityMetadataKey is the filter-metadata namespace of an endpoint's identity.
const IdentityMetadataKey = "meshlift.io"

// Limits on what the server may send: a bigger message is refused (NACKed).
const (
	MaxCertificateChain = 64 << 10
	MaxTrustBundle      = 1 << 20
	MaxEndpoints        = 10000
)

// Certificate is the proxy's leaf from SDS.
type Certificate struct {
	// ChainPEM is the leaf and its intermediates.
	ChainPEM []byte
	// Key is set only when the server generated the key (the client sent no CSR).
	Key crypto.Signer
	// Leaf is the parsed first certificate of the chain.
	Leaf *x509.Certificate
}

// Endpoint is one address of an upstream and the identity its certificate must carry.
type Endpoint struct {
	Address  string // ip:port
	Identity string // SPIFFE ID
}

// Assignment is the endpoints of one cluster (<port-name>.<meshservice>.<namespace>).
type Assignment struct {
	Cluster   string
	Endpoints []Endpoint
}

// ErrInvalid wraps every reason a resource is refused.
var ErrInvalid = errors.New("invalid resource")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// DecodeSecret reads an SDS resource: either a certificate (tls_certificate) or a trust bundle
// (validation_context). Exactly one of the results is set.
func DecodeSecret(res *anypb.Any) (name string, cert *Certificate, bundle []byte, err error) {
	if res.GetTypeUrl() != TypeSecret {
		return "", nil, nil, invalid("resource of type %q on the Secret stream", res.GetTypeUrl())
	}
	var secret tlsv3.Secret
	if err := proto.Unmarshal(res.GetValue(), &secret); err != nil {
		return "", nil, nil, invalid("Secret does not decode: %v", err)
	}
	name = secret.GetName()
	switch {
	case secret.GetTlsCertificate() != nil:
		cert, err := decodeCertificate(secret.GetTlsCertificate())
		return name, cert, nil, err
	case secret.GetValidationContext() != nil:
		bundle := secret.GetValidationContext().GetTrustedCa().GetInlineBytes()
		if len(bundle) == 0 || len(bundle) > MaxTrustBundle {
			return name, nil, nil, invalid("trust bundle %q must be 1 to %d bytes of inline PEM", name, MaxTrustBundle)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(bundle) {
			return name, nil, nil, invalid("trust bundle %q holds no PEM certificate", name)
		}
		return name, nil, bundle, nil
	default:
		return name, nil, nil, invalid("Secret %q has neither a certificate nor a validation context", name)
	}
}

func decodeCertificate(tc *tlsv3.TlsCertificate) (*Certificate, error) {
	chain := tc.GetCertificateChain().GetInlineBytes()
	if len(chain) == 0 || len(chain) > MaxCertificateChain {
		return nil, invalid("certificate chain must be 1 to %d bytes of inline PEM", MaxCertificateChain)
	}
	block, _ := pem.Decode(chain)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, invalid("certificate chain does not start with a PEM CERTIFICATE")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, invalid("leaf certificate does not parse: %v", err)
	}
	c := &Certificate{ChainPEM: chain, Leaf: leaf}
	if keyPEM := tc.GetPrivateKey().GetInlineBytes(); len(keyPEM) > 0 {
		key, err := identity.ParsePrivateKey(keyPEM)
		if err != nil {
			return nil, invalid("private key does not parse: %v", err)
		}
		c.Key = key
	}
	return c, nil
}

// DecodeAssignment reads an EDS resource.
func DecodeAssignment(res *anypb.Any) (Assignment, error) {
	if res.GetTypeUrl() != TypeAssignment {
		return Assignment{}, invalid("resource of type %q on the ClusterLoadAssignment stream", res.GetTypeUrl())
	}
	var cla endpointv3.ClusterLoadAssignment
	if err := proto.Unmarshal(res.GetValue(), &cla); err != nil {
		return Assignment{}, invalid("ClusterLoadAssignment does not decode: %v", err)
	}
	a := Assignment{Cluster: cla.GetClusterName()}
	if a.Cluster == "" {
		return Assignment{}, invalid("ClusterLoadAssignment without a cluster name")
	}
	for _, locality := range cla.GetEndpoints() {
		for _, lb := range locality.GetLbEndpoints() {
			if s := lb.GetHealthStatus(); s != corev3.HealthStatus_HEALTHY && s != corev3.HealthStatus_UNKNOWN {
				continue
			}
			sock := lb.GetEndpoint().GetAddress().GetSocketAddress()
			ip := net.ParseIP(sock.GetAddress())
			port := sock.GetPortValue()
			if ip == nil || port == 0 || port > 65535 {
				return Assignment{}, invalid("cluster %s: endpoint %q:%d is not an IP address and port", a.Cluster, sock.GetAddress(), port)
			}
			id := lb.GetMetadata().GetFilterMetadata()[IdentityMetadataKey].GetFields()["identity"].GetStringValue()
			if _, err := identity.ParseSPIFFEID(id); err != nil {
				return Assignment{}, invalid("cluster %s: endpoint %s has no SPIFFE identity", a.Cluster, sock.GetAddress())
			}
			if len(a.Endpoints) == MaxEndpoints {
				return Assignment{}, invalid("cluster %s has more than %d endpoints", a.Cluster, MaxEndpoints)
			}
			a.Endpoints = append(a.Endpoints, Endpoint{Address: net.JoinHostPort(ip.String(), strconv.Itoa(int(port))), Identity: id})
		}
	}
	return a, nil
}

// DecodeOutboundRoutes reads the outbound routes listener (outbound.FromListener says what it
// refuses).
func DecodeOutboundRoutes(res *anypb.Any) (*outbound.Table, error) {
	if res.GetTypeUrl() != TypeListener {
		return nil, invalid("resource of type %q on the Listener stream", res.GetTypeUrl())
	}
	var listener listenerv3.Listener
	if err := proto.Unmarshal(res.GetValue(), &listener); err != nil {
		return nil, invalid("Listener does not decode: %v", err)
	}
	table, err := outbound.FromListener(&listener)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return table, nil
}
