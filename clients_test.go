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
