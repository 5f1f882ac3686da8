package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClientsConfigRefusesBadEntries(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "batch")
	os.WriteFile(keyFile, []byte("sk-file-key\n"), 0o600)
	backend := `"backends": {"a": {"endpoint": "https://a.openai.azure.com", "api_key_env": "AZ_KEY"}}`
	env := map[string]string{"AZ_KEY": "k", "K1": "sk-one", "K2": "sk-two", "SAME": "sk-one"}
	for _, tc := range []struct{ clients, env, want string }{
		{`{"a": {"key_env": "K1", "limit": {}}}`, "", `clients.a.limit: unknown field`},
		{`{"a": {"key_env": "K1", "limits": {"tokens_per_hour": 5}}}`, "", `clients.a.limits.tokens_per_hour: unknown field`},
		{`{"a": {"key_env": "K1", "limits": {"tokens_per_minute": 0}}}`, "", `clients.a.limits.tokens_per_minute: must be a whole number`},
		{`{"a": {"key_env": "K1", "limits": {"requests_per_minute": -3}}}`, "", `requests_per_minute: must be a whole number`},
		{`{"a": {"key_env": "K1", "limits": {"tokens_per_day": 1.5}}}`, "", `tokens_per_day: must be a whole number`},
		{`{"a": {"key_env": "K1", "limits": {"tokens_per_day": "100"}}}`, "", `tokens_per_day: must be a whole number`},
		{`{"a": {"key_env": "K1"}, "b": {"key_env": "SAME"}}`, "", `gives client "b" the key clients.a gives client "a"`},
		{`{"a": {"key_env": "K1", "key_file": "` + keyFile + `"}}`, "", `give key_env or key_file, not both`},
		{`{"a": {"models": ["gpt-4o"]}}`, "", `clients.a: needs key_env or key_file`},
		{`{"a": {"key_env": "UNSET"}}`, "", `the environment variable UNSET is not set`},
		{`{"a b": {"key_env": "K1"}}`, "", `client names are letters, digits`},
		{`{"a": {"key_env": "K1", "models": []}}`, "", `clients.a.models: must be a list of 1 to 1000`},
		{`{"a": {"key_env": "K1", "models": ["x", "x"]}}`, "", `names "x" twice`},
		// One set with the other key sources: names unique, keys not shared.
		{`{"a": {"key_env": "K1"}}`, "sk-one", `gives client "a" the key AZURE_OPENAI_PROXY_KEYS gives an unnamed client`},
	} {
		config := writeConfig(t, `{`+backend+`, "clients": `+tc.clients+`}`)
		vars := mergeEnv(env, map[string]string{"AZURE_OPENAI_PROXY_KEYS": tc.env})
		_, err := loadConfig(options{listen: ":0", config: config}, mapEnv(vars))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to say %q", tc.clients, err, tc.want)
			continue
		}
		for _, secret := range []string{"sk-one", "sk-two", "sk-file-key"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: the error shows a key: %v", tc.clients, err)
			}
		}
	}
}

