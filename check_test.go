package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// checkFake answers like an Azure resource with a few deployments, and only
// to the key "good-key".
func checkFake(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	var body map[string]any
	json.NewDecoder(r.Body).Decode(&body)
	if r.Header.Get("Api-Key") != "good-key" {
		w.WriteHeader(401)
		io.WriteString(w, `{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint."}}`)
		return
	}
	deployment, op := "", ""
	if m := regexp.MustCompile(`^/openai/deployments/([^/]+)/(.+)$`).FindStringSubmatch(r.URL.Path); m != nil {
		deployment, op = m[1], m[2]
	} else if rest, ok := strings.CutPrefix(r.URL.Path, "/openai/v1/"); ok {
		deployment, op = body["model"].(string), rest
	}
	fail := func(status int, code, message string) {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": message}})
	}
	switch {
	case deployment == "missing":
		fail(404, "DeploymentNotFound", "The API deployment for this resource does not exist.")
	case deployment == "busy":
		fail(429, "429", "Rate limit is exceeded.")
	case deployment == "broken":
		fail(500, "InternalServerError", "The server had an error while processing your request.")
	case deployment == "embdep" && op == "chat/completions":
		fail(400, "OperationNotSupported", "The chatCompletion operation does not work with the specified model, text-embedding-3-small.")
	case deployment == "o3" && body["max_tokens"] != nil:
		fail(400, "unsupported_parameter", "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.")
	default:
		io.WriteString(w, `{"id":"x","choices":[{"message":{"content":"p"}}],"data":[]}`)
	}
}

func TestCheckReportsEachOutcome(t *testing.T) {
	a := newFakeAzure(t, fakeTLS, checkFake)
	config := strings.ReplaceAll(`{
  "backends": {
    "good": {"endpoint": "{A}", "api_key_env": "GOOD"},
    "badkey": {"endpoint": "{A}", "api_key_env": "BAD"},
    "nokey": {"endpoint": "{A}"},
    "new": {"endpoint": "{A}", "api_key_env": "GOOD", "api_version": "v1"}
  },
  "default_backend": "good",
  "models": {
    "gpt-4o": [{"backend": "good", "deployment": "chatdep"}, {"backend": "new", "deployment": "chatdep"}],
    "text-embedding-3-small": [{"backend": "good", "deployment": "embdep"}],
    "o3": [{"backend": "good", "deployment": "o3"}],
    "gpt-5": [{"backend": "good", "deployment": "missing"}, {"backend": "badkey", "deployment": "chatdep"}, {"backend": "nokey", "deployment": "chatdep"}],
    "gpt-4.1": [{"backend": "good", "deployment": "busy"}, {"backend": "good", "deployment": "broken"}]
  }
}`, "{A}", a.URL)
	var out bytes.Buffer
	err := run(context.Background(), []string{"-check", "-config", writeConfig(t, config)},
		mapEnv(map[string]string{"GOOD": "good-key", "BAD": "wrong-key", "AZURE_OPENAI_PROXY_CA_FILE": a.caFile(t)}), &out, io.Discard)
	var failed *checkFailedError
	if !errors.As(err, &failed) || failed.failed != 4 || failed.total != 9 {
		t.Fatalf("err = %v, want 4 of 9 failed\n%s", err, out.String())
	}
	want := [][]string{
		{"MODEL", "BACKEND", "DEPLOYMENT", "RESULT"},
		{"gpt-4o", "good", "chatdep", "OK (chat)"},
		{"gpt-4o", "new", "chatdep", "OK (chat)"},
		{"text-embedding-3-small", "good", "embdep", "OK (embeddings)"},
		{"o3", "good", "o3", "OK (chat)"},
		{"gpt-5", "good", "missing", "404 DeploymentNotFound"},
		{"gpt-5", "badkey", "chatdep", "401 bad key"},
		{"gpt-5", "nokey", "chatdep", "cannot check: the backend has no key of its own"},
		{"gpt-4.1", "good", "busy", "OK (chat; 429"},
		{"gpt-4.1", "good", "broken", "500 InternalServerError: The server had an error"},
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i, cols := range want {
		fields := regexp.MustCompile(`\s{2,}`).Split(lines[i], 4)
		if len(fields) != 4 || fields[0] != cols[0] || fields[1] != cols[1] || fields[2] != cols[2] || !strings.HasPrefix(fields[3], cols[3]) {
			t.Errorf("line %d = %q, want %q", i, lines[i], cols)
		}
	}
	if strings.Contains(out.String(), "good-key") || strings.Contains(out.String(), "wrong-key") {
		t.Error("a key is in the check's output")
	}
	// The v1 backend was asked on OpenAI's path, with the deployment in the body.
	var sawV1 bool
	for _, r := range a.all() {
		if r.Path == "/openai/v1/chat/completions" && strings.Contains(string(r.Body), `"model":"chatdep"`) && r.Query == "" {
			sawV1 = true
		}
	}
	if !sawV1 {
		t.Error("the v1 backend was not checked in v1's shape")
	}
}

func TestCheckAllOK(t *testing.T) {
	a := newFakeAzure(t, fakeTLS, checkFake)
	var out bytes.Buffer
	err := run(context.Background(), []string{"-check"}, mapEnv(map[string]string{
		"AZURE_OPENAI_ENDPOINT": a.URL, "AZURE_OPENAI_API_KEY": "good-key", "AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=chatdep,emb=embdep",
		"AZURE_OPENAI_PROXY_CA_FILE": a.caFile(t),
	}), &out, io.Discard)
	if err != nil || strings.Count(out.String(), "OK (") != 2 {
		t.Errorf("err %v\n%s", err, out.String())
	}
	// Pass-through mode: clients bring their keys, the check is given its own.
	out.Reset()
	err = run(context.Background(), []string{"-check"}, mapEnv(map[string]string{
		"AZURE_OPENAI_ENDPOINT": a.URL, "AZURE_OPENAI_PROXY_CHECK_KEY": "good-key", "AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=chatdep",
		"AZURE_OPENAI_PROXY_CA_FILE": a.caFile(t),
	}), &out, io.Discard)
	if err != nil || !strings.Contains(out.String(), "OK (") || strings.Contains(out.String(), "good-key") {
		t.Errorf("pass-through with a check key: %v\n%s", err, out.String())
	}
	out.Reset()
	err = run(context.Background(), []string{"-check"}, mapEnv(map[string]string{"AZURE_OPENAI_ENDPOINT": a.URL}), &out, io.Discard)
	if err == nil || !strings.Contains(out.String(), "No models are configured") {
		t.Errorf("no models: %v %q", err, out.String())
	}
}
