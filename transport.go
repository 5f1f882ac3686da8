package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// newUpstreamTransport builds the transport every upstream request uses: one
// pool for HTTP/2 and, for large bodies, one for HTTP/1.1 (largeBodyHTTP1).
// It clones http.DefaultTransport so HTTP/2 stays on (a hand-built Transport
// with its own dialer or TLS config silently loses it), and sizes the idle
// pool for real concurrency: Go's default keeps 2 connections per host, so
// every further concurrent request would pay for a new TLS handshake.
func newUpstreamTransport(cfg Config) *headerTimeoutTransport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	// Each backend's outbound proxy was chosen at start-up (or reload) for its endpoint.
	t.Proxy = func(req *http.Request) (*url.URL, error) {
		if b, ok := req.Context().Value(attemptBackendKey{}).(*backend); ok {
			return b.proxy, nil
		}
		return nil, nil
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	t.TLSHandshakeTimeout = 10 * time.Second
	t.DialContext = newDialGates(dialer.DialContext, dialer.Timeout+t.TLSHandshakeTimeout).DialContext
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	t.IdleConnTimeout = 90 * time.Second
	t.ForceAttemptHTTP2 = true
	// An HTTP/1 connection keeps its read and write buffers for as long as a
	// stream is open on it, and a stream's requests and events are small:
	// 2 KiB each instead of Go's 4 saves 4 KB an open stream (README,
	// Performance). Larger reads and writes pass the buffers by.
	t.ReadBufferSize, t.WriteBufferSize = 2<<10, 2<<10
	if cfg.RootCAs != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
	}
	return &headerTimeoutTransport{next: newBodySizeSplit(t, http1Only(t, dialer.DialContext)), timeout: cfg.UpstreamTimeout}
}

// largeBodyHTTP1 is the request body size from which an upstream request goes
// over an HTTP/1.1 connection of its own rather than a shared HTTP/2 one.
// Go's HTTP/2 transport copies a body twice (into a frame buffer, then into
// the frame) and sends it in flow-controlled frames; HTTP/1.1 copies it once
// through a 32 KiB buffer, and TCP alone paces it. For a 1 MiB body that
// saves the proxy 0.35 – 0.45 ms of CPU (README, Performance). A handshake,
// when no HTTP/1.1 connection is idle, costs about as much, so smaller
// requests, and with them most streams, stay on HTTP/2. Azure serves both,
// and most clients send it HTTP/1.1: openai-python's httpx has HTTP/2 off
// by default (https://www.python-httpx.org/http2).
const largeBodyHTTP1 = 256 << 10

// maxHTTP1InFlight caps the large requests in flight on HTTP/1.1 at once.
// Each holds a connection of its own until its answer is read (a streamed
// one, for the stream's life), and its dial is not gated: past the cap a
// large body takes a shared HTTP/2 connection, as every body did before.
const maxHTTP1InFlight = 64

// bodySizeSplit sends HTTPS requests whose bodies are at least
// largeBodyHTTP1 long through large, while it has a slot for them, and the
// rest through small. (Over plain HTTP both speak HTTP/1.1: nothing to gain.)
type bodySizeSplit struct {
	small, large http.RoundTripper
	slots        chan struct{} // a large request holds one until its answer's body is closed
}

func newBodySizeSplit(small, large http.RoundTripper) *bodySizeSplit {
	return &bodySizeSplit{small: small, large: large, slots: make(chan struct{}, maxHTTP1InFlight)}
}

func (s *bodySizeSplit) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.ContentLength < largeBodyHTTP1 || req.URL.Scheme != "https" {
		return s.small.RoundTrip(req)
	}
	select {
	case s.slots <- struct{}{}:
	default:
		return s.small.RoundTrip(req)
	}
	sent := &countingBody{ReadCloser: req.Body}
	viaHTTP1 := *req // the request is the caller's: a copy reads the counted body
	viaHTTP1.Body = sent
	resp, err := s.large.RoundTrip(&viaHTTP1)
	if err != nil {
		<-s.slots
		// Azure cannot have acted on a body it did not get whole. It may
		// have answered early (a 413, a 401) and closed the connection, and
		// over HTTP/1.1 the reset can take that answer with it: ask again
		// over HTTP/2, which keeps it.
		if sent.n.Load() < req.ContentLength && req.GetBody != nil && req.Context().Err() == nil {
			if body, berr := req.GetBody(); berr == nil {
				again := viaHTTP1
				again.Body = body
				return s.small.RoundTrip(&again)
			}
		}
		return nil, err
	}
	resp.Body = &slotBody{ReadCloser: resp.Body, slots: s.slots}
	return resp, nil
}

// countingBody counts the bytes the transport has read of a request body
// (its writer may still read after RoundTrip returns).
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// slotBody gives its request's slot back when the answer is closed.
type slotBody struct {
	io.ReadCloser
	slots chan struct{}
	once  sync.Once
}

func (b *slotBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() { <-b.slots })
	return err
}

// http1Only is t speaking HTTP/1.1 alone, on connections of its own. Its
// dials are not gated: each of its requests needs a connection anyway.
func http1Only(t *http.Transport, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	h1 := t.Clone()
	h1.DialContext = dial
	h1.ForceAttemptHTTP2 = false
	h1.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // non-nil and empty: no HTTP/2
	if h1.TLSClientConfig == nil {
		h1.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	} else {
		h1.TLSClientConfig = h1.TLSClientConfig.Clone()
	}
	h1.TLSClientConfig.NextProtos = []string{"http/1.1"}
	// No more idle than can be busy at once: a burst of large uploads
	// should not leave hundreds of idle TLS connections behind.
	h1.MaxIdleConnsPerHost = maxHTTP1InFlight
	return h1
}

// tokenHTTPClient fetches Entra ID tokens. Managed identity endpoints are
// local (link-local or in the same host), so no outbound proxy applies.
func tokenHTTPClient(rootCAs *x509.CertPool) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	if rootCAs != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: rootCAs, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: t, Timeout: tokenFetchTimeout}
}

// headerTimeoutTransport bounds the wait for response headers, and says so
// with errUpstreamTimeout, so the error handler can tell a slow Azure (504)
// from an unreachable one (502). The body then streams with no time limit.
type headerTimeoutTransport struct {
	next    http.RoundTripper
	timeout time.Duration
}

func (t *headerTimeoutTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	return t.send(req.WithContext(ctx), cancel, time.Now().Add(t.timeout))
}

// send sends req, whose context cancel ends, and waits for its response
// headers until deadline, then cancels it with errUpstreamTimeout. A caller
// that builds its own request (each failover attempt) gives it the
// cancellable context from the start: a request copied for the context
// alone would stay in memory as long as the answer streams.
func (t *headerTimeoutTransport) send(req *http.Request, cancel context.CancelCauseFunc, deadline time.Time) (*http.Response, error) {
	timeout := time.Until(deadline)
	if timeout <= 0 {
		cancel(nil)
		return nil, errUpstreamTimeout
	}
	timer := time.AfterFunc(timeout, func() { cancel(errUpstreamTimeout) })
	resp, err := t.next.RoundTrip(req)
	if !timer.Stop() {
		if err == nil {
			resp.Body.Close()
		}
		return nil, errUpstreamTimeout
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	// The context lives on while the body streams, and ends with the
	// client's request, its parent. Closing the body ends the attempt on
	// its connection without it; a wrapper to cancel it there too would be
	// one more layer for every streamed event to pass.
	return resp, nil
}
