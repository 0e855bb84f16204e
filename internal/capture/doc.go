// Package capture owns traffic capture in a meshed pod's network namespace (docs/traffic.md):
// which connections are redirected to the proxy, decided from the pod's annotations
// (ParseAnnotations, Config), the nftables ruleset that does it as a pure model (NewRuleset,
// Ruleset.String), and the applier that installs, verifies and removes that ruleset in a
// namespace over netlink (Apply, Check, Remove). origdst.OriginalDst (package internal/capture/origdst) gives the proxy the destination a
// captured connection was addressed to.
//
// The CNI plugin (package cni) calls these functions, and so will the planned init container:
// both modes install byte-for-byte the same rules.
package capture
