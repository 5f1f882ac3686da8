package main

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

const (
	azureFirstChunk = `data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}` + "\n\n"
	contentChunk    = `data: {"choices":[{"content_filter_results":{},"delta":{"content":"Hi"},"finish_reason":null,"index":0}],"created":1,"id":"c","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk"}` + "\n\n"
	finishChunk     = `data: {"choices":[{"delta":{},"finish_reason":"stop","index":0}],"created":1,"id":"c","model":"gpt-4o","object":"chat.completion.chunk"}` + "\n\n"
	annotationChunk = `data: {"choices":[{"content_filter_offsets":{"check_offset":44,"start_offset":44,"end_offset":198},"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"finish_reason":null,"index":0}],"created":0,"id":"","model":"","object":""}` + "\n\n"
	usageChunk      = `data: {"choices":[],"created":1,"id":"c","model":"gpt-4o","object":"chat.completion.chunk","usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}` + "\n\n"
	doneEvent       = "data: [DONE]\n\n"
)

func TestInspectEventKeeps(t *testing.T) {
	cases := []struct {
		event string
		keep  bool
	}{
		{azureFirstChunk, false},
		{annotationChunk, false},
		{strings.ReplaceAll(annotationChunk, "\n", "\r\n"), false},
		{contentChunk, true},
		{finishChunk, true},
		{usageChunk, true},
		{doneEvent, true},
		{": keep-alive comment\n\n", true},
		{"id: 7\n\n", true},
		{"event: response.created\ndata: {\"choices\":[]}\n\n", true},
		{"event: message\ndata: {\"choices\":[]}\n\n", false},
		{`data: {"error":{"code":"content_filter","message":"filtered"}}` + "\n\n", true},
		{"data: {not json\n\n", true},
		{`data: {"choices":[{"text":"hi","index":0,"finish_reason":null}]}` + "\n\n", true}, // completions
		{`data: {"choices":[{"index":0,"finish_reason":null,"logprobs":null}]}` + "\n\n", false},
		{"data: {\"choices\":\ndata: []}\n\n", false}, // data over two lines
		{"data:{\"choices\":[]}\r\r", false},
		// The asynchronous filter's annotation, as Microsoft Learn's "Content streaming" documents it.
		{`data: {"id":"","object":"","created":0,"model":"","choices":[{"index":0,"finish_reason":null,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"content_filter_raw":[],"content_filter_offsets":{"check_offset":44,"start_offset":44,"end_offset":198}}],"usage":null}` + "\n\n", false},
	}
	for _, tc := range cases {
		if got, _ := inspectEvent([]byte(tc.event), &chunkMemo{}); got != tc.keep {
			t.Errorf("inspectEvent(%q) keeps %v, want %v", tc.event, got, tc.keep)
		}
	}
}

// splitAll feeds data to a splitter in the given pieces and returns the
// events, the unfinished tail last, marked "REST:".
func splitAll(pieces [][]byte) []string {
	events, rest := splitEvents(pieces)
	if rest != "" {
		events = append(events, "REST:"+rest)
	}
	return events
}

func splitEvents(pieces [][]byte) (events []string, rest string) {
	var s sseSplitter
	for i, p := range pieces {
		s.write(p)
		for {
			ev, ok := s.next(i == len(pieces)-1)
			if !ok {
				break
			}
			events = append(events, string(ev))
		}
	}
	return events, string(s.rest())
}

func TestSplitterLineEndingsAndLargeEvents(t *testing.T) {
	big := "data: " + strings.Repeat(`{\"arguments\":\"xyz\"}`, 300_000) + "\n\n" // ~6 MiB of tool-call arguments
	stream := "data: a\r\n\r\n" + ": comment\n" + "event: x\nid: 1\ndata: b\n\n" + "data: c\r\r" + big + "data: unfinished"
	want := []string{"data: a\r\n\r\n", ": comment\nevent: x\nid: 1\ndata: b\n\n", "data: c\r\r", big, "REST:data: unfinished"}
	got := splitAll([][]byte{[]byte(stream)})
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("events differ:\n got %q\nwant %q", short(got), short(want))
	}
	// A "\r" at the end of one read may be the start of "\r\n".
	got = splitAll([][]byte{[]byte("data: a\r"), []byte("\n\r"), []byte("\n")})
	if strings.Join(got, "|") != "data: a\r\n\r\n" {
		t.Errorf("split CRLF: %q", got)
	}
}

func short(events []string) []string {
	var out []string
	for _, e := range events {
		if len(e) > 60 {
			e = e[:60] + "…"
		}
		out = append(out, e)
	}
	return out
}

func TestEventFilterWholeStream(t *testing.T) {
	in := azureFirstChunk + contentChunk + annotationChunk + finishChunk + annotationChunk + usageChunk + doneEvent
	want := contentChunk + finishChunk + usageChunk + doneEvent
	for name, r := range map[string]io.Reader{
		"whole":      strings.NewReader(in),
		"one byte":   iotest.OneByteReader(strings.NewReader(in)),
		"half reads": iotest.HalfReader(strings.NewReader(in)),
	} {
		got, err := io.ReadAll(newEventFilter(io.NopCloser(r), true, nil, 1<<20, nil))
		if err != nil || string(got) != want {
			t.Errorf("%s: %v\n got %q\nwant %q", name, err, got, want)
		}
	}
}

