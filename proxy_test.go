package main

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// assertForwarded checks what reached the fake: method, exact path and query,
// Azure's api-key in place of the client's credentials, and the body.
func assertForwarded(t *testing.T, got recordedRequest, method, uri string, body []byte) {
	t.Helper()
	if got.Method != method {
		t.Errorf("upstream method = %s, want %s", got.Method, method)
	}
	if got.EscapedURI != uri {
		t.Errorf("upstream URI = %s\n                    want %s", got.EscapedURI, uri)
	}
	if k := got.Header.Get("api-key"); k != testKey {
		t.Errorf("upstream api-key = %q, want the client's key", k)
	}
	for _, h := range []string{"Authorization", "Cookie"} {
		if v := got.Header.Values(h); len(v) > 0 {
			t.Errorf("upstream got the client's %s header: %q", h, v)
		}
	}
	if !bytes.Equal(got.Body, body) {
		t.Errorf("upstream body differs:\n got %q\nwant %q", shortBytes(got.Body), shortBytes(body))
	}
}

func shortBytes(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

func TestDeploymentRoutes(t *testing.T) {
	wav, wavType := multipartBody(t, 2048, "model", "whisper", "response_format", "json")
	img, imgType := multipartBody(t, 2048, "prompt", "a cat", "model", "gpt-image-1")
	cases := []struct {
		path, contentType, body string
		wantURI                 string
	}{
		{"/v1/chat/completions", "application/json", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`,
			"/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"},
		{"/chat/completions", "application/json", `{"model":"gpt-4o","messages":[]}`,
			"/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"},
		{"/v1/completions", "application/json", `{"prompt":"x","model":"gpt-35-turbo-instruct"}`,
			"/openai/deployments/gpt-35-turbo-instruct/completions?api-version=2024-10-21"},
		{"/completions", "application/json", `{"prompt":"x","model":"gpt-3.5-turbo-instruct"}`,
			"/openai/deployments/instruct/completions?api-version=2024-10-21"},
		{"/v1/embeddings", "application/json", `{"input":["a","b"],"model":"text-embedding-3-small"}`,
			"/openai/deployments/emb-small/embeddings?api-version=2024-10-21"},
		{"/embeddings", "", `{"input":"a","model":"text-embedding-3-small"}`,
			"/openai/deployments/emb-small/embeddings?api-version=2024-10-21"},
		{"/v1/audio/transcriptions", wavType, string(wav),
			"/openai/deployments/whisper-1/audio/transcriptions?api-version=2024-10-21"},
		{"/v1/audio/translations", wavType, string(wav),
			"/openai/deployments/whisper-1/audio/translations?api-version=2024-10-21"},
		{"/v1/audio/speech", "application/json", `{"model":"tts-1","input":"hello","voice":"alloy"}`,
			"/openai/deployments/tts-1/audio/speech?api-version=2025-04-01-preview"},
		{"/v1/images/generations", "application/json", `{"model":"dall-e-3","prompt":"a cat","n":1}`,
			"/openai/deployments/dalle3/images/generations?api-version=2024-10-21"},
		{"/v1/images/edits", imgType, string(img),
			"/openai/deployments/gpt-image-1/images/edits?api-version=2025-04-01-preview"},
		{"/v1/engines/gpt-4o/chat/completions", "application/json", `{"messages":[]}`,
			"/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"},
		{"/engines/davinci/completions", "application/json", `{"prompt":"x"}`,
			"/openai/deployments/davinci/completions?api-version=2024-10-21"},
		{"/v1/engines/text-embedding-3-small/embeddings", "application/json", `{"input":"x"}`,
			"/openai/deployments/emb-small/embeddings?api-version=2024-10-21"},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			fake := newFakeAzure(t, fakeTLS, nil)
			p := startProxy(t, fake, map[string]string{
				"AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=gpt4o-prod, gpt-3.5-turbo-instruct=instruct,text-embedding-3-small=emb-small,whisper=whisper-1,dall-e-3=dalle3",
			})
			header := http.Header{"Authorization": {"Bearer " + testKey}, "Cookie": {"session=abc"}}
			if tc.contentType != "" {
				header.Set("Content-Type", tc.contentType)
			}
			resp, body := p.do(t, http.MethodPost, tc.path, header, []byte(tc.body))
			if resp.StatusCode != http.StatusOK || string(body) != `{"id":"chatcmpl-1","object":"chat.completion"}` {
				t.Fatalf("client got %d %s", resp.StatusCode, body)
			}
			if got := resp.Header.Get("apim-request-id"); got != "apim-123" {
				t.Errorf("apim-request-id = %q, want Azure's header passed through", got)
			}
			got := fake.only(t)
			assertForwarded(t, got, http.MethodPost, tc.wantURI, []byte(tc.body))
			if got.ProtoMajor != 2 {
				t.Errorf("upstream protocol HTTP/%d, want HTTP/2 to a TLS upstream", got.ProtoMajor)
			}
			if tc.contentType != "" && got.Header.Get("Content-Type") != tc.contentType {
				t.Errorf("upstream Content-Type = %q, want %q", got.Header.Get("Content-Type"), tc.contentType)
			}
		})
	}
}

func TestPassthroughRoutes(t *testing.T) {
	cases := []struct {
		name, method, path, contentType, body string
		wantURI, wantBody                     string
	}{
		{"files list keeps the client's query", "GET", "/v1/files?purpose=batch&limit=2", "", "",
			"/openai/files?purpose=batch&limit=2&api-version=2024-10-21", ""},
		{"file content, escaping kept", "GET", "/v1/files/file%3Aa%20b/content", "", "",
			"/openai/files/file%3Aa%20b/content?api-version=2024-10-21", ""},
		{"files without /v1", "DELETE", "/files/file-1", "", "",
			"/openai/files/file-1?api-version=2024-10-21", ""},
		{"batches", "POST", "/v1/batches", "application/json", `{"input_file_id":"file-1","endpoint":"/chat/completions","completion_window":"24h"}`,
			"/openai/batches?api-version=2024-10-21", `{"input_file_id":"file-1","endpoint":"/chat/completions","completion_window":"24h"}`},
		// A fine-tuning job's model is a base model, not a deployment: it goes as sent.
		{"fine tuning keeps the base model", "POST", "/v1/fine_tuning/jobs", "application/json", `{"training_file":"file-1","model":"gpt-4o"}`,
			"/openai/fine_tuning/jobs?api-version=2024-10-21", `{"training_file":"file-1","model":"gpt-4o"}`},
		{"responses: only the model value changes", "POST", "/v1/responses", "application/json",
			"{ \"input\" : \"say \\\"model\\\"\",\n  \"model\"\t:  \"gpt-4o\" , \"metadata\":{\"model\":\"gpt-4o\"}}",
			"/openai/responses?api-version=2025-04-01-preview",
			"{ \"input\" : \"say \\\"model\\\"\",\n  \"model\"\t:  \"gpt4o-prod\" , \"metadata\":{\"model\":\"gpt-4o\"}}"},
		{"responses: unmapped model untouched", "POST", "/responses", "application/json", `{"model":"o3-mini","input":"x"}`,
			"/openai/responses?api-version=2025-04-01-preview", `{"model":"o3-mini","input":"x"}`},
		{"vector stores", "GET", "/v1/vector_stores/vs_1/files", "", "",
			"/openai/vector_stores/vs_1/files?api-version=2025-04-01-preview", ""},
		{"uploads", "POST", "/v1/uploads", "application/json", `{"purpose":"batch","bytes":1}`,
			"/openai/uploads?api-version=2024-10-21", `{"purpose":"batch","bytes":1}`},
		{"any other /v1 path", "POST", "/v1/moderations", "application/json", `{"input":"x"}`,
			"/openai/moderations?api-version=2024-10-21", `{"input":"x"}`},
		{"stored completion by id (v1 only)", "GET", "/v1/chat/completions/chatcmpl-1", "", "",
			"/openai/v1/chat/completions/chatcmpl-1", ""},
		{"client api-version wins", "GET", "/v1/files?api-version=2025-03-01-preview", "", "",
			"/openai/files?api-version=2025-03-01-preview", ""},
		{"multipart upload untouched", "POST", "/v1/files", "multipart/form-data; boundary=x",
			"--x\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--x--\r\n",
			"/openai/files?api-version=2024-10-21", "--x\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--x--\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFakeAzure(t, fakeTLS, nil)
			p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=gpt4o-prod"})
			header := http.Header{"Api-Key": {testKey}}
			if tc.contentType != "" {
				header.Set("Content-Type", tc.contentType)
			}
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			resp, got := p.do(t, tc.method, tc.path, header, body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("client got %d %s", resp.StatusCode, got)
			}
			var wantBody []byte
			if tc.wantBody != "" {
				wantBody = []byte(tc.wantBody)
			}
			assertForwarded(t, fake.only(t), tc.method, tc.wantURI, wantBody)
		})
	}
}

func TestDeploymentRouteClientAPIVersionWinsAndQueryKept(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	p := startProxy(t, fake, nil)
	resp, body := p.postJSON(t, "/v1/chat/completions?api-version=2025-01-01-preview&foo=b%20r", `{"model":"gpt-4o"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
	got := fake.only(t)
	if want := "/openai/deployments/gpt-4o/chat/completions?api-version=2025-01-01-preview&foo=b%20r"; got.EscapedURI != want {
		t.Errorf("upstream URI = %s, want %s", got.EscapedURI, want)
	}
}

func TestEndpointPathPrefixAndPlainHTTP(t *testing.T) {
	fake := newFakeAzure(t, fakePlain, nil)
	p := startProxy(t, nil, map[string]string{
		"AZURE_OPENAI_ENDPOINT": fake.URL + "/gateway/aoai/",
		"AZURE_OPENAI_API_VER":  "2024-06-01",
	})
	resp, body := p.postJSON(t, "/v1/embeddings", `{"model":"emb","input":"x"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
	got := fake.only(t)
	if want := "/gateway/aoai/openai/deployments/emb/embeddings?api-version=2024-06-01"; got.EscapedURI != want {
		t.Errorf("upstream URI = %s, want %s", got.EscapedURI, want)
	}
	if want := strings.TrimPrefix(fake.URL, "http://"); got.Host != want {
		t.Errorf("upstream Host = %q, want the endpoint's %q, not the proxy's", got.Host, want)
	}
}

func TestMultipartModelAfterLargeFile(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_MODEL_MAPPER": "whisper-1=whisper-eu"})
	body, contentType := multipartBody(t, 8<<20, "language", "en", "model", "whisper-1")
	resp, got := p.do(t, http.MethodPost, "/v1/audio/transcriptions", http.Header{
		"Authorization": {"Bearer " + testKey}, "Content-Type": {contentType},
	}, body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d %s", resp.StatusCode, got)
	}
	assertForwarded(t, fake.only(t), http.MethodPost,
		"/openai/deployments/whisper-eu/audio/transcriptions?api-version=2024-10-21", body)
}

func TestHostileModelNamesNeverReachAzure(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	p := startProxy(t, fake, nil)
	for _, model := range []string{
		"../x", "a/b", "x?api-version=1", "%2e%2e", "..", ".", "x#y", "a b", "gpt\n4", "gpt\x00", "gpt\u00e9",
		"x&api-key=1", "@evil.example.com", strings.Repeat("a", 65), "",
	} {
		body, _ := jsonString(model)
		resp, got := p.postJSON(t, "/v1/chat/completions", `{"model":`+body+`}`)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("model %q: status %d, want 400", model, resp.StatusCode)
			continue
		}
		_, _, param, _ := openAIError(t, got)
		if param == nil || *param != "model" {
			t.Errorf("model %q: error param = %v, want model", model, param)
		}
	}
	for _, path := range []string{
		"/v1/engines/%2e%2e/completions", "/v1/engines/a%2Fb/completions", "/v1/engines/x%3Fa=1/completions",
		"/v1/engines/%2e/completions",
	} {
		resp, got := p.postJSON(t, path, `{}`)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d %s, want 400", path, resp.StatusCode, got)
		}
	}
	if n := len(fake.all()); n != 0 {
		t.Errorf("fake Azure received %d requests, want none", n)
	}
}

func TestBadInputAnsweredLocally(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_PROXY_MAX_BODY": "1000"})
	auth := http.Header{"Authorization": {"Bearer " + testKey}, "Content-Type": {"application/json"}}
	cases := []struct {
		name, method, path string
		header             http.Header
		body               string
		status             int
		code               string
	}{
		{"invalid JSON", "POST", "/v1/chat/completions", auth, `{"model":gpt-4o}`, 400, "invalid_json"},
		{"truncated JSON", "POST", "/v1/chat/completions", auth, `{"model":"gpt-4o","messages":[`, 400, "invalid_json"},
		{"trailing garbage", "POST", "/v1/chat/completions", auth, `{"model":"gpt-4o"} x`, 400, "invalid_json"},
		{"not an object", "POST", "/v1/chat/completions", auth, `["gpt-4o"]`, 400, "invalid_json"},
		{"empty body", "POST", "/v1/chat/completions", auth, ``, 400, "invalid_json"},
		{"missing model", "POST", "/v1/chat/completions", auth, `{"messages":[]}`, 400, "missing_model"},
		{"model not a string", "POST", "/v1/embeddings", auth, `{"model":4}`, 400, "invalid_model"},
		{"multipart without model", "POST", "/v1/audio/transcriptions",
			http.Header{"Api-Key": {testKey}, "Content-Type": {"multipart/form-data; boundary=x"}},
			"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc\r\n--x--\r\n", 400, "missing_model"},
		{"broken multipart", "POST", "/v1/audio/transcriptions",
			http.Header{"Api-Key": {testKey}, "Content-Type": {"multipart/form-data; boundary=x"}}, "garbage", 400, "invalid_multipart"},
		{"passthrough invalid JSON", "POST", "/v1/responses", auth, `{"model":`, 400, "invalid_json"},
		{"no key", "POST", "/v1/chat/completions", http.Header{"Content-Type": {"application/json"}}, `{"model":"gpt-4o"}`, 401, "missing_api_key"},
		{"basic auth is no key", "POST", "/v1/chat/completions", http.Header{"Authorization": {"Basic eDp5"}}, `{"model":"gpt-4o"}`, 401, "missing_api_key"},
		{"no key on models", "GET", "/v1/models", nil, "", 401, "missing_api_key"},
		{"unknown route", "POST", "/v2/chat/completions", auth, `{"model":"gpt-4o"}`, 404, "unknown_url"},
		{"unknown route without /v1", "GET", "/dashboard", auth, "", 404, "unknown_url"},
		{"root", "GET", "/", auth, "", 404, "unknown_url"},
		{"dot segments", "GET", "/v1/files/../../admin", auth, "", 400, "invalid_path"},
		{"encoded dot segments", "GET", "/v1/files/%2e%2e/x", auth, "", 400, "invalid_path"},
		{"encoded slashes", "GET", "/v1/files/..%2f..%2fmanagement", auth, "", 400, "invalid_path"},
		{"GET on a deployment route", "GET", "/v1/embeddings", auth, "", 405, "method_not_allowed"},
		{"PUT on chat completions", "PUT", "/v1/chat/completions", auth, "", 405, "method_not_allowed"},
		{"assistants, retired by Azure", "POST", "/v1/assistants", auth, `{"model":"gpt-4o"}`, 404, "api_retired"},
		{"threads, retired by Azure", "POST", "/v1/threads/thread_1/runs", auth, `{}`, 404, "api_retired"},
		{"body too large", "POST", "/v1/chat/completions", auth, `{"model":"gpt-4o","x":"` + strings.Repeat("a", 1000) + `"}`, 413, "request_too_large"},
		{"unknown model id", "GET", "/v1/models/gpt-5", auth, "", 404, "model_not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := p.do(t, tc.method, tc.path, tc.header, []byte(tc.body))
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			_, _, _, code := openAIError(t, body)
			if code == nil || *code != tc.code {
				t.Errorf("code = %v, want %s", code, tc.code)
			}
		})
	}
	if n := len(fake.all()); n != 0 {
		t.Errorf("fake Azure received %d requests, want none", n)
	}
}

func TestModelsAnsweredLocally(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=a, gpt-4o-mini=b"})
	auth := http.Header{"Authorization": {"Bearer " + testKey}}
	resp, body := p.do(t, "GET", "/v1/models", auth, nil)
	var list struct {
		Object string        `json:"object"`
		Data   []modelObject `json:"data"`
	}
	if resp.StatusCode != 200 || jsonUnmarshal(body, &list) != nil || list.Object != "list" || len(list.Data) != 2 {
		t.Fatalf("GET /v1/models = %d %s", resp.StatusCode, body)
	}
	for i, id := range []string{"gpt-4o", "gpt-4o-mini"} {
		m := list.Data[i]
		if m.ID != id || m.Object != "model" || m.Created == 0 || m.OwnedBy == "" {
			t.Errorf("data[%d] = %+v", i, m)
		}
	}
	resp, body = p.do(t, "GET", "/models/gpt-4o-mini", auth, nil)
	var m modelObject
	if resp.StatusCode != 200 || jsonUnmarshal(body, &m) != nil || m.ID != "gpt-4o-mini" || m.Object != "model" {
		t.Fatalf("GET /models/gpt-4o-mini = %d %s", resp.StatusCode, body)
	}
	if n := len(fake.all()); n != 0 {
		t.Errorf("fake Azure received %d requests, want none", n)
	}
}

func TestConnectionHeaderCannotStripAPIKey(t *testing.T) {
	fake := newFakeAzure(t, fakePlain, nil)
	p := startProxy(t, nil, map[string]string{"AZURE_OPENAI_ENDPOINT": fake.URL})
	resp, body := p.do(t, "POST", "/v1/chat/completions", http.Header{
		"Authorization": {"Bearer " + testKey}, "Connection": {"api-key, Api-Key, authorization"},
		"Content-Type": {"application/json"},
	}, []byte(`{"model":"m"}`))
	if resp.StatusCode != 200 {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
	if got := fake.only(t).Header.Get("api-key"); got != testKey {
		t.Errorf("upstream api-key = %q after a hostile Connection header", got)
	}
}

func TestAzureAnswersPassThroughUnchanged(t *testing.T) {
	azureBody := `{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation have exceeded call rate limit."}}`
	fake := newFakeAzure(t, fakeTLS, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Retry-After", "7")
		h.Set("retry-after-ms", "6500")
		h.Set("apim-request-id", "9f1c")
		h.Set("x-ms-region", "Sweden Central")
		h.Set("Access-Control-Allow-Origin", "https://evil.example")
		w.WriteHeader(http.StatusTooManyRequests)
		w.Write([]byte(azureBody))
	})
	p := startProxy(t, fake, nil)
	resp, body := p.postJSON(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	if resp.StatusCode != 429 || string(body) != azureBody {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
	for k, want := range map[string]string{"Retry-After": "7", "Retry-After-Ms": "6500", "Apim-Request-Id": "9f1c", "X-Ms-Region": "Sweden Central"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if got := resp.Header.Values("Access-Control-Allow-Origin"); len(got) != 0 {
		t.Errorf("Azure's CORS header reached a client that sent no Origin: %q", got)
	}
	waitForLog(t, p, "status=429")
	if !contains(p.logs.String(), "apim_request_id=9f1c") {
		t.Errorf("access log lacks apim-request-id:\n%s", p.logs)
	}
}

// TestModelsWhereChatWorks: /v1/models answers whoever chat answers (with a
// server-side key, keyless clients too), and ids may hold slashes.
func TestModelsWhereChatWorks(t *testing.T) {
	p := startProxy(t, newFakeAzure(t, fakeTLS, nil), map[string]string{"AZURE_OPENAI_API_KEY": "server", "AZURE_OPENAI_MODEL_MAPPER": "openai/gpt-4o=gpt4o"})
	if resp, body := p.do(t, "GET", "/v1/models", nil, nil); resp.StatusCode != 200 || !strings.Contains(string(body), `"openai/gpt-4o"`) {
		t.Errorf("/v1/models without a key: %d %s", resp.StatusCode, body)
	}
	if resp, body := p.do(t, "GET", "/v1/models/openai/gpt-4o", nil, nil); resp.StatusCode != 200 || !strings.Contains(string(body), `"id":"openai/gpt-4o"`) {
		t.Errorf("/v1/models/openai/gpt-4o: %d %s", resp.StatusCode, body)
	}
	pass := startProxy(t, newFakeAzure(t, fakeTLS, nil), nil)
	if resp, _ := pass.do(t, "GET", "/v1/models", nil, nil); resp.StatusCode != 401 {
		t.Errorf("pass-through mode, no key: %d, want 401 as for chat", resp.StatusCode)
	}
}
