package main

import (
	"net/http"
	"strings"
	"testing"
)

// TestV1Routes repeats the core route table against a backend on Azure's v1
// API: OpenAI's own paths under /openai/v1/, the deployment in the body, and
// api-version=preview only for audio and images.
func TestV1Routes(t *testing.T) {
	wav, wavType := multipartBody(t, 2048, "model", "whisper", "response_format", "json")
	wantWav := []byte(strings.Replace(string(wav), "\r\n\r\nwhisper\r\n", "\r\n\r\nwhisper-1\r\n", 1))
	img, imgType := multipartBody(t, 2048, "prompt", "a cat", "model", "gpt-image-1")
	cases := []struct {
		path, contentType, body string
		wantURI, wantBody       string
	}{
		{"/v1/chat/completions", "application/json", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`,
			"/openai/v1/chat/completions", `{"model":"gpt4o-prod","messages":[{"role":"user","content":"hi"}]}`},
		{"/chat/completions", "application/json", `{ "messages":[], "model" : "gpt-4o" }`,
			"/openai/v1/chat/completions", `{ "messages":[], "model" : "gpt4o-prod" }`},
		{"/v1/completions", "application/json", `{"prompt":"x","model":"gpt-35-turbo-instruct"}`,
			"/openai/v1/completions", `{"prompt":"x","model":"gpt-35-turbo-instruct"}`},
		{"/v1/embeddings", "application/json", `{"input":["a"],"model":"text-embedding-3-small"}`,
			"/openai/v1/embeddings", `{"input":["a"],"model":"emb-small"}`},
		{"/v1/audio/transcriptions", wavType, string(wav),
			"/openai/v1/audio/transcriptions?api-version=preview", string(wantWav)},
		// A dated api-version is not sent to /openai/v1/ (Azure refuses it
		// there); v1, preview and latest pass as the client gave them.
		{"/v1/audio/translations?api-version=2025-04-01-preview", wavType, string(wav),
			"/openai/v1/audio/translations?api-version=preview", string(wantWav)},
		{"/v1/audio/translations?api-version=latest", wavType, string(wav),
			"/openai/v1/audio/translations?api-version=latest", string(wantWav)},
		{"/v1/files?a=1&api-version=2024-10-21&b=2", "", "",
			"/openai/v1/files?a=1&b=2", ""},
		{"/v1/files?api-version=v1", "", "",
			"/openai/v1/files?api-version=v1", ""},
		{"/v1/audio/speech", "application/json", `{"model":"tts-1","input":"hello","voice":"alloy"}`,
			"/openai/v1/audio/speech?api-version=preview", `{"model":"tts-1","input":"hello","voice":"alloy"}`},
		{"/v1/images/generations", "application/json", `{"model":"dall-e-3","prompt":"a cat"}`,
			"/openai/v1/images/generations?api-version=preview", `{"model":"dalle3","prompt":"a cat"}`},
		{"/v1/images/edits", imgType, string(img),
			"/openai/v1/images/edits?api-version=preview", string(img)},
		{"/v1/engines/gpt-4o/chat/completions", "application/json", `{"messages":[]}`,
			"/openai/v1/chat/completions", `{"model":"gpt4o-prod","messages":[]}`},
		{"/engines/gpt-4o/completions", "application/json", ` { } `,
			"/openai/v1/completions", ` {"model":"gpt4o-prod" } `},
		{"/v1/engines/gpt-4o/embeddings", "application/json", `{"input":"x","model":"ignored"}`,
			"/openai/v1/embeddings", `{"input":"x","model":"gpt4o-prod"}`},
		{"/v1/files?purpose=batch", "", "",
			"/openai/v1/files?purpose=batch", ""},
		{"/v1/responses", "application/json", `{"model":"gpt-4o","input":"hi"}`,
			"/openai/v1/responses", `{"model":"gpt4o-prod","input":"hi"}`},
		{"/v1/responses", "application/json", `{"model":"o3-mini","input":"hi"}`,
			"/openai/v1/responses", `{"model":"o3-mini","input":"hi"}`},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			fake := newFakeAzure(t, fakeTLS, nil)
			p := startProxy(t, fake, map[string]string{
				"AZURE_OPENAI_API_VER":      "v1",
				"AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=gpt4o-prod,text-embedding-3-small=emb-small,whisper=whisper-1,dall-e-3=dalle3",
			})
			method := http.MethodPost
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			} else {
				method = http.MethodGet
			}
			header := http.Header{"Authorization": {"Bearer " + testKey}}
			if tc.contentType != "" {
				header.Set("Content-Type", tc.contentType)
			}
			resp, got := p.do(t, method, tc.path, header, body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("client got %d %s", resp.StatusCode, got)
			}
			var wantBody []byte
			if tc.wantBody != "" {
				wantBody = []byte(tc.wantBody)
			}
			assertForwarded(t, fake.only(t), method, tc.wantURI, wantBody)
		})
	}
}

// TestV1AndDatedBackendsEachGetTheirShape fails over from a dated backend to
// a v1 one: the first gets the deployment in the path and the body as sent,
// the second OpenAI's path and the deployment in the body.
func TestV1AndDatedBackendsEachGetTheirShape(t *testing.T) {
	dated := newFakeAzure(t, fakeTLS, status(503, nil, `{}`))
	v1 := newFakeAzure(t, fakeTLS, ok200)
	p := startClocked(t, `{
  "backends": {"dated": {"endpoint": "{A}"}, "new": {"endpoint": "{B}", "api_version": "v1"}},
  "default_backend": "dated",
  "models": {"gpt-4o": [{"backend": "dated", "deployment": "old-dep"}, {"backend": "new", "deployment": "new-dep"}]}
}`, nil, dated, v1)
	body := `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`
	if resp, got := p.post(t, "/v1/chat/completions", body); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, got)
	}
	assertForwarded(t, dated.only(t), "POST", "/openai/deployments/old-dep/chat/completions?api-version=2024-10-21", []byte(body))
	assertForwarded(t, v1.only(t), "POST", "/openai/v1/chat/completions", []byte(strings.Replace(body, "gpt-4o", "new-dep", 1)))
}

func TestV1ConfigValue(t *testing.T) {
	for _, v := range []string{"v1", "2024-10-21"} {
		cfg, err := loadConfig(options{listen: ":0"}, mapEnv(map[string]string{"AZURE_OPENAI_ENDPOINT": "https://x", "AZURE_OPENAI_API_VER": v}))
		if err != nil || cfg.Routes.defaultBackend.apiVersion != v {
			t.Errorf("%s: %v", v, err)
		}
	}
}