// TestLongEventPassesUnheld: an event larger than the cap is not held: the
// client gets its bytes as they come, and the stream is unfiltered after it.
func TestLongEventPassesUnheld(t *testing.T) {
	pr, pw := io.Pipe()
	overflows := 0
	f := newEventFilter(pr, true, nil, 1024, func() { overflows++ })
	go func() {
		pw.Write([]byte(contentChunk))
		pw.Write([]byte("data: " + strings.Repeat("x", 4096))) // no end yet
	}()
	buf := make([]byte, 8192)
	var got []byte
	for len(got) < len(contentChunk)+1024 {
		n, err := f.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if !strings.HasPrefix(string(got), contentChunk+"data: xxx") || overflows != 1 {
		t.Fatalf("got %d bytes (%q…), %d overflows", len(got), got[:min(len(got), 80)], overflows)
	}
	go func() {
		pw.Write([]byte("\n\n" + azureFirstChunk))
		pw.Close()
	}()
	rest, _ := io.ReadAll(f)
	if !strings.HasSuffix(string(rest), azureFirstChunk) {
		t.Errorf("after the long event the stream is not passed as it came: %q", rest)
	}
}

// FuzzSSESplitter: any input, split at any points, yields the same events
// (and the same filtered output) as the input in one piece.
func FuzzSSESplitter(f *testing.F) {
	f.Add([]byte(azureFirstChunk+contentChunk+"data: x\r\n\r\n: c\r\rdata: y\r"+doneEvent), uint64(1))
	f.Add([]byte("\r\n\r\r\n\n\r"), uint64(7))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, seed))
		var pieces [][]byte
		for rest := data; len(rest) > 0; {
			n := 1 + rng.IntN(len(rest))
			pieces = append(pieces, rest[:n])
			rest = rest[n:]
		}
		if len(pieces) == 0 {
			pieces = [][]byte{nil}
		}
		whole, wholeRest := splitEvents([][]byte{data})
		split, splitRest := splitEvents(pieces)
		if strings.Join(whole, "\x00|") != strings.Join(split, "\x00|") || wholeRest != splitRest {
			t.Fatalf("whole %q + %q\nsplit %q + %q", whole, wholeRest, split, splitRest)
		}
		if strings.Join(whole, "")+wholeRest != string(data) {
			t.Fatalf("the events and the rest do not add up to the input")
		}
		a, _ := io.ReadAll(newEventFilter(io.NopCloser(bytes.NewReader(data)), true, nil, 1<<20, nil))
		b, _ := io.ReadAll(newEventFilter(io.NopCloser(io.MultiReader(readers(pieces)...)), true, nil, 1<<20, nil))
		if !bytes.Equal(a, b) {
			t.Fatalf("filtered output depends on read boundaries")
		}
		// Filtering in the caller's buffer (readDirect) and in the
		// splitter's (readSplit, for buffers under minDirectRead) agree,
		// with the usage the proxy asked for hidden too.
		for _, hide := range []bool{false, true} {
			direct := newEventFilter(io.NopCloser(bytes.NewReader(data)), true, nil, 1<<20, nil)
			split := newEventFilter(io.NopCloser(io.MultiReader(readers(pieces)...)), true, nil, 1<<20, nil)
			direct.hideUsage, split.hideUsage = hide, hide
			got, want := readInPieces(direct, 4096), readInPieces(split, minDirectRead-1)
			if !bytes.Equal(got, want) {
				t.Fatalf("hide %v: in the caller's buffer %q\nin the splitter's %q", hide, got, want)
			}
		}
		// With a small cap the filter gives up on a long event and passes
		// the rest as it comes: what it dropped before is what the
		// uncapped filter drops too, and no byte is lost or added after.
		capped, _ := io.ReadAll(newEventFilter(io.NopCloser(io.MultiReader(readers(pieces)...)), true, nil, 64, nil))
		again, _ := io.ReadAll(newEventFilter(io.NopCloser(bytes.NewReader(capped)), true, nil, 1<<20, nil))
		if !bytes.Equal(again, a) {
			t.Fatalf("the capped filter lost or changed bytes:\n in %q\nout %q", data, capped)
		}
	})
}

// readInPieces reads r to its end size bytes at a time.
func readInPieces(r io.Reader, size int) []byte {
	var out []byte
	buf := make([]byte, size)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out
		}
	}
}

func readers(pieces [][]byte) []io.Reader {
	var rs []io.Reader
	for _, p := range pieces {
		rs = append(rs, iotest.OneByteReader(bytes.NewReader(p)))
	}
	return rs
}

