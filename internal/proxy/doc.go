// Package proxy is the data path of meshlift-proxy (ARCHITECTURE.md section 6): the inbound
// listener that terminates mTLS and routes by SNI to the app on localhost, the outbound
// listeners that carry the app's calls to the endpoints of an upstream over mTLS, and the
// accept/drain controls a hot-upgrade handoff needs. The main package drives it: it parses the
// configuration, runs the control-plane client and the handoff, and calls
//
//	p, err := proxy.New(cfg, proxy.Options{Namespace: ns, Logger: log})
//	admin.Register(p.Collectors()...)
//	p.SetCertificateKey(chainPEM, key) // SDS, any time; p.HasCertificate(), p.CertificateExpiry()
//	p.SetTrustBundle(bundlePEM)        // SDS, any time
//	p.SetEndpoints(cluster, endpoints) // EDS, any time; cluster is the upstream's SNI
//	listeners, err := p.Bind()         // or the sockets received in a handoff, by name
//	p.Start(listeners)                 // names: InboundListener, OutboundListener(localPort), AppProbesListener
//	p.StopAccepting()                  // TAKEOVER received: the sockets stay open
//	p.Retire(ctx, proxy.RetireOptions{ // HTTP/1 and HTTP/2 move to the new process; TCP,
//		DrainTimeout: d, MaxDuration: budget, // upgraded and in-flight HTTP/2 stay until they end
//		Drained: sendDRAINED})         // or the budget does (cut, logged, counted)
//	p.ResumeAccepting()                // the new process died (after cancelling Retire's ctx)
//	p.Drain(ctx)                       // SIGTERM: everything ends within ctx, then exit
//	p.Close()
//
// Certificates, trust bundle and endpoints apply to new handshakes and requests; listeners and
// established connections are not touched.
//
// Inbound (one listener on every address, InboundPort): the first byte tells a TLS ClientHello
// from plaintext. TLS is terminated with the workload certificate (rotation applies to new
// handshakes) and requires a client certificate that chains to the trust bundle and carries
// exactly one SPIFFE ID of the trust domain. The SNI <port-name>.<meshservice>.<namespace> picks
// the app port (proxyconfig.Config.Route); an unknown SNI is refused. Plaintext is refused when
// mTLS is STRICT. When PERMISSIVE, plaintext that inbound capture redirected (its original
// destination, origdst.OriginalDst, is an app port X, not the listener's own port) goes to the
// app on localhost:X with the protocol of the declared port numbered X, or piped as TCP when X is
// not declared (a silent client is piped after ProtocolDetectionTimeout: the server speaks
// first); plaintext that dialed the inbound port itself goes to the first declared port (it has
// no SNI). TLS is routed by SNI either way, except under PERMISSIVE for a redirected
// connection: its ClientHello is peeked (not consumed), and unless its server name is a port of
// this MeshService the connection is piped unchanged to the app port it was addressed to, whose
// app serves TLS itself (clienthello.go). HTTP, HTTP2 and GRPC ports offer ALPN h2 and
// http/1.1 and are proxied per request, to the app over HTTP/1.1 (HTTP ports) or h2c with prior
// knowledge (HTTP2, GRPC); TCP ports are piped.
//
// Captured outbound (captured.go, Options.CaptureOutbound: 127.0.0.1:15007 and [::1]:15007): the
// app's connections that capture redirected are looked up by their original destination in the
// outbound routes (SetOutboundRoutes); one to a MeshService address is served as an upstream's
// below, to the route's cluster, and any other is piped to its original destination.
//
// Outbound (one listener per upstream, on 127.0.0.1 only): the first bytes from the app tell
// HTTP/1 and h2c from anything else. HTTP is proxied per request, each request to an endpoint
// chosen by the load-balancing policy (round-robin or least-request), with mTLS (the upstream's
// SNI as server name, the endpoint's SPIFFE ID required as the server's only URI SAN) over
// connections pooled per endpoint, with TLS session resumption: HTTP/1.1 for HTTP/1 clients (the
// cheaper protocol per request in Go), ALPN h2 for h2c clients (gRPC, streams). Anything else, or
// silence for ProtocolDetectionTimeout (the server speaks first), is piped as TCP to one
// endpoint. A failed connect or handshake ejects the endpoint for a while and the request or
// connection tries another one (MaxConnectAttempts); without endpoints, HTTP gets 503 and TCP is
// closed. Request bodies are kept while they are read (up to 64 KiB) so that a request the
// upstream did not process (GOAWAY, connection closed before it was written) goes again.
//
// HTTP/1.x connections of outbound listeners and inbound HTTP ports take a fast path
// (h1serve.go): the connection's goroutine reads each request head itself, sends the request on
// a pooled HTTP/1.1 connection to the app or the endpoint (checked with a non-blocking peek that
// the peer has not closed it), reads the response head and streams the response back, with no
// goroutine hand-off; only a body that is chunked or larger than 64 KiB is sent by a second
// goroutine while the response is read. A request on a kept-alive connection that turns out
// closed before any byte of a response goes again on a new one when it is idempotent or was not
// written, as net/http's transport does. HTTP/2 connections, and HTTP/1 clients of HTTP2 and
// GRPC ports (their app speaks h2c), are served by net/http (http.go).
//
// Drain is graceful per request: HTTP/1 responses carry "Connection: close", HTTP/1 connections
// that stay idle for DrainIdleTimeout are closed (proxies close their pooled idle connections
// sooner, after PoolIdleTimeout, so a draining proxy never closes one under another proxy's
// request), HTTP/2 connections get a GOAWAY, in-flight requests complete, TCP streams run until
// they end or the drain's context does.
//
// The proxy adds one header: X-Meshlift-Peer-Identity (PeerIdentityHeader), the client's
// SPIFFE ID, on inbound requests received over mTLS. It removes every copy of that header a
// client sent (over mTLS or plaintext, inbound and outbound), so the app can trust it: absent
// means plaintext. It removes hop-by-hop headers and keeps trailers ("TE: trailers" and response
// trailers, for gRPC), Upgrade (WebSocket) and a missing Content-Type.
//
// App probes (AppProbesListener, plain HTTP on every address, port Options.AppProbePort, 15020):
// GET proxyconfig.AppProbePath(container, kind) runs the container's original probe of that kind,
// read from the pod's annotations file (Options.AnnotationsFile) at each request, against the
// app on AppHost as the kubelet would (httpGet: 200-399 is a success, redirects are not followed;
// tcpSocket: a connect), within its timeoutSeconds (1s by default), and answers 200, or 503 with
// the reason; 404 for any other path and for a probe the pod does not have. The listener is
// handed over like the others; its connections carry one request each and are not part of a
// drain. Bind goes on without it when its port is taken (logged): the data path matters more.
//
// Metrics (Collectors), all prefixed meshlift_proxy_: requests_total{direction,target,code},
// request_errors_total{direction,target,reason}, request_duration_seconds{direction},
// connections_total{direction}, active_connections{direction},
// tls_handshake_failures_total{direction,reason}, upstream_connect_failures_total{direction,target},
// certificate_expiry_timestamp_seconds, plaintext_refused_total, unknown_sni_total,
// endpoints{cluster}. A target is an inbound port name or an upstream cluster; a TCP stream
// counts in request_errors_total when it cannot reach an endpoint.
package proxy
