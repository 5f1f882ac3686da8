package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// How long a candidate rests after a failure. A 429 says how long itself
// (retry-after-ms or Retry-After), within maxRest.
const (
	restAfterFailure      = 5 * time.Second  // 5xx, connect or TLS error, timeout
	restAfterThrottle     = 10 * time.Second // 429 without a retry-after header
	restAfterMissing      = 60 * time.Second // 404 DeploymentNotFound: a configuration error
	maxRest               = 60 * time.Second
	maxBufferedFailedBody = 1 << 20
)

// backendTransport is the RoundTripper under the one ReverseProxy: for each
// request it picks a candidate (backend and deployment) by weight among those
// not resting, and fails over to the next on a failure that the client has
// not seen any byte of. Everything it needs was decided by the handler and
// travels in the request's upstreamCall.
type backendTransport struct {
	next    http.RoundTripper
	log     *slog.Logger
	now     func() time.Time
	entra   *entraCredential // for backends that authenticate with Entra ID
	metrics *metrics

	mu      sync.Mutex
	resting map[string]time.Time // candidate cooldownKey → rest until
}

func newBackendTransport(next http.RoundTripper, logger *slog.Logger, now func() time.Time, entra *entraCredential, m *metrics) *backendTransport {
	if now == nil {
		now = time.Now
	}
	return &backendTransport{next: next, log: logger, now: now, entra: entra, metrics: m, resting: map[string]time.Time{}}
}

// allRestingError is returned when every candidate of a model rests; the
// proxy answers 429 with the time until the first is free.
type allRestingError struct{ wait time.Duration }

func (e *allRestingError) Error() string {
	return fmt.Sprintf("every deployment of this model is resting after failures; the first is free in %s", e.wait.Round(time.Millisecond))
}

