package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	searchKey = "sk-search-0123456789"
	batchKey  = "sk-batch-0123456789"
)

// clientsConfig is one backend and two named clients; %s is team-search's limits.
const clientsConfig = `{
  "backends": {"a": {"endpoint": "{A}", "api_key_env": "AZ_KEY"}},
  "models": {
    "gpt-4o": [{"backend": "a", "deployment": "dep-4o"}],
    "gpt-4": [{"backend": "a", "deployment": "dep-4"}],
    "text-embedding-3-small": [{"backend": "a", "deployment": "emb"}]
  },
  "clients": {
    "team-search": {"key_env": "SEARCH_KEY", "models": ["gpt-4o", "text-embedding-3-small"], "limits": %s},
    "batch-jobs": {"key_env": "BATCH_KEY"}
  }
}`

var clientsEnv = map[string]string{"AZ_KEY": testKey, "SEARCH_KEY": searchKey, "BATCH_KEY": batchKey}

// usageAnswer answers every chat with a usage of prompt+completion tokens.
func usageAnswer(prompt, completion int) http.HandlerFunc {
	return status(200, map[string]string{"X-Ratelimit-Remaining-Tokens": "999999"},
		fmt.Sprintf(`{"id":"c","object":"chat.completion","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`,
			prompt, completion, prompt+completion))
}

func (p *clockedProxy) as(t *testing.T, key, path, body string) (*http.Response, []byte) {
	t.Helper()
	return (&testProxy{URL: p.URL}).do(t, "POST", path, http.Header{"Authorization": {"Bearer " + key}, "Content-Type": {"application/json"}}, []byte(body))
}

const chat4o = `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`

// rateLimited checks a 429 for limit and returns its retry-after-ms.
func rateLimited(t *testing.T, resp *http.Response, body []byte, errType, limit string) time.Duration {
	t.Helper()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429: %s", resp.StatusCode, body)
	}
	msg, typ, param, code := openAIError(t, body)
	if typ != errType || code == nil || *code != "rate_limit_exceeded" || param != nil {
		t.Errorf("error type %q code %v param %v, want %s rate_limit_exceeded: %s", typ, code, param, errType, body)
	}
	if !strings.Contains(msg, limit) || !strings.Contains(msg, "team-search") {
		t.Errorf("message %q does not name the client and the limit %s", msg, limit)
	}
	ms, err := strconv.Atoi(resp.Header.Get("Retry-After-Ms"))
	if err != nil || ms < 1 {
		t.Fatalf("retry-after-ms %q", resp.Header.Get("Retry-After-Ms"))
	}
	secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if want := (ms + 999) / 1000; secs != want {
		t.Errorf("Retry-After %q, want %d (retry-after-ms %d rounded up)", resp.Header.Get("Retry-After"), want, ms)
	}
	return time.Duration(ms) * time.Millisecond
}

// refusedUntil checks that team-search is refused until wait has passed:
// still a step before it, and admitted at it.
func (p *clockedProxy) refusedUntil(t *testing.T, wait, step time.Duration) {
	t.Helper()
	p.clock.Advance(wait - step)
	if resp, _ := p.as(t, searchKey, "/v1/chat/completions", chat4o); resp.StatusCode != 429 {
		t.Errorf("%v before the window frees: %d, want 429", step, resp.StatusCode)
	}
	p.clock.Advance(step)
	if resp, body := p.as(t, searchKey, "/v1/chat/completions", chat4o); resp.StatusCode != 200 {
		t.Errorf("once the window freed: %d %s, want 200", resp.StatusCode, body)
	}
}

