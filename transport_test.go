package main

import (
	"bytes"
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
