package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// How long a candidate cools down after a failure. A 429 says how long
// itself (retry-after-ms or Retry-After), within maxCooldown.
const (
	cooldownAfterFailure  = 5 * time.Second  // 5xx, connect or TLS error, timeout
	cooldownAfterThrottle = 10 * time.Second // 429 without a retry-after header
	cooldownAfterMissing  = 60 * time.Second // 404 DeploymentNotFound: a configuration error
	maxCooldown           = 60 * time.Second
	maxBufferedFailedBody = 1 << 20
)

// backendTransport is the RoundTripper under the one ReverseProxy: for each
// request it picks a candidate (backend and deployment) by weight among those
// not cooling down, and fails over to the next on a failure that the client
// has not seen any byte of. Everything it needs was decided by the handler
// and travels in the request's upstreamCall; upstream.go builds each attempt.
type backendTransport struct {
	next          *headerTimeoutTransport
	headerTimeout time.Duration // for all of a request's attempts together
	log           *slog.Logger
	now           func() time.Time
	entra         *entraCredential // for backends that authenticate with Entra ID
	metrics       *metrics

	mu           sync.Mutex
	coolingUntil map[string]time.Time // candidate cooldownKey → end of its cooldown
}

func newBackendTransport(next *headerTimeoutTransport, headerTimeout time.Duration, logger *slog.Logger, now func() time.Time, entra *entraCredential, m *metrics) *backendTransport {
	if now == nil {
		now = time.Now
	}
	return &backendTransport{next: next, headerTimeout: headerTimeout, log: logger, now: now, entra: entra, metrics: m, coolingUntil: map[string]time.Time{}}
}

func (t *backendTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	call := req.Context().Value(upstreamCallKey{}).(*upstreamCall)
	candidates := call.candidates()
	tried := make([]bool, len(candidates))
	var lastAnswer *http.Response // Azure's last answer among the attempts that failed over
	var lastFailure *upstreamFailure
	// One wait for response headers, however many attempts share it.
	deadline := time.Now().Add(t.headerTimeout)
	for range call.maxAttempts() {
		if (lastAnswer != nil || lastFailure != nil) && time.Now().After(deadline) {
			if lastFailure != nil {
				lastFailure = &upstreamFailure{kind: failTimeout, host: lastFailure.host, err: errUpstreamTimeout}
			}
			break // the wait for response headers is over, whatever candidates are left
		}
		i, wait := t.choose(call, candidates, tried)
		if i < 0 {
			if lastAnswer == nil && lastFailure == nil {
				return nil, &upstreamFailure{kind: failCooldown, wait: wait}
			}
			break
		}
		tried[i] = true
		c := candidates[i]
		resp, failure := t.try(req, call, c, deadline)
		v := t.judge(call, c, resp, failure)
		t.metrics.attempt(c.backend.name, v.outcome)
		if !v.retry {
			if failure != nil && lastAnswer != nil && failure.kind != failClientGone {
				break // Azure's earlier answer says more than this failure
			}
			if failure != nil {
				return nil, failure
			}
			call.outcome.upstreamStatus = resp.StatusCode
			return resp, nil
		}
		attrs := []any{"backend", c.backend.name, "deployment", c.deployment, "reason", v.reason}
		if failure != nil && failure.kind == failTimeout {
			attrs = append(attrs, "resent_after_timeout", true) // the next candidate gets what this one may still be doing
		}
		if len(candidates) > 1 && call.placesDeployment {
			// A lone candidate has nowhere else to go; and a deployment the
			// proxy did not name is not this candidate's failure.
			t.coolDown(c, v.cooldown)
			attrs = append(attrs, "cooldown", v.cooldown.String())
		}
		t.log.Warn("upstream attempt failed", attrs...)
		if resp != nil {
			lastAnswer = resp // its body was buffered by judge
		} else {
			lastFailure = failure
		}
	}
	if lastAnswer != nil {
		// Azure's own last answer, unchanged, even if a later candidate
		// could not be reached: its status and Retry-After tell the client more.
		call.outcome.upstreamStatus = lastAnswer.StatusCode
		return lastAnswer, nil
	}
	return nil, lastFailure
}

