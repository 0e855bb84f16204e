// Package identity owns workload identity: SPIFFE IDs, the CA backends and the SDS server.
package identity

// DefaultTrustDomain is the trust domain when the operator is not configured with another.
const DefaultTrustDomain = "cluster.local"

// SPIFFEID is the identity of the pods running as a service account.
func SPIFFEID(trustDomain, namespace, serviceAccount string) string {
	if serviceAccount == "" {
		serviceAccount = "default"
	}
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}
