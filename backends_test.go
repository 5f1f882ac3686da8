package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// clockedProxy is the handler with an injected clock, in front of fakes.
type clockedProxy struct {
	URL     string
	clock   *fakeClock
	logs    *syncBuffer
	cfg     Config
	state   *serverState
	metrics *metrics
}

func writeConfig(t *testing.T, json string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(json), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startClocked serves config (with {A}, {B}, {C} replaced by the fakes' URLs)
// through newHandler, with a clock the test moves.
func startClocked(t *testing.T, config string, env map[string]string, fakes ...*fakeAzure) *clockedProxy {
	t.Helper()
	for i, f := range fakes {
		config = strings.ReplaceAll(config, fmt.Sprintf("{%c}", 'A'+i), f.URL)
	}
	vars := map[string]string{"AZURE_OPENAI_PROXY_CA_FILE": fakes[0].caFile(t), // httptest's TLS servers share one certificate
		"AZURE_OPENAI_API_VER": datedAPIVersion}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := loadConfig(options{listen: ":0", config: writeConfig(t, config)}, mapEnv(vars))
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
	cfg.Now = clock.Now
	logs := &syncBuffer{}
	state := &serverState{}
	state.ready.Store(true)
	state.routes.Store(cfg.Routes)
	m := newMetrics()
	srv := httptest.NewServer(newHandler(cfg, newLogger("text", logs), state, m))
	t.Cleanup(srv.Close)
	return &clockedProxy{URL: srv.URL, clock: clock, logs: logs, cfg: cfg, state: state, metrics: m}
}

func (p *clockedProxy) post(t *testing.T, path, body string) (*http.Response, []byte) {
	t.Helper()
	return (&testProxy{URL: p.URL}).postJSON(t, path, body)
}

// status answers every request with code (and Azure's headers and body).
func status(code int, header map[string]string, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

var ok200 = status(200, nil, `{"id":"chatcmpl-1","object":"chat.completion"}`)

const twoBackends = `{
  "backends": {
    "a": {"endpoint": "{A}"},
    "b": {"endpoint": "{B}"}
  },
  "default_backend": "a",
  "models": {"gpt-4o": [{"backend": "a", "deployment": "dep-a"}, {"backend": "b", "deployment": "dep-b"%s}]}
}`

func TestWeightsHonoured(t *testing.T) {
	a, b := newFakeAzure(t, fakeTLS, ok200), newFakeAzure(t, fakeTLS, ok200)
	p := startClocked(t, fmt.Sprintf(twoBackends, `, "weight": 2`), nil, a, b)
	var order strings.Builder
	for range 300 {
		resp, body := p.post(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		if order.Len() < 6 {
			order.WriteByte("ab"[len(b.all())-(order.Len()-strings.Count(order.String(), "a"))])
		}
	}
	if na, nb := len(a.all()), len(b.all()); na != 100 || nb != 200 {
		t.Errorf("a got %d, b got %d; want 100 and 200 for weights 1 and 2", na, nb)
	}
	if order.String() != "babbab" {
		t.Errorf("first picks %q, want the smooth interleaving babbab", order.String())
	}
	for _, r := range a.all() {
		if r.Path != "/openai/deployments/dep-a/chat/completions" {
			t.Fatalf("a got %s", r.Path)
		}
	}
}

func TestThrottledBackendRestsUntilRetryAfter(t *testing.T) {
	throttled := status(429, map[string]string{"Retry-After": "3", "retry-after-ms": "2500"}, `{"error":{"code":"429","message":"Rate limit"}}`)
	a, b := newFakeAzure(t, fakeTLS, throttled), newFakeAzure(t, fakeTLS, ok200)
	p := startClocked(t, fmt.Sprintf(twoBackends, ""), nil, a, b)
	// Equal weights: the first pick is a, which answers 429; b serves.
	resp, body := p.post(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	if resp.StatusCode != 200 || len(a.all()) != 1 || len(b.all()) != 1 {
		t.Fatalf("got %d %s; a saw %d, b saw %d", resp.StatusCode, body, len(a.all()), len(b.all()))
	}
	// a rests for retry-after-ms (2.5 s), which wins over Retry-After.
	for range 4 {
		p.post(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	}
	p.clock.Advance(2400 * time.Millisecond)
	p.post(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	if len(a.all()) != 1 || len(b.all()) != 6 {
		t.Fatalf("while resting: a saw %d (want 1), b saw %d (want 6)", len(a.all()), len(b.all()))
	}
	p.clock.Advance(200 * time.Millisecond)
	for range 2 {
		p.post(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	}
	if len(a.all()) != 2 {
		t.Errorf("after its Retry-After, a saw %d requests, want it tried again", len(a.all()))
	}
}

func TestAllRestingAnswers429AtOnce(t *testing.T) {
	azure429 := `{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation have exceeded call rate limit."}}`
	a := newFakeAzure(t, fakeTLS, status(429, map[string]string{"Retry-After": "7"}, azure429))
	b := newFakeAzure(t, fakeTLS, status(429, map[string]string{"Retry-After": "4", "x-ms-region": "Sweden Central"}, azure429))
	p := startClocked(t, fmt.Sprintf(twoBackends, ""), nil, a, b)
	// Both throttle: the client gets Azure's last answer, unchanged.
	resp, body := p.post(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	if resp.StatusCode != 429 || string(body) != azure429 || resp.Header.Get("Retry-After") != "4" || resp.Header.Get("X-Ms-Region") != "Sweden Central" {
		t.Fatalf("got %d %s %v, want b's 429 as Azure sent it", resp.StatusCode, body, resp.Header)
	}
	// Now both rest: the proxy answers at once, with the wait until b is free.
	p.clock.Advance(1500 * time.Millisecond)
	resp, body = p.post(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "3" || resp.Header.Get("Retry-After-Ms") != "2500" {
		t.Fatalf("got %d Retry-After %q retry-after-ms %q, want 429 with 3 s / 2500 ms", resp.StatusCode,
			resp.Header.Get("Retry-After"), resp.Header.Get("Retry-After-Ms"))
	}
	_, errType, _, code := openAIError(t, body)
	if errType != "requests" || code == nil || *code != "rate_limit_exceeded" {
		t.Errorf("type %q code %v", errType, code)
	}
	if len(a.all())+len(b.all()) != 2 {
		t.Errorf("a request reached Azure while every deployment rested")
	}
	p.clock.Advance(2500 * time.Millisecond)
	p.post(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	if len(b.all()) != 2 {
		t.Errorf("b was not tried once its rest was over")
	}
}

func TestFailoverOn5xxAndConnectionRefused(t *testing.T) {
	down := closedAddr(t)
	a := newFakeAzure(t, fakeTLS, status(503, nil, `{"error":{"code":"ServiceUnavailable","message":"busy"}}`))
	b := newFakeAzure(t, fakeTLS, ok200)
	config := strings.ReplaceAll(`{
  "backends": {"down": {"endpoint": "https://DOWN"}, "a": {"endpoint": "{A}"}, "b": {"endpoint": "{B}"}},
  "default_backend": "a",
  "models": {"gpt-4o": [{"backend": "down", "deployment": "d", "weight": 3}, {"backend": "a", "deployment": "d", "weight": 2}, {"backend": "b", "deployment": "d"}]}
}`, "DOWN", down)
	p := startClocked(t, config, nil, a, b)
	resp, body := p.post(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	if resp.StatusCode != 200 || len(a.all()) != 1 || len(b.all()) != 1 {
		t.Fatalf("got %d %s; a saw %d, b saw %d", resp.StatusCode, body, len(a.all()), len(b.all()))
	}
	waitForLog(t, &testProxy{logs: p.logs}, "attempts=3")
	if !strings.Contains(p.logs.String(), "backend=b deployment=d attempts=3") {
		t.Errorf("the access log should name the backend that answered and the attempts:\n%s", p.logs)
	}
}

func TestNoFailoverOnClientErrors(t *testing.T) {
	for _, code := range []int{400, 401, 403, 404, 413} {
		a := newFakeAzure(t, fakeTLS, status(code, nil, `{"error":{"code":"BadRequest","message":"no"}}`))
		b := newFakeAzure(t, fakeTLS, ok200)
		p := startClocked(t, fmt.Sprintf(twoBackends, ""), nil, a, b)
		resp, _ := p.post(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
		if resp.StatusCode != code || len(b.all()) != 0 {
			t.Errorf("a answered %d: client got %d and b saw %d requests; want a's answer and no failover", code, resp.StatusCode, len(b.all()))
		}
	}
}

func TestDeploymentNotFoundFailsOverAndIsLoggedLoudly(t *testing.T) {
	a := newFakeAzure(t, fakeTLS, status(404, nil, `{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}`))
	b := newFakeAzure(t, fakeTLS, ok200)
	p := startClocked(t, fmt.Sprintf(twoBackends, ""), nil, a, b)
	resp, _ := p.post(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	if resp.StatusCode != 200 || len(b.all()) != 1 {
		t.Fatalf("got %d; b saw %d", resp.StatusCode, len(b.all()))
	}
	if logs := p.logs.String(); !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "deployment=dep-a") {
		t.Errorf("DeploymentNotFound should be logged as an error naming the deployment:\n%s", logs)
	}
}

func TestLastAzureAnswerReturnedWhenAllFail(t *testing.T) {
	a := newFakeAzure(t, fakeTLS, status(503, nil, `{"error":{"message":"a is busy"}}`))
	b := newFakeAzure(t, fakeTLS, status(502, map[string]string{"apim-request-id": "b-1"}, `{"error":{"message":"b is down"}}`))
	p := startClocked(t, fmt.Sprintf(twoBackends, ""), nil, a, b)
	resp, body := p.post(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	if resp.StatusCode != 502 || string(body) != `{"error":{"message":"b is down"}}` || resp.Header.Get("Apim-Request-Id") != "b-1" {
		t.Errorf("got %d %s, want b's own 502", resp.StatusCode, body)
	}
}

// TestAzureAnswerPreferredToALaterConnectError: a throttled first candidate
// and an unreachable second: the client gets Azure's 429, not a proxy 502.
func TestAzureAnswerPreferredToALaterConnectError(t *testing.T) {
	a := newFakeAzure(t, fakeTLS, status(429, map[string]string{"Retry-After": "9"}, `{"error":{"code":"429","message":"slow down"}}`))
	config := strings.ReplaceAll(`{
  "backends": {"a": {"endpoint": "{A}"}, "down": {"endpoint": "https://DOWN"}},
  "default_backend": "a",
  "models": {"gpt-4o": [{"backend": "a", "deployment": "d", "weight": 2}, {"backend": "down", "deployment": "d"}]}
}`, "DOWN", closedAddr(t))
	p := startClocked(t, config, nil, a)
	resp, body := p.post(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "9" || !strings.Contains(string(body), "slow down") {
		t.Errorf("got %d %s, want a's 429", resp.StatusCode, body)
	}
}

func TestStreamServedBySecondBackend(t *testing.T) {
	stream := newSteppedStream("data: 1\n\n", "data: 2\n\n", "data: [DONE]\n\n")
	a := newFakeAzure(t, fakeTLS, status(500, nil, `{"error":{"message":"oops"}}`))
	b := newFakeAzure(t, fakeTLS, stream.serve)
	p := startClocked(t, fmt.Sprintf(twoBackends, ""), nil, a, b)
	_, r := openStreamAt(t, context.Background(), p.URL)
	for _, want := range []string{"data: 1\n\n", "data: 2\n\n", "data: [DONE]\n\n"} {
		if got := readEvent(t, r); got != want {
			t.Fatalf("event %q, want %q", got, want)
		}
		stream.ack <- struct{}{}
	}
}

func TestReplayedBodyIsByteEqual(t *testing.T) {
	a := newFakeAzure(t, fakeTLS, status(503, nil, `{}`))
	b := newFakeAzure(t, fakeTLS, ok200)
	p := startClocked(t, fmt.Sprintf(twoBackends, ""), nil, a, b)
	body := `{"model":"gpt-4o", "messages":[{"role":"user","content":"` + strings.Repeat(`héllo \"x\" `, 5000) + `"}]}`
	if resp, got := p.post(t, "/v1/chat/completions", body); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, got)
	}
	if string(a.only(t).Body) != body || string(b.only(t).Body) != body {
		t.Error("the body replayed to the second backend differs from the one sent")
	}
	// On a route where Azure reads the deployment from the body, each
	// attempt carries its own deployment, and nothing else changes.
	a, b = newFakeAzure(t, fakeTLS, status(503, nil, `{}`)), newFakeAzure(t, fakeTLS, ok200)
	p = startClocked(t, fmt.Sprintf(twoBackends, ""), nil, a, b)
	p.post(t, "/v1/responses", `{"input":"hi", "model" : "gpt-4o" ,"store":false}`)
	if got := string(a.only(t).Body); got != `{"input":"hi", "model" : "dep-a" ,"store":false}` {
		t.Errorf("a got %s", got)
	}
	if got := b.only(t); string(got.Body) != `{"input":"hi", "model" : "dep-b" ,"store":false}` || got.Path != "/openai/responses" {
		t.Errorf("b got %s %s", got.Path, got.Body)
	}
}

func TestBackendKeysAndDefaultBackend(t *testing.T) {
	a, b, c := newFakeAzure(t, fakeTLS, ok200), newFakeAzure(t, fakeTLS, ok200), newFakeAzure(t, fakeTLS, ok200)
	keyFile := filepath.Join(t.TempDir(), "key")
	os.WriteFile(keyFile, []byte("key-from-file\n"), 0o600)
	config := `{
  "backends": {
    "a": {"endpoint": "{A}", "api_key_env": "A_KEY", "api_version": "2025-01-01-preview"},
    "b": {"endpoint": "{B}", "api_key_file": "` + keyFile + `"},
    "c": {"endpoint": "{C}"}
  },
  "default_backend": "c",
  "models": {"only-a": [{"backend": "a", "deployment": "x"}], "only-b": [{"backend": "b", "deployment": "y"}]}
}`
	p := startClocked(t, config, map[string]string{"A_KEY": "key-from-env"}, a, b, c)
	for _, model := range []string{"only-a", "only-b", "unlisted"} {
		p.post(t, "/v1/chat/completions", `{"model":"`+model+`"}`)
	}
	p.post(t, "/v1/files?limit=1", `{}`)
	if got := a.only(t); got.Header.Get("Api-Key") != "key-from-env" || got.EscapedURI != "/openai/deployments/x/chat/completions?api-version=2025-01-01-preview" {
		t.Errorf("a: key %q, URI %s", got.Header.Get("Api-Key"), got.EscapedURI)
	}
	if got := b.only(t); got.Header.Get("Api-Key") != "key-from-file" {
		t.Errorf("b: key %q, want the file's", got.Header.Get("Api-Key"))
	}
	cs := c.all()
	if len(cs) != 2 || cs[0].Path != "/openai/deployments/unlisted/chat/completions" || cs[1].EscapedURI != "/openai/files?limit=1&api-version=2024-10-21" {
		t.Fatalf("the default backend got %+v", cs)
	}
	if cs[0].Header.Get("Api-Key") != testKey {
		t.Errorf("a backend without a key of its own gets the client's")
	}
	// Without a client key: fine for a model whose backends have keys; 401 where the client's would be needed.
	noKey := func(model string) int {
		req, _ := http.NewRequest("POST", p.URL+"/v1/chat/completions", strings.NewReader(`{"model":"`+model+`"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := noKey("only-a"); s != 200 {
		t.Errorf("no client key, backend with its own: %d, want 200", s)
	}
	if s := noKey("unlisted"); s != 401 {
		t.Errorf("no client key, backend without its own: %d, want 401", s)
	}
	resp, body := (&testProxy{URL: p.URL}).do(t, "GET", "/v1/models", http.Header{"Api-Key": {"k"}}, nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"only-a"`) || !strings.Contains(string(body), `"only-b"`) {
		t.Errorf("/v1/models: %s", body)
	}
}

func TestConfigFileErrorsNameTheJSONPath(t *testing.T) {
	cases := []struct{ config, want string }{
		{`{"backends": {"a": {"endpoint": "https://a", "endpont": "x"}}}`, "backends.a.endpont: unknown field"},
		{"{\n  \"backends\": {\n    \"a\": {\"endpoint\": \"https://a\",}\n  }\n}", "line 3, column 35"},
		{`{"backends": {"a": {"endpoint": "a.openai.azure.com"}}}`, "backends.a.endpoint:"},
		{`{"backends": {"a": {}}}`, "backends.a.endpoint: required"},
		{`{"backends": {"a": {"endpoint": "https://a", "api_key_env": "NOPE"}}}`, "backends.a.api_key_env: the environment variable NOPE is not set"},
		{`{"backends": {"a": {"endpoint": "https://a", "api_key_file": "/nonexistent"}}}`, "backends.a.api_key_file: cannot read /nonexistent"},
		{`{"backends": {"a": {"endpoint": "https://a", "api_key_file": "/x", "api_key_env": "Y"}}}`, "backends.a: give api_key_env or api_key_file"},
		{`{"backends": {"a": {"endpoint": "https://a"}, "b": {"endpoint": "https://b"}}}`, "default_backend: required"},
		{`{"backends": {"a": {"endpoint": "https://a"}}, "default_backend": "z"}`, `default_backend: no backend is named "z"`},
		{`{"backends": {"a": {"endpoint": "https://a"}}, "models": {"m": [{"backend": "b", "deployment": "d"}]}}`, `models.m[0].backend: no backend is named "b"`},
		{`{"backends": {"a": {"endpoint": "https://a"}}, "models": {"m": [{"backend": "a", "deployment": "../d"}]}}`, "models.m[0].deployment:"},
		{`{"backends": {"a": {"endpoint": "https://a"}}, "models": {"m": [{"backend": "a", "deployment": "d", "weight": 0}]}}`, "models.m[0].weight:"},
		{`{"backends": {"a": {"endpoint": "https://a"}}, "models": {"m": []}}`, "models.m: must be a non-empty list"},
		{`{"backends": {"a": {"endpoint": "https://a"}}, "models": {"m": [{"backend": "a"}]}}`, "models.m[0].deployment: required"},
		{`{"backends": {"a": {"endpoint": "https://a"}, "a": {"endpoint": "https://b"}}}`, "backends.a: is given twice"},
		{`{"backend": {}}`, "backend: unknown field"},
		{`{"max_attempts": 0, "backends": {"a": {"endpoint": "https://a"}}}`, "max_attempts:"},
		{`{"api_version": "2024-10-21&x=1", "backends": {"a": {"endpoint": "https://a"}}}`, "api_version:"},
		{`{"backends": `, "is not valid JSON"},
		{`[]`, "must be a JSON object"},
	}
	for _, tc := range cases {
		_, err := loadConfig(options{listen: ":0", config: writeConfig(t, tc.config)}, mapEnv(map[string]string{"Y": "k"}))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s\n  error %v\n  want it to contain %q", tc.config, err, tc.want)
		}
		if _, ok := err.(*configError); !ok {
			t.Errorf("%s: %T is not a configError (exit status 2)", tc.config, err)
		}
	}
	if _, err := loadConfig(options{listen: ":0", config: "/nonexistent.json"}, mapEnv(nil)); err == nil || !strings.Contains(err.Error(), "/nonexistent.json") {
		t.Errorf("a missing config file: %v", err)
	}
}

func TestConfigFileFallsBackToEnvironment(t *testing.T) {
	path := writeConfig(t, `{"max_attempts": 2}`)
	cfg, err := loadConfig(options{listen: ":0", config: path}, mapEnv(map[string]string{
		"AZURE_OPENAI_ENDPOINT": "https://env.openai.azure.com", "AZURE_OPENAI_API_VER": "2024-06-01",
		"AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=prod",
	}))
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Routes.defaultBackend
	if b.endpoint.Host != "env.openai.azure.com" || b.apiVersion != "2024-06-01" || cfg.Routes.route([]byte("gpt-4o")).candidates[0].deployment != "prod" || cfg.Routes.maxAttempts != 2 {
		t.Errorf("where the file is silent the environment should apply: %+v %+v", cfg.Routes, b)
	}
}

// TestReloadUnderLoad runs the whole program with a config file, moves a
// model to another backend with SIGHUP while requests flow, and then sends
// an invalid file: no request may fail, and the valid configuration stays.
func TestReloadUnderLoad(t *testing.T) {
	a, b := newFakeAzure(t, fakeTLS, ok200), newFakeAzure(t, fakeTLS, ok200)
	config := func(url string) string {
		return `{"backends": {"x": {"endpoint": "` + url + `"}}, "models": {"gpt-4o": [{"backend": "x", "deployment": "d"}]}}`
	}
	path := writeConfig(t, config(a.URL))
	p := startProxy(t, nil, map[string]string{"AZURE_OPENAI_PROXY_CA_FILE": a.caFile(t)}, "-config", path)

	var failures atomic.Int32
	var sent atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", p.URL+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o"}`))
				req.Header.Set("Api-Key", testKey)
				resp, err := http.DefaultClient.Do(req)
				sent.Add(1)
				if err != nil || resp.StatusCode != 200 {
					failures.Add(1)
				}
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	waitFor := func(cond func() bool, what string) {
		deadline := time.Now().Add(failsafe)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; logs:\n%s", what, p.logs)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor(func() bool { return len(a.all()) > 20 }, "requests to a")
	os.WriteFile(path, []byte(config(b.URL)), 0o600)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor(func() bool { return strings.Contains(p.logs.String(), "configuration reloaded") }, "the reload")
	waitFor(func() bool { return len(b.all()) > 20 }, "requests to b after the reload")

	os.WriteFile(path, []byte(`{"backends": {`), 0o600)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor(func() bool { return strings.Contains(p.logs.String(), "reload rejected") }, "the rejection")
	before := len(b.all())
	waitFor(func() bool { return len(b.all()) > before+20 }, "requests to b after the rejected reload")
	close(stop)
	wg.Wait()
	if failures.Load() != 0 {
		t.Errorf("%d of %d requests failed across the reloads", failures.Load(), sent.Load())
	}
}

// TestExampleConfig loads the README's worked example as it is.
func TestExampleConfig(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "sweden")
	os.WriteFile(keyFile, []byte("sweden-key"), 0o600)
	example, err := os.ReadFile("examples/config.json")
	if err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, strings.Replace(string(example), "/run/secrets/sweden", keyFile, 1))
	cfg, err := loadConfig(options{listen: ":0", config: path}, mapEnv(map[string]string{"EASTUS_KEY": "eastus-key"}))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Routes
	gpt := r.route([]byte("gpt-4o"))
	if r.defaultBackend.name != "eastus" || len(gpt.candidates) != 2 || gpt.candidates[1].weight != 2 ||
		r.backends["sweden"].apiKey != "sweden-key" || r.backends["eastus"].apiKey != "eastus-key" ||
		r.backends["sweden"].apiVersion != apiV1 || strings.Join(r.modelNames, ",") != "gpt-4o,text-embedding-3-small" {
		t.Errorf("example loaded as %+v", r)
	}
}

// rawListener accepts connections on loopback and hands each to handle.
func rawListener(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			handle(conn)
		}
	}()
	return ln.Addr().String()
}

// resetListener reads what the client sends first (a TLS ClientHello) and
// resets the connection: a handshake that never completes.
func resetListener(t *testing.T) string {
	return rawListener(t, func(conn net.Conn) {
		conn.Read(make([]byte, 4096))
		conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
	})
}

// TestFailoverByHowFarTheRequestGot: an attempt whose TLS handshake is reset
// has sent nothing, so it fails over (counted as connect_error); a connection
// cut after Azure has read the request is never sent twice.
func TestFailoverByHowFarTheRequestGot(t *testing.T) {
	b := newFakeAzure(t, fakeTLS, ok200)
	cut := newFakeAzure(t, fakePlain, func(w http.ResponseWriter, r *http.Request) {
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close()
	})
	config := strings.ReplaceAll(`{
  "backends": {"reset": {"endpoint": "https://RESET"}, "b": {"endpoint": "{A}"}},
  "default_backend": "b",
  "models": {"gpt-4o": [{"backend": "reset", "deployment": "d", "weight": 9}, {"backend": "b", "deployment": "d"}]}
}`, "RESET", resetListener(t))
	p := startClocked(t, config, nil, b)
	resp, body := p.post(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	if resp.StatusCode != 200 || len(b.all()) != 1 {
		t.Fatalf("TLS reset: got %d %s, b saw %d; want a failover to b", resp.StatusCode, body, len(b.all()))
	}
	waitForLog(t, &testProxy{logs: p.logs}, "attempts=2")

	b2 := newFakeAzure(t, fakeTLS, ok200)
	p = startClocked(t, `{
  "backends": {"cut": {"endpoint": "{B}"}, "b": {"endpoint": "{A}"}},
  "default_backend": "b",
  "models": {"gpt-4o": [{"backend": "cut", "deployment": "d", "weight": 9}, {"backend": "b", "deployment": "d"}]}
}`, nil, b2, cut)
	resp, body = p.post(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	if resp.StatusCode != http.StatusBadGateway || len(cut.all()) != 1 || len(b2.all()) != 0 {
		t.Fatalf("cut after sending: got %d %s; cut saw %d, b saw %d; want 502 and no second send", resp.StatusCode, body, len(cut.all()), len(b2.all()))
	}
	if _, _, _, code := openAIError(t, body); code == nil || *code != "upstream_unreachable" {
		t.Errorf("code %v, want upstream_unreachable", code)
	}
}

// TestBodyModelNeverChoosesABackend: a backend gets its configured
// deployments on routes where Azure reads the deployment from the path or
// body, and model-less routes only as the default backend, whatever a
// client's body says.
func TestBodyModelNeverChoosesABackend(t *testing.T) {
	pass := newFakeAzure(t, fakeTLS, ok200)
	keyed := newFakeAzure(t, fakeTLS, ok200)
	p := startClocked(t, `{
  "backends": {"pass": {"endpoint": "{A}"}, "keyed": {"endpoint": "{B}", "api_key_env": "KEYED_KEY"}},
  "default_backend": "pass",
  "models": {"emb": [{"backend": "keyed", "deployment": "emb-dep"}]}
}`, map[string]string{"KEYED_KEY": "keyed-secret"}, pass, keyed)
	noKey := &testProxy{URL: p.URL}
	for _, tc := range []struct {
		method, path, body string
		status             int
	}{
		{"DELETE", "/v1/files/file-123", `{"model":"emb"}`, http.StatusUnauthorized}, // model-less: the default backend, which needs the client's key
		{"POST", "/v1/deployments/o1-pro/chat/completions", `{"model":"emb"}`, http.StatusNotFound},
		{"POST", "/v1/openai/deployments/o1-pro/chat/completions", `{"model":"emb"}`, http.StatusNotFound},
	} {
		resp, body := noKey.do(t, tc.method, tc.path, http.Header{"Content-Type": {"application/json"}}, []byte(tc.body))
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, resp.StatusCode, body, tc.status)
		}
	}
	if n := len(keyed.all()) + len(pass.all()); n != 0 {
		t.Fatalf("%d requests reached a backend", n)
	}
	// With the client's key: a fine-tuning job's model is not a deployment.
	resp, _ := p.post(t, "/v1/fine_tuning/jobs", `{"training_file":"f","model":"emb"}`)
	if resp.StatusCode != 200 || len(keyed.all()) != 0 || len(pass.all()) != 1 {
		t.Fatalf("fine_tuning: %d; keyed saw %d, pass saw %d", resp.StatusCode, len(keyed.all()), len(pass.all()))
	}
	// A route whose body names the deployment goes to the model's candidate, with its key.
	resp, _ = noKey.do(t, "POST", "/v1/responses", http.Header{"Content-Type": {"application/json"}}, []byte(`{"model":"emb","input":"x"}`))
	if got := keyed.all(); resp.StatusCode != 200 || len(got) != 1 || got[0].Header.Get("Api-Key") != "keyed-secret" || string(got[0].Body) != `{"model":"emb-dep","input":"x"}` {
		t.Fatalf("responses: %d, keyed saw %v", resp.StatusCode, got)
	}
	// Websocket upgrades only where Azure has websockets.
	ws := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Authorization": {"Bearer " + testKey}}
	if resp, body := noKey.do(t, "GET", "/v1/files", ws, nil); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("upgrade on /v1/files: %d %s, want 400", resp.StatusCode, body)
	}
}

// TestOneRequestCannotCoolAModel: a client cannot make the proxy rest a
// model's candidates with requests whose deployment the proxy did not name;
// and the log says "cooldown" only where a candidate cools down.
func TestOneRequestCannotCoolAModel(t *testing.T) {
	notFound := status(404, nil, `{"error":{"code":"DeploymentNotFound","message":"no"}}`)
	a, b := newFakeAzure(t, fakeTLS, notFound), newFakeAzure(t, fakeTLS, notFound)
	p := startClocked(t, fmt.Sprintf(twoBackends, ""), nil, a, b)
	for range 2 {
		if resp, _ := p.post(t, "/v1/deployments/nope/chat/completions", `{"model":"gpt-4o"}`); resp.StatusCode != 404 {
			t.Fatalf("Azure's path through the proxy: %d, want 404", resp.StatusCode)
		}
	}
	if n := len(a.all()) + len(b.all()); n != 0 {
		t.Fatalf("%d requests reached Azure", n)
	}
	// A single-candidate model never cools down, and its log line says so by saying nothing.
	one := newFakeAzure(t, fakeTLS, status(503, nil, `{}`))
	q := startClocked(t, `{"backends": {"a": {"endpoint": "{A}"}}, "models": {"m": [{"backend": "a", "deployment": "d"}]}}`, nil, one)
	q.post(t, "/v1/chat/completions", `{"model":"m"}`)
	waitForLog(t, &testProxy{logs: q.logs}, "upstream attempt failed")
	if strings.Contains(q.logs.String(), "cooldown=") || strings.Contains(q.logs.String(), "rest=") {
		t.Errorf("a lone candidate's failure is logged with a cooldown:\n%s", q.logs)
	}
}

// TestFailoverPromises: Azure's earlier answer wins over a later transport
// error; a timeout is resent only where a second copy changes nothing, and
// the wait for headers is one budget for all attempts; a client's
// Idempotency-Key does not let Go's transport resend on its own.
func TestFailoverPromises(t *testing.T) {
	// 1. a throttles, b takes the request and drops the connection.
	a := newFakeAzure(t, fakeTLS, status(429, map[string]string{"Retry-After": "7"}, `{"error":{"code":"429","message":"slow down"}}`))
	cut := newFakeAzure(t, fakePlain, func(w http.ResponseWriter, r *http.Request) {
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close()
	})
	p := startClocked(t, fmt.Sprintf(twoBackends, ""), nil, a, cut)
	resp, body := p.post(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" {
		t.Errorf("429 then a cut connection: %d %s, want Azure's 429", resp.StatusCode, body)
	}

	// 3 and 4. Two backends that never answer, a third that would.
	hang := func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	h1, h2, ok := newFakeAzure(t, fakeTLS, hang), newFakeAzure(t, fakeTLS, hang), newFakeAzure(t, fakeTLS, ok200)
	three := `{"backends": {"h1": {"endpoint": "{A}"}, "h2": {"endpoint": "{B}"}, "ok": {"endpoint": "{C}"}}, "default_backend": "h1",
  "models": {"m": [{"backend": "h1", "deployment": "d", "weight": 100}, {"backend": "h2", "deployment": "d", "weight": 10}, {"backend": "ok", "deployment": "d"}]}}`
	q := startClocked(t, three, map[string]string{"AZURE_OPENAI_PROXY_UPSTREAM_TIMEOUT": "300ms"}, h1, h2, ok)
	// A stored response (state on Azure): never sent twice.
	if resp, _ := q.post(t, "/v1/responses", `{"model":"m","input":"x"}`); resp.StatusCode != http.StatusGatewayTimeout || len(h2.all())+len(ok.all()) != 0 {
		t.Errorf("stored response after a timeout: %d; h2 saw %d, ok saw %d; want 504 and no resend", resp.StatusCode, len(h2.all()), len(ok.all()))
	}
	// Chat is resent, within one budget: the first attempt spent it all, so no second.
	if resp, _ := q.post(t, "/v1/chat/completions", `{"model":"m"}`); resp.StatusCode != http.StatusGatewayTimeout || len(ok.all()) != 0 {
		t.Errorf("chat after the whole budget went to one hang: %d; ok saw %d; want 504", resp.StatusCode, len(ok.all()))
	}

	// 7. An Idempotency-Key: the request reaches Azure once, however the connection breaks.
	var seen atomic.Int32
	flaky := newFakeAzure(t, fakePlain, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Cut") != "" {
			seen.Add(1)
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
			return
		}
		ok200(w, r)
	})
	tls := newFakeAzure(t, fakeTLS, ok200) // startClocked takes its CA from the first fake
	r := startClocked(t, `{"backends": {"f": {"endpoint": "{B}"}, "t": {"endpoint": "{A}"}}, "default_backend": "f"}`, nil, tls, flaky)
	r.post(t, "/v1/chat/completions", `{"model":"x"}`) // a keep-alive connection to reuse
	(&testProxy{URL: r.URL}).do(t, "POST", "/v1/chat/completions", http.Header{"Authorization": {"Bearer " + testKey},
		"Content-Type": {"application/json"}, "Idempotency-Key": {"k1"}, "X-Cut": {"1"}}, []byte(`{"model":"x"}`))
	if n := seen.Load(); n != 1 {
		t.Errorf("a request with an Idempotency-Key reached Azure %d times, want once", n)
	}
}

// TestTLSBlackholeIsAConnectError: a backend that accepts connections and
// never answers the TLS handshake has been sent nothing: its failure is a
// connect error, and it cools down, so the next request goes elsewhere.
func TestTLSBlackholeIsAConnectError(t *testing.T) {
	var held sync.Mutex
	var conns []net.Conn
	hole := rawListener(t, func(conn net.Conn) { // accepted, never answered
		held.Lock()
		defer held.Unlock()
		conns = append(conns, conn)
	})
	t.Cleanup(func() {
		held.Lock()
		defer held.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	ok := newFakeAzure(t, fakeTLS, ok200)
	config := strings.ReplaceAll(`{
  "backends": {"hole": {"endpoint": "https://HOLE"}, "ok": {"endpoint": "{A}"}},
  "default_backend": "ok",
  "models": {"m": [{"backend": "hole", "deployment": "d", "weight": 9}, {"backend": "ok", "deployment": "d"}]}
}`, "HOLE", hole)
	p := startClocked(t, config, map[string]string{"AZURE_OPENAI_PROXY_UPSTREAM_TIMEOUT": "300ms"}, ok)
	p.post(t, "/v1/chat/completions", `{"model":"m"}`)
	waitForLog(t, &testProxy{logs: p.logs}, "upstream attempt failed")
	if !strings.Contains(p.logs.String(), "backend=hole") || !strings.Contains(p.logs.String(), "TLS handshake failed") {
		t.Errorf("the blackhole's failure is not a TLS handshake failure:\n%s", p.logs)
	}
	if resp, _ := p.post(t, "/v1/chat/completions", `{"model":"m"}`); resp.StatusCode != 200 {
		t.Errorf("the next request: %d, want 200 from the other backend while the blackhole cools down", resp.StatusCode)
	}
}
