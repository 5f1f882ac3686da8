package main

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func websocketAccept(key string) string {
	sum := sha1.Sum([]byte(key + websocketGUID))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// websocketEcho is a fake Azure realtime endpoint: it completes the handshake
// (choosing the "realtime" subprotocol), then echoes each frame it receives
// as an unmasked frame, and records the raw bytes it read. A close frame
// ends the session from its side.
type websocketEcho struct {
	mu       sync.Mutex
	received bytes.Buffer
	closed   chan struct{} // closed when the session ends, from either side
}

func (e *websocketEcho) serve(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || r.Header.Get("Sec-WebSocket-Key") == "" {
		http.Error(w, "not a websocket handshake", 400)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer close(e.closed)
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: realtime\r\n\r\n",
		websocketAccept(r.Header.Get("Sec-WebSocket-Key")))
	brw.Flush()
	for {
		var raw bytes.Buffer
		opcode, payload, err := readFrame(io.TeeReader(brw, &raw))
		if err != nil {
			return
		}
		e.mu.Lock()
		e.received.Write(raw.Bytes())
		e.mu.Unlock()
		conn.Write(frame(opcode, payload, false))
		if opcode == 0x8 {
			return
		}
	}
}

func (e *websocketEcho) got() []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]byte(nil), e.received.Bytes()...)
}

// frame encodes one final websocket frame; clients mask, servers do not.
func frame(opcode byte, payload []byte, masked bool) []byte {
	var b bytes.Buffer
	b.WriteByte(0x80 | opcode)
	maskBit := byte(0)
	if masked {
		maskBit = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b.WriteByte(maskBit | byte(n))
	case n < 1<<16:
		b.WriteByte(maskBit | 126)
		binary.Write(&b, binary.BigEndian, uint16(n))
	default:
		b.WriteByte(maskBit | 127)
		binary.Write(&b, binary.BigEndian, uint64(n))
	}
	if !masked {
		b.Write(payload)
		return b.Bytes()
	}
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	b.Write(mask[:])
	for i, c := range payload {
		b.WriteByte(c ^ mask[i%4])
	}
	return b.Bytes()
}

func readFrame(r io.Reader) (opcode byte, payload []byte, err error) {
	var head [2]byte
	if _, err = io.ReadFull(r, head[:]); err != nil {
		return
	}
	opcode = head[0] & 0x0f
	n := uint64(head[1] & 0x7f)
	switch n {
	case 126:
		var l uint16
		err = binary.Read(r, binary.BigEndian, &l)
		n = uint64(l)
	case 127:
		err = binary.Read(r, binary.BigEndian, &n)
	}
	if err != nil {
		return
	}
	var mask [4]byte
	masked := head[1]&0x80 != 0
	if masked {
		if _, err = io.ReadFull(r, mask[:]); err != nil {
			return
		}
	}
	payload = make([]byte, n)
	if _, err = io.ReadFull(r, payload); err != nil {
		return
	}
	if masked {
		for i := range payload {
			payload[i] ^= mask[i%4]
		}
	}
	return
}

// dialRealtime performs the client side of the handshake through the proxy,
// to /v1/realtime?query, or to query itself when it is a path.
func dialRealtime(t *testing.T, proxyURL, query string, header http.Header) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(proxyURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	var req strings.Builder
	target := "/v1/realtime?" + query
	if strings.HasPrefix(query, "/") {
		target = query
	}
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: proxy\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", target, key)
	for k, vs := range header {
		for _, v := range vs {
			fmt.Fprintf(&req, "%s: %s\r\n", k, v)
		}
	}
	req.WriteString("\r\n")
	conn.Write([]byte(req.String()))
	br := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(failsafe))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == 101 && resp.Header.Get("Sec-WebSocket-Accept") != websocketAccept(key) {
		t.Errorf("Sec-WebSocket-Accept %q does not answer the client's key", resp.Header.Get("Sec-WebSocket-Accept"))
	}
	return conn, br, resp
}

