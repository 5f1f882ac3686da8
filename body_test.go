package main

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingReader yields n bytes of JSON-ish filler and counts what was read.
type countingReader struct {
	remaining int64
	read      atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.remaining <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), r.remaining)
	for i := range p[:n] {
		p[i] = 'a'
	}
	r.remaining -= n
	r.read.Add(n)
	return int(n), nil
}

func TestReadBodyStopsAtTheLimit(t *testing.T) {
	const limit = 1 << 20
	for _, tc := range []struct {
		name          string
		contentLength int64
		maxRead       int64
	}{
		{"declared too large: nothing read", 64 << 20, 0},
		{"chunked: read stops just past the limit", -1, limit + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := &countingReader{remaining: 64 << 20}
			r := httptest.NewRequest("POST", "/v1/chat/completions", body)
			r.ContentLength = tc.contentLength
			_, e := readBody(httptest.NewRecorder(), r, limit, time.Minute, &bodyPool{})
			if e == nil || e.Status != http.StatusRequestEntityTooLarge {
				t.Fatalf("error = %v, want 413", e)
			}
			if got := body.read.Load(); got > tc.maxRead {
				t.Errorf("read %d bytes of the body, want at most %d", got, tc.maxRead)
			}
		})
	}
}

func TestBodyTooLargeEndToEnd(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_PROXY_MAX_BODY": "1048576"})
	for _, chunked := range []bool{false, true} {
		const total = 256 << 20
		body := &countingReader{remaining: total}
		req, _ := http.NewRequest("POST", p.URL+"/v1/chat/completions", body)
		req.Header.Set("Authorization", "Bearer "+testKey)
		if !chunked {
			req.ContentLength = total
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("chunked=%v: %v", chunked, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("chunked=%v: status %d, want 413", chunked, resp.StatusCode)
		}
		msg, _, _, _ := openAIError(t, got)
		if !strings.Contains(msg, "1048576") {
			t.Errorf("message %q should state the limit", msg)
		}
		// The client stops sending once the answer arrives; what it sent
		// beyond the limit sat in socket buffers, not in the proxy.
		if sent := body.read.Load(); sent >= total/4 {
			t.Errorf("chunked=%v: the client sent %d of %d bytes before the 413", chunked, sent, total)
		}
	}
	if n := len(fake.all()); n != 0 {
		t.Errorf("fake Azure received %d requests", n)
	}
}

// TestNoKeyRefusedBeforeTheBody: without a key, and with no backend holding
// one, the proxy answers 401 without reading a large body.
func TestNoKeyRefusedBeforeTheBody(t *testing.T) {
	p := startProxy(t, newFakeAzure(t, fakeTLS, nil), nil)
	body := &countingReader{remaining: 32 << 20}
	req, _ := http.NewRequest("POST", p.URL+"/v1/chat/completions", body)
	req.ContentLength = 32 << 20
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || body.read.Load() >= 8<<20 {
		t.Errorf("status %d after the client sent %d bytes; want 401 before the body", resp.StatusCode, body.read.Load())
	}
}

func TestModelFromMultipart(t *testing.T) {
	body, ct := multipartBody(t, 100, "model", "whisper-1", "language", "en")
	m, e := modelFromBody(ct, body)
	if e != nil || string(m.name) != "whisper-1" || m.edit != editMultipartValue || string(body[m.start:m.end]) != "whisper-1" {
		t.Errorf("model after file = %+v, %v", m, e)
	}
	// LF-only line ends and a preamble, which mime/multipart accepts too.
	lf := []byte("preamble\n--b\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\n\nDATA\n--b\nContent-Disposition: form-data; name=\"model\"\n\ngpt-4o\n--b--\n")
	if m, e := modelFromBody("multipart/form-data; boundary=b", lf); e != nil || string(lf[m.start:m.end]) != "gpt-4o" {
		t.Errorf("LF-only body: %+v %v", m, e)
	}
	// A quoted-printable field has no raw span to replace; its decoded value still counts.
	qp := []byte("--b\r\nContent-Disposition: form-data; name=\"model\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ngpt=2D4o\r\n--b--\r\n")
	if m, e := modelFromBody("multipart/form-data; boundary=b", qp); e != nil || string(m.name) != "gpt-4o" || m.edit != editNone {
		t.Errorf("quoted-printable: %+v %v", m, e)
	}
	body, ct = multipartBody(t, 100, "model", strings.Repeat("w", 300))
	if _, e := modelFromBody(ct, body); e == nil || e.Status != 400 {
		t.Errorf("an overlong model field = %v, want 400", e)
	}
	if _, e := modelFromBody("multipart/form-data", body); e == nil || *e.Code != "invalid_multipart" {
		t.Errorf("no boundary = %v, want invalid_multipart", e)
	}
}

// FuzzMultipartModel checks the one-pass form walk against mime/multipart:
// wherever the fast path answers, it finds exactly the "model" fields
// mime/multipart finds, with the same content, and mime/multipart reads the
// whole form as valid.
func FuzzMultipartModel(f *testing.F) {
	withModel, _ := multipartBody(f, 16, "model", "whisper-1")
	f.Add(withModel)
	f.Add([]byte("--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt\r\n--B--\r\n"))
	f.Add([]byte("--B\nContent-Disposition: form-data; name=\"a\"\n\nx\n--B\nContent-Disposition: form-data; name=\"model\"\n\ny\n--B--"))
	f.Add([]byte("--B\r\nContent-Disposition: form-data; name=model\r\n\r\na\r\n--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nb\r\n--B--\r\n"))
	f.Add([]byte("--B\r\nContent-Disposition: form-data; name*=utf-8''mod%65l\r\n\r\na\r\n--B-x\r\n--B--\r\n"))
	f.Add([]byte("--B\r\ncontent-disposition: form-data; name=\"model\"; filename=\"m\"\r\n\r\nfile\r\n--B--\r\n"))
	f.Add([]byte("--B\r\nX_y: 1\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\n\r\n--Bx\r\n\r\nm\r\n--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n--B--\r\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		checkModelSpan(t, body)
		models, ok := multipartFastModel(body, "B")
		if !ok {
			return
		}
		mr := multipart.NewReader(bytes.NewReader(body), "B")
		var want []string
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("the fast path read a form mime/multipart refuses (%v): %q", err, body)
			}
			if p.FormName() == "model" && p.FileName() == "" {
				content, err := io.ReadAll(p)
				if err != nil {
					t.Fatalf("mime/multipart: %v", err)
				}
				want = append(want, string(content))
			}
		}
		if len(models) != len(want) {
			t.Fatalf("fast path found %d model fields, mime/multipart %d: %q", len(models), len(want), body)
		}
		for i, m := range models {
			if got := string(body[m[0]:m[1]]); got != want[i] {
				t.Fatalf("model field %d: fast path %q, mime/multipart %q in %q", i, got, want[i], body)
			}
		}
	})
}

