package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestTodaysAzureRoutes sends every route whose Azure shape depends on the
// mode through a proxy on the v1 default and one with a dated api-version,
// and checks what reaches Azure: method, path and query exactly, the key as
// api-key, and the body with the deployment where Azure reads it.
func TestTodaysAzureRoutes(t *testing.T) {
	const mapper = "gpt-4o=gpt4o-prod,tts-1=tts-prod,sora-2=sora-prod,sora=sora1-prod,gpt-realtime=rt-prod,text-embedding-3-small=emb-prod"
	video, videoType := multipartBody(t, 64, "prompt", "a cat", "model", "sora-2")
	videoMapped := bytes.Replace(video, []byte("\r\nsora-2\r\n"), []byte("\r\nsora-prod\r\n"), 1)
	type want struct{ uri, body string }
	cases := []struct {
		name, method, path, contentType, body string
		dated, v1                             want
	}{
		{"chat", "POST", "/v1/chat/completions", "application/json", `{"model":"gpt-4o","messages":[]}`,
			want{"/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21", `{"model":"gpt-4o","messages":[]}`},
			want{"/openai/v1/chat/completions", `{"model":"gpt4o-prod","messages":[]}`}},
		{"embeddings", "POST", "/v1/embeddings", "application/json", `{"input":"x","model":"text-embedding-3-small"}`,
			want{"/openai/deployments/emb-prod/embeddings?api-version=2024-10-21", `{"input":"x","model":"text-embedding-3-small"}`},
			want{"/openai/v1/embeddings", `{"input":"x","model":"emb-prod"}`}},
		{"speech (v1 preview)", "POST", "/v1/audio/speech", "application/json", `{"model":"tts-1","input":"hi"}`,
			want{"/openai/deployments/tts-prod/audio/speech?api-version=2025-04-01-preview", `{"model":"tts-1","input":"hi"}`},
			want{"/openai/v1/audio/speech?api-version=preview", `{"model":"tts-prod","input":"hi"}`}},
		{"files", "GET", "/v1/files?purpose=batch", "", "",
			want{"/openai/files?purpose=batch&api-version=2024-10-21", ""},
			want{"/openai/v1/files?purpose=batch", ""}},
		{"responses", "POST", "/v1/responses", "application/json", `{"model":"gpt-4o","input":"x"}`,
			want{"/openai/responses?api-version=2025-04-01-preview", `{"model":"gpt4o-prod","input":"x"}`},
			want{"/openai/v1/responses", `{"model":"gpt4o-prod","input":"x"}`}},
		// v1 only, whatever the backend's api-version.
		{"stored completions list", "GET", "/v1/chat/completions?limit=2&order=desc", "", "",
			want{"/openai/v1/chat/completions?limit=2&order=desc", ""}, want{"/openai/v1/chat/completions?limit=2&order=desc", ""}},
		{"stored completion", "GET", "/v1/chat/completions/chatcmpl-1", "", "",
			want{"/openai/v1/chat/completions/chatcmpl-1", ""}, want{"/openai/v1/chat/completions/chatcmpl-1", ""}},
		{"stored completion update", "POST", "/v1/chat/completions/chatcmpl-1", "application/json", `{"metadata":{"a":"b"}}`,
			want{"/openai/v1/chat/completions/chatcmpl-1", `{"metadata":{"a":"b"}}`}, want{"/openai/v1/chat/completions/chatcmpl-1", `{"metadata":{"a":"b"}}`}},
		{"stored completion delete", "DELETE", "/v1/chat/completions/chatcmpl-1", "", "",
			want{"/openai/v1/chat/completions/chatcmpl-1", ""}, want{"/openai/v1/chat/completions/chatcmpl-1", ""}},
		{"stored completion messages", "GET", "/v1/chat/completions/chatcmpl-1/messages?after=m1", "", "",
			want{"/openai/v1/chat/completions/chatcmpl-1/messages?after=m1", ""}, want{"/openai/v1/chat/completions/chatcmpl-1/messages?after=m1", ""}},
		{"video create (Sora 2, multipart)", "POST", "/v1/videos", videoType, string(video),
			want{"/openai/v1/videos", string(videoMapped)}, want{"/openai/v1/videos", string(videoMapped)}},
		{"video content", "GET", "/v1/videos/video_1/content?variant=video", "", "",
			want{"/openai/v1/videos/video_1/content?variant=video", ""}, want{"/openai/v1/videos/video_1/content?variant=video", ""}},
		{"video delete", "DELETE", "/v1/videos/video_1", "", "",
			want{"/openai/v1/videos/video_1", ""}, want{"/openai/v1/videos/video_1", ""}},
		{"Sora 1 job", "POST", "/v1/video/generations/jobs", "application/json", `{"model":"sora","prompt":"a cat"}`,
			want{"/openai/v1/video/generations/jobs?api-version=preview", `{"model":"sora1-prod","prompt":"a cat"}`},
			want{"/openai/v1/video/generations/jobs?api-version=preview", `{"model":"sora1-prod","prompt":"a cat"}`}},
		{"conversation create", "POST", "/v1/conversations", "application/json", `{"items":[]}`,
			want{"/openai/v1/conversations", `{"items":[]}`}, want{"/openai/v1/conversations", `{"items":[]}`}},
		{"conversation items, dated api-version dropped", "GET", "/v1/conversations/conv_1/items?api-version=2025-04-01-preview&limit=5", "", "",
			want{"/openai/v1/conversations/conv_1/items?limit=5", ""}, want{"/openai/v1/conversations/conv_1/items?limit=5", ""}},
		{"responses compact", "POST", "/v1/responses/compact", "application/json", `{"model":"gpt-4o","input":"x"}`,
			want{"/openai/v1/responses/compact", `{"model":"gpt4o-prod","input":"x"}`}, want{"/openai/v1/responses/compact", `{"model":"gpt4o-prod","input":"x"}`}},
		{"containers", "GET", "/v1/containers/cntr_1/files", "", "",
			want{"/openai/v1/containers/cntr_1/files", ""}, want{"/openai/v1/containers/cntr_1/files", ""}},
		{"evals", "POST", "/v1/evals", "application/json", `{"name":"e"}`,
			want{"/openai/v1/evals", `{"name":"e"}`}, want{"/openai/v1/evals", `{"name":"e"}`}},
		{"realtime client secret: session.model is the deployment", "POST", "/v1/realtime/client_secrets", "application/json",
			`{"expires_after":{"anchor":"created_at","seconds":600},"session":{"type":"realtime","model":"gpt-realtime"}}`,
			want{"/openai/v1/realtime/client_secrets", `{"expires_after":{"anchor":"created_at","seconds":600},"session":{"type":"realtime","model":"rt-prod"}}`},
			want{"/openai/v1/realtime/client_secrets", `{"expires_after":{"anchor":"created_at","seconds":600},"session":{"type":"realtime","model":"rt-prod"}}`}},
		{"realtime call control", "POST", "/v1/realtime/calls/rtc_1/hangup", "", "",
			want{"/openai/v1/realtime/calls/rtc_1/hangup", ""}, want{"/openai/v1/realtime/calls/rtc_1/hangup", ""}},
	}
	fake := newFakeAzure(t, fakeTLS, nil)
	proxies := map[string]*testProxy{
		"dated": startProxy(t, fake, map[string]string{"AZURE_OPENAI_MODEL_MAPPER": mapper, "AZURE_OPENAI_API_VER": "2024-10-21"}),
		"v1":    startProxy(t, fake, map[string]string{"AZURE_OPENAI_MODEL_MAPPER": mapper, "AZURE_OPENAI_API_VER": ""}),
	}
	for _, tc := range cases {
		for mode, p := range proxies {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				header := http.Header{"Authorization": {"Bearer " + testKey}}
				if tc.contentType != "" {
					header.Set("Content-Type", tc.contentType)
				}
				var body []byte
				if tc.body != "" {
					body = []byte(tc.body)
				}
				fake.take()
				resp, got := p.do(t, tc.method, tc.path, header, body)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("client got %d %s", resp.StatusCode, got)
				}
				w := tc.dated
				if mode == "v1" {
					w = tc.v1
				}
				var wantBody []byte
				if w.body != "" {
					wantBody = []byte(w.body)
				}
				assertForwarded(t, fake.only(t), tc.method, w.uri, wantBody)
			})
		}
	}
}

