package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

func applySplices(body string, splices []bodySplice) string {
	lease := &bodyLease{buf: []byte(body), size: len(body)}
	out, _ := io.ReadAll(lease.reader(splices))
	return string(out)
}

func TestStreamUsageSplices(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"model":"m","stream":true}`, `{"stream_options":{"include_usage":true},"model":"m","stream":true}`},
		{`{"stream":true,"stream_options":null}`, `{"stream":true,"stream_options":{"include_usage":true}}`},
		{`{"stream":true,"stream_options":{}}`, `{"stream":true,"stream_options":{"include_usage":true}}`},
		{`{"stream":true,"stream_options":{ }}`, `{"stream":true,"stream_options":{"include_usage":true }}`},
		{`{"stream":true,"stream_options":{"x":1}}`, `{"stream":true,"stream_options":{"include_usage":true,"x":1}}`},
		{`{"stream":true,"stream_options":{"include_usage":false}}`, `{"stream":true,"stream_options":{"include_usage":true}}`},
		{`{"stream":true,"stream_options":{"include_usage" : null,"x":2}}`, `{"stream":true,"stream_options":{"include_usage" : true,"x":2}}`},
		// Nothing to do: not a stream, or the client asked itself.
		{`{"stream":false}`, ""},
		{`{"model":"m"}`, ""},
		{`{"stream":"true"}`, ""},
		{`{"stream":true,"stream_options":{"include_usage":true}}`, ""},
		// Shapes the proxy does not edit: Azure answers them.
		{`{"stream":true,"stream_options":[1]}`, ""},
		{`{"stream":true,"stream_options":{"include_usage":1}}`, ""},
	} {
		splices, err := streamUsageSplices([]byte(tc.body))
		if err != nil {
			t.Errorf("%s: %v", tc.body, err)
		}
		if tc.want == "" {
			if splices != nil {
				t.Errorf("%s: edited to %s, want no edit", tc.body, applySplices(tc.body, splices))
			}
			continue
		}
		got := applySplices(tc.body, splices)
		if got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.body, got, tc.want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("%s: edited body %s is not JSON", tc.body, got)
		}
	}
}

// A key given twice is an error: the caller refuses the body rather than
// let a stream go uncounted.
func TestStreamUsageSplicesRefuseRepeatedKeys(t *testing.T) {
	for _, body := range []string{
		`{"stream":true,"Stream":true}`,
		`{"stream":true,"stream_options":{},"Stream_Options":{}}`,
		`{"stream":true,"stream_options":{"include_usage":false,"INCLUDE_USAGE":true}}`,
	} {
		if splices, err := streamUsageSplices([]byte(body)); err == nil {
			t.Errorf("%s: no error (splices %v)", body, splices)
		}
	}
}

func TestHideAskedUsage(t *testing.T) {
	for _, tc := range []struct {
		event, want string // want "" : dropped
	}{
		{`data: {"id":"c","choices":[{"delta":{"content":"hi"}}],"usage":null}` + "\n\n", `data: {"id":"c","choices":[{"delta":{"content":"hi"}}]}` + "\n\n"},
		{`data: {"usage":null,"id":"c","choices":[]}` + "\n\n", `data: {"id":"c","choices":[]}` + "\n\n"},
		{`data:{"usage" : null}` + "\r\n\r\n", `data:{}` + "\r\n\r\n"},
		{`data: {"id":"c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}` + "\n\n", ""},
		{`data: {"id":"c","choices":[ ],"usage":{"prompt_tokens":9}}` + "\n\n", ""},
		// Usage on a chunk with content: the content stays, the usage goes.
		{`data: {"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":9}}` + "\n\n", `data: {"choices":[{"delta":{"content":"x"}}]}` + "\n\n"},
		// No top-level usage: as it came.
		{`data: {"choices":[{"delta":{"content":"\"usage\":null"}}]}` + "\n\n", `data: {"choices":[{"delta":{"content":"\"usage\":null"}}]}` + "\n\n"},
		{"data: [DONE]\n\n", "data: [DONE]\n\n"},
		{"event: x\ndata: {\"usage\":null}\n\n", "event: x\ndata: {\"usage\":null}\n\n"},
	} {
		var scratch []byte
		out, drop := hideAskedUsage([]byte(tc.event), &scratch)
		switch {
		case tc.want == "" && !drop:
			t.Errorf("%q: kept as %q, want dropped", tc.event, out)
		case tc.want != "" && (drop || string(out) != tc.want):
			t.Errorf("%q: got %q (drop %v), want %q", tc.event, out, drop, tc.want)
		}
	}
}

// azureUsageStream is a chat stream as Azure sends it when asked for usage:
// "usage": null on every chunk, and the usage chunk before [DONE].
const azureUsageStream = azureFirstChunk +
	`data: {"choices":[{"delta":{"content":"Hi"},"finish_reason":null,"index":0}],"created":1,"id":"c","model":"gpt-4o","object":"chat.completion.chunk","usage":null}` + "\n\n" +
	`data: {"choices":[{"delta":{},"finish_reason":"stop","index":0}],"created":1,"id":"c","model":"gpt-4o","object":"chat.completion.chunk","usage":null}` + "\n\n" +
	`data: {"choices":[],"created":1,"id":"c","model":"gpt-4o","object":"chat.completion.chunk","usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}` + "\n\n" +
	doneEvent

