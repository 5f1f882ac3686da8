package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// failsafe bounds waits that only time out when the proxy is broken; no test
// here measures time.
const failsafe = 20 * time.Second

// steppedStream is a fake Azure stream that sends one event, flushes, and
// waits for the test to say it has read that event before sending the next.
// A proxy that buffered events would leave the test waiting forever.
type steppedStream struct {
	events  []string
	ack     chan struct{}
	started chan struct{}
	dropped map[int]bool // events the proxy drops: the client never sees them, so never acks them
}

func newSteppedStream(events ...string) *steppedStream {
	return &steppedStream{events: events, ack: make(chan struct{}), started: make(chan struct{}, 1)}
}

func (s *steppedStream) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("apim-request-id", "stream-1")
	s.started <- struct{}{}
	for i, ev := range s.events {
		fmt.Fprint(w, ev)
		w.(http.Flusher).Flush()
		if s.dropped[i] {
			continue
		}
		select {
		case <-s.ack:
		case <-r.Context().Done():
			return
		case <-time.After(failsafe):
			return
		}
	}
}

// readEvent reads one server-sent event (through its blank line) or fails.
func readEvent(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		var ev strings.Builder
		for {
			line, err := r.ReadString('\n')
			ev.WriteString(line)
			if err != nil || line == "\n" || line == "\r\n" {
				got <- ev.String()
				return
			}
		}
	}()
	select {
	case ev := <-got:
		return ev
	case <-time.After(failsafe):
		t.Fatal("no event arrived: the proxy is holding the stream back")
		return ""
	}
}

// TestStreamDeliveredEventByEvent: each event reaches the client before the
// next is sent, so nothing is buffered; by default Azure's empty first chunk
// and annotation-only chunks are dropped, and with
// AZURE_OPENAI_PROXY_RAW_STREAM=1 every event passes.
func TestStreamDeliveredEventByEvent(t *testing.T) {
	azure := []string{
		"data: {\"choices\":[],\"prompt_filter_results\":[{\"prompt_index\":0}]}\n\n",
		"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"},\"index\":0}]}\n\n",
		"data: {\"choices\":[{\"delta\":{\"content\":\"lo\"},\"index\":0}]}\r\n\r\n",
		"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\",\"index\":0}]}\n\n",
		"data: {\"choices\":[{\"content_filter_results\":{},\"content_filter_offsets\":{},\"finish_reason\":null,\"index\":0}]}\n\n",
		": keep-alive\n\n",
		"data: [DONE]\n\n",
	}
	for _, raw := range []bool{false, true} {
		stream := newSteppedStream(azure...)
		if !raw {
			stream.dropped = map[int]bool{0: true, 4: true}
		}
		fake := newFakeAzure(t, fakeTLS, stream.serve)
		env := map[string]string{}
		if raw {
			env["AZURE_OPENAI_PROXY_RAW_STREAM"] = "1"
		}
		p := startProxy(t, fake, env)
		resp, r := p.openStream(t, context.Background())
		if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("Content-Type = %q", ct)
		}
		for i, want := range azure {
			if stream.dropped[i] {
				continue
			}
			if got := readEvent(t, r); got != want {
				t.Fatalf("raw=%v: event %d = %q, want %q", raw, i, got, want)
			}
			stream.ack <- struct{}{}
		}
		if rest, _ := io.ReadAll(r); len(rest) != 0 {
			t.Errorf("raw=%v: extra bytes after the stream: %q", raw, rest)
		}
	}
}

func TestClientGoneCancelsUpstream(t *testing.T) {
	upstreamDone := make(chan struct{})
	fake := newFakeAzure(t, fakeTLS, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			close(upstreamDone)
		case <-time.After(failsafe):
		}
	})
	p := startProxy(t, fake, nil)
	ctx, cancel := context.WithCancel(context.Background())
	resp, r := p.openStream(t, ctx)
	readEvent(t, r)
	cancel()
	resp.Body.Close()
	select {
	case <-upstreamDone:
	case <-time.After(failsafe):
		t.Fatal("the upstream request was not cancelled after the client went away")
	}
	waitForLog(t, p, "status=499")
}

// openStream starts a streamed chat completion through the proxy.
func (p *testProxy) openStream(t *testing.T, ctx context.Context) (*http.Response, *bufio.Reader) {
	t.Helper()
	return openStreamAt(t, ctx, p.URL)
}

func openStreamAt(t *testing.T, ctx context.Context, baseURL string) (*http.Response, *bufio.Reader) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "POST", baseURL+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o","stream":true}`))
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