// take empties the fake's record and returns what it held.
func (f *fakeAzure) take() []recordedRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.requests
	f.requests = nil
	return r
}

// TestWebRTCCallKeepsTheEphemeralKey: the browser's SDP offer goes to Azure
// with its ephemeral key as the Bearer token, never with a key of the proxy's,
// even where clients must present proxy keys; Azure's 201 and Location come back.
func TestWebRTCCallKeepsTheEphemeralKey(t *testing.T) {
	const sdpOffer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n"
	fake := newFakeAzure(t, fakeTLS, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/sdp")
		w.Header().Set("Location", "/v1/realtime/calls/rtc_abc123")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "v=0\r\ns=answer\r\n")
	})
	for name, env := range map[string]map[string]string{
		"client key mode": {"AZURE_OPENAI_API_VER": "2024-10-21"},
		"server key and proxy keys": {"AZURE_OPENAI_API_VER": "", "AZURE_OPENAI_API_KEY": "server-key",
			"AZURE_OPENAI_PROXY_KEYS": "proxy-key"},
	} {
		t.Run(name, func(t *testing.T) {
			p := startProxy(t, fake, env)
			fake.take()
			resp, got := p.do(t, "POST", "/v1/realtime/calls?webrtcfilter=on", http.Header{
				"Authorization": {"Bearer ek_ephemeral"}, "Content-Type": {"application/sdp"},
			}, []byte(sdpOffer))
			if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") != "/v1/realtime/calls/rtc_abc123" || string(got) != "v=0\r\ns=answer\r\n" {
				t.Fatalf("client got %d %v %q", resp.StatusCode, resp.Header, got)
			}
			up := fake.only(t)
			fake.take()
			if up.EscapedURI != "/openai/v1/realtime/calls?webrtcfilter=on" || up.Header.Get("Authorization") != "Bearer ek_ephemeral" ||
				up.Header.Get("Api-Key") != "" || string(up.Body) != sdpOffer || up.Header.Get("Content-Type") != "application/sdp" {
				t.Errorf("upstream %s Authorization %q api-key %q body %q", up.EscapedURI, up.Header.Get("Authorization"), up.Header.Get("Api-Key"), up.Body)
			}
			if resp, _ := p.do(t, "POST", "/v1/realtime/calls", http.Header{"Content-Type": {"application/sdp"}}, []byte(sdpOffer)); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("an offer without a key: %d, want 401", resp.StatusCode)
			}
			if resp, _ := p.do(t, "GET", "/v1/realtime/calls", http.Header{"Authorization": {"Bearer ek_ephemeral"}}, nil); resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("GET with an ephemeral key: %d, want 405", resp.StatusCode)
			}
			if resp, _ := p.do(t, "POST", "/v1/realtime/calls", http.Header{"Authorization": {"Bearer ek_ephemeral"}, "Content-Type": {"application/sdp"}},
				bytes.Repeat([]byte("a"), maxEphemeralBody+1)); resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("a 1 MiB offer: %d, want 413", resp.StatusCode)
			}
			if n := len(fake.take()); n != 0 {
				t.Errorf("%d refused requests reached Azure", n)
			}
			if env["AZURE_OPENAI_PROXY_KEYS"] != "" {
				// A proxy key is never sent on: the proxy's own key goes instead.
				p.do(t, "POST", "/v1/realtime/calls", http.Header{"Authorization": {"Bearer proxy-key"}, "Content-Type": {"application/sdp"}}, []byte(sdpOffer))
				if up := fake.only(t); up.Header.Get("Authorization") != "" || up.Header.Get("Api-Key") != "server-key" {
					t.Errorf("with a proxy key: Authorization %q api-key %q", up.Header.Get("Authorization"), up.Header.Get("Api-Key"))
				}
			}
		})
	}
}