// azurePlainStream is the same stream when not asked.
const azurePlainStream = azureFirstChunk +
	`data: {"choices":[{"delta":{"content":"Hi"},"finish_reason":null,"index":0}],"created":1,"id":"c","model":"gpt-4o","object":"chat.completion.chunk"}` + "\n\n" +
	`data: {"choices":[{"delta":{},"finish_reason":"stop","index":0}],"created":1,"id":"c","model":"gpt-4o","object":"chat.completion.chunk"}` + "\n\n" +
	doneEvent

// fakeStreamingAzure streams azureUsageStream when the body asks for usage,
// azurePlainStream when it does not.
func fakeStreamingAzure(t *testing.T) *fakeAzure {
	return newFakeAzure(t, fakeTLS, func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			StreamOptions *struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		json.Unmarshal(readAllBody(r), &body)
		w.Header().Set("Content-Type", "text/event-stream")
		if body.StreamOptions != nil && body.StreamOptions.IncludeUsage {
			io.WriteString(w, azureUsageStream)
		} else {
			io.WriteString(w, azurePlainStream)
		}
	})
}

func TestStreamCountedByAskingForUsage(t *testing.T) {
	// What the client sees, as OpenAI sends it: without Azure's prompt
	// filter chunk, and with the usage chunk only when it asked.
	asked := strings.TrimPrefix(azureUsageStream, azureFirstChunk)
	notAsked := strings.TrimPrefix(azurePlainStream, azureFirstChunk)
	for _, api := range []string{datedAPIVersion, "v1"} {
		for _, tc := range []struct {
			name, body, upstreamOptions, want string
		}{
			{"no stream_options", `{"model":"gpt-4o","stream":true,"messages":[]}`, `{"include_usage":true}`, notAsked},
			{"include_usage false", `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false}}`, `{"include_usage":true}`, notAsked},
			{"include_usage true", `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}`, `{"include_usage":true}`, asked},
		} {
			t.Run(api+"/"+tc.name, func(t *testing.T) {
				fake := fakeStreamingAzure(t)
				p := startClocked(t, fmt.Sprintf(clientsConfig, `{"tokens_per_minute": 100000}`), mergeEnv(clientsEnv, map[string]string{"AZURE_OPENAI_API_VER": api}), fake)
				resp, body := p.as(t, searchKey, "/v1/chat/completions", tc.body)
				if resp.StatusCode != 200 || string(body) != tc.want {
					t.Errorf("the client got %d:\n%s\nwant:\n%s", resp.StatusCode, body, tc.want)
				}
				var sent map[string]json.RawMessage
				if err := json.Unmarshal(fake.only(t).Body, &sent); err != nil {
					t.Fatalf("Azure got a body that is not JSON: %s", fake.only(t).Body)
				}
				if string(sent["stream_options"]) != tc.upstreamOptions {
					t.Errorf("Azure got stream_options %s, want %s (body %s)", sent["stream_options"], tc.upstreamOptions, fake.only(t).Body)
				}
				if api == "v1" && string(sent["model"]) != `"dep-4o"` {
					t.Errorf("v1: the model in the body is %s, want the deployment", sent["model"])
				}
				if got := p.state.clients.entry(searchClient(p), p.clock.Now()).Today; got.PromptTokens != 9 || got.CompletionTokens != 2 {
					t.Errorf("charged %+v, want the stream's usage (9 and 2)", got)
				}
			})
		}
	}
}

// An older dated api-version takes no stream_options: the body goes as
// sent, and the stream is charged by estimate.
func TestStreamEstimatedWhereUsageCannotBeAsked(t *testing.T) {
	fake := fakeStreamingAzure(t)
	p := startClocked(t, fmt.Sprintf(clientsConfig, `{"tokens_per_minute": 100000}`), mergeEnv(clientsEnv, map[string]string{"AZURE_OPENAI_API_VER": "2024-06-01"}), fake)
	const body = `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hello there"}]}`
	resp, got := p.as(t, searchKey, "/v1/chat/completions", body)
	if resp.StatusCode != 200 || string(got) != strings.TrimPrefix(azurePlainStream, azureFirstChunk) {
		t.Errorf("%d %s", resp.StatusCode, got)
	}
	if sent := string(fake.only(t).Body); sent != body {
		t.Errorf("Azure got %s, want the body as sent", sent)
	}
	today := p.state.clients.entry(searchClient(p), p.clock.Now()).Today
	if want := int64(len(body)+3) / 4; today.PromptTokens != want || today.CompletionTokens != 3 {
		t.Errorf("charged %+v, want an estimate of %d prompt tokens and 3 (events passed on)", today, want)
	}
}

func searchClient(p *clockedProxy) *client {
	return p.state.routes.Load().clientKeys.lookup(searchKey)
}

func mergeEnv(a, b map[string]string) map[string]string {
	m := map[string]string{}
	for k, v := range a {
		m[k] = v
	}
	for k, v := range b {
		m[k] = v
	}
	return m
}
