package main

import (
	"bytes"
	"encoding/json"
	"io"
)

// Azure's chat streams differ from OpenAI's in ways that break clients: the
// first chunk has "choices": [] and prompt_filter_results (code that reads
// choices[0] crashes), and with the asynchronous content filter,
// annotation-only chunks can arrive, even after the finish chunk. The event
// filter drops exactly those and passes every other event byte for byte.
// It works on whole server-sent events, whatever the read boundaries, and
// hands on each kept event as soon as it is complete.

// sseSplitter cuts a byte stream into server-sent events: runs of lines up to
// and including an empty line. Lines end in "\r\n", "\n" or "\r". Its
// buffer is read into directly (spare, commit) and stays small between
// events: an idle stream holds about a kilobyte.
type sseSplitter struct {
	mem        []byte
	start, end int // the bytes not yet returned: mem[start:end]
	scanned    int // of those, already searched for line ends
	lineStart  int // where the line being scanned starts, relative to start
}

const (
	minSplitBuffer  = 1 << 10
	keptSplitBuffer = 64 << 10 // larger buffers, grown for a big event, are dropped once it is out
)

// spare returns room at the end of the buffer to read into.
func (s *sseSplitter) spare() []byte {
	if s.start == s.end && cap(s.mem) > keptSplitBuffer {
		s.mem, s.start, s.end, s.scanned, s.lineStart = nil, 0, 0, 0, 0
	}
	if s.start > 0 && len(s.mem)-s.end < minSplitBuffer/2 {
		n := copy(s.mem, s.mem[s.start:s.end]) // move the unfinished event to the front
		s.start, s.end = 0, n
	}
	if len(s.mem)-s.end < minSplitBuffer/2 {
		grown := make([]byte, max(minSplitBuffer, 2*len(s.mem)))
		s.end = copy(grown, s.mem[s.start:s.end])
		s.mem, s.start = grown, 0
	}
	return s.mem[s.end:]
}

// commit adds the n bytes just read into spare's room.
func (s *sseSplitter) commit(n int) { s.end += n }

func (s *sseSplitter) write(p []byte) {
	for len(p) > 0 {
		n := copy(s.spare(), p)
		s.commit(n)
		p = p[n:]
	}
}

// next returns the next complete event, or false when the bytes so far end
// inside one. With atEOF, a "\r" at the end counts as a line end. The event
// is only valid until the next call to spare or write.
func (s *sseSplitter) next(atEOF bool) ([]byte, bool) {
	buf := s.mem[s.start:s.end]
	for s.scanned < len(buf) {
		rest := buf[s.scanned:]
		i := lineEnd(rest)
		if i < 0 {
			s.scanned = len(buf)
			return nil, false
		}
		end := s.scanned + i // the terminator's first byte
		termLen := 1
		if buf[end] == '\r' {
			switch {
			case end+1 < len(buf) && buf[end+1] == '\n':
				termLen = 2
			case end+1 == len(buf) && !atEOF:
				return nil, false // "\r" or "\r\n": the next read decides
			}
		}
		lineEmpty := end == s.lineStart
		s.scanned = end + termLen
		s.lineStart = s.scanned
		if lineEmpty {
			event := buf[:s.scanned]
			s.start += s.scanned
			s.scanned, s.lineStart = 0, 0
			return event, true
		}
	}
	return nil, false
}

// pending is the size of the event not yet complete.
func (s *sseSplitter) pending() int { return s.end - s.start }

// rest returns what remains, an event the stream ended inside of.
func (s *sseSplitter) rest() []byte {
	r := s.mem[s.start:s.end]
	s.start, s.end, s.scanned, s.lineStart = 0, 0, 0, 0
	s.mem = nil
	return r
}