func waitForLog(t *testing.T, p *testProxy, want string) {
	t.Helper()
	deadline := time.Now().Add(failsafe)
	for !strings.Contains(p.logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("log never contained %q:\n%s", want, p.logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAzureUnreachable502(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	p := startProxy(t, nil, map[string]string{"AZURE_OPENAI_ENDPOINT": "https://" + addr})
	resp, body := p.postJSON(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d %s, want 502", resp.StatusCode, body)
	}
	msg, errType, _, code := openAIError(t, body)
	if !strings.Contains(msg, addr) || !strings.Contains(msg, "connection refused") {
		t.Errorf("message %q should name the endpoint host and the reason", msg)
	}
	if errType != typeServer || code == nil || *code != "upstream_unreachable" {
		t.Errorf("type %q code %v", errType, code)
	}
	if strings.Contains(string(body), testKey) {
		t.Error("the key is in the error body")
	}
}

func TestUntrustedCertificate502(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	p := startProxy(t, nil, map[string]string{"AZURE_OPENAI_ENDPOINT": fake.URL}) // no CA file
	resp, body := p.postJSON(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	msg, _, _, _ := openAIError(t, body)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(msg, "certificate") {
		t.Fatalf("got %d %q, want 502 naming the certificate problem", resp.StatusCode, msg)
	}
}

func TestSlowAzure504(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(failsafe):
		}
	})
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_PROXY_UPSTREAM_TIMEOUT": "200ms"})
	resp, body := p.postJSON(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d %s, want 504", resp.StatusCode, body)
	}
	msg, _, _, code := openAIError(t, body)
	if code == nil || *code != "upstream_timeout" || !strings.Contains(msg, "200ms") {
		t.Errorf("code %v message %q", code, msg)
	}
}

// The upstream timeout bounds only the wait for headers: a stream that
// outlives it is not cut.
func TestUpstreamTimeoutDoesNotCutStreams(t *testing.T) {
	stream := newSteppedStream("data: 1\n\n", "data: 2\n\n")
	fake := newFakeAzure(t, fakeTLS, stream.serve)
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_PROXY_UPSTREAM_TIMEOUT": "50ms"})
	_, r := p.openStream(t, context.Background())
	readEvent(t, r)
	time.Sleep(150 * time.Millisecond) // longer than the header timeout, between two events
	stream.ack <- struct{}{}
	if got := readEvent(t, r); got != "data: 2\n\n" {
		t.Fatalf("second event = %q", got)
	}
	stream.ack <- struct{}{}
}

func TestShutdownLetsStreamsFinish(t *testing.T) {
	stream := newSteppedStream("data: 1\n\n", "data: 2\n\n", "data: [DONE]\n\n")
	fake := newFakeAzure(t, fakeTLS, stream.serve)
	p := startProxy(t, fake, nil)
	_, r := p.openStream(t, context.Background())
	readEvent(t, r)
	p.stop() // as SIGTERM does
	waitForLog(t, p, "msg=draining")
	if _, err := net.Dial("tcp", strings.TrimPrefix(p.URL, "http://")); err == nil {
		t.Error("the listener still accepts connections while draining")
	}
	for _, want := range []string{"data: 2\n\n", "data: [DONE]\n\n"} {
		stream.ack <- struct{}{}
		if got := readEvent(t, r); got != want {
			t.Fatalf("event = %q, want %q", got, want)
		}
	}
	stream.ack <- struct{}{}
	p.waitStopped(t)
}

func TestShutdownTimeoutClosesStuckStreams(t *testing.T) {
	stream := newSteppedStream("data: 1\n\n", "data: 2\n\n")
	fake := newFakeAzure(t, fakeTLS, stream.serve)
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_PROXY_SHUTDOWN_TIMEOUT": "100ms"})
	_, r := p.openStream(t, context.Background())
	readEvent(t, r)
	p.stop()
	p.waitStopped(t)
}

func TestReadinessTurns503WhileDraining(t *testing.T) {
	cfg, err := loadConfig(options{listen: ":0"}, mapEnv(map[string]string{"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com"}))
	if err != nil {
		t.Fatal(err)
	}
	state := &serverState{}
	state.routes.Store(cfg.Routes)
	h := newHandler(cfg, newLogger("text", io.Discard), state, newMetrics())
	for _, step := range []struct {
		ready  bool
		path   string
		status int
	}{{true, "/readyz", 200}, {true, "/healthz", 200}, {false, "/readyz", 503}, {false, "/healthz", 200}} {
		state.ready.Store(step.ready)
		rec := newRecorder()
		h.ServeHTTP(rec, mustRequest("GET", step.path))
		if rec.Code != step.status {
			t.Errorf("ready=%v %s = %d, want %d", step.ready, step.path, rec.Code, step.status)
		}
	}
}

// TestSIGTERMMidStream runs the real binary (this test binary as main) and
// sends it SIGTERM while a stream is open.
func TestSIGTERMMidStream(t *testing.T) {
	stream := newSteppedStream("data: 1\n\n", "data: 2\n\n", "data: [DONE]\n\n")
	fake := newFakeAzure(t, fakeTLS, stream.serve)
	cmd := exec.Command(os.Args[0], "-listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(),
		"AZURE_OPENAI_PROXY_TEST_AS_MAIN=1",
		"AZURE_OPENAI_PROXY_DRAIN_DELAY=0",
		"AZURE_OPENAI_ENDPOINT="+fake.URL,
		"AZURE_OPENAI_PROXY_CA_FILE="+fake.caFile(t),
	)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	logs := bufio.NewReader(stderr)
	var addr string
	for addr == "" {
		line, err := logs.ReadString('\n')
		if err != nil {
			t.Fatalf("child exited before listening: %v", err)
		}
		if m := listenLine.FindStringSubmatch(line); m != nil {
			addr = m[1]
		}
	}
	go io.Copy(io.Discard, logs)

	_, r := openStreamAt(t, context.Background(), "http://"+addr)
	readEvent(t, r)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"data: 2\n\n", "data: [DONE]\n\n"} {
		stream.ack <- struct{}{}
		if got := readEvent(t, r); got != want {
			t.Fatalf("after SIGTERM, event = %q, want %q", got, want)
		}
	}
	stream.ack <- struct{}{}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("process exited with %v, want status 0", err)
		}
	case <-time.After(failsafe):
		t.Fatal("process did not exit after its last stream finished")
	}
}

