package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMain lets tests run the real main() in a child process (for exit codes
// and signals) by re-executing the test binary.
func TestMain(m *testing.M) {
	if os.Getenv("AZURE_OPENAI_PROXY_TEST_AS_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

const testKey = "sk-test-SECRET-0123456789abcdef"

// datedAPIVersion is the api-version most tests run with: the dated shape
// stulzq's users have. Tests of the v1 default set AZURE_OPENAI_API_VER to ""
// or "v1".
const datedAPIVersion = "2024-10-21"

// recordedRequest is what the fake Azure saw.
type recordedRequest struct {
	Method     string
	Path       string // decoded
	EscapedURI string // path and query exactly as sent
	Query      string
	Host       string
	Header     http.Header
	Body       []byte
	ProtoMajor int
}

// fakeAzure is an httptest server standing in for Azure OpenAI. It records
// every request and answers with its handler (by default a small JSON body).
type fakeAzure struct {
	*httptest.Server
	mu       sync.Mutex
	requests []recordedRequest
}

type fakeMode int

const (
	fakeTLS   fakeMode = iota // TLS with HTTP/2, as Azure is
	fakePlain                 // http://
)

func newFakeAzure(t *testing.T, mode fakeMode, handler http.HandlerFunc) *fakeAzure {
	t.Helper()
	if handler == nil {
		handler = func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("apim-request-id", "apim-123")
			io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion"}`)
		}
	}
	f := &fakeAzure{}
	f.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.requests = append(f.requests, recordedRequest{
			Method: r.Method, Path: r.URL.Path, EscapedURI: r.RequestURI, Query: r.URL.RawQuery, Host: r.Host,
			Header: r.Header.Clone(), Body: body, ProtoMajor: r.ProtoMajor,
		})
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		handler(w, r)
	}))
	f.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS handshake noise from tests that distrust the fake
	if mode == fakeTLS {
		f.EnableHTTP2 = true
		f.StartTLS()
	} else {
		f.Start()
	}
	t.Cleanup(f.Close)
	return f
}

func (f *fakeAzure) all() []recordedRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recordedRequest(nil), f.requests...)
}

// only returns the one request the fake received, failing if there was not exactly one.
func (f *fakeAzure) only(t *testing.T) recordedRequest {
	t.Helper()
	reqs := f.all()
	if len(reqs) != 1 {
		t.Fatalf("fake Azure received %d requests, want 1", len(reqs))
	}
	return reqs[0]
}

// caFile writes the fake's certificate where AZURE_OPENAI_PROXY_CA_FILE can name it.
func (f *fakeAzure) caFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.Certificate().Raw})
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// syncBuffer collects log output written from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testProxy is the whole program, started in-process through run().
type testProxy struct {
	URL  string // http://127.0.0.1:PORT
	logs *syncBuffer
	stop context.CancelFunc
	done chan struct{} // closed when run returns
	err  error         // what run returned, once done is closed
}

var listenLine = regexp.MustCompile(`listen(?:=|":")(127\.0\.0\.1:\d+)`)

// anyListenLine matches a start-up line on any address; only its port is used.
var anyListenLine = regexp.MustCompile(`listen(?:=|":")[^\s",]*:(\d+)`)

