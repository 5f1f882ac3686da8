package main

import (
	"net/http"
	"testing"
)

func TestCORSPreflightAnsweredLocally(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	p := startProxy(t, fake, nil)
	resp, _ := p.do(t, "OPTIONS", "/v1/chat/completions", http.Header{
		"Origin":                         {"http://localhost:3000"},
		"Access-Control-Request-Method":  {"POST"},
		"Access-Control-Request-Headers": {"authorization, content-type, x-stainless-os, x-stainless-retry-count"},
	}, nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("preflight status %d, want 204", resp.StatusCode)
	}
	for k, want := range map[string]string{
		"Access-Control-Allow-Origin":  "*",
		"Access-Control-Allow-Headers": "authorization, content-type, x-stainless-os, x-stainless-retry-count",
		"Access-Control-Max-Age":       "86400",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if got := resp.Header.Get("Access-Control-Allow-Methods"); !contains(got, "POST") {
		t.Errorf("Access-Control-Allow-Methods = %q", got)
	}
	if n := len(fake.all()); n != 0 {
		t.Errorf("a preflight reached Azure")
	}
}

func TestCORSHeadersOnAnswersAndErrors(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "https://azure.example") // must not reach the browser
		w.Write([]byte(`{}`))
	})
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_PROXY_CORS_ORIGINS": "https://chat.example.com, http://localhost:3000"})
	allowed := http.Header{"Origin": {"https://chat.example.com"}, "Api-Key": {testKey}, "Content-Type": {"application/json"}}

	resp, _ := p.do(t, "POST", "/v1/chat/completions", allowed, []byte(`{"model":"gpt-4o"}`))
	if got := resp.Header.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != "https://chat.example.com" {
		t.Errorf("proxied answer: Access-Control-Allow-Origin = %q", got)
	}
	for _, exposed := range []string{"retry-after-ms", "apim-request-id", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens", "location"} {
		if !contains(resp.Header.Get("Access-Control-Expose-Headers"), exposed) {
			t.Errorf("browsers cannot read %s: %v", exposed, resp.Header)
		}
	}
	if !contains(resp.Header.Get("Access-Control-Expose-Headers"), "retry-after-ms") || !contains(resp.Header.Get("Vary"), "Origin") {
		t.Errorf("proxied answer lacks Expose-Headers or Vary: %v", resp.Header)
	}

	resp, _ = p.do(t, "POST", "/v1/chat/completions", allowed, []byte(`{}`))
	if resp.StatusCode != 400 || resp.Header.Get("Access-Control-Allow-Origin") != "https://chat.example.com" {
		t.Errorf("proxy error %d: Access-Control-Allow-Origin = %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}

	other := http.Header{"Origin": {"https://evil.example"}, "Api-Key": {testKey}}
	resp, _ = p.do(t, "POST", "/v1/chat/completions", other, []byte(`{"model":"gpt-4o"}`))
	if got := resp.Header.Values("Access-Control-Allow-Origin"); len(got) != 0 {
		t.Errorf("an origin not in the list got Access-Control-Allow-Origin %q", got)
	}
	resp, _ = p.do(t, "OPTIONS", "/v1/chat/completions", http.Header{"Origin": {"https://evil.example"}, "Access-Control-Request-Method": {"POST"}}, nil)
	if resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.Header.Get("Access-Control-Allow-Methods") != "" {
		t.Errorf("a preflight from an origin not in the list was allowed")
	}
}
