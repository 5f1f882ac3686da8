package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// This file is the one vocabulary for attempts that got no answer from
// Azure: each failure is tagged where it happens (the attempt's trace says
// how far the request got), and failover, the metrics and the client's
// message all read the tag.

// failureKind is what went wrong on the way to Azure.
type failureKind int

const (
	failConnect    failureKind = iota + 1 // no connection (DNS, dial, outbound proxy), or it broke before the request went out
	failTLS                               // the TLS handshake failed: nothing was sent
	failSent                              // the connection failed after the request may have reached Azure
	failTimeout                           // no response headers within the upstream timeout
	failAuth                              // no Entra ID token: nothing was sent
	failCooldown                          // every candidate is cooling down: nothing was sent
	failClientGone                        // the client went away
)

// upstreamFailure is a request that got no answer from Azure.
type upstreamFailure struct {
	kind failureKind
	host string        // the backend's host, for the client's message; "" if none was tried
	wait time.Duration // failCooldown: until the first candidate is free
	err  error
}

// errUpstreamTimeout is the cause headerTimeoutTransport gives when Azure
// sends no response headers within AZURE_OPENAI_PROXY_UPSTREAM_TIMEOUT.
var errUpstreamTimeout = errors.New("no response headers from Azure OpenAI within the upstream timeout")

func (f *upstreamFailure) Error() string {
	switch f.kind {
	case failCooldown:
		return "every deployment of this model is cooling down after failures; the first is free in " + f.wait.Round(time.Millisecond).String()
	case failTimeout:
		return errUpstreamTimeout.Error()
	case failAuth:
		return f.err.Error()
	}
	return "Azure OpenAI at " + f.host + ": " + f.reason()
}

// reason says what failed, in words that hold no URL, header or key.
func (f *upstreamFailure) reason() string {
	r := describeNetError(f.err)
	if f.kind == failTLS && !strings.Contains(r, "TLS") {
		r = "TLS handshake failed (" + r + ")"
	}
	return r
}

func (f *upstreamFailure) Unwrap() error { return f.err }

// nothingSent reports whether Azure cannot have seen the request, so that
// sending it to another candidate is safe.
func (f *upstreamFailure) nothingSent() bool {
	return f.kind == failConnect || f.kind == failTLS
}

// outcomeLabel names the attempt's outcome for the metrics: a bounded set.
func (f *upstreamFailure) outcomeLabel() string {
	switch f.kind {
	case failConnect, failTLS:
		return "connect_error"
	case failTimeout:
		return "timeout"
	case failAuth:
		return "auth_error"
	case failClientGone:
		return "client_gone"
	}
	return "error"
}

// attemptProgress notes how far one attempt got. Its hooks run on the
// transport's goroutines.
type attemptProgress struct {
	tlsStarted, connected, wroteHeaders atomic.Bool
	conns                               atomic.Int32              // connections the attempt was given
	grant                               atomic.Pointer[dialGrant] // the place its dial holds at a host's gate (dialgate.go)
}

type attemptProgressKey struct{}

// trace returns ctx with hooks that record the attempt's progress (and
// with the progress itself, for the dialer).
func (p *attemptProgress) trace(ctx context.Context) context.Context {
	ctx = context.WithValue(ctx, attemptProgressKey{}, p)
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		TLSHandshakeStart: func() { p.tlsStarted.Store(true) },
		TLSHandshakeDone: func(state tls.ConnectionState, err error) {
			if g := p.grant.Load(); g != nil {
				protocol := ""
				if err == nil {
					protocol = state.NegotiatedProtocol
					if protocol == "" {
						protocol = "http/1.1" // no ALPN: HTTP/1
					}
				}
				g.release(protocol)
			}
		},
		GotConn: func(httptrace.GotConnInfo) {
			p.conns.Add(1)
			p.connected.Store(true)
		},
		WroteHeaders: func() { p.wroteHeaders.Store(true) },
	})
}

// failure tags an attempt's transport error by how far the attempt got.
// clientCtx is the client's request context.
func (p *attemptProgress) failure(clientCtx context.Context, host string, err error) *upstreamFailure {
	f := &upstreamFailure{kind: failSent, host: host, err: err}
	switch {
	case clientCtx.Err() != nil:
		f.kind = failClientGone
	case !p.connected.Load() && p.tlsStarted.Load():
		f.kind = failTLS // a reset, EOF, bad certificate or timeout in the handshake: nothing sent
	case !p.wroteHeaders.Load():
		f.kind = failConnect // the timeout too, if it came before the request went out
	case errors.Is(err, errUpstreamTimeout):
		f.kind = failTimeout
	}
	return f
}

// answerFailure logs f and returns what the client gets: the one place a
// failure becomes a status and a message.
func answerFailure(log *slog.Logger, f *upstreamFailure, timeout time.Duration) *apiError {
	at := "Azure OpenAI"
	if f.host != "" {
		at += " at " + f.host
	}
	switch f.kind {
	case failCooldown:
		secs := strconv.Itoa(retryAfterSeconds(f.wait))
		e := newAPIError(http.StatusTooManyRequests, "requests", "rate_limit_exceeded", "",
			"Every Azure deployment of this model is cooling down after 429s or failures; retry after "+secs+" seconds.")
		e.header = http.Header{"Retry-After": {secs}, "Retry-After-Ms": {strconv.FormatInt(max(f.wait.Milliseconds(), 1), 10)}}
		return e
	case failAuth:
		tokenErr, _ := errors.AsType[*tokenError](f.err)
		log.Error("no Entra ID token", "source", tokenErr.source, "reason", tokenErr.reason)
		return newAPIError(http.StatusBadGateway, typeServer, "upstream_auth_failed", "",
			"The proxy "+tokenErr.Error()+", so it cannot call "+at+".")
	case failTimeout:
		log.Warn("upstream timeout", "host", f.host, "timeout", timeout.String())
		return newAPIError(http.StatusGatewayTimeout, typeServer, "upstream_timeout", "",
			at+" sent no response headers within "+timeout.String()+" (AZURE_OPENAI_PROXY_UPSTREAM_TIMEOUT).")
	}
	reason := f.reason()
	log.Warn("upstream unreachable", "host", f.host, "reason", reason)
	return newAPIError(http.StatusBadGateway, typeServer, "upstream_unreachable", "",
		"Could not reach "+at+": "+reason+".")
}

// retryAfterSeconds rounds a wait up to whole seconds, at least one: a
// Retry-After of 0 would invite an immediate retry.
func retryAfterSeconds(wait time.Duration) int {
	return max(int((wait+time.Second-1)/time.Second), 1)
}

// describeNetError describes a transport error in words that hold no URL,
// header or key: only what failed.
func describeNetError(err error) string {
	if errors.Is(err, errUpstreamTimeout) {
		return "no connection within the upstream timeout"
	}
	if dnsErr, ok := errors.AsType[*net.DNSError](err); ok {
		return "DNS lookup failed (" + dnsErr.Err + ")"
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return "TLS certificate verification failed"
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return "TLS certificate signed by an unknown authority"
	}
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return "TLS handshake failed (is the endpoint http:// rather than https://?)"
	}
	if opErr, ok := errors.AsType[*net.OpError](err); ok {
		if opErr.Timeout() {
			return opErr.Op + " timed out"
		}
		if sysErr, ok := opErr.Err.(*os.SyscallError); ok {
			return opErr.Op + ": " + sysErr.Err.Error()
		}
		if opErr.Err != nil {
			return opErr.Op + ": " + opErr.Err.Error()
		}
		return opErr.Op + " failed"
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "connection closed before a response"
	}
	return "connection failed"
}
