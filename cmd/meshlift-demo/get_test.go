package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestGetPrintsTheAnswerAndTheCallersIdentity(t *testing.T) {
	server := httptest.NewServer(&echoServer{name: "demo-0", version: "v-test", maxBodyBytes: 1024})
	t.Cleanup(server.Close)
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"get", server.URL + "/x"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if out := stdout.String(); !strings.HasPrefix(out, "200 OK\n") || !strings.Contains(out, `"name":"demo-0"`) || strings.Contains(out, "peerIdentity") {
		t.Errorf("get printed %q", out)
	}
	rec := httptest.NewRecorder()
	direct := httptest.NewRequest(http.MethodGet, "/x", nil)
	direct.Header.Set(peerIdentityHeader, "spiffe://cluster.local/ns/shop/sa/client")
	(&echoServer{name: "demo-0", maxBodyBytes: 1024}).ServeHTTP(rec, direct)
	if !strings.Contains(rec.Body.String(), `"peerIdentity":"spiffe://cluster.local/ns/shop/sa/client"`) {
		t.Errorf("the answer does not name the caller: %s", rec.Body.String())
	}
	if code := run(context.Background(), []string{"get", "http://127.0.0.1:1/"}, &stdout, &stderr); code != exitFailure {
		t.Errorf("get of a closed port: exit %d, want %d", code, exitFailure)
	}
}