func TestRequestsPerMinuteRefusesAtTheLine(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, usageAnswer(1, 1))
	p := startClocked(t, fmt.Sprintf(clientsConfig, `{"requests_per_minute": 3}`), clientsEnv, fake)
	for i := range 3 {
		resp, body := p.as(t, searchKey, "/v1/chat/completions", chat4o)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i+1, resp.StatusCode, body)
		}
		if got, want := resp.Header.Get("X-Ratelimit-Remaining-Requests"), strconv.Itoa(2-i); got != want {
			t.Errorf("request %d: remaining-requests %q, want %s", i+1, got, want)
		}
		if got := resp.Header.Get("X-Ratelimit-Limit-Requests"); got != "3" {
			t.Errorf("limit-requests %q", got)
		}
		if got := resp.Header.Get("X-Ratelimit-Remaining-Tokens"); got != "" {
			t.Errorf("Azure's x-ratelimit-remaining-tokens (%q) reached a client with limits of its own", got)
		}
	}
	resp, body := p.as(t, searchKey, "/v1/chat/completions", chat4o)
	wait := rateLimited(t, resp, body, "requests", "requests per minute (RPM)")
	if wait < 20*time.Second || wait > 20*time.Second+time.Millisecond {
		t.Errorf("retry-after %v, want 20s (one request of three a minute)", wait)
	}
	if got := resp.Header.Get("X-Ratelimit-Remaining-Requests"); got != "0" {
		t.Errorf("429: remaining-requests %q, want 0", got)
	}
	if n := len(fake.all()); n != 3 {
		t.Errorf("Azure saw %d requests, want 3: the refused one must not reach it", n)
	}
	p.refusedUntil(t, wait, time.Millisecond)
	// Another client has its own (no) limits.
	if resp, _ := p.as(t, batchKey, "/v1/chat/completions", chat4o); resp.StatusCode != 200 || resp.Header.Get("X-Ratelimit-Limit-Requests") != "" {
		t.Errorf("batch-jobs: %d, limit header %q", resp.StatusCode, resp.Header.Get("X-Ratelimit-Limit-Requests"))
	}
	m := scrapeHandler(t, p)
	if got := m.get("azure_openai_proxy_client_limited_total", "client", "team-search", "limit", "requests_per_minute"); got != 2 {
		t.Errorf("client_limited_total = %v, want 2", got)
	}
	// Refused before the body (and its model) was read.
	if got := m.get("azure_openai_proxy_requests_total", "route", "chat/completions", "model", "", "deployment", "", "backend", "", "code", "429", "client", "team-search"); got != 2 {
		t.Errorf("requests_total for the 429s = %v, want 2", got)
	}
	if got := m.get("azure_openai_proxy_tokens_total", "model", "gpt-4o", "deployment", "dep-4o", "kind", "prompt", "client", "batch-jobs"); got != 1 {
		t.Errorf("batch-jobs prompt tokens = %v, want 1", got)
	}
	if !strings.Contains(p.logs.String(), "client=team-search") || strings.Contains(p.logs.String(), searchKey) {
		t.Errorf("the access log should name the client, never its key:\n%s", p.logs)
	}
}

func TestTokensPerMinuteRefusesOnceSpent(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, usageAnswer(500, 160))
	p := startClocked(t, fmt.Sprintf(clientsConfig, `{"tokens_per_minute": 600}`), clientsEnv, fake)
	resp, body := p.as(t, searchKey, "/v1/chat/completions", chat4o)
	// The answer's headers count the prompt's estimate (a token every four
	// bytes of the body), reserved while the request runs.
	if want := strconv.FormatInt(600-promptEstimate(len(chat4o)), 10); resp.StatusCode != 200 ||
		resp.Header.Get("X-Ratelimit-Remaining-Tokens") != want || resp.Header.Get("X-Ratelimit-Limit-Tokens") != "600" {
		t.Fatalf("first request: %d %s, headers %v", resp.StatusCode, body, resp.Header)
	}
	// It crossed the line (660 of 600) and finished; the next is refused
	// until a token is free: 61 drained, 6.1 s at 600 a minute.
	resp, body = p.as(t, searchKey, "/v1/chat/completions", chat4o)
	if wait := rateLimited(t, resp, body, "tokens", "tokens per minute (TPM)"); wait != 6100*time.Millisecond {
		t.Errorf("retry-after %v, want 6.1s", wait)
	}
	if got := resp.Header.Get("X-Ratelimit-Remaining-Tokens"); got != "0" {
		t.Errorf("remaining-tokens %q, want 0", got)
	}
	p.refusedUntil(t, 6100*time.Millisecond, time.Millisecond)
}

func TestTokensPerDayUntilMidnightUTC(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, usageAnswer(400, 100))
	p := startClocked(t, fmt.Sprintf(clientsConfig, `{"tokens_per_day": 1000, "tokens_per_minute": 100000}`), clientsEnv, fake)
	for i := range 2 { // 0 then 500 of 1000 spent: both admitted, and the second crosses the line
		if resp, body := p.as(t, searchKey, "/v1/chat/completions", chat4o); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i+1, resp.StatusCode, body)
		}
	}
	resp, body := p.as(t, searchKey, "/v1/chat/completions", chat4o)
	// The clock reads 12:00 UTC: twelve hours to the next day.
	if wait := rateLimited(t, resp, body, "tokens", "tokens per day (TPD)"); wait != 12*time.Hour {
		t.Errorf("retry-after %v, want 12h", wait)
	}
	// The day's limit has less left than the minute's: the headers describe it.
	if resp.Header.Get("X-Ratelimit-Limit-Tokens") != "1000" || resp.Header.Get("X-Ratelimit-Remaining-Tokens") != "0" ||
		resp.Header.Get("X-Ratelimit-Reset-Tokens") != "12h0m0s" {
		t.Errorf("token headers %v", resp.Header)
	}
	p.refusedUntil(t, 12*time.Hour, time.Second) // 23:59:59 refused, midnight a new day
}

