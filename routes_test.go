package main

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

func TestResolveRoute(t *testing.T) {
	cases := []struct {
		path   string
		want   route
		status int // non-zero: an error with this status
	}{
		{"/v1/chat/completions", route{kind: routeDeployment, op: "chat/completions"}, 0},
		{"/chat/completions", route{kind: routeDeployment, op: "chat/completions"}, 0},
		{"/v1/audio/speech", route{kind: routeDeployment, op: "audio/speech", family: apiPreview}, 0},
		{"/images/edits", route{kind: routeDeployment, op: "images/edits", family: apiPreview}, 0},
		{"/v1/engines/gpt-4/completions", route{kind: routeEngine, op: "completions", model: "gpt-4"}, 0},
		{"/v1/engines/a%2Fb/completions", route{}, 400},
		{"/v1/files/..%2F..%2Fadmin", route{}, 400},
		{"/v1/files/..%5C..%5Cadmin", route{}, 400},
		{"/v1/files/a\\b", route{}, 400},
		{"/v1/files/a%00", route{}, 400},
		{"/v1/files/file%20a", route{kind: routePassthrough, op: "files/file%20a"}, 0},
		{"/v1/engines/gpt-4/search", route{}, 404},
		{"/v1/engines/gpt-4", route{}, 404},
		{"/v1/models", route{kind: routeModelList}, 0},
		{"/models/gpt-4o", route{kind: routeModel, model: "gpt-4o"}, 0},
		{"/v1/models/openai/gpt-4o", route{kind: routeModel, model: "openai/gpt-4o"}, 0},
		{"/v1/files/file-1/content", route{kind: routePassthrough, op: "files/file-1/content"}, 0},
		{"/v1/vector_stores/v/files", route{kind: routePassthrough, op: "vector_stores/v/files", family: apiPreview}, 0},
		{"/v1/videos/video_1/content", route{kind: routePassthrough, op: "videos/video_1/content", family: apiV1Only}, 0},
		{"/videos", route{}, 404},
		{"/v1/conversations/c/items", route{kind: routePassthrough, op: "conversations/c/items", family: apiV1Only}, 0},
		{"/v1/responses/compact", route{kind: routePassthrough, op: "responses/compact", family: apiV1Only}, 0},
		{"/v1/responses/resp_1", route{kind: routePassthrough, op: "responses/resp_1", family: apiPreview}, 0},
		{"/v1/chat/completions/c1/messages", route{kind: routePassthrough, op: "chat/completions/c1/messages", family: apiV1Only}, 0},
		{"/v1/realtime/sessions", route{kind: routePassthrough, op: "realtime/sessions", family: apiPreview}, 0},
		{"/realtime/sessions", route{}, 404},
		{"/v1/moderations", route{kind: routePassthrough, op: "moderations"}, 0},
		{"/moderations", route{}, 404},
		{"/v1/chat%2Fcompletions", route{}, 400},
		{"/v1", route{}, 404},
		{"/v1/", route{}, 404},
		{"/", route{}, 404},
		{"/v1//files", route{}, 404},
		{"/v1/files/", route{}, 404},
		{"/v1/files/..", route{}, 400},
		{"/v1/files/%2E%2e", route{}, 400},
		{"/v1/./files", route{}, 400},
		{"/v1/files/%zz", route{}, 400},
	}
	for _, tc := range cases {
		full, e := resolvePath(tc.path)
		// The rest of what the route holds is pinned in TestRouteFacts.
		type pathFacts struct {
			kind   routeKind
			op     string
			model  string
			family apiFamily
		}
		got := pathFacts{full.kind, full.op, full.model, full.family}
		want := pathFacts{tc.want.kind, tc.want.op, tc.want.model, tc.want.family}
		switch {
		case tc.status != 0 && (e == nil || e.Status != tc.status):
			t.Errorf("%s: got %+v %v, want status %d", tc.path, got, e, tc.status)
		case tc.status == 0 && (e != nil || got != want):
			t.Errorf("%s: got %+v %v, want %+v", tc.path, got, e, tc.want)
		}
	}
}

