package controllers_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"

	"github.com/meshlift/meshlift/controllers"
	"github.com/meshlift/meshlift/internal/proxyadmin"
)

// envtest runs no pods, so no proxy answers at a pod's IP. The suite's UpgradePlan controller
// asks these instead: the real proxyadmin handler of each proxy a test set up, served over real
// HTTP on the loopback, reached by the production HTTPRetireProber through a dialer that sends
// the pod's IP and admin port there. An address no test set up answers as an idle proxy (one that
// kept no connection), which is what every other test's pods are.
var proxies = &fakeProxies{states: map[string]*proxyadmin.State{}}

type fakeProxies struct {
	mu     sync.Mutex
	states map[string]*proxyadmin.State // by "podIP:adminPort"
	server *httptest.Server
}

// set makes the proxy at addr ("10.1.0.7:15000") answer with state.
func (p *fakeProxies) set(addr string, state *proxyadmin.State) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.states[addr] = state
}

func (p *fakeProxies) prober() controllers.RetireProber {
	idle := proxyadmin.NewState("test", 1)
	idle.SetRole(proxyadmin.RoleIdle)
	p.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The dialer below put the address the operator asked for into the Host header.
		p.mu.Lock()
		state := p.states[r.Host]
		p.mu.Unlock()
		if state == nil {
			state = idle
		}
		state.Handler().ServeHTTP(w, r)
	}))
	dial := &net.Dialer{}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dial.DialContext(ctx, network, p.server.Listener.Addr().String())
		},
		DisableKeepAlives: true,
	}}
	return controllers.HTTPRetireProber{Client: client}
}