func (t *backendTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	call := req.Context().Value(upstreamCallKey{}).(*upstreamCall)
	candidates := call.candidates()
	attempts := call.table.attempts(call.route)
	tried := make([]bool, len(candidates))
	var lastResp *http.Response
	var lastErr error
	for range attempts {
		i, wait := t.choose(call, candidates, tried)
		if i < 0 {
			if lastResp == nil && lastErr == nil {
				return nil, &allRestingError{wait: wait}
			}
			break
		}
		tried[i] = true
		c := candidates[i]
		out := call.attemptRequest(req, c)
		if c.backend.entra {
			token, err := t.entra.Token(req.Context())
			if err != nil {
				call.host = c.backend.endpoint.Host
				t.metrics.attempt(c.backend.name, "auth_error")
				return nil, err // the same identity serves every backend: no other candidate would fare better
			}
			out.Header.Del("Api-Key")
			out.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := t.next.RoundTrip(out)
		call.attempts++
		call.backend, call.deployment, call.host = c.backend.name, c.deployment, c.backend.endpoint.Host
		retry, rest, reason := t.judge(req.Context(), c, resp, err)
		t.metrics.attempt(c.backend.name, attemptOutcome(resp, err, reason))
		if !retry {
			return resp, err
		}
		if len(candidates) > 1 {
			t.rest(c, rest)
		}
		t.log.Warn("upstream attempt failed", "backend", c.backend.name, "deployment", c.deployment, "reason", reason, "rest", rest.String())
		lastErr = err
		if resp != nil {
			lastResp = resp // its body was buffered by judge
		}
	}
	if lastResp != nil {
		// Azure's own last answer, unchanged, even if a later candidate
		// could not be reached: its status and Retry-After tell the client more.
		return lastResp, nil
	}
	return nil, lastErr
}

// choose picks the next candidate not yet tried and not resting. With none,
// it returns -1 and how long until the first resting one is free.
func (t *backendTransport) choose(call *upstreamCall, candidates []candidate, tried []bool) (int, time.Duration) {
	now := t.now()
	t.mu.Lock()
	restingUntil := make([]time.Time, len(candidates))
	if len(candidates) > 1 { // a lone candidate never rests: there is nowhere else to go
		for i, c := range candidates {
			restingUntil[i] = t.resting[c.cooldownKey()]
		}
	}
	t.mu.Unlock()
	eligible := func(i int) bool { return !tried[i] && !restingUntil[i].After(now) }
	var i int
	if call.route != nil {
		i = call.route.pick(eligible)
	} else {
		i = -1
		if eligible(0) {
			i = 0
		}
	}
	if i >= 0 {
		return i, 0
	}
	wait := time.Duration(math.MaxInt64)
	for j := range candidates {
		if !tried[j] {
			wait = min(wait, restingUntil[j].Sub(now))
		}
	}
	return -1, max(wait, 0)
}

func (t *backendTransport) rest(c candidate, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.resting[c.cooldownKey()] = t.now().Add(d)
}

// judge decides whether an attempt's outcome should go to the next candidate,
// and for how long the candidate rests. A response it retries has its body
// buffered, so that it can still be returned if it turns out to be the last.
func (t *backendTransport) judge(ctx context.Context, c candidate, resp *http.Response, err error) (retry bool, rest time.Duration, reason string) {
	if err != nil {
		if ctx.Err() != nil {
			return false, 0, "" // the client has gone
		}
		if errors.Is(err, errUpstreamTimeout) {
			return true, restAfterFailure, "no response headers within the upstream timeout"
		}
		if failedBeforeSending(err) {
			return true, restAfterFailure, upstreamFailure(err)
		}
		return false, 0, "" // the request may have reached Azure: not safe to send twice
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests:
		rest = retryAfter(resp.Header)
		if rest == 0 {
			rest = restAfterThrottle
		}
		return bufferBody(resp), min(rest, maxRest), "429 Too Many Requests"
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return bufferBody(resp), restAfterFailure, resp.Status
	case http.StatusNotFound:
		if !bufferBody(resp) || !isDeploymentNotFound(resp) {
			return false, 0, ""
		}
		t.log.Error("Azure says the deployment does not exist: fix the configuration",
			"backend", c.backend.name, "endpoint", c.backend.endpoint.Host, "deployment", c.deployment)
		return true, restAfterMissing, "404 DeploymentNotFound"
	}
	return false, 0, ""
}

// attemptOutcome names an attempt's outcome for the metrics: a bounded set.
func attemptOutcome(resp *http.Response, err error, reason string) string {
	switch {
	case err == nil && reason == "404 DeploymentNotFound":
		return "deployment_not_found"
	case err == nil && resp.StatusCode == http.StatusTooManyRequests:
		return "429"
	case err == nil:
		return strconv.Itoa(resp.StatusCode/100) + "xx"
	case errors.Is(err, errUpstreamTimeout):
		return "timeout"
	case failedBeforeSending(err):
		return "connect_error"
	case errors.Is(err, context.Canceled):
		return "client_gone"
	}
	return "error"
}

// failedBeforeSending reports whether err means the request never reached
// Azure (no connection, no TLS session), so sending it elsewhere is safe.
func failedBeforeSending(err error) bool {
	if opErr, ok := errors.AsType[*net.OpError](err); ok && (opErr.Op == "dial" || opErr.Op == "proxyconnect") {
		return true
	}
	if _, ok := errors.AsType[*net.DNSError](err); ok {
		return true
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return true
	}
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return true
	}
	return false
}

// bufferBody replaces resp.Body with an in-memory copy, and reports false
// (leaving the body readable as it was) when it is too large to keep.
func bufferBody(resp *http.Response) bool {
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBufferedFailedBody+1))
	if err != nil || len(data) > maxBufferedFailedBody {
		resp.Body = readCloser{io.MultiReader(bytes.NewReader(data), resp.Body), resp.Body}
		return false
	}
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(data))
	resp.ContentLength = int64(len(data))
	resp.Header.Set("Content-Length", strconv.Itoa(len(data)))
	return true
}

type readCloser struct {
	io.Reader
	io.Closer
}

// isDeploymentNotFound reads a buffered 404 body for Azure's error code.
func isDeploymentNotFound(resp *http.Response) bool {
	data, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(data))
	var body struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	return json.Unmarshal(data, &body) == nil && body.Error.Code == "DeploymentNotFound"
}

// retryAfter reads how long Azure asks to wait: retry-after-ms (provisioned
// deployments; what the OpenAI SDKs read first), else Retry-After in seconds
// or as an HTTP date. Zero when neither is usable.
func retryAfter(h http.Header) time.Duration {
	if ms, err := strconv.ParseFloat(h.Get("Retry-After-Ms"), 64); err == nil && ms > 0 {
		return time.Duration(ms * float64(time.Millisecond))
	}
	v := h.Get("Retry-After")
	if secs, err := strconv.ParseFloat(v, 64); err == nil && secs > 0 {
		return time.Duration(secs * float64(time.Second))
	}
	if at, err := http.ParseTime(v); err == nil {
		return max(time.Until(at), 0)
	}
	return 0
}