func TestKeysFileNamesClients(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	os.WriteFile(keys, []byte("# team keys\nalpha: sk-alpha-1\nsk-unnamed-2\n\nbeta:  sk-beta-3\n"), 0o600)
	table, err := loadConfig(options{listen: ":0"}, mapEnv(map[string]string{
		"AZURE_OPENAI_ENDPOINT": "https://a.openai.azure.com", "AZURE_OPENAI_API_KEY": "k",
		"AZURE_OPENAI_PROXY_KEYS_FILE": keys, "AZURE_OPENAI_PROXY_KEYS": "sk-env-4, sk-unnamed-2"}))
	if err != nil {
		t.Fatal(err)
	}
	ck := table.Routes.clientKeys
	for key, want := range map[string]string{"sk-alpha-1": "alpha", "sk-beta-3": "beta", "sk-unnamed-2": "", "sk-env-4": ""} {
		c := ck.lookup(key)
		if c == nil || c.name != want {
			t.Errorf("%s: client %+v, want %q", key, c, want)
		}
	}
	if ck.lookup("alpha") != nil || ck.lookup("sk-alpha-1x") != nil || ck.lookup("") != nil {
		t.Error("a name, a longer key or no key matched")
	}
	if got := strings.Join(table.Routes.clientNames(), ","); got != "alpha,beta" {
		t.Errorf("named clients %q", got)
	}
	// A name the config file gives too is refused.
	config := writeConfig(t, `{"backends": {"a": {"endpoint": "https://a.openai.azure.com", "api_key_env": "AZ_KEY"}},
		"clients": {"alpha": {"key_env": "K"}}}`)
	_, err = loadConfig(options{listen: ":0", config: config}, mapEnv(map[string]string{"AZ_KEY": "k", "K": "sk-other", "AZURE_OPENAI_PROXY_KEYS_FILE": keys}))
	if err == nil || !strings.Contains(err.Error(), `names the client "alpha", which AZURE_OPENAI_PROXY_KEYS_FILE line 2 names already`) {
		t.Errorf("a name given twice: %v", err)
	}
}

func TestUsageEndpoint(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, usageAnswer(30, 12))
	p := startClocked(t, fmt.Sprintf(clientsConfig, `{"requests_per_minute": 10, "tokens_per_minute": 1000, "tokens_per_day": 5000}`), clientsEnv, fake)
	for range 2 {
		p.as(t, searchKey, "/v1/chat/completions", chat4o)
	}
	p.as(t, batchKey, "/v1/chat/completions", chat4o)

	// On the API port, a client sees its own usage alone.
	resp, body := (&testProxy{URL: p.URL}).do(t, "GET", usagePath, http.Header{"Authorization": {"Bearer " + searchKey}}, nil)
	var report usageReport
	if err := json.Unmarshal(body, &report); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if report.Date != "2026-11-26" || len(report.Data) != 1 {
		t.Fatalf("report %s", body)
	}
	e := report.Data[0]
	if e.Client != "team-search" || e.Today != (usageCounts{2, 60, 24}) || e.SinceStart != e.Today ||
		e.Minute.Requests == nil || *e.Minute.Requests != 2 || e.Minute.Tokens == nil || *e.Minute.Tokens != 84 ||
		e.Limits.TokensPerDay != 5000 {
		t.Errorf("team-search's usage: %s", body)
	}
	if len(fake.all()) != 3 {
		t.Error("the usage endpoint reached Azure")
	}
	if resp, _ := (&testProxy{URL: p.URL}).do(t, "GET", usagePath, nil, nil); resp.StatusCode != 401 {
		t.Errorf("without a key: %d", resp.StatusCode)
	}
	// The ops listener lists every client.
	rec := newRecorder()
	newOpsHandler(p.state, p.metrics, p.clock.Now).ServeHTTP(rec, mustRequest("GET", usagePath))
	if err := json.Unmarshal(rec.Body.Bytes(), &report); err != nil || len(report.Data) != 2 ||
		report.Data[1].Client != "batch-jobs" || report.Data[1].Today.Requests != 1 || report.Data[1].Minute.Requests != nil {
		t.Errorf("ops listener: %s", rec.Body)
	}
}