// checkModelSpan: where modelFromMultipart (either path) says the model's
// bytes are, writing a marker there must change the model field, as
// mime/multipart reads it, and nothing else.
func checkModelSpan(t *testing.T, body []byte) {
	value, start, end, e := modelFromMultipart(body, "B")
	if e != nil || end <= start {
		return
	}
	marked := append(append(append([]byte(nil), body[:start]...), "MARKER"...), body[end:]...)
	read := func(b []byte) (fields []string) {
		mr := multipart.NewReader(bytes.NewReader(b), "B")
		for {
			p, err := mr.NextPart()
			if err != nil {
				return fields
			}
			content, _ := io.ReadAll(p)
			fields = append(fields, p.FormName()+"|"+p.FileName()+"|"+string(content))
		}
	}
	before, after := read(body), read(marked)
	if len(before) != len(after) {
		t.Fatalf("%q: marking the model span changed the parts: %q -> %q", body, before, after)
	}
	for i := range before {
		if before[i] != after[i] && after[i] != "model||MARKER" {
			t.Fatalf("%q: the model span [%d:%d] (%q) lies outside the model field: %q -> %q", body, start, end, value, before[i], after[i])
		}
	}
}

// TestMultipartWalkIsLinear: 100,000 tiny parts before the model once took
// minutes (the walk searched the rest of the body for every part). A form
// takes at most maxFormParts parts; up to there the walk is linear (the
// benchmark measures it; this test only bounds it far above that), and past
// it the form is refused at once, on both paths.
func TestMultipartWalkIsLinear(t *testing.T) {
	body := manyParts(maxFormParts - 1)
	// The same form with a header line mime/multipart must read (a folded
	// one) takes the slower path, still linear.
	folded := bytes.Replace(body, []byte("name=\"x\"\r\n"), []byte("name=\"x\"\r\n X-Folded: y\r\n"), 1)
	for name, form := range map[string][]byte{"fast path": body, "mime/multipart's path": folded} {
		start := time.Now()
		m, e := modelFromBody("multipart/form-data; boundary=B", form)
		if e != nil || string(m.name) != "whisper" || m.edit != editMultipartValue {
			t.Fatalf("%s: %q %v", name, m.name, e)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: %d parts took %v", name, maxFormParts, d)
		}
		tooMany := append(bytes.Repeat([]byte("--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\ny\r\n"), 100_000), form...)
		start = time.Now()
		if _, e := modelFromBody("multipart/form-data; boundary=B", tooMany); e == nil || e.Status != 400 {
			t.Errorf("%s: 100,000 parts: %v, want 400", name, e)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: refusing 100,000 parts took %v", name, d)
		}
	}
}