func TestRealtimeWebsocket(t *testing.T) {
	dated := map[string]string{"AZURE_OPENAI_API_VER": "2024-10-21"}
	datedPreviewURL := map[string]string{"AZURE_OPENAI_API_VER": "2024-10-21", "AZURE_OPENAI_PROXY_REALTIME_PREVIEW": "1"}
	for _, tc := range []struct {
		name         string
		env          map[string]string
		query        string
		header       http.Header
		wantPath     string
		wantQuery    url.Values
		wantProtocol string
	}{
		// GA on every backend: a dated api-version is not sent (Azure refuses it there).
		{"dated backend, key in Authorization", dated, "model=gpt-4o-realtime&voice=alloy&api-version=2025-04-01-preview",
			http.Header{"Authorization": {"Bearer " + testKey}, "Sec-WebSocket-Protocol": {"realtime"}},
			"/openai/v1/realtime", url.Values{"model": {"rt-deploy"}, "voice": {"alloy"}}, "realtime"},
		{"dated backend, key as a browser subprotocol", dated, "model=gpt-4o-realtime",
			http.Header{"Sec-WebSocket-Protocol": {"realtime, " + insecureKeyProtocol + testKey + ", openai-beta.realtime-v1"}},
			"/openai/v1/realtime", url.Values{"model": {"rt-deploy"}}, "realtime, openai-beta.realtime-v1"},
		{"dated backend, preview URL on request", datedPreviewURL, "model=gpt-4o-realtime&voice=alloy",
			http.Header{"Authorization": {"Bearer " + testKey}, "Sec-WebSocket-Protocol": {"realtime"}},
			"/openai/realtime", url.Values{"api-version": {"2025-04-01-preview"}, "deployment": {"rt-deploy"}, "voice": {"alloy"}}, "realtime"},
		{"v1 (the default)", nil, "model=gpt-4o-realtime",
			http.Header{"Api-Key": {testKey}},
			"/openai/v1/realtime", url.Values{"model": {"rt-deploy"}}, ""},
		{"observer of a WebRTC call, by call_id", datedPreviewURL, "call_id=rtc_123",
			http.Header{"Api-Key": {testKey}},
			"/openai/v1/realtime", url.Values{"call_id": {"rtc_123"}}, ""},
		{"the Responses API's WebSocket mode, dated backend", dated, "/v1/responses",
			http.Header{"Authorization": {"Bearer " + testKey}},
			"/openai/v1/responses", url.Values{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			echo := &websocketEcho{closed: make(chan struct{})}
			fake := newFakeAzure(t, fakeTLS, echo.serve)
			env := map[string]string{"AZURE_OPENAI_MODEL_MAPPER": "gpt-4o-realtime=rt-deploy", "AZURE_OPENAI_PROXY_LOG_FORMAT": "text", "AZURE_OPENAI_API_VER": "v1"}
			for k, v := range tc.env {
				env[k] = v
			}
			p := startProxy(t, fake, env)
			conn, br, resp := dialRealtime(t, p.URL, tc.query, tc.header)
			if resp.StatusCode != 101 {
				body, _ := io.ReadAll(resp.Body)
				t.Fatalf("handshake: %d %s", resp.StatusCode, body)
			}
			up := fake.only(t)
			gotQuery, _ := url.ParseQuery(up.Query)
			if up.Path != tc.wantPath || gotQuery.Encode() != tc.wantQuery.Encode() {
				t.Errorf("upstream %s?%s, want %s?%s", up.Path, up.Query, tc.wantPath, tc.wantQuery.Encode())
			}
			if up.Header.Get("Api-Key") != testKey || up.Header.Get("Authorization") != "" {
				t.Errorf("upstream api-key %q Authorization %q", up.Header.Get("Api-Key"), up.Header.Get("Authorization"))
			}
			if got := up.Header.Get("Sec-WebSocket-Protocol"); got != tc.wantProtocol {
				t.Errorf("upstream subprotocols %q, want %q (never the key)", got, tc.wantProtocol)
			}
			// Frames pass both ways unchanged.
			sent := append(frame(0x1, []byte(`{"type":"session.update"}`), true), frame(0x2, bytes.Repeat([]byte{7}, 70000), true)...)
			conn.Write(sent)
			for _, want := range []struct {
				op      byte
				payload []byte
			}{{0x1, []byte(`{"type":"session.update"}`)}, {0x2, bytes.Repeat([]byte{7}, 70000)}} {
				op, payload, err := readFrame(br)
				if err != nil || op != want.op || !bytes.Equal(payload, want.payload) {
					t.Fatalf("echo: op %d, %d bytes, %v", op, len(payload), err)
				}
			}
			if !bytes.Equal(echo.got(), sent) {
				t.Errorf("Azure received %d bytes, not the %d the client sent", len(echo.got()), len(sent))
			}
			// The client closing closes Azure's side.
			conn.Close()
			select {
			case <-echo.closed:
			case <-time.After(failsafe):
				t.Fatal("Azure's side stayed open after the client closed")
			}
			waitForLog(t, p, "status=101")
			if strings.Contains(p.logs.String(), testKey) {
				t.Error("the key reached the log")
			}
		})
	}
}