// FuzzScanChunk pins the one-pass chunk reader to encoding/json's: wherever
// scanChunk answers, it answers as inspectChunkJSON does.
func FuzzScanChunk(f *testing.F) {
	for _, ev := range []string{azureFirstChunk, contentChunk, finishChunk, usageChunk, annotationChunk} {
		f.Add([]byte(strings.TrimSuffix(strings.TrimPrefix(ev, "data: "), "\n\n")))
	}
	for _, data := range []string{
		`{"choices":[{"index":0,"finish_reason":null,"logprobs":null,"content_filter_results":{}}],"usage":null}`,
		`{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1.5}}`,
		`{"type":"response.completed","response":{"id":"r","usage":{"input_tokens":5,"output_tokens":2}}}`,
		`{"Choices":[]}`, `{"choices":[],"choices":null}`, `{"choices":[null]}`, `{"usage":{"prompt_tokens":"3"}}`,
		`{"choices":[{"finish_reason":"stop","finish_reason":null}]}`, `{"usage":{"PROMPT_TOKENS":1}}`,
		`{"choices":[{"delta":{}}]} x`, `[]`, `null`, `{"response":null,"usage":{}}`,
	} {
		f.Add([]byte(data))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		keep, usage, ok := scanChunk(data)
		if !ok {
			return
		}
		wantKeep, wantUsage := inspectChunkJSON(data)
		if keep != wantKeep || (usage == nil) != (wantUsage == nil) || usage != nil && *usage != *wantUsage {
			t.Fatalf("%q: scanChunk %v %+v, encoding/json %v %+v", data, keep, usage, wantKeep, wantUsage)
		}
	})
}

// BenchmarkEventFilter relays a paced chat stream's worth of content chunks
// through the filter: the work each streamed token costs.
func BenchmarkEventFilter(b *testing.B) {
	var stream bytes.Buffer
	stream.WriteString(azureFirstChunk)
	for i := range 1000 {
		// Each chunk its own text, as a model's tokens are.
		stream.WriteString(strings.Replace(contentChunk, `"Hi"`, fmt.Sprintf(`" tok%d"`, i), 1))
	}
	stream.WriteString(finishChunk + usageChunk + doneEvent)
	b.SetBytes(int64(stream.Len()))
	b.ReportAllocs()
	buf := make([]byte, copyBufferSize)
	for b.Loop() {
		var u tokenUsage
		// One event a read, as a paced stream arrives.
		f := newEventFilter(io.NopCloser(&eventReader{data: stream.Bytes(), size: len(contentChunk)}), true, &u, 1<<20, nil)
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
		if err != nil || n == 0 || u.prompt() != 9 {
			b.Fatal(n, err, u)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1003, "ns/event")
}

// eventReader hands out data size bytes a read.
type eventReader struct {
	data []byte
	size int
}

func (r *eventReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.size)], r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestBigEventThenMore: after an event larger than the splitter keeps a
// buffer for, the stream goes on (the splitter once panicked there).
func TestBigEventThenMore(t *testing.T) {
	big := "data: {\"choices\":[{\"delta\":{\"content\":\"" + strings.Repeat("x", 100<<10) + "\"},\"index\":0}]}\n\n"
	stream := big + contentChunk + doneEvent
	got, err := io.ReadAll(newEventFilter(io.NopCloser(strings.NewReader(stream)), true, nil, 1<<20, nil))
	if err != nil || string(got) != stream {
		t.Fatalf("got %d bytes, %v; want %d", len(got), err, len(stream))
	}
}

// TestFilterSmallBuffers: whatever the caller's buffer and the read
// boundaries, the filter gives the same bytes.
func TestFilterSmallBuffers(t *testing.T) {
	mid := "data: {\"choices\":[{\"delta\":{\"content\":\"" + strings.Repeat("y", 3000) + "\"},\"index\":0}]}\r\n\r\n"
	in := azureFirstChunk + contentChunk + annotationChunk + mid + finishChunk + "data: a\r\rdata: b\r\n" + annotationChunk + usageChunk + doneEvent + "data: tail"
	want, _ := io.ReadAll(newEventFilter(io.NopCloser(strings.NewReader(in)), true, nil, 1<<20, nil))
	for _, size := range []int{1, 7, 100, 4096} {
		for _, chunk := range []int{1, 13, 1000, 1 << 20} {
			f := newEventFilter(io.NopCloser(&eventReader{data: []byte(in), size: chunk}), true, nil, 1<<20, nil)
			got := readInPieces(f, size)
			if !bytes.Equal(got, want) {
				t.Fatalf("buffer %d, reads of %d: %d bytes, want %d", size, chunk, len(got), len(want))
			}
		}
	}
}

// TestSplitterStaysLinear: lines that end in '\r' alone once made every line
// search the rest of the buffer for a '\n'.
func TestSplitterStaysLinear(t *testing.T) {
	event := strings.Repeat("data: x\r", 150_000) + "\r"
	start := time.Now()
	got, err := io.ReadAll(newEventFilter(io.NopCloser(strings.NewReader(event)), true, nil, 4<<20, nil))
	if err != nil || string(got) != event {
		t.Fatalf("%d bytes, %v", len(got), err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a %d-byte event of '\\r' lines took %v", len(event), d)
	}
}