// A client held to some models meets a closed door wherever a request could
// run a model the proxy cannot see (an attacker's review found each of these
// open).
func TestModelAllowListFailsClosed(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, usageAnswer(1, 1))
	for _, api := range []string{datedAPIVersion, "v1"} {
		p := startClocked(t, fmt.Sprintf(clientsConfig, `{"requests_per_minute": 1000}`), mergeEnv(clientsEnv, map[string]string{"AZURE_OPENAI_API_VER": api}), fake)
		send := func(method, path, contentType, body string, extra http.Header) (*http.Response, []byte) {
			h := http.Header{"Authorization": {"Bearer " + searchKey}}
			if contentType != "" {
				h.Set("Content-Type", contentType)
			}
			for k, v := range extra {
				h[k] = v
			}
			var b []byte
			if body != "" {
				b = []byte(body)
			}
			return (&testProxy{URL: p.URL}).do(t, method, path, h, b)
		}
		websocket := http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-Websocket-Version": {"13"}}
		for _, tc := range []struct {
			method, path, contentType, body string
			header                          http.Header
			status                          int
		}{
			// Azure's own paths, in any case, and its v1 API as a passthrough.
			{"POST", "/v1/v1/chat/completions?api-version=preview", "application/json", `{"model":"gpt-4"}`, nil, 404},
			{"POST", "/v1/V1/chat/completions", "application/json", `{"model":"gpt-4"}`, nil, 404},
			{"POST", "/v1/Deployments/gpt-4/chat/completions", "application/json", `{"model":"gpt-4"}`, nil, 404},
			{"POST", "/v1/OpenAI/deployments/gpt-4/chat/completions", "application/json", `{}`, nil, 404},
			// Models the proxy does not read.
			{"POST", "/v1/evals/eval_1/runs", "application/json", `{"data_source":{"model":"gpt-4"}}`, nil, 403},
			{"POST", "/v1/realtimeapi/sessions?api-version=2025-04-01-preview", "application/json", `{"model":"gpt-4"}`, nil, 403},
			{"POST", "/v1/realtime/client_secrets", "application/json", `{"session":{"type":"transcription","audio":{"input":{"transcription":{"model":"gpt-4"}}}}}`, nil, 403},
			{"POST", "/v1/fine_tuning/jobs", "application/json", `{"model":"gpt-4","training_file":"file-1"}`, nil, 403},
			{"POST", "/v1/responses", "text/plain", `{"model":"gpt-4","input":"x"}`, nil, 403},
			{"POST", "/v1/responses", "", `{"model":"gpt-4","input":"x"}`, nil, 403},
			{"GET", "/v1/responses", "", "", websocket, 403},
			// What runs no model, or names an allowed one, passes.
			{"POST", "/v1/responses", "application/json", `{"model":"gpt-4o","input":"x"}`, nil, 200},
			{"GET", "/v1/responses/resp_1", "", "", nil, 200},
			{"DELETE", "/v1/files/file-1", "", "", nil, 200},
			{"POST", "/v1/vector_stores", "application/json", `{"name":"docs"}`, nil, 200},
			{"POST", "/v1/responses/resp_1/cancel", "", "", nil, 200},
		} {
			before := len(fake.all())
			resp, body := send(tc.method, tc.path, tc.contentType, tc.body, tc.header)
			if resp.StatusCode != tc.status {
				t.Errorf("%s: %s %s %s: %d %s, want %d", api, tc.method, tc.path, tc.body, resp.StatusCode, body, tc.status)
			}
			if reached := len(fake.all()) > before; reached != (tc.status == 200) {
				t.Errorf("%s: %s %s: reached Azure: %v", api, tc.method, tc.path, reached)
			}
			if tc.status == 403 {
				if _, _, _, code := openAIError(t, body); code == nil || *code != "operation_not_allowed" {
					t.Errorf("%s %s: code %v", tc.method, tc.path, code)
				}
			}
		}
	}
}