// try sends one attempt to candidate c and notes it in the request's outcome.
// A transport error comes back tagged with how far the request got.
func (t *backendTransport) try(req *http.Request, call *upstreamCall, c candidate, deadline time.Time) (*http.Response, *upstreamFailure) {
	host := c.backend.endpoint.Host
	var bearer string
	if c.backend.entra && !call.ephemeral {
		token, err := t.entra.Token(req.Context())
		if err != nil {
			return nil, &upstreamFailure{kind: failAuth, host: host, err: err}
		}
		bearer = token
	}
	var progress attemptProgress
	ctx, cancel := context.WithCancelCause(progress.trace(req.Context()))
	out := call.attempt(ctx, req, c, bearer)
	resp, err := t.next.send(out, cancel, deadline)
	o := call.outcome
	o.attempts++
	o.backend, o.deployment = c.backend.name, c.deployment
	if err != nil {
		return nil, progress.failure(req.Context(), host, err)
	}
	return resp, nil
}

// choose picks the next candidate not yet tried and not cooling down. With
// none, it returns -1 and how long until the first cooling one is free.
func (t *backendTransport) choose(call *upstreamCall, candidates []candidate, tried []bool) (int, time.Duration) {
	now := t.now()
	t.mu.Lock()
	coolingUntil := make([]time.Time, len(candidates))
	if len(candidates) > 1 { // a lone candidate never cools down: there is nowhere else to go
		for i, c := range candidates {
			coolingUntil[i] = t.coolingUntil[c.cooldownKey()]
		}
	}
	t.mu.Unlock()
	eligible := func(i int) bool { return !tried[i] && !coolingUntil[i].After(now) }
	var i int
	if call.model != nil {
		i = call.model.pick(eligible)
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
			wait = min(wait, coolingUntil[j].Sub(now))
		}
	}
	return -1, max(wait, 0)
}

func (t *backendTransport) coolDown(c candidate, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.coolingUntil[c.cooldownKey()] = t.now().Add(d)
}

// verdict is what one attempt's outcome means for the request.
type verdict struct {
	retry    bool          // go on to the next candidate
	cooldown time.Duration // how long the candidate cools down, when retry
	reason   string        // for the log, when retry
	outcome  string        // the metrics' outcome label
}

// judge decides whether an attempt's outcome should go to the next candidate,
// and for how long the candidate cools down. A response it retries has its
// body buffered, so that it can still be returned if it turns out to be the last.
func (t *backendTransport) judge(call *upstreamCall, c candidate, resp *http.Response, f *upstreamFailure) verdict {
	if f != nil {
		v := verdict{outcome: f.outcomeLabel()}
		switch {
		case f.kind == failTimeout && call.resendableAfterTimeout():
			// Azure may have the request; only where a second one costs
			// tokens but changes nothing is it sent again.
			v.retry, v.cooldown, v.reason = true, cooldownAfterFailure, "no response headers within the upstream timeout"
		case f.nothingSent():
			v.retry, v.cooldown, v.reason = true, cooldownAfterFailure, f.reason()
		}
		// Otherwise the request may have reached Azure: not safe to send twice.
		return v
	}
	v := verdict{outcome: strconv.Itoa(resp.StatusCode/100) + "xx", reason: resp.Status}
	switch resp.StatusCode {
	case http.StatusTooManyRequests:
		v.outcome = "429"
		v.cooldown = retryAfter(resp.Header)
		if v.cooldown == 0 {
			v.cooldown = cooldownAfterThrottle
		}
		v.retry, v.cooldown = bufferBody(resp), min(v.cooldown, maxCooldown)
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		v.retry, v.cooldown = bufferBody(resp), cooldownAfterFailure
	case http.StatusNotFound:
		if bufferBody(resp) && isDeploymentNotFound(resp) {
			t.log.Error("Azure says the deployment does not exist: fix the configuration",
				"backend", c.backend.name, "endpoint", c.backend.endpoint.Host, "deployment", c.deployment)
			v.retry, v.cooldown, v.reason, v.outcome = true, cooldownAfterMissing, "404 DeploymentNotFound", "deployment_not_found"
		}
	}
	return v
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
