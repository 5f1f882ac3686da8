package main

import (
	"net/http"
	"strings"
	"testing"
)

// TestWebPagesKeptOut: a proxy that holds a key and asks clients for none
// must not be usable by the web pages its user opens: not by a page posting
// to localhost (Origin), not through DNS rebinding (Host), not with a body a
// page can send without a CORS preflight (415).
func TestWebPagesKeptOut(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	open := startProxy(t, fake, map[string]string{"AZURE_OPENAI_API_KEY": "server-key", "AZURE_OPENAI_PROXY_ALLOWED_HOSTS": "proxy.internal"})
	send := func(p *testProxy, header http.Header, host string) int {
		req, _ := http.NewRequest("POST", p.URL+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o"}`))
		for k, v := range header {
			req.Header[k] = v
		}
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	json := http.Header{"Content-Type": {"application/json"}}
	for _, tc := range []struct {
		name   string
		header http.Header
		host   string
		want   int
	}{
		{"a program on the host", json, "", 200},
		{"by name localhost", json, "localhost:8080", 200},
		{"a listed name", json, "proxy.internal:8080", 200},
		{"a web page's origin", http.Header{"Content-Type": {"application/json"}, "Origin": {"https://evil.example"}}, "", 403},
		{"a page posting text/plain", http.Header{"Content-Type": {"text/plain;charset=UTF-8"}}, "", 415},
		{"no content type", nil, "", 415},
		{"DNS rebinding", json, "evil.example:8080", 403},
	} {
		if got := send(open, tc.header, tc.host); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	if n := len(fake.all()); n != 3 {
		t.Errorf("Azure saw %d requests, want the 3 allowed", n)
	}
	resp, _ := open.do(t, "OPTIONS", "/v1/chat/completions", http.Header{"Origin": {"https://evil.example"}, "Access-Control-Request-Method": {"POST"}}, nil)
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("an open proxy's preflight allows %q by default", got)
	}

	// The operator names the page that may call it; client keys make the proxy closed.
	named := startProxy(t, fake, map[string]string{"AZURE_OPENAI_API_KEY": "server-key", "AZURE_OPENAI_PROXY_CORS_ORIGINS": "https://chat.example.com"})
	if got := send(named, http.Header{"Content-Type": {"application/json"}, "Origin": {"https://chat.example.com"}}, ""); got != 200 {
		t.Errorf("the named origin: %d", got)
	}
	if got := send(named, http.Header{"Content-Type": {"application/json"}, "Origin": {"https://evil.example"}}, ""); got != 403 {
		t.Errorf("another origin: %d", got)
	}
	closed := startProxy(t, fake, map[string]string{"AZURE_OPENAI_API_KEY": "server-key", "AZURE_OPENAI_PROXY_KEYS": "k"})
	if got := send(closed, http.Header{"Authorization": {"Bearer k"}, "Origin": {"https://any.example"}}, "gateway.example:80"); got != 200 {
		t.Errorf("with client keys, any origin and host: %d", got)
	}
}