func TestWithAPIVersion(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", "api-version=V"},
		{"limit=2", "limit=2&api-version=V"},
		{"api-version=2025-01-01-preview&limit=2", "api-version=2025-01-01-preview&limit=2"},
		{"limit=2&api-version=x", "limit=2&api-version=x"},
	}
	for _, tc := range cases {
		rt, e := resolveRoute(httptest.NewRequest("POST", "/v1/chat/completions?"+tc.in, nil))
		if e != nil {
			t.Fatal(e)
		}
		if got := withAPIVersion(rt, "V"); got != tc.want {
			t.Errorf("withAPIVersion(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if _, e := resolveRoute(httptest.NewRequest("POST", "/v1/chat/completions?a=%zz", nil)); e == nil || e.Status != http.StatusBadRequest {
		t.Errorf("bad query: %v, want 400", e)
	}
}

// TestRouteFacts pins what the request line decides once for the whole
// request: the unescaped operation, chat streams, realtime and its model.
func TestRouteFacts(t *testing.T) {
	rt, _ := resolveRoute(httptest.NewRequest("GET", "/v1/files/file%20a/content?limit=2", nil))
	if rt.opPath != "files/file a/content" || rt.op != "files/file%20a/content" || rt.query.Get("limit") != "2" || rt.chat {
		t.Errorf("files route: %+v", rt)
	}
	for path, chat := range map[string]bool{"/v1/chat/completions": true, "/v1/engines/m/completions": true, "/v1/embeddings": false, "/v1/responses": false} {
		if rt, _ := resolveRoute(httptest.NewRequest("POST", path, nil)); rt.chat != chat {
			t.Errorf("%s: chat = %v, want %v", path, rt.chat, chat)
		}
	}
	ws := httptest.NewRequest("GET", "/v1/realtime?model=gpt-4o-realtime", nil)
	ws.Header.Set("Connection", "Upgrade")
	ws.Header.Set("Upgrade", "websocket")
	if rt, e := resolveRoute(ws); e != nil || rt.kind != routeRealtime || rt.model != "gpt-4o-realtime" || rt.label() != "realtime" {
		t.Errorf("realtime handshake: %+v %v", rt, e)
	}
	ws.URL.RawQuery = ""
	if _, e := resolveRoute(ws); e == nil || e.Status != http.StatusBadRequest {
		t.Errorf("realtime without a model: %v, want 400", e)
	}
	if rt, _ := resolveRoute(httptest.NewRequest("GET", "/v1/realtime?model=m", nil)); rt.kind != routePassthrough {
		t.Errorf("realtime without an upgrade: kind %v, want passthrough", rt.kind)
	}
	if _, e := resolveRoute(httptest.NewRequest("GET", "/v1/embeddings", nil)); e == nil || e.Status != http.StatusMethodNotAllowed || e.header.Get("Allow") != "POST" {
		t.Errorf("GET embeddings: %v, want 405 with Allow: POST", e)
	}
	if _, e := resolveRoute(httptest.NewRequest("PUT", "/v1/chat/completions", nil)); e == nil || e.Status != http.StatusMethodNotAllowed || e.header.Get("Allow") != "GET, POST" {
		t.Errorf("PUT chat: %v, want 405 with Allow: GET, POST", e)
	}
}

func TestUpstreamURLKeepsPrefixAndEscaping(t *testing.T) {
	for _, tc := range []struct{ endpoint, suffix, want string }{
		{"https://r.openai.azure.com", "/openai/files/a%20b", "https://r.openai.azure.com/openai/files/a%20b?api-version=V"},
		{"https://gw.example.com/team%20a/aoai", "/openai/deployments/d/embeddings", "https://gw.example.com/team%20a/aoai/openai/deployments/d/embeddings?api-version=V"},
	} {
		ep, _, _ := parseEndpoint(tc.endpoint + "/")
		path, _ := url.PathUnescape(tc.suffix)
		if u := upstreamURL(ep, path, tc.suffix, "api-version=V"); u.String() != tc.want {
			t.Errorf("upstreamURL(%s, %s) = %v, want %s", tc.endpoint, tc.suffix, u, tc.want)
		}
	}
}