func TestModelAllowList(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, usageAnswer(1, 1))
	p := startClocked(t, fmt.Sprintf(clientsConfig, `{"requests_per_minute": 100}`), clientsEnv, fake)
	resp, body := p.as(t, searchKey, "/v1/chat/completions", `{"model":"gpt-4","messages":[]}`)
	msg, _, param, code := openAIError(t, body)
	if resp.StatusCode != 403 || code == nil || *code != "model_not_allowed" || param == nil || *param != "model" ||
		!strings.Contains(msg, "gpt-4o, text-embedding-3-small") {
		t.Errorf("gpt-4 for team-search: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Ratelimit-Limit-Requests") != "100" {
		t.Errorf("a limited client's 403 should carry its rate headers too: %v", resp.Header)
	}
	if resp, body := p.as(t, searchKey, "/v1/embeddings", `{"model":"gpt-4","input":"x"}`); resp.StatusCode != 403 {
		t.Errorf("embeddings with gpt-4: %d %s", resp.StatusCode, body)
	}
	if resp, body := p.as(t, searchKey, "/v1/embeddings", `{"model":"text-embedding-3-small","input":"x"}`); resp.StatusCode != 200 {
		t.Errorf("embeddings with an allowed model: %d %s", resp.StatusCode, body)
	}
	if resp, body := p.as(t, searchKey, "/v1/batches", `{"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h"}`); resp.StatusCode != 403 {
		t.Errorf("a batch (models inside a file the proxy does not read): %d %s", resp.StatusCode, body)
	}
	if got := fake.all(); len(got) != 1 || got[0].Path != "/openai/deployments/emb/embeddings" {
		t.Errorf("Azure saw %v; want the one allowed embedding", got)
	}
	models := func(key, path string) (int, string) {
		resp, body := (&testProxy{URL: p.URL}).do(t, "GET", path, http.Header{"Authorization": {"Bearer " + key}}, nil)
		var list struct{ Data []struct{ ID string } }
		json.Unmarshal(body, &list)
		var ids []string
		for _, m := range list.Data {
			ids = append(ids, m.ID)
		}
		return resp.StatusCode, strings.Join(ids, ",")
	}
	if code, ids := models(searchKey, "/v1/models"); code != 200 || ids != "gpt-4o,text-embedding-3-small" {
		t.Errorf("team-search's /v1/models: %d %s", code, ids)
	}
	if code, ids := models(batchKey, "/v1/models"); code != 200 || ids != "gpt-4o,gpt-4,text-embedding-3-small" {
		t.Errorf("batch-jobs' /v1/models: %d %s", code, ids)
	}
	if code, _ := models(searchKey, "/v1/models/gpt-4"); code != 403 {
		t.Errorf("team-search's /v1/models/gpt-4: %d, want 403", code)
	}
	if code, _ := models(searchKey, "/v1/models/gpt-4o"); code != 200 {
		t.Errorf("team-search's /v1/models/gpt-4o: %d", code)
	}
}

// scrapeHandler reads the metrics of a clocked proxy.
func scrapeHandler(t *testing.T, p *clockedProxy) scrape {
	t.Helper()
	return getMetricsWithKey(t, p.URL, searchKey)
}

func getMetricsWithKey(t *testing.T, url, key string) scrape {
	t.Helper()
	resp, body := (&testProxy{URL: url}).do(t, "GET", "/metrics", http.Header{"Authorization": {"Bearer " + key}}, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("metrics: %d %s", resp.StatusCode, body)
	}
	return parseExposition(t, string(body))
}