// eventFilter wraps an event stream from Azure: it notes the token usage the
// stream reports and, with drop, drops the chunks that OpenAI never sends.
// An event longer than maxEvent is not held: from there on the stream passes
// as it comes, unfiltered, and overflow is called once.
type eventFilter struct {
	src      io.ReadCloser
	drop     bool
	usage    *tokenUsage
	maxEvent int
	overflow func()
	raw      bool // past an event over maxEvent: pass the rest as it comes
	split    sseSplitter
	out      []byte // kept events the caller's buffer could not take yet
	err      error

	// Set when the proxy asked Azure for the stream's usage
	// (usageinject.go): what asking added is taken out again.
	hideUsage bool
	scratch   []byte
	events    *int // counts the events passed on, when set

	memo chunkMemo // the stream's last chunk, to read the next ones quickly
}

func newEventFilter(src io.ReadCloser, drop bool, usage *tokenUsage, maxEvent int, overflow func()) *eventFilter {
	return &eventFilter{src: src, drop: drop, usage: usage, maxEvent: maxEvent, overflow: overflow}
}

func (f *eventFilter) Read(p []byte) (int, error) {
	if len(f.out) > 0 { // what an earlier read could not take
		n := copy(p, f.out)
		if f.out = f.out[n:]; len(f.out) == 0 {
			f.out = nil
		}
		return n, nil
	}
	if f.raw {
		if f.err != nil {
			return 0, f.err
		}
		return f.src.Read(p)
	}
	n := 0
	for n == 0 && len(f.out) == 0 {
		if f.err != nil {
			f.out = f.split.rest() // an unfinished last event passes as it came
			if len(f.out) == 0 {
				return 0, f.err
			}
			break
		}
		if f.split.pending() == 0 && len(p) >= minDirectRead {
			n = f.readDirect(p)
		} else {
			n = f.readSplit(p)
		}
		if f.split.pending() > f.maxEvent && f.err == nil {
			f.raw = true
			f.out = append(f.out, f.split.rest()...)
			if f.overflow != nil {
				f.overflow()
			}
			break
		}
	}
	if n == 0 {
		n = copy(p, f.out)
		if f.out = f.out[n:]; len(f.out) == 0 {
			f.out = nil
		}
	}
	return n, nil
}

// minDirectRead is the least room in the caller's buffer that readDirect uses.
const minDirectRead = 512

// readDirect reads into the caller's buffer and filters the events there,
// moving each kept one down over what was dropped: with no event unfinished
// from an earlier read (the usual case for a paced stream, an event a read),
// nothing is copied and the splitter holds no buffer. What the read leaves
// unfinished goes to the splitter. It returns the bytes kept in p.
func (f *eventFilter) readDirect(p []byte) int {
	read, err := f.src.Read(p)
	f.err = err
	view := sseSplitter{mem: p[:read], end: read}
	kept := 0
	for {
		event, ok := view.next(err != nil)
		if !ok {
			break
		}
		// A kept event only moves down (it can only shrink), so it never
		// overwrites the bytes still to be split.
		if event, keep := f.pass(event); keep {
			kept += copy(p[kept:], event)
		}
	}
	if rest := p[view.start:read]; len(rest) > 0 {
		f.split.write(rest)
	}
	return kept
}

// readSplit reads into the splitter's buffer, which holds an event that
// began in an earlier read, and passes each event it completes into p (what
// does not fit waits in f.out). It returns the bytes put in p.
func (f *eventFilter) readSplit(p []byte) int {
	read, err := f.src.Read(f.split.spare())
	f.split.commit(read)
	f.err = err
	n := 0
	for {
		event, ok := f.split.next(err != nil)
		if !ok {
			break
		}
		event, keep := f.pass(event)
		if !keep {
			continue
		}
		// Kept events go straight to the caller's buffer; only what does
		// not fit waits (the splitter reuses its buffer).
		if len(f.out) == 0 && len(event) <= len(p)-n {
			n += copy(p[n:], event)
		} else {
			f.out = append(f.out, event...)
		}
	}
	return n
}

// pass decides on one event: whether the client gets it, and as what.
func (f *eventFilter) pass(event []byte) ([]byte, bool) {
	keep, used := inspectEvent(event, &f.memo)
	if used != nil && f.usage != nil {
		*f.usage = *used
	}
	if !keep && f.drop {
		return nil, false
	}
	if f.hideUsage {
		var drop bool
		if event, drop = hideAskedUsage(event, &f.scratch); drop {
			return nil, false
		}
	}
	if f.events != nil {
		*f.events++
	}
	return event, true
}

