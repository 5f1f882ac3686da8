package main

import (
	"encoding/binary"
	"math/bits"
)

// chunkMemo spares the event filter most of its reading. A stream's chunks
// differ from one another mostly in their value strings and numbers (the
// delta's text, a sequence number), and when a chunk reports no usage no
// decision scanChunk makes depends on those: it reads keys, structure,
// literals, and where values are strings or numbers, not what they hold.
// So the memo keeps the last chunk scanChunk read whole without usage, and
// where its value strings and numbers are; a chunk that is the same bytes
// but for those values, each still a whole valid string or number of the
// same kind, gets the remembered answer after one comparison (and a check
// of each value that changed). FuzzChunkMemo pins it to scanChunk.
type chunkMemo struct {
	data   []byte       // the remembered chunk; empty: none
	tokens []valueToken // its value strings and numbers, in order
	keep   bool         // scanChunk's answer for it
	misses int          // chunks in a row the memo did not answer
	rest   int          // chunks still to read without the memo
	seen   int          // chunks read so far, counted to just past memoWarmUp
}

// valueToken is where one value string (quotes included) or number is.
type valueToken struct {
	start, end uint16
	number     bool
}

const (
	maxMemoChunk  = 4 << 10 // longer chunks are scanned every time
	maxMemoTokens = 64      // so are chunks with more values (logprobs)

	// A memo that misses costs its comparison and, for the chunk that
	// replaces it, one more pass: after a few misses in a row (shapes that
	// alternate), or a chunk it cannot hold (too long, too many values), it
	// rests a while: chunks are read as if there were no memo.
	memoMissesBeforeRest = 3
	memoRest             = 32
	// A stream opens with chunks of several shapes (Azure's prompt filter
	// results, the chunk with the role; the Responses API's created,
	// in_progress, output_item.added...): their misses do not count.
	memoWarmUp = 8
)

// valueToken's offsets must hold any offset in a remembered chunk.
const _ uint16 = maxMemoChunk

// scan is scanChunk, answered from the memo when data matches it.
func (m *chunkMemo) scan(data []byte) (keep bool, usage *tokenUsage, ok bool) {
	if m.rest > 0 {
		m.rest--
		return scanChunk(data)
	}
	if m.seen <= memoWarmUp {
		m.seen++
	}
	if len(m.data) > 0 {
		if m.matches(data) {
			m.misses = 0
			return m.keep, nil, true
		}
		if m.seen > memoWarmUp {
			if m.misses++; m.misses == memoMissesBeforeRest {
				m.misses, m.rest = 0, memoRest
			}
		}
	}
	keep, usage, ok = scanChunk(data)
	if ok && usage == nil && m.rest == 0 {
		m.remember(data, keep)
	}
	// Otherwise the memo stays as it was: still true of the chunk it holds.
	return keep, usage, ok
}

// remember keeps data, which scanChunk read whole, and its values.
func (m *chunkMemo) remember(data []byte, keep bool) {
	m.data, m.tokens, m.keep = m.data[:0], m.tokens[:0], keep
	if len(data) > maxMemoChunk {
		m.rest = memoRest
		return
	}
	if m.tokens == nil {
		m.tokens = make([]valueToken, 0, 16) // a chat chunk has about a dozen
	}
	s := jsonScanner{data: data}
	for i := 0; i < len(data); {
		var t valueToken
		switch c := data[i]; {
		case c == '"':
			end, _, err := s.stringEnd(i)
			if err != nil {
				return // cannot be: scanChunk read it whole
			}
			if j := spaceEnd(data, end); j < len(data) && data[j] == ':' {
				i = end // a key: part of the chunk's shape
				continue
			}
			t = valueToken{start: uint16(i), end: uint16(end)}
		case c == '-' || isDigit(c): // outside strings, only a number starts so
			s.pos = i
			if s.skipNumber() != nil {
				return
			}
			t = valueToken{start: uint16(i), end: uint16(s.pos), number: true}
		default:
			i++
			continue
		}
		if len(m.tokens) == maxMemoTokens {
			m.tokens, m.rest = m.tokens[:0], memoRest
			return
		}
		m.tokens = append(m.tokens, t)
		i = int(t.end)
	}
	m.data = append(m.data, data...)
}

// matches reports whether data is the remembered chunk but for the text of
// some of its value strings and numbers, each still one whole valid value
// of the same kind. Where the two first differ must be inside such a value
// (or, for a number, just past it: a longer number); that value is read
// anew in data, and the comparison goes on after it.
func (m *chunkMemo) matches(data []byte) bool {
	s := jsonScanner{data: data}
	i, j := 0, 0 // offsets in m.data and in data
	next := 0    // the first remembered value not yet passed
	for {
		n := commonPrefixLen(m.data[i:], data[j:])
		i, j = i+n, j+n
		if i == len(m.data) && j == len(data) {
			return true
		}
		for next < len(m.tokens) && int(m.tokens[next].end) < i {
			next++
		}
		if next == len(m.tokens) {
			return false
		}
		t := m.tokens[next]
		if i < int(t.start) || i == int(t.end) && !t.number {
			return false // a difference in the chunk's shape
		}
		start := j - (i - int(t.start)) // the same value's start in data: all before it matched
		if t.number {
			s.pos = start
			if s.skipNumber() != nil {
				return false
			}
			j = s.pos
		} else {
			if start == len(data) || data[start] != '"' {
				return false
			}
			end, _, err := s.stringEnd(start)
			if err != nil {
				return false
			}
			j = end
		}
		i = int(t.end)
		next++
	}
}

// commonPrefixLen returns how many bytes a and b begin with in common,
// comparing a word at a time.
func commonPrefixLen(a, b []byte) int {
	n := min(len(a), len(b))
	i := 0
	for ; i+8 <= n; i += 8 {
		if x := binary.LittleEndian.Uint64(a[i:]) ^ binary.LittleEndian.Uint64(b[i:]); x != 0 {
			return i + bits.TrailingZeros64(x)/8
		}
	}
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}
