package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestKeyNeverLogged drives every kind of outcome with the key in every place
// a client may put it, and checks that neither the key nor a body reaches the log.
func TestKeyNeverLogged(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			fake := newFakeAzure(t, fakeTLS, func(w http.ResponseWriter, r *http.Request) {
				if strings.Contains(r.URL.Path, "fail") {
					w.WriteHeader(500)
				}
				w.Write([]byte(`{"ok":true}`))
			})
			p := startProxy(t, fake, map[string]string{
				"AZURE_OPENAI_PROXY_LOG_FORMAT": format,
				"AZURE_OPENAI_PROXY_MAX_BODY":   "200",
			})
			const bodySecret = "BODY-CONTENT-must-not-be-logged"
			bearer := http.Header{"Authorization": {"Bearer " + testKey}, "Cookie": {"k=" + testKey}}
			apiKey := http.Header{"Api-Key": {testKey}}
			p.do(t, "POST", "/v1/chat/completions", bearer, []byte(`{"model":"gpt-4o","messages":"`+bodySecret+`"}`))
			p.do(t, "POST", "/v1/chat/completions", apiKey, []byte(`{"model":"../`+bodySecret+`"}`))
			p.do(t, "POST", "/v1/chat/completions", apiKey, []byte(`{"model":`+bodySecret))
			p.do(t, "POST", "/v1/embeddings", apiKey, []byte(`{"model":"gpt-4o","input":"`+strings.Repeat(bodySecret, 10)+`"}`))
			p.do(t, "GET", "/v1/files/fail?api-key="+testKey, apiKey, nil)
			p.do(t, "POST", "/v1/responses", bearer, []byte(`{"model":"x","input":"`+bodySecret+`"}`))
			p.do(t, "GET", "/v1/nowhere", bearer, nil)
			p.do(t, "OPTIONS", "/v1/chat/completions", bearer, nil)

			down := startProxy(t, nil, map[string]string{"AZURE_OPENAI_ENDPOINT": "https://" + closedAddr(t), "AZURE_OPENAI_PROXY_LOG_FORMAT": format})
			down.do(t, "POST", "/v1/chat/completions", bearer, []byte(`{"model":"gpt-4o"}`))

			p.shutdown(t)
			down.shutdown(t)
			for _, logs := range []string{p.logs.String(), down.logs.String()} {
				if strings.Contains(logs, testKey) || strings.Contains(logs, "SECRET") {
					t.Errorf("the key reached the log:\n%s", logs)
				}
				if strings.Contains(logs, bodySecret) {
					t.Errorf("a request body reached the log:\n%s", logs)
				}
			}
			if format == "json" {
				for _, line := range strings.Split(strings.TrimSpace(p.logs.String()), "\n") {
					if !json.Valid([]byte(line)) {
						t.Errorf("not a JSON log line: %s", line)
					}
				}
			}
			if want := "gpt-4o"; !strings.Contains(p.logs.String(), want) {
				t.Errorf("access log lacks the model")
			}
		})
	}
}

func TestAccessLogLine(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=prod4o", "AZURE_OPENAI_PROXY_LOG_FORMAT": "json"})
	p.postJSON(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	p.shutdown(t) // the line is written after the client has its answer
	var line map[string]any
	for _, l := range strings.Split(p.logs.String(), "\n") {
		if strings.Contains(l, `"msg":"request"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := map[string]any{"method": "POST", "path": "/v1/chat/completions", "model": "gpt-4o",
		"deployment": "prod4o", "status": float64(200), "apim_request_id": "apim-123",
		"bytes": float64(len(`{"id":"chatcmpl-1","object":"chat.completion"}`))}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("log %s = %v, want %v (line %v)", k, line[k], v, line)
		}
	}
	if ms, ok := line["duration_ms"].(float64); !ok || ms <= 0 || ms > 10000 {
		t.Errorf("log lacks duration_ms in milliseconds: %v", line)
	}
	start := p.logs.String()
	for _, want := range []string{`"msg":"azure-openai-proxy started"`, `"models":"gpt-4o"`, `"api_version":"2024-10-21"`, `"preview_api_version":"2025-04-01-preview"`} {
		if !strings.Contains(start, want) {
			t.Errorf("start-up line lacks %s", want)
		}
	}
}

func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestCancelledStreamIsRecorded: a client that stops a stream ("stop
// generating") makes ReverseProxy abort the handler with a panic; its log line
// and metrics must still say where it went, how many attempts it took and the
// tokens seen, and an unconfigured model Azure answered counts as itself.
func TestCancelledStreamIsRecorded(t *testing.T) {
	usageEvent := `data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":{"prompt_tokens":12,"completion_tokens":1}}` + "\n\n"
	stream := newSteppedStream(usageEvent, "data: 2\n\n")
	p := startProxy(t, newFakeAzure(t, fakeTLS, stream.serve), map[string]string{"AZURE_OPENAI_PROXY_LOG_FORMAT": "json"})
	ctx, cancel := context.WithCancel(t.Context())
	_, r := p.openStream(t, ctx)
	if ev := readEvent(t, r); ev != usageEvent {
		t.Fatalf("first event %q", ev)
	}
	cancel()
	m := waitForRequests(t, p.URL, "", 1)
	if got := m.get("azure_openai_proxy_requests_total", "route", "chat/completions", "model", "gpt-4o",
		"deployment", "gpt-4o", "backend", "default", "code", "499"); got != 1 {
		t.Errorf("requests_total for the cancelled stream = %v, want 1 with model, deployment and backend: %v", got, m.distinct("azure_openai_proxy_requests_total", "model"))
	}
	if got := m.get("azure_openai_proxy_tokens_total", "model", "gpt-4o", "deployment", "gpt-4o", "kind", "prompt"); got != 12 {
		t.Errorf("prompt tokens = %v, want 12", got)
	}
	p.shutdown(t)
	var line map[string]any
	for _, l := range strings.Split(p.logs.String(), "\n") {
		if strings.Contains(l, `"msg":"request"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := map[string]any{"status": float64(499), "aborted": true, "model": "gpt-4o", "backend": "default",
		"deployment": "gpt-4o", "attempts": float64(1), "prompt_tokens": float64(12), "completion_tokens": float64(1)}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("log %s = %v, want %v (line %v)", k, line[k], v, line)
		}
	}
}

// TestLongPathsCut: a client's path is cut to 256 bytes in the log and in
// error bodies.
func TestLongPathsCut(t *testing.T) {
	p := startProxy(t, newFakeAzure(t, fakeTLS, nil), nil)
	long := "/" + strings.Repeat("a", 5000) // not a route: 404, and the path is in the message
	resp, body := p.do(t, "GET", long, http.Header{"Authorization": {"Bearer " + testKey}}, nil)
	if resp.StatusCode != 404 || len(body) > 1000 {
		t.Errorf("%d, %d-byte error body", resp.StatusCode, len(body))
	}
	p.shutdown(t)
	for _, line := range strings.Split(p.logs.String(), "\n") {
		if len(line) > 1000 {
			t.Errorf("a %d-byte log line", len(line))
		}
	}
}