func (f *eventFilter) Close() error { return f.src.Close() }

// cutLine returns the first line of b without its "\r\n", "\n" or "\r", and the rest.
func cutLine(b []byte) (line, rest []byte) {
	i := lineEnd(b)
	if i < 0 {
		return b, nil
	}
	if b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n' {
		return b[:i], b[i+2:]
	}
	return b[:i], b[i+1:]
}

// inspectEvent reads one event: whether OpenAI would send it, and the token
// usage it reports, if any. It drops a chunk whose choices are empty and that
// carries no usage (Azure's prompt filter results), and a chunk whose every
// choice holds only content-filter fields (no delta, no text, no
// finish_reason). Everything else is kept: named events (the Responses API's
// response.*), comments, [DONE], errors, and the include_usage chunk.
func inspectEvent(event []byte, memo *chunkMemo) (keep bool, usage *tokenUsage) {
	var data []byte
	lines := 0
	for len(event) > 0 {
		var line []byte
		line, event = cutLine(event)
		if len(line) == 0 || line[0] == ':' {
			continue
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(name) {
		case "event":
			if len(value) > 0 && string(value) != "message" {
				keep = true // a named event is never dropped; its data may still report usage
			}
		case "data":
			switch lines {
			case 0:
				data = value // most events have one data line: no copy
			case 1:
				data = append(append(append([]byte(nil), data...), '\n'), value...)
			default:
				data = append(append(data, '\n'), value...)
			}
			lines++
		}
	}
	if lines == 0 || bytes.Equal(bytes.TrimSpace(data), []byte("[DONE]")) {
		return true, nil
	}
	if chunkKeep, chunkUsage, ok := memo.scan(data); ok {
		return keep || chunkKeep, chunkUsage
	}
	chunkKeep, chunkUsage := inspectChunkJSON(data)
	return keep || chunkKeep, chunkUsage
}

// inspectChunkJSON decides on an event's data with encoding/json: the
// reference, and the path for chunks scanChunk does not read (keys in
// unusual case, repeated keys, unexpected types, invalid JSON).
func inspectChunkJSON(data []byte) (keep bool, usage *tokenUsage) {
	var chunk struct {
		Choices  *[]map[string]json.RawMessage `json:"choices"`
		Usage    *tokenUsage                   `json:"usage"`
		Response *struct {
			Usage *tokenUsage `json:"usage"`
		} `json:"response"` // the Responses API's response.completed
	}
	if json.Unmarshal(data, &chunk) != nil {
		return true, nil
	}
	usage = chunk.Usage
	if chunk.Response != nil && chunk.Response.Usage != nil {
		usage = chunk.Response.Usage
	}
	if chunk.Choices == nil || chunk.Usage != nil {
		return true, usage
	}
	for _, choice := range *chunk.Choices {
		for key, value := range choice {
			if !annotationField(key, value) {
				return true, usage
			}
		}
	}
	return false, usage
}

// annotationField reports whether a choice's field is one an annotation-only
// chunk holds: content-filter results, or a null finish_reason or logprobs.
func annotationField(key string, value []byte) bool {
	switch key {
	case "index", "content_filter_results", "content_filter_offsets", "content_filter_raw":
		return true
	case "finish_reason", "logprobs":
		return string(value) == "null"
	}
	return false // delta, text, or anything else OpenAI sends
}

// lineEnd returns the index of the first '\r' or '\n' in b, or -1. It
// searches windows that double from 128 bytes, so that a line costs a few
// times its own length however far the next '\n' is: a stream of '\r'-only
// lines would otherwise make every line search to the end of the buffer.
func lineEnd(b []byte) int {
	for off, window := 0, 128; off < len(b); off, window = off+window, 2*window {
		w := b[off:min(len(b), off+window)]
		limit := len(w)
		lf := bytes.IndexByte(w, '\n')
		if lf >= 0 {
			limit = lf
		}
		if cr := bytes.IndexByte(w[:limit], '\r'); cr >= 0 {
			return off + cr
		}
		if lf >= 0 {
			return off + lf
		}
	}
	return -1
}