// openSession starts a proxy in front of an echoing fake and opens a session.
func openSession(t *testing.T, env map[string]string) (*testProxy, net.Conn, *bufio.Reader) {
	t.Helper()
	echo := &websocketEcho{closed: make(chan struct{})}
	p := startProxy(t, newFakeAzure(t, fakeTLS, echo.serve), env)
	conn, br, resp := dialRealtime(t, p.URL, "model=rt", http.Header{"Api-Key": {testKey}})
	if resp.StatusCode != 101 {
		t.Fatal(resp.Status)
	}
	return p, conn, br
}

func TestRealtimeAzureClosingClosesClient(t *testing.T) {
	_, conn, br := openSession(t, nil)
	conn.Write(frame(0x8, []byte{0x03, 0xe8}, true)) // a close frame: the fake echoes it and hangs up
	if op, _, err := readFrame(br); err != nil || op != 0x8 {
		t.Fatalf("close echo: %d %v", op, err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after Azure hung up the client read %v, want EOF", err)
	}
}

func TestRealtimeBadHandshakes(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	p := startProxy(t, fake, nil)
	for query, want := range map[string]int{"": 400, "model=../x": 400, "model=ok": 401} {
		h := http.Header{"Api-Key": {testKey}}
		if want == 401 {
			h = nil
		}
		_, _, resp := dialRealtime(t, p.URL, query, h)
		if resp.StatusCode != want {
			t.Errorf("%q: %d, want %d", query, resp.StatusCode, want)
		}
	}
	if len(fake.all()) != 0 {
		t.Error("a bad handshake reached Azure")
	}
}

// TestShutdownWaitsForWebsocketSessions: Server.Shutdown does not wait for
// hijacked connections; the proxy does, within the grace period.
func TestShutdownWaitsForWebsocketSessions(t *testing.T) {
	p, conn, br := openSession(t, nil)
	p.stop()
	waitForLog(t, p, "msg=draining")
	conn.Write(frame(0x1, []byte("still here"), true))
	if _, payload, err := readFrame(br); err != nil || string(payload) != "still here" {
		t.Fatalf("the session broke during the drain: %q %v", payload, err)
	}
	select {
	case <-p.done:
		t.Fatal("run returned while a websocket session was open")
	case <-time.After(100 * time.Millisecond):
	}
	conn.Close()
	p.waitStopped(t)

	p2, _, br2 := openSession(t, map[string]string{"AZURE_OPENAI_PROXY_SHUTDOWN_TIMEOUT": "200ms"})
	p2.stop()
	p2.waitStopped(t)
	if _, err := br2.ReadByte(); err == nil {
		t.Error("a session outliving the grace period should be closed")
	}
	waitForLog(t, p2, "closing the remaining websocket sessions")
}