func TestReloadKeepsClientCounters(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, usageAnswer(100, 0))
	p := startClocked(t, fmt.Sprintf(clientsConfig, `{"tokens_per_minute": 1000, "requests_per_minute": 5}`), clientsEnv, fake)
	for range 2 {
		p.as(t, searchKey, "/v1/chat/completions", chat4o)
	}
	p.as(t, batchKey, "/v1/chat/completions", chat4o)
	// The operator lowers team-search's limit and removes batch-jobs.
	config := strings.Replace(fmt.Sprintf(clientsConfig, `{"tokens_per_minute": 1000, "requests_per_minute": 3}`), `,
    "batch-jobs": {"key_env": "BATCH_KEY"}`, "", 1)
	config = strings.ReplaceAll(config, "{A}", fake.URL)
	if err := os.WriteFile(p.cfg.Routes.source, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if !reloadRoutes(p.cfg, p.state, newLogger("text", p.logs)) {
		t.Fatalf("reload refused:\n%s", p.logs)
	}
	resp, body := p.as(t, searchKey, "/v1/chat/completions", chat4o)
	if want := strconv.FormatInt(800-promptEstimate(len(chat4o)), 10); resp.StatusCode != 200 ||
		resp.Header.Get("X-Ratelimit-Remaining-Requests") != "0" || resp.Header.Get("X-Ratelimit-Remaining-Tokens") != want {
		t.Errorf("after the reload, the two requests before it still count: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	if resp, _ := p.as(t, searchKey, "/v1/chat/completions", chat4o); resp.StatusCode != 429 {
		t.Errorf("the fourth request under the new limit of 3: %d", resp.StatusCode)
	}
	if resp, _ := p.as(t, batchKey, "/v1/chat/completions", chat4o); resp.StatusCode != 401 {
		t.Errorf("a removed client's key: %d, want 401", resp.StatusCode)
	}
	p.state.clients.mu.Lock()
	_, kept := p.state.clients.clients["batch-jobs"]
	p.state.clients.mu.Unlock()
	if kept {
		t.Error("the removed client's counters are kept")
	}
}

// TestBadKeysLeaveMemoryFlat sends 10,000 distinct wrong keys: each is
// refused with 401, and the proxy remembers nothing of them.
func TestBadKeysLeaveMemoryFlat(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, usageAnswer(1, 1))
	p := startClocked(t, fmt.Sprintf(clientsConfig, `{"requests_per_minute": 5}`), clientsEnv, fake)
	h := newHandler(p.cfg, newLogger("text", &syncBuffer{}), p.state, p.metrics)
	send := func(key string) int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(chat4o))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	for i := range 100 { // warm up pools and maps
		send(fmt.Sprintf("sk-warm-%d", i))
	}
	before := heap()
	for i := range 10000 {
		if code := send(fmt.Sprintf("sk-wrong-%08d-%s", i, strings.Repeat("x", 40))); code != 401 {
			t.Fatalf("bad key %d: %d", i, code)
		}
	}
	after := heap()
	if grown := int64(after) - int64(before); grown > 1<<20 {
		t.Errorf("heap grew by %d bytes over 10,000 bad keys, want under 1 MiB", grown)
	}
	p.state.clients.mu.Lock()
	n := len(p.state.clients.clients)
	p.state.clients.mu.Unlock()
	if n != 0 {
		t.Errorf("the ledger holds %d clients after bad keys alone", n)
	}
	if len(fake.all()) != 0 {
		t.Error("a bad key reached Azure")
	}
}

// A limit a reload adds starts from nothing, and a lowered one holds at most
// its new line: heavy use before either locks no one out for long.
func TestReloadedLimitsStartFair(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, usageAnswer(4000, 1000))
	p := startClocked(t, fmt.Sprintf(clientsConfig, `{"requests_per_minute": 1000}`), clientsEnv, fake)
	for range 50 { // 250,000 tokens with no token limit
		if resp, body := p.as(t, searchKey, "/v1/chat/completions", chat4o); resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	}
	reload := func(limits string) {
		t.Helper()
		config := strings.ReplaceAll(fmt.Sprintf(clientsConfig, limits), "{A}", fake.URL)
		if err := os.WriteFile(p.cfg.Routes.source, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		if !reloadRoutes(p.cfg, p.state, newLogger("text", p.logs)) {
			t.Fatalf("reload refused:\n%s", p.logs)
		}
	}
	reload(`{"requests_per_minute": 10}`)
	// The requests bucket, 50 of a lowered 1000, now holds 10 of 10: a wait
	// of one request's share of the minute, not of the fifty.
	resp, body := p.as(t, searchKey, "/v1/chat/completions", chat4o)
	if wait := rateLimited(t, resp, body, "requests", "RPM"); wait != 6*time.Second {
		t.Errorf("retry-after %v, want 6s", wait)
	}
	// A token limit starts from nothing, though 250,000 tokens went before.
	reload(`{"tokens_per_minute": 10000}`)
	for i := range 2 {
		if resp, body := p.as(t, searchKey, "/v1/chat/completions", chat4o); resp.StatusCode != 200 {
			t.Fatalf("request %d under a new token limit: %d %s", i+1, resp.StatusCode, body)
		}
	}
	resp, body = p.as(t, searchKey, "/v1/chat/completions", chat4o)
	// 10,000 of 10,000: until one token drains, 6 ms at 10,000 a minute.
	if wait := rateLimited(t, resp, body, "tokens", "TPM"); wait != 6*time.Millisecond {
		t.Errorf("retry-after %v, want 6ms", wait)
	}
}

