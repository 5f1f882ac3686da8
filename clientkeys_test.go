package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestClientKeysAndServerKey(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_PROXY_KEYS": "proxy-key-1, proxy-key-2", "AZURE_OPENAI_API_KEY": "azure-server-key"})
	send := func(h http.Header) int {
		h.Set("Content-Type", "application/json")
		resp, _ := p.do(t, "POST", "/v1/chat/completions", h, []byte(`{"model":"gpt-4o"}`))
		return resp.StatusCode
	}
	if s := send(http.Header{"Authorization": {"Bearer proxy-key-1"}}); s != 200 {
		t.Errorf("Bearer with a client key: %d", s)
	}
	if s := send(http.Header{"Api-Key": {"proxy-key-2"}}); s != 200 {
		t.Errorf("api-key with a client key: %d", s)
	}
	for _, h := range []http.Header{{"Authorization": {"Bearer wrong"}}, {"Api-Key": {"proxy-key-1x"}}, {}, {"Authorization": {"Bearer azure-server-key"}}} {
		resp, body := p.do(t, "POST", "/v1/chat/completions", h, []byte(`{"model":"gpt-4o"}`))
		if _, _, _, code := openAIError(t, body); resp.StatusCode != 401 || code == nil || *code != "invalid_api_key" {
			t.Errorf("%v: %d %s", h, resp.StatusCode, body)
		}
	}
	if reqs := fake.all(); len(reqs) != 2 {
		t.Fatalf("fake saw %d requests, want the 2 with a client key", len(reqs))
	}
	for _, r := range fake.all() {
		if r.Header.Get("Api-Key") != "azure-server-key" || r.Header.Get("Authorization") != "" {
			t.Errorf("upstream api-key %q Authorization %q: want the server's key only", r.Header.Get("Api-Key"), r.Header.Get("Authorization"))
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if resp, _ := p.do(t, "GET", path, nil, nil); resp.StatusCode != 200 {
			t.Errorf("%s needs no key: %d", path, resp.StatusCode)
		}
	}
	if resp, _ := p.do(t, "OPTIONS", "/v1/chat/completions", http.Header{"Origin": {"http://x"}, "Access-Control-Request-Method": {"POST"}}, nil); resp.StatusCode != 204 {
		t.Errorf("a preflight needs no key: %d", resp.StatusCode)
	}
	if resp, _ := p.do(t, "GET", "/v1/models", http.Header{"Api-Key": {"proxy-key-1"}}, nil); resp.StatusCode != 200 {
		t.Errorf("/v1/models with a client key: %d", resp.StatusCode)
	}
	p.shutdown(t)
	for _, secret := range []string{"proxy-key-1", "proxy-key-2", "azure-server-key"} {
		if strings.Contains(p.logs.String(), secret) {
			t.Errorf("%s reached the log", secret)
		}
	}
}

func TestClientKeysFileReloadedOnSIGHUP(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	keys := filepath.Join(t.TempDir(), "keys")
	os.WriteFile(keys, []byte("# clients\nold-key\n\n"), 0o600)
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_PROXY_KEYS_FILE": keys, "AZURE_OPENAI_API_KEY": "server"})
	status := func(key string) int {
		resp, _ := p.do(t, "POST", "/v1/embeddings", http.Header{"Api-Key": {key}}, []byte(`{"model":"e"}`))
		return resp.StatusCode
	}
	if status("old-key") != 200 || status("new-key") != 401 {
		t.Fatal("before the reload")
	}
	os.WriteFile(keys, []byte("new-key\n"), 0o600)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitForLog(t, p, "configuration reloaded")
	if status("old-key") != 401 || status("new-key") != 200 {
		t.Error("after the reload the file's new keys should be the only ones")
	}
}

func TestClientKeysNeedAServerCredential(t *testing.T) {
	_, err := loadConfig(options{listen: ":0"}, mapEnv(map[string]string{"AZURE_OPENAI_ENDPOINT": "https://x", "AZURE_OPENAI_PROXY_KEYS": "k"}))
	if err == nil || !strings.Contains(err.Error(), "AZURE_OPENAI_PROXY_KEYS") || strings.Contains(err.Error(), ": k") {
		t.Errorf("client keys without a server credential: %v", err)
	}
	_, err = loadConfig(options{listen: ":0"}, mapEnv(map[string]string{"AZURE_OPENAI_ENDPOINT": "https://x", "AZURE_OPENAI_AUTH": "entra", "AZURE_OPENAI_API_KEY": "k"}))
	if err == nil || !strings.Contains(err.Error(), "AZURE_OPENAI_AUTH") {
		t.Errorf("entra and a key at once: %v", err)
	}
	_, err = loadConfig(options{listen: ":0"}, mapEnv(map[string]string{"AZURE_OPENAI_ENDPOINT": "https://x", "AZURE_OPENAI_AUTH": "entra", "AZURE_FEDERATED_TOKEN_FILE": "/f"}))
	if err == nil || !strings.Contains(err.Error(), "AZURE_CLIENT_ID") {
		t.Errorf("entra with an incomplete token source: %v", err)
	}
}

func TestOpenProxyWarning(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	open := startProxy(t, fake, map[string]string{"AZURE_OPENAI_API_KEY": "server"}, "-listen", "0.0.0.0:0")
	if !strings.Contains(open.logs.String(), "OPEN PROXY") {
		t.Error("no warning for a server credential without client keys on all interfaces")
	}
	// On loopback too: every program on the host can spend the quota.
	if local := startProxy(t, fake, map[string]string{"AZURE_OPENAI_API_KEY": "server"}); !strings.Contains(local.logs.String(), "OPEN PROXY") ||
		!strings.Contains(local.logs.String(), "every program on this host") {
		t.Error("no warning for a server credential without client keys on loopback")
	}
	for _, env := range []map[string]string{
		{"AZURE_OPENAI_API_KEY": "server", "AZURE_OPENAI_PROXY_KEYS": "k"},
		{},
	} {
		args := []string{"-listen", "0.0.0.0:0"}
		p := startProxy(t, fake, env, args...)
		if strings.Contains(p.logs.String(), "OPEN PROXY") {
			t.Errorf("%v %v: unexpected open-proxy warning", env, args)
		}
	}
}

// TestKeyFilesReloadedWhenTheyChange: no signal needed (the scratch image has
// no kill; a Kubernetes Secret update swaps the file behind a symlink); a key
// file every user can read is warned about.
func TestKeyFilesReloadedWhenTheyChange(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	os.WriteFile(filepath.Join(dir, "v1"), []byte("old-key\n"), 0o644)
	os.Symlink(filepath.Join(dir, "v1"), keys)
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_PROXY_KEYS_FILE": keys, "AZURE_OPENAI_API_KEY": "server",
		"AZURE_OPENAI_PROXY_RELOAD_INTERVAL": "50ms"})
	if !strings.Contains(p.logs.String(), "readable by every user") {
		t.Errorf("no warning for a key file of mode 0644:\n%s", p.logs)
	}
	status := func(key string) int {
		resp, _ := p.do(t, "POST", "/v1/embeddings", http.Header{"Api-Key": {key}, "Content-Type": {"application/json"}}, []byte(`{"model":"e"}`))
		return resp.StatusCode
	}
	if status("old-key") != 200 || status("new-key") != 401 {
		t.Fatal("before the change")
	}
	os.WriteFile(filepath.Join(dir, "v2"), []byte("new-key\n"), 0o600)
	os.Rename(filepath.Join(dir, "v2"), filepath.Join(dir, "v1.tmp"))
	os.Remove(keys)
	os.Symlink(filepath.Join(dir, "v1.tmp"), keys)
	waitForLog(t, p, "configuration reloaded")
	if status("old-key") != 401 || status("new-key") != 200 {
		t.Error("after the change the file's new keys should be the only ones")
	}
	// A file that breaks is refused once and the keys in force stay.
	os.Remove(keys)
	waitForLog(t, p, "reload rejected")
	if status("new-key") != 200 {
		t.Error("a refused reload changed the keys")
	}
}

// TestSIGHUPWithNothingToReload: Go's default for SIGHUP ends the process;
// the proxy keeps serving and says why nothing happened.
func TestSIGHUPWithNothingToReload(t *testing.T) {
	p := startProxy(t, newFakeAzure(t, fakeTLS, nil), nil)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitForLog(t, p, "nothing to reload")
	if resp, _ := p.do(t, "GET", "/healthz", nil, nil); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
}