// TestCompressedAnswers: Azure (or a gateway in front of it) may gzip its
// answers. The filter and the usage taps must see plain events and JSON, and
// a stream must still reach the client event by event.
func TestCompressedAnswers(t *testing.T) {
	stream := newSteppedStream(azureFirstChunk, contentChunk, usageChunk, doneEvent)
	stream.dropped = map[int]bool{0: true}
	fake := newFakeAzure(t, fakeTLS, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept-Encoding") != "gzip" {
			t.Errorf("upstream Accept-Encoding %q, want the transport's own gzip", r.Header.Get("Accept-Encoding"))
		}
		w.Header().Set("Content-Encoding", "gzip")
		gz := gzip.NewWriter(w)
		if strings.Contains(string(readAllBody(r)), `"stream":true`) {
			stream.serve(&gzipFlusher{ResponseWriter: w, gz: gz}, r)
		} else {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(gz, `{"id":"c","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":11,"completion_tokens":4}}`)
		}
		gz.Close()
	})
	p := startProxy(t, fake, nil)
	resp, body := p.do(t, "POST", "/v1/chat/completions", http.Header{"Authorization": {"Bearer " + testKey},
		"Accept-Encoding": {"br, gzip"}}, []byte(`{"model":"gpt-4o"}`))
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), `{"id":"c"`) {
		t.Fatalf("JSON answer: %d %q", resp.StatusCode, body)
	}
	_, r := p.openStream(t, t.Context())
	if ev := readEvent(t, r); ev != contentChunk {
		t.Fatalf("first event %q, want the content chunk (Azure's empty first chunk dropped)", ev)
	}
	stream.ack <- struct{}{}
	if ev := readEvent(t, r); ev != usageChunk {
		t.Fatalf("second event %q", ev)
	}
	stream.ack <- struct{}{}
	readEvent(t, r)
	stream.ack <- struct{}{}
	m := waitForRequests(t, p.URL, "", 2)
	if got := m.get("azure_openai_proxy_tokens_total", "model", "gpt-4o", "deployment", "gpt-4o", "kind", "prompt"); got != 11+9 {
		t.Errorf("prompt tokens from gzip answers = %v, want %v", got, 11+9)
	}
}

