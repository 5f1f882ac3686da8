package main

import (
	"net/http"
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
		{"/v1/models/a/b", route{}, 404},
		{"/v1/files/file-1/content", route{kind: routePassthrough, op: "files/file-1/content"}, 0},
		{"/v1/threads/t/runs", route{kind: routePassthrough, op: "threads/t/runs", family: apiPreview}, 0},
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
		got, e := resolveRoute(tc.path)
		switch {
		case tc.status != 0 && (e == nil || e.Status != tc.status):
			t.Errorf("%s: got %+v %v, want status %d", tc.path, got, e, tc.status)
		case tc.status == 0 && (e != nil || got != tc.want):
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
		if got := withAPIVersion(tc.in, "V"); got != tc.want {
			t.Errorf("withAPIVersion(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if e := checkQuery("a=%zz"); e == nil || e.Status != http.StatusBadRequest {
		t.Errorf("bad query: %v, want 400", e)
	}
}

func TestUpstreamURLKeepsPrefixAndEscaping(t *testing.T) {
	for _, tc := range []struct{ endpoint, suffix, want string }{
		{"https://r.openai.azure.com", "/openai/files/a%20b", "https://r.openai.azure.com/openai/files/a%20b?api-version=V"},
		{"https://gw.example.com/team%20a/aoai", "/openai/deployments/d/embeddings", "https://gw.example.com/team%20a/aoai/openai/deployments/d/embeddings?api-version=V"},
	} {
		ep, _ := parseEndpoint("X", tc.endpoint+"/")
		u, err := upstreamURL(ep, tc.suffix, "api-version=V")
		if err != nil || u.String() != tc.want {
			t.Errorf("upstreamURL(%s, %s) = %v %v, want %s", tc.endpoint, tc.suffix, u, err, tc.want)
		}
	}
}
