package main

import (
	"errors"
	"io"
	"math/bits"
	"sync"
)

// Request bodies are read into pooled buffers in power-of-two size classes,
// so a busy proxy does not allocate (and the GC does not sweep) a new body
// buffer per request. Bodies below the smallest class are allocated to their
// size: a stream holds its request body while it is open, and a small one
// should cost its own bytes, not a class. Bodies above the largest class are
// allocated as usual.
const (
	minPooledShift = 14 // 16 KiB
	maxPooledShift = 24 // 16 MiB
)

type bodyPool struct {
	classes [maxPooledShift - minPooledShift + 1]sync.Pool // of *[]byte
}

// classFor returns the size class that holds n bytes, or -1 when n is not pooled.
func classFor(n int) int {
	if n < 1<<minPooledShift {
		return -1
	}
	shift := bits.Len(uint(n - 1))
	if shift > maxPooledShift {
		return -1
	}
	return shift - minPooledShift
}

// get returns a buffer of length n.
func (p *bodyPool) get(n int) []byte {
	c := classFor(n)
	if c < 0 {
		return make([]byte, n)
	}
	if b, ok := p.classes[c].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<(c+minPooledShift))
}

// put returns a buffer from get to the pool.
func (p *bodyPool) put(b []byte) {
	c := classFor(cap(b))
	if c < 0 || cap(b) != 1<<(c+minPooledShift) {
		return
	}
	b = b[:0]
	p.classes[c].Put(&b)
}

// readAll reads r whole into a pooled buffer that grows through the classes
// as bytes arrive, never past max: a client that announces a large body and
// sends little holds little (at most firstBodyBuffer, or eight times what it
// sent). max is the declared length (declared), or the limit; a body of
// unknown length starts at the smallest class.
func (p *bodyPool) readAll(r io.Reader, max int64, declared bool) ([]byte, error) {
	first := int64(1 << minPooledShift)
	if declared {
		first = firstBodyBuffer
	}
	buf := p.get(int(min(max, first)))[:0]
	for {
		room := int(min(int64(cap(buf)), max))
		if len(buf) == room {
			if int64(room) >= max {
				// Full: the body must end here.
				var probe [1]byte
				n, err := r.Read(probe[:])
				switch {
				case n > 0:
					p.put(buf)
					return nil, errBodyOverrun
				case err == io.EOF:
					return buf, nil
				case err != nil:
					p.put(buf)
					return nil, err
				}
				continue
			}
			next := min(4*int64(cap(buf)), max) // four times: few copies of a large body
			if max < 2*next {
				next = max // the rest fits in one more step: a body just over a class is not copied twice
			}
			bigger := p.get(int(next))
			copy(bigger, buf)
			p.put(buf)
			buf = bigger[:len(buf)]
			room = int(min(int64(cap(buf)), max))
		}
		n, err := r.Read(buf[len(buf):room])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			p.put(buf)
			return nil, err
		}
	}
}

// errBodyOverrun is a body longer than the reader's bound said it could be.
var errBodyOverrun = errors.New("the body is longer than its declared length")

// firstBodyBuffer is the most a body is given before its bytes arrive: most
// chat bodies fit, in one buffer, without a copy.
const firstBodyBuffer = 256 << 10

var errBodyReleased = errors.New("request body read after the request ended")

// bodyLease owns one request's pooled body buffer. Readers made from it stop
// once it is released: the transport may go on reading a request body after
// the handler has returned, and must never read a buffer that another
// request has since been given.
type bodyLease struct {
	mu   sync.Mutex
	buf  []byte // nil once released
	size int
	pool *bodyPool // nil: not pooled
}

// bodySplice replaces body[start:end] with with (start == end: an insertion).
type bodySplice struct {
	start, end int
	with       []byte
}

// reader reads the body with splices applied, in order of start, none
// overlapping (none: the body as sent). Every attempt at a candidate reads
// the same bytes, but for the deployment in the model and what the backend
// needs asked (usageinject.go).
func (l *bodyLease) reader(splices []bodySplice) io.ReadCloser {
	return &leaseReader{lease: l, splices: splices}
}

// splicedLength is the length of the body as reader reads it.
func (l *bodyLease) splicedLength(splices []bodySplice) int64 {
	n := l.size
	for _, s := range splices {
		n += len(s.with) - (s.end - s.start)
	}
	return int64(n)
}

// release ends the lease; a buffer from a pool goes back to it.
func (l *bodyLease) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf != nil && l.pool != nil {
		l.pool.put(l.buf)
	}
	l.buf = nil
}

type leaseReader struct {
	lease   *bodyLease
	splices []bodySplice
	off     int // in the body as read, splices applied
}

func (r *leaseReader) Read(p []byte) (int, error) {
	r.lease.mu.Lock()
	defer r.lease.mu.Unlock()
	buf := r.lease.buf
	if buf == nil {
		return 0, errBodyReleased
	}
	n := 0
	for n < len(p) {
		rest := r.piece(buf)
		if len(rest) == 0 {
			break
		}
		k := copy(p[n:], rest)
		n += k
		r.off += k
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// piece returns the bytes from r.off to the next seam between the body and a splice.
func (r *leaseReader) piece(buf []byte) []byte {
	src, out := 0, 0 // where the stretch being walked starts, in buf and in what is read
	for _, s := range r.splices {
		if r.off < out+s.start-src {
			return buf[src+r.off-out : s.start]
		}
		out += s.start - src
		if r.off < out+len(s.with) {
			return s.with[r.off-out:]
		}
		out += len(s.with)
		src = s.end
	}
	if at := src + r.off - out; at < len(buf) {
		return buf[at:]
	}
	return nil
}

func (r *leaseReader) Close() error { return nil }

// copyBufferPool gives ReverseProxy its response copy buffers. A stream holds
// its buffer for as long as it is open, so they are small: server-sent events
// are a few hundred bytes, and larger answers only take a few more reads.
type copyBufferPool struct{ pool sync.Pool }

const copyBufferSize = 4 << 10

func (p *copyBufferPool) Get() []byte {
	if b, ok := p.pool.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, copyBufferSize)
}

func (p *copyBufferPool) Put(b []byte) {
	if cap(b) == copyBufferSize {
		b = b[:copyBufferSize]
		p.pool.Put(&b)
	}
}
