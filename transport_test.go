package main

import (
	"bytes"
	"io"
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
// HTTP/2 transport costs more for it), whole; smaller ones and the streams
// stay on the shared HTTP/2 connection.
func TestLargeBodiesGoOverHTTP1(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n")
	})
	p := startProxy(t, fake, nil)
	header := http.Header{"Authorization": {"Bearer " + testKey}, "Content-Type": {"application/json"}}
	for _, size := range []int{largeBodyHTTP1 - 100, largeBodyHTTP1, 3 << 20} {
		prompt := strings.Repeat("y", size)
		body := []byte(`{"messages":[{"role":"user","content":"` + prompt + `"}],"stream":true,"model":"gpt-4o"}`)
		resp, got := p.do(t, http.MethodPost, "/v1/chat/completions", header, body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(got), `"content":"hi"`) {
			t.Fatalf("%d-byte body: status %d, %q; want 200 and Azure's stream", len(body), resp.StatusCode, got)
		}
		sent := fake.all()
		last := sent[len(sent)-1]
		wantProto := 2
		if len(body) >= largeBodyHTTP1 {
			wantProto = 1
		}
		if last.ProtoMajor != wantProto || !bytes.Equal(last.Body, body) {
			t.Errorf("%d-byte body: Azure got HTTP/%d and %d bytes; want HTTP/%d and the body whole",
				len(body), last.ProtoMajor, len(last.Body), wantProto)
		}
	}
}