// startProxy runs the program against fake (nil: env must name an endpoint)
// with env on top of the defaults, and waits until it serves /healthz.
func startProxy(t *testing.T, fake *fakeAzure, env map[string]string, args ...string) *testProxy {
	t.Helper()
	// The dated API (tests of the v1 default say so), and no drain delay
	// (tests of the shutdown set one).
	vars := map[string]string{"AZURE_OPENAI_API_VER": datedAPIVersion, "AZURE_OPENAI_PROXY_DRAIN_DELAY": "0"}
	if fake != nil {
		vars["AZURE_OPENAI_ENDPOINT"] = fake.URL
		if fake.TLS != nil {
			vars["AZURE_OPENAI_PROXY_CA_FILE"] = fake.caFile(t)
		}
	}
	for k, v := range env {
		vars[k] = v
	}
	getenv := func(name string) string { return vars[name] }
	ctx, cancel := context.WithCancel(context.Background())
	p := &testProxy{logs: &syncBuffer{}, stop: cancel, done: make(chan struct{})}
	go func() {
		p.err = run(ctx, append([]string{"-listen", "127.0.0.1:0"}, args...), getenv, io.Discard, p.logs)
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			t.Error("proxy did not stop within 30s of cancel")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := anyListenLine.FindStringSubmatch(p.logs.String()); m != nil {
			p.URL = "http://127.0.0.1:" + m[1]
			break
		}
		select {
		case <-p.done:
			t.Fatalf("proxy exited during start-up: %v\nlogs:\n%s", p.err, p.logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy did not start; logs:\n%s", p.logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp, err := http.Get(p.URL + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	return p
}

// shutdown stops the proxy as SIGTERM would and waits until it has drained,
// so that every request's log line has been written.
func (p *testProxy) shutdown(t *testing.T) {
	t.Helper()
	p.stop()
	p.waitStopped(t)
}

// waitStopped waits for run to return, and fails if it returned an error.
func (p *testProxy) waitStopped(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("run returned %v", p.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("proxy did not stop")
	}
}

// do sends a request to the proxy and returns status, headers and body.
func (p *testProxy) do(t *testing.T, method, path string, header http.Header, body []byte) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, p.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, got
}

// postJSON sends body as JSON with the test key as a Bearer token.
func (p *testProxy) postJSON(t *testing.T, path, body string) (*http.Response, []byte) {
	t.Helper()
	return p.do(t, http.MethodPost, path, http.Header{
		"Authorization": {"Bearer " + testKey},
		"Content-Type":  {"application/json"},
	}, []byte(body))
}

// openAIError decodes an OpenAI-shaped error body, failing the test if the
// shape is wrong: all four fields must be present.
func openAIError(t *testing.T, body []byte) (message, errType string, param, code *string) {
	t.Helper()
	var envelope struct {
		Error map[string]json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(body, &envelope); err != nil || envelope.Error == nil {
		t.Fatalf("not an OpenAI error body: %s", body)
	}
	for _, field := range []string{"message", "type", "param", "code"} {
		if _, ok := envelope.Error[field]; !ok {
			t.Fatalf("error body lacks %q: %s", field, body)
		}
	}
	json.Unmarshal(envelope.Error["message"], &message)
	json.Unmarshal(envelope.Error["type"], &errType)
	json.Unmarshal(envelope.Error["param"], &param)
	json.Unmarshal(envelope.Error["code"], &code)
	if message == "" || errType == "" {
		t.Fatalf("error body has an empty message or type: %s", body)
	}
	return message, errType, param, code
}

// multipartBody builds a form with a file part of fileSize bytes followed by
// the given fields, as the SDKs send audio and image uploads.
func multipartBody(t testing.TB, fileSize int, fields ...string) (body []byte, contentType string) {
	t.Helper()
	var buf bytes.Buffer
	boundary := "----test-boundary-7MA4YWxkTrZu0gW"
	buf.WriteString("--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n")
	for i := range fileSize {
		buf.WriteByte(byte(i*7 + i>>8))
	}
	buf.WriteString("\r\n")
	for i := 0; i+1 < len(fields); i += 2 {
		buf.WriteString("--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + fields[i] + "\"\r\n\r\n" + fields[i+1] + "\r\n")
	}
	buf.WriteString("--" + boundary + "--\r\n")
	return buf.Bytes(), "multipart/form-data; boundary=" + boundary
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func jsonString(s string) (string, error) {
	b, err := json.Marshal(s)
	return string(b), err
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func mapEnv(m map[string]string) func(string) string {
	return func(name string) string { return m[name] }
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }

func mustRequest(method, target string) *http.Request {
	return httptest.NewRequest(method, target, nil)
}

func waitUntil(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(failsafe)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