// rawRequest writes head (and any body bytes) on a new connection and
// returns the connection and a reader of the answer.
func rawRequest(t *testing.T, proxyURL, head string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(proxyURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(failsafe))
	return conn, bufio.NewReader(conn)
}

// TestBodiesThatNeverFinish: a body that stops arriving gets 408; a request
// refused before its body is read gets its answer at once, not after a body
// that never comes.
func TestBodiesThatNeverFinish(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_PROXY_BODY_TIMEOUT": "200ms"})
	_, br := rawRequest(t, p.URL, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("a stalled body: %v %v, want 408", resp, err)
	}
	chunked := "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"mod\r\n"
	_, br = rawRequest(t, p.URL, chunked)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("a stalled chunked body: %v %v, want 408", resp, err)
	}

	keys := startProxy(t, fake, map[string]string{"AZURE_OPENAI_PROXY_KEYS": "proxy-key", "AZURE_OPENAI_API_KEY": "server-key"})
	for _, head := range []string{
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		_, br := rawRequest(t, keys.URL, head)
		if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a keyless request with a stalled body: %v %v, want 401 at once", resp, err)
		}
	}
	if n := len(fake.all()); n != 0 {
		t.Errorf("%d requests reached Azure", n)
	}
}

// TestConnectionCap: past AZURE_OPENAI_PROXY_MAX_CONNECTIONS a connection
// gets 503 for anything but the health checks.
func TestConnectionCap(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_PROXY_MAX_CONNECTIONS": "2"})
	// Two connections the server has accepted (each answered once), kept open.
	for range 2 {
		_, br := rawRequest(t, p.URL, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
			t.Fatal(resp, err)
		}
	}
	_, br := rawRequest(t, p.URL, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("readiness past the cap: %v %v, want 200", resp, err)
	}
	_, br = rawRequest(t, p.URL, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"model\":\"gpt\"} ")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a request past the cap: %v %v, want 503 with Retry-After", resp, err)
	}
	if n := len(fake.all()); n != 0 {
		t.Errorf("%d requests reached Azure", n)
	}
}

// TestDrainDelayAndCutStreams: after SIGTERM the proxy says it is not ready
// but serves on for the drain delay, closing each connection after its
// answer (load balancers take a moment to notice); a stream the drain timeout
// cuts is logged as cut by the shutdown, not as the client's leaving; and no
// word about websocket sessions when there are none.
func TestDrainDelayAndCutStreams(t *testing.T) {
	stream := newSteppedStream("data: 1\n\n", "data: 2\n\n")
	fake := newFakeAzure(t, fakeTLS, func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(string(readAllBody(r)), `"stream":true`) {
			stream.serve(w, r)
			return
		}
		ok200(w, r)
	})
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_PROXY_DRAIN_DELAY": "700ms", "AZURE_OPENAI_PROXY_SHUTDOWN_TIMEOUT": "200ms"})
	_, r := p.openStream(t, t.Context())
	readEvent(t, r)
	p.stop()
	waitForLog(t, p, "serving while load balancers notice")
	if resp, _ := p.do(t, "GET", "/readyz", nil, nil); resp.StatusCode != 503 {
		t.Errorf("/readyz during the drain delay: %d, want 503", resp.StatusCode)
	}
	resp, _ := p.postJSON(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("a request during the drain delay: %d, closes its connection: %v; want 200 and a close", resp.StatusCode, resp.Close)
	}
	p.waitStopped(t)
	logs := p.logs.String()
	if !strings.Contains(logs, "cut_by_shutdown=true") || strings.Contains(logs, "status=499") {
		t.Errorf("the stream the drain timeout cut is not logged as cut by the shutdown:\n%s", logs)
	}
	if strings.Contains(logs, "websocket sessions") {
		t.Errorf("a warning about websocket sessions when there were none:\n%s", logs)
	}
}
