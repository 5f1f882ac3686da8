package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// The transport reads and writes HTTP/1 connections through 2 KiB buffers
// (a stream holds its connection's for its whole life): headers and bodies
// several times that size still pass whole, both ways.
func TestLargeHeadersAndBodiesOverHTTP1(t *testing.T) {
	long := strings.Repeat("x", 6000)
	answer := bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16)
	fake := newFakeAzure(t, fakePlain, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Long-One", long)
		w.Header().Set("X-Long-Two", long)
		w.Header().Set("Content-Type", "application/json")
		w.Write(answer)
	})
	p := startProxy(t, fake, nil)
	prompt := strings.Repeat("y", 100<<10)
	header := http.Header{"Authorization": {"Bearer " + testKey}, "Content-Type": {"application/json"}, "X-Client-Note": {long}}
	resp, body := p.do(t, http.MethodPost, "/v1/chat/completions", header, []byte(`{"messages":[{"role":"user","content":"`+prompt+`"}],"model":"gpt-4o"}`))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, answer) {
		t.Fatalf("status %d, %d bytes back; want 200 and the %d bytes Azure sent", resp.StatusCode, len(body), len(answer))
	}
	if resp.Header.Get("X-Long-One") != long || resp.Header.Get("X-Long-Two") != long {
		t.Error("Azure's long headers did not reach the client whole")
	}
	got := fake.only(t)
	if got.ProtoMajor != 1 || got.Header.Get("X-Client-Note") != long || !strings.Contains(string(got.Body), prompt) {
		t.Errorf("Azure got HTTP/%d, a %d-byte note, a %d-byte body; want HTTP/1 and the client's header and body whole",
			got.ProtoMajor, len(got.Header.Get("X-Client-Note")), len(got.Body))
	}
}

// Over TLS, a body of largeBodyHTTP1 or more goes to Azure over HTTP/1.1 (Go's
// HTTP/2 transport costs more for it), whole, its answer streamed back; a
// smaller one stays on the shared HTTP/2 connection.
func TestLargeBodiesGoOverHTTP1(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n")
	})
	p := startProxy(t, fake, nil)
	header := http.Header{"Authorization": {"Bearer " + testKey}, "Content-Type": {"application/json"}}
	const frame = `{"messages":[{"role":"user","content":""}],"stream":true,"model":"gpt-4o"}`
	for _, size := range []int{largeBodyHTTP1 - 1, largeBodyHTTP1, 3 << 20} {
		body := []byte(`{"messages":[{"role":"user","content":"` + strings.Repeat("y", size-len(frame)) + `"}],"stream":true,"model":"gpt-4o"}`)
		resp, got := p.do(t, http.MethodPost, "/v1/chat/completions", header, body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(got), `"content":"hi"`) {
			t.Fatalf("%d-byte body: status %d, %q; want 200 and Azure's stream", len(body), resp.StatusCode, got)
		}
		sent := fake.all()
		last := sent[len(sent)-1]
		wantProto := 2
		if size >= largeBodyHTTP1 {
			wantProto = 1
		}
		if last.ProtoMajor != wantProto || !bytes.Equal(last.Body, body) {
			t.Errorf("%d-byte body: Azure got HTTP/%d and %d bytes; want HTTP/%d and the body whole",
				len(body), last.ProtoMajor, len(last.Body), wantProto)
		}
	}
}

// At most maxHTTP1InFlight large requests hold HTTP/1.1 connections at once
// (each until its answer is closed; a failed one gives its place back at
// once); past that, and over plain HTTP, a large body takes the shared
// transport.
func TestLargeBodiesOverHTTP1AreCapped(t *testing.T) {
	var viaLarge int
	small := roundTripFunc(func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	})
	failNext := false
	large := roundTripFunc(func(*http.Request) (*http.Response, error) {
		if failNext {
			return nil, errors.New("dial failed")
		}
		viaLarge++
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	})
	split := newBodySizeSplit(small, large)
	send := func(url string, size int64) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, url, http.NoBody)
		req.ContentLength = size
		resp, err := split.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	var open []*http.Response
	for range maxHTTP1InFlight {
		open = append(open, send("https://azure.example/x", largeBodyHTTP1))
	}
	send("https://azure.example/x", largeBodyHTTP1-1)
	send("https://azure.example/x", 4<<20) // every place taken
	send("http://azure.example/x", 4<<20)
	if viaLarge != maxHTTP1InFlight {
		t.Fatalf("%d requests went over HTTP/1.1; want the first %d large HTTPS ones only", viaLarge, maxHTTP1InFlight)
	}
	open[0].Body.Close()
	open[0].Body.Close() // a second Close gives back nothing more
	failNext = true
	req, _ := http.NewRequest(http.MethodPost, "https://azure.example/x", http.NoBody)
	req.ContentLength, req.GetBody = largeBodyHTTP1, nil // no second body: no second try over HTTP/2
	if _, err := split.RoundTrip(req); err == nil {
		t.Fatal("the HTTP/1.1 transport's error was lost")
	}
	failNext = false
	send("https://azure.example/x", largeBodyHTTP1)
	send("https://azure.example/x", largeBodyHTTP1)
	if viaLarge != maxHTTP1InFlight+1 {
		t.Errorf("after one answer closed and one attempt failed, %d went over HTTP/1.1; want %d", viaLarge, maxHTTP1InFlight+1)
	}
}

// Azure may answer a large upload early (a 429, a 413) and reset the
// connection without reading the rest. Over HTTP/1.1 the reset can take the
// answer with it; the body was not sent whole, so nothing was acted on, and
// the proxy asks again over HTTP/2, where the answer arrives: the client
// gets it, not a 502.
func TestEarlyAnswerToALargeUploadReachesTheClient(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	fake.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		brw.WriteString("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
		brw.Flush()
		if tc, ok := conn.(*tls.Conn); ok {
			if tcp, ok := tc.NetConn().(*net.TCPConn); ok {
				tcp.SetLinger(0) // close with a reset, the rest of the body unread
			}
		}
		conn.Close()
	})
	p := startProxy(t, fake, nil)
	body := `{"messages":[{"role":"user","content":"` + strings.Repeat("y", 4<<20) + `"}],"model":"gpt-4o"}`
	for range 5 {
		if resp, got := p.postJSON(t, "/v1/chat/completions", body); resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("status %d %.200s; want Azure's 429", resp.StatusCode, got)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
