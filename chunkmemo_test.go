package main

import (
	"fmt"
	"testing"
)

const memoContentChunk = `{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"}},"delta":{"content":"%s"},"finish_reason":null,"index":0,"logprobs":null}],"created":%d,"id":"chatcmpl-AbC","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_b705f0c291"}`

// After one content chunk, the next ones (other text, other numbers) are
// answered from the memo; a chunk of another shape (the finish chunk, an
// annotation-only chunk, the usage chunk) is read in full, and answered as
// scanChunk answers it.
func TestChunkMemo(t *testing.T) {
	var m chunkMemo
	first := fmt.Sprintf(memoContentChunk, "Once", 1764218400)
	if keep, usage, ok := m.scan([]byte(first)); !keep || usage != nil || !ok {
		t.Fatalf("first content chunk: keep %v usage %v ok %v", keep, usage, ok)
	}
	for _, tc := range []struct {
		name   string
		chunk  string
		memo   bool // answered from the memo
		keep   bool
		tokens int64 // completion tokens reported, -1: none
	}{
		{"other text", fmt.Sprintf(memoContentChunk, " upon", 1764218400), true, true, -1},
		{"text with escapes", fmt.Sprintf(memoContentChunk, `a \"time\"\n\u00e9`, 1764218400), true, true, -1},
		{"empty text", fmt.Sprintf(memoContentChunk, "", 1764218400), true, true, -1},
		{"a longer number", fmt.Sprintf(memoContentChunk, "x", 17642184001), true, true, -1},
		{"a shorter number", fmt.Sprintf(memoContentChunk, "x", 7), true, true, -1},
		{"a negative number", fmt.Sprintf(memoContentChunk, "x", -1), true, true, -1},
		{"an invalid escape", fmt.Sprintf(memoContentChunk, `\x`, 1), false, true, -1},
		{"a control byte", fmt.Sprintf(memoContentChunk, "\x01", 1), false, true, -1},
		{"a string for a number", `{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"}},"delta":{"content":"x"},"finish_reason":null,"index":0,"logprobs":null}],"created":"1","id":"chatcmpl-AbC","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_b705f0c291"}`, false, true, -1},
		{"a number for a string", `{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"}},"delta":{"content":1},"finish_reason":null,"index":0,"logprobs":null}],"created":1,"id":"chatcmpl-AbC","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_b705f0c291"}`, false, true, -1},
		{"another key", `{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"}},"delta":{"content":"x"},"finish_reason":null,"index":0,"logprobs":null}],"created":1,"id":"chatcmpl-AbC","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","usage":{"completion_tokens":5}}`, false, true, 5},
		{"annotations only", `{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"}},"finish_reason":null,"index":0,"logprobs":null}],"created":1,"id":"chatcmpl-AbC","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_b705f0c291"}`, false, false, -1},
		{"annotations only again, other numbers", `{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"low"},"self_harm":{"filtered":false,"severity":"safe"}},"finish_reason":null,"index":3,"logprobs":null}],"created":2,"id":"chatcmpl-AbC","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_b705f0c291"}`, true, false, -1},
		{"trailing bytes", `{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"low"},"self_harm":{"filtered":false,"severity":"safe"}},"finish_reason":null,"index":3,"logprobs":null}],"created":2,"id":"chatcmpl-AbC","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_b705f0c291"}x`, false, true, -1},
		{"cut short", `{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"low"},"self_harm":{"filtered":false,"severity":"safe"}},"finish_reason":null,"index":3,"logprobs":null}],"created":2,"id":"chatcmpl-AbC","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_b705f0c291"`, false, true, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m.misses = 0 // the memo's rest after misses is TestChunkMemoRests'
			memo := len(m.data) > 0 && m.matches([]byte(tc.chunk))
			keep, usage, ok := m.scan([]byte(tc.chunk))
			if !ok {
				keep, usage = inspectChunkJSON([]byte(tc.chunk))
			}
			tokens := int64(-1)
			if usage != nil {
				tokens = usage.CompletionTokens
			}
			if memo != tc.memo || keep != tc.keep || tokens != tc.tokens {
				t.Errorf("from the memo %v, keep %v, completion tokens %d; want %v, %v, %d", memo, keep, tokens, tc.memo, tc.keep, tc.tokens)
			}
		})
	}
}

