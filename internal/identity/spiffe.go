// Package identity owns workload identity: SPIFFE IDs, the CA backends and the SDS server.
package identity

import (
	"fmt"
	"net/url"
	"strings"
)

// DefaultTrustDomain is the trust domain when the operator is not configured with another.
const DefaultTrustDomain = "cluster.local"

// SPIFFEID is the identity of the pods running as a service account.
func SPIFFEID(trustDomain, namespace, serviceAccount string) string {
	if serviceAccount == "" {
		serviceAccount = "default"
	}
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// ParseSPIFFEID parses a workload's SPIFFE ID, spiffe://<trust-domain>/<path>: a trust domain
// without user information or port, a path of non-empty segments, and no query or fragment (the
// SPIFFE ID standard, section 2). It is the one parser of SPIFFE IDs: the issuer, the proxy's
// control-plane client, its EDS decoder and its peer verification accept exactly the same IDs.
func ParseSPIFFEID(id string) (*url.URL, error) {
	bad := func(why string) error { return fmt.Errorf("%q is not a SPIFFE ID: %s", id, why) }
	if strings.ContainsAny(id, "?#") {
		return nil, bad("it has a query or a fragment")
	}
	u, err := url.Parse(id)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%q is not a SPIFFE ID: %w", id, err)
	case u.Scheme != "spiffe":
		return nil, bad("the scheme is not spiffe")
	case u.Opaque != "" || u.Host == "":
		return nil, bad("it has no trust domain")
	case u.User != nil || strings.Contains(u.Host, ":"):
		return nil, bad("the trust domain has user information or a port")
	case u.Path == "":
		return nil, bad("it has no path")
	}
	for _, segment := range strings.Split(strings.TrimPrefix(u.Path, "/"), "/") {
		if segment == "" || segment == "." || segment == ".." {
			return nil, bad("its path has an empty, . or .. segment")
		}
	}
	return u, nil
}