func manyParts(n int) []byte {
	var b bytes.Buffer
	for range n {
		b.WriteString("--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\ny\r\n")
	}
	b.WriteString("--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n--B--\r\n")
	return b.Bytes()
}

func TestTwoModelFieldsRefused(t *testing.T) {
	for _, body := range []string{
		"--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\na\r\n--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nb\r\n--B--\r\n",
		// The second one spelled so that only a full parse sees it (RFC 2231).
		"--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\na\r\n--B\r\nContent-Disposition: form-data; name*=utf-8''mod%65l\r\n\r\nb\r\n--B--\r\n",
		// And on mime/multipart's path (a folded header line first).
		"--B\r\nX-A: 1\r\n 2\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\na\r\n--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nb\r\n--B--\r\n",
	} {
		if _, e := modelFromBody("multipart/form-data; boundary=B", []byte(body)); e == nil || e.Status != 400 || e.Param == nil || *e.Param != "model" {
			t.Errorf("%q: %v, want 400 on model", body, e)
		}
	}
}

// TestNestedModelNamedTwice: a realtime client secret whose session names
// its model twice (in any case) is refused, as a body's top-level model is.
func TestNestedModelNamedTwice(t *testing.T) {
	rt, _ := resolveRoute(httptest.NewRequest("POST", "/v1/realtime/client_secrets", nil))
	_, e := findRequestModel(rt, "application/json", []byte(`{"session":{"type":"realtime","model":"gpt-realtime","MODEL":"other-deployment"}}`))
	if e == nil || e.Status != 400 {
		t.Errorf("two models in the session: %v, want 400", e)
	}
	if m, e := findRequestModel(rt, "application/json", []byte(`{"session":{"type":"realtime","model":"gpt-realtime"}}`)); e != nil || string(m.name) != "gpt-realtime" {
		t.Errorf("one model: %q %v", m.name, e)
	}
}

// TestLongBoundaryAsMimeMultipart: mime/multipart refuses boundaries longer
// than its 4 KiB line buffer; so does the proxy, rather than forward them.
func TestLongBoundaryAsMimeMultipart(t *testing.T) {
	boundary := strings.Repeat("b", 5000)
	body := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n--" + boundary + "--\r\n"
	if _, e := modelFromBody("multipart/form-data; boundary="+boundary, []byte(body)); e == nil || e.Status != 400 {
		t.Errorf("a 5000-byte boundary: %v, want 400 as mime/multipart reads it", e)
	}
}

// TestPartWalkerKeepsStep: on mime/multipart's path, a line "--boundaryX"
// inside a file is content, not a boundary; the model's bytes found must be
// the model field's, not bytes of the file.
func TestPartWalkerKeepsStep(t *testing.T) {
	body := "--B\r\nX_y: 1\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n" +
		"\r\n--Bx\r\n\r\ngpt-4o\r\n" +
		"--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-4o\r\n--B--\r\n"
	m, e := modelFromBody("multipart/form-data; boundary=B", []byte(body))
	if e != nil || string(m.name) != "gpt-4o" {
		t.Fatalf("%q %v", m.name, e)
	}
	if want := strings.LastIndex(body, "gpt-4o"); m.edit != editMultipartValue || m.start != want {
		t.Errorf("model found at %d, want the model field's bytes at %d", m.start, want)
	}
}

// TestOverlongModelsNotDecoded: a model value that would need decoding and
// is longer than any model is refused without being decoded (invalid UTF-8
// decodes to three times its size).
func TestOverlongModelsNotDecoded(t *testing.T) {
	body := []byte(`{"model":"` + strings.Repeat("\xff", 1<<20) + `"}`)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, e := modelFromBody("application/json", body)
	runtime.ReadMemStats(&after)
	if e == nil || e.Status != 400 || e.Param == nil || *e.Param != "model" {
		t.Errorf("an overlong invalid model: %v, want 400 on model", e)
	}
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 1<<20 {
		t.Errorf("refusing it allocated %d bytes", grown)
	}
	// Many escaped keys cost no allocation.
	keys := []byte(`{` + strings.Repeat(`"\u006d":0,`, 50_000) + `"model":"m"}`)
	runtime.ReadMemStats(&before)
	if f, err := findModel(keys); err != nil || string(f.value) != "m" {
		t.Fatal(f, err)
	}
	runtime.ReadMemStats(&after)
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 64<<10 {
		t.Errorf("50,000 escaped keys allocated %d bytes", grown)
	}
}