// After a few misses in a row the memo rests: the next chunks are read in
// full and not remembered; then it takes up again.
func TestChunkMemoRests(t *testing.T) {
	var m chunkMemo
	content := func(i int) []byte { return []byte(fmt.Sprintf(memoContentChunk, fmt.Sprint(i), i)) }
	annotation := []byte(`{"choices":[{"content_filter_results":{},"finish_reason":null,"index":0}]}`)
	// A stream's first chunks may all differ: their misses do not count.
	for i := range memoWarmUp {
		if i%2 == 0 {
			m.scan(annotation)
		} else {
			m.scan(content(i))
		}
	}
	if m.rest != 0 || m.misses != 0 {
		t.Fatalf("the memo rests (%d) or counts misses (%d) within a stream's first %d chunks", m.rest, m.misses, memoWarmUp)
	}
	for i := range memoMissesBeforeRest { // shapes that alternate
		if i%2 == 0 {
			m.scan(annotation)
		} else {
			m.scan(content(i))
		}
	}
	if m.rest != memoRest {
		t.Fatalf("after %d misses the memo rests for %d chunks, want %d", memoMissesBeforeRest, m.rest, memoRest)
	}
	remembered := string(m.data)
	for i := range memoRest {
		if keep, _, _ := m.scan(content(100 + i)); !keep {
			t.Fatal("a content chunk dropped while the memo rests")
		}
	}
	if string(m.data) != remembered || m.rest != 0 {
		t.Fatalf("the memo changed while it rested (rest %d)", m.rest)
	}
	m.scan(content(200))
	if keep, _, _ := m.scan(content(201)); !keep || len(m.data) == 0 || !m.matches(content(202)) {
		t.Error("the memo did not take up again after its rest")
	}
}

// A chunk too long, or with too many values, is read in full every time.
func TestChunkMemoBounds(t *testing.T) {
	var m chunkMemo
	long := fmt.Sprintf(memoContentChunk, string(make([]byte, maxMemoChunk)), 1)
	for i := range len(long) {
		if long[i] == 0 {
			long = long[:i] + "a" + long[i+1:]
		}
	}
	m.scan([]byte(long))
	if len(m.data) != 0 || m.rest != memoRest {
		t.Errorf("a %d-byte chunk was remembered, or the memo does not rest (%d)", len(long), m.rest)
	}
	m.rest = 0
	many := `{"choices":[{"delta":{"content":"x"},"logprobs":{"content":[`
	for i := range maxMemoTokens {
		if i > 0 {
			many += ","
		}
		many += fmt.Sprint(i)
	}
	many += `]}}]}`
	m.scan([]byte(many))
	if len(m.data) != 0 || len(m.tokens) != 0 || m.rest != memoRest {
		t.Errorf("a chunk of %d values was remembered, or the memo does not rest (%d)", maxMemoTokens+1, m.rest)
	}
}

// FuzzChunkMemo: whenever the memo of one chunk answers for another, the
// answer is scanChunk's for that other chunk.
func FuzzChunkMemo(f *testing.F) {
	f.Add([]byte(fmt.Sprintf(memoContentChunk, "a", 1)), []byte(fmt.Sprintf(memoContentChunk, `b\"c`, 22)))
	f.Add([]byte(fmt.Sprintf(memoContentChunk, "a", 1)), []byte(fmt.Sprintf(memoContentChunk, "a", 1)+" "))
	f.Add([]byte(`{"choices":[],"n":12}`), []byte(`{"choices":[],"n":1.5e3}`))
	f.Add([]byte(`{"choices":[],"n":12}`), []byte(`{"choices":[],"n":12.}`))
	f.Add([]byte(`{"choices":[{"finish_reason":"stop","index":0}]}`), []byte(`{"choices":[{"finish_reason":null,"index":0}]}`))
	f.Add([]byte(`{"a":"x","usage":null}`), []byte(`{"a":"xy","usage":null}`))
	f.Add([]byte(`{"type":"response.output_text.delta","delta":"Hi","sequence_number":4}`), []byte(`{"type":"response.output_text.delta","delta":"there","sequence_number":15}`))
	f.Fuzz(func(t *testing.T, first, next []byte) {
		var m chunkMemo
		m.scan(first)
		if len(m.data) == 0 || !m.matches(next) {
			return
		}
		keep, usage, ok := scanChunk(next)
		if !ok || keep != m.keep || usage != nil {
			t.Fatalf("memo of %q answers %v for %q; scanChunk: keep %v usage %+v ok %v", first, m.keep, next, keep, usage, ok)
		}
	})
}
