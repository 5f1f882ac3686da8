package main

import (
	"bytes"
	"encoding/json"
	"io"
)

// tokenUsage is the usage Azure reports: prompt_tokens and completion_tokens
// (chat, completions, embeddings), or input_tokens and output_tokens (the
// Responses API).
type tokenUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	InputTokens      int64 `json:"input_tokens"`
	OutputTokens     int64 `json:"output_tokens"`
}

func (u tokenUsage) prompt() int64     { return u.PromptTokens + u.InputTokens }
func (u tokenUsage) completion() int64 { return u.CompletionTokens + u.OutputTokens }

// usageTailSize is how much of the end of a JSON answer is kept to read its
// usage from: the usage object comes after the content, near the end.
const usageTailSize = 16 << 10

// usageTap passes a JSON answer through unchanged, keeping only its last
// usageTailSize bytes, and reads the usage from them at the end.
type usageTap struct {
	src   io.ReadCloser
	tail  []byte
	usage *tokenUsage
	done  bool
}

func newUsageTap(src io.ReadCloser, usage *tokenUsage) *usageTap {
	return &usageTap{src: src, usage: usage}
}

func (t *usageTap) Read(p []byte) (int, error) {
	n, err := t.src.Read(p)
	t.tail = append(t.tail, p[:n]...)
	if len(t.tail) > 2*usageTailSize {
		t.tail = append(t.tail[:0], t.tail[len(t.tail)-usageTailSize:]...)
	}
	if err == io.EOF && !t.done {
		t.done = true
		if u, ok := usageFromTail(t.tail); ok {
			*t.usage = u
		}
	}
	return n, err
}

func (t *usageTap) Close() error { return t.src.Close() }

// usageFromTail finds the last "usage": object in the end of a JSON document.
// A "usage" inside a string would be escaped (\"usage\"), so it is skipped.
// Only the last few candidates are tried, each from a small window (a usage
// object is a few hundred bytes): an answer built to defeat it costs little.
func usageFromTail(tail []byte) (tokenUsage, bool) {
	for end, tries := len(tail), 0; tries < maxUsageTries; {
		i := bytes.LastIndex(tail[:end], []byte(`"usage"`))
		if i < 0 {
			return tokenUsage{}, false
		}
		end = i
		if i > 0 && tail[i-1] == '\\' {
			continue
		}
		rest := bytes.TrimLeft(tail[i+len(`"usage"`):], " \t\r\n")
		if len(rest) == 0 || rest[0] != ':' {
			continue
		}
		tries++
		var u tokenUsage
		window := rest[1:min(len(rest), 1+maxUsageObject)]
		if json.NewDecoder(bytes.NewReader(window)).Decode(&u) == nil {
			return u, true
		}
	}
	return tokenUsage{}, false
}

// How usageFromTail bounds its work.
const (
	maxUsageTries  = 4
	maxUsageObject = 4 << 10
)