// gzipFlusher compresses what a handler writes, flushing the compressor
// with each Flush, as a server that gzips a stream must.
type gzipFlusher struct {
	http.ResponseWriter
	gz *gzip.Writer
}

func (g *gzipFlusher) Write(p []byte) (int, error) { return g.gz.Write(p) }

func (g *gzipFlusher) Flush() {
	g.gz.Flush()
	g.ResponseWriter.(http.Flusher).Flush()
}

// TestColdBurstSharesConnections: a burst of requests to an HTTPS (HTTP/2)
// backend with no connection yet opens a few connections, not one each.
func TestColdBurstSharesConnections(t *testing.T) {
	var opened atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release // hold every request, so that none frees a connection for the next
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{}`)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			opened.Add(1)
		}
	}
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	fake := &fakeAzure{Server: srv}
	p := startProxy(t, fake, nil)
	const burst = 200
	var wg sync.WaitGroup
	for range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.postJSON(t, "/v1/embeddings", `{"model":"e","input":"x"}`)
		}()
	}
	waitUntil(t, func() bool { return opened.Load() > 0 }, "a first connection")
	time.Sleep(200 * time.Millisecond) // let the burst queue up behind it
	close(release)
	wg.Wait()
	// A connection takes 100 streams until the server's settings arrive
	// (Go's HTTP/2 client), so a few more than the gate's may be needed.
	if n := opened.Load(); n > 10 {
		t.Errorf("a cold burst of %d requests opened %d connections, want at most 10", burst, n)
	}
}