// The proxy names the realtime deployment: a client's Model= or
// deployment= in another case does not reach Azure beside it.
func TestRealtimeQueryKeepsTheProxysDeployment(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, status(400, nil, `{}`))
	config := strings.Replace(fmt.Sprintf(clientsConfig, `{"requests_per_minute": 100}`), `"models": {`, `"models": {
    "gpt-realtime": [{"backend": "a", "deployment": "dep-rt"}],`, 1)
	config = strings.Replace(config, `"models": ["gpt-4o", "text-embedding-3-small"]`, `"models": ["gpt-realtime"]`, 1)
	p := startClocked(t, config, clientsEnv, fake)
	h := http.Header{"Authorization": {"Bearer " + searchKey}, "Upgrade": {"websocket"}, "Connection": {"Upgrade"},
		"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-Websocket-Version": {"13"}}
	(&testProxy{URL: p.URL}).do(t, "GET", "/v1/realtime?model=gpt-realtime&Model=gpt-4&Deployment=gpt-4&DEPLOYMENT=x", h, nil)
	if got := fake.only(t).Query; got != "model=dep-rt" {
		t.Errorf("upstream query %q, want only the proxy's model=dep-rt", got)
	}
	if resp, body := (&testProxy{URL: p.URL}).do(t, "GET", "/v1/realtime?model=gpt-4", h, nil); resp.StatusCode != 403 {
		t.Errorf("realtime with a model not on the list: %d %s", resp.StatusCode, body)
	}
}

// A client with token limits cannot open sessions whose tokens the proxy
// never sees.
func TestTokenLimitedClientsKeepToCountableCalls(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, usageAnswer(1, 1))
	p := startClocked(t, fmt.Sprintf(clientsConfig, `{"tokens_per_day": 100000}`), clientsEnv, fake)
	ws := http.Header{"Authorization": {"Bearer " + searchKey}, "Upgrade": {"websocket"}, "Connection": {"Upgrade"},
		"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-Websocket-Version": {"13"}}
	for _, tc := range []struct {
		method, path, body string
		header             http.Header
	}{
		{"GET", "/v1/realtime?model=gpt-4o", "", ws},
		{"POST", "/v1/realtime/client_secrets", `{"session":{"type":"realtime","model":"gpt-4o"}}`, http.Header{"Authorization": {"Bearer " + searchKey}, "Content-Type": {"application/json"}}},
	} {
		var body []byte
		if tc.body != "" {
			body = []byte(tc.body)
		}
		resp, got := (&testProxy{URL: p.URL}).do(t, tc.method, tc.path, tc.header, body)
		if _, _, _, code := openAIError(t, got); resp.StatusCode != 403 || code == nil || *code != "operation_not_allowed" {
			t.Errorf("%s %s: %d %s", tc.method, tc.path, resp.StatusCode, got)
		}
	}
	if len(fake.all()) != 0 {
		t.Error("a refused session reached Azure")
	}
}

// What a token-limited client may not do, in any case of the path: calls
// whose tokens never pass the proxy as usage it reads.
func TestTokenLimitedClientsRefusedUncountableCalls(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, usageAnswer(1, 1))
	p := startClocked(t, strings.Replace(fmt.Sprintf(clientsConfig, `{"tokens_per_day": 100000}`),
		`"models": ["gpt-4o", "text-embedding-3-small"], `, "", 1), clientsEnv, fake)
	for _, tc := range []struct {
		path, body string
		status     int
	}{
		{"/v1/Realtime/client_secrets", `{"session":{"model":"gpt-4o"}}`, 403},
		{"/v1/REALTIME/sessions", `{"model":"gpt-4o"}`, 403},
		{"/v1/batches", `{"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h"}`, 403},
		{"/v1/evals/eval_1/runs", `{"data_source":{"model":"gpt-4o"}}`, 403},
		{"/v1/fine_tuning/jobs", `{"model":"gpt-4o","training_file":"file-1"}`, 403},
		{"/v1/responses", `{"model":"gpt-4o","input":"x","background":true}`, 403},
		{"/v1/responses", `{"model":"gpt-4o","input":"x","background":false}`, 200},
		{"/v1/vector_stores", `{"name":"docs"}`, 200},
		{"/v1/batches/batch_1/cancel", ``, 200},
	} {
		resp, body := p.as(t, searchKey, tc.path, tc.body)
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d %s, want %d", tc.path, tc.body, resp.StatusCode, body, tc.status)
		}
	}
	if got := len(fake.all()); got != 3 {
		t.Errorf("Azure saw %d requests, want the 3 allowed", got)
	}
}