func TestChargedOnlyForWhatRunsAModel(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "GET" { // a stored response, with the usage it had
			status(200, nil, `{"id":"resp_1","object":"response","usage":{"input_tokens":500,"output_tokens":200}}`)(w, r)
			return
		}
		if strings.Contains(string(readAllBody(r)), "slow") {
			time.Sleep(300 * time.Millisecond) // the client gives up first
		}
		usageAnswer(9, 2)(w, r)
	})
	p := startClocked(t, fmt.Sprintf(clientsConfig, `{"tokens_per_minute": 100000}`), clientsEnv, fake)
	today := func() usageCounts {
		return p.state.clients.entry(searchClient(p), p.clock.Now()).Today
	}
	for range 3 {
		(&testProxy{URL: p.URL}).do(t, "GET", "/v1/responses/resp_1", http.Header{"Authorization": {"Bearer " + searchKey}}, nil)
	}
	if got := today(); got.tokens() != 0 || got.Requests != 3 {
		t.Errorf("reading a stored response was charged: %+v", got)
	}
	// A client that leaves before the answer is charged its prompt's estimate.
	const slow = `{"model":"gpt-4o","messages":[{"role":"user","content":"slow, please"}]}`
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", p.URL+"/v1/chat/completions", strings.NewReader(slow))
	req.Header.Set("Authorization", "Bearer "+searchKey)
	req.Header.Set("Content-Type", "application/json")
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("the request finished before the client gave up")
	}
	waitUntil(t, func() bool { return today().tokens() > 0 }, "the charge of the abandoned request")
	if got := today(); got.PromptTokens != promptEstimate(len(slow)) || got.CompletionTokens != 0 {
		t.Errorf("abandoned request charged %+v, want %d prompt tokens", got, promptEstimate(len(slow)))
	}
	// The models list is answered by the proxy and counts nothing, but says where the client stands.
	resp, _ := (&testProxy{URL: p.URL}).do(t, "GET", "/v1/models", http.Header{"Authorization": {"Bearer " + searchKey}}, nil)
	if resp.Header.Get("X-Ratelimit-Limit-Tokens") != "100000" {
		t.Errorf("/v1/models headers: %v", resp.Header)
	}
}

func TestStreamUsageAskedOnEveryChatRoute(t *testing.T) {
	fake := fakeStreamingAzure(t)
	p := startClocked(t, fmt.Sprintf(clientsConfig, `{"tokens_per_minute": 100000}`), clientsEnv, fake)
	resp, body := p.as(t, searchKey, "/v1/engines/gpt-4o/chat/completions", `{"stream":true,"messages":[]}`)
	if want := strings.TrimPrefix(azurePlainStream, azureFirstChunk); resp.StatusCode != 200 || string(body) != want {
		t.Errorf("engines route: %d %s", resp.StatusCode, body)
	}
	if sent := string(fake.only(t).Body); !strings.Contains(sent, `"stream_options":{"include_usage":true}`) {
		t.Errorf("engines route: Azure got %s", sent)
	}
	if got := p.state.clients.entry(searchClient(p), p.clock.Now()).Today; got.PromptTokens != 9 {
		t.Errorf("engines route stream charged %+v", got)
	}
	// A body whose stream options the proxy cannot edit would go uncounted: refused.
	resp, body = p.as(t, searchKey, "/v1/chat/completions", `{"model":"gpt-4o","stream":true,"Stream":true}`)
	if _, _, param, code := openAIError(t, body); resp.StatusCode != 400 || code == nil || *code != "invalid_json" || param == nil || *param != "stream" {
		t.Errorf("two stream keys: %d %s", resp.StatusCode, body)
	}
}
