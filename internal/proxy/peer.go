package proxy

import (
	"context"
	"net"
	"net/http"
)

// PeerIdentityHeader carries, on an inbound HTTP request the proxy sends to the app, the SPIFFE
// ID of the mTLS client that sent it. The proxy removes any copy a client sent, over mTLS or
// plaintext and in both directions, so that the app can trust the header: present means the
// proxy verified that identity, absent means the request came over plaintext (PERMISSIVE).
const PeerIdentityHeader = "X-Meshlift-Peer-Identity"

type peerIdentityKey struct{}

// withPeerIdentity is the context of the requests of an inbound connection (an http.Server's
// ConnContext, the HTTP/2 server's connection context): it carries the connection's mTLS peer.
func withPeerIdentity(ctx context.Context, c net.Conn) context.Context {
	if tc := trackedOf(c); tc != nil && tc.peer != "" {
		return context.WithValue(ctx, peerIdentityKey{}, tc.peer)
	}
	return ctx
}

// setPeerIdentity replaces what a client sent in PeerIdentityHeader with the identity the proxy
// verified: the peer for an inbound request over mTLS, nothing otherwise.
func setPeerIdentity(h http.Header, ctx context.Context, dir direction) {
	delete(h, PeerIdentityHeader)
	if dir != inbound {
		return
	}
	if peer, _ := ctx.Value(peerIdentityKey{}).(string); peer != "" {
		h[PeerIdentityHeader] = []string{peer}
	}
}
