package main

import (
	"bufio"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// accessEntry is what the handler learns about a request for its log line.
type accessEntry struct {
	route      string // the metrics' route label
	model      string
	configured bool   // the model is in the route table
	deployment string // the one that answered
	backend    string
	attempts   int
	usage      tokenUsage
}

// shownModel is the model as the log and the metrics may show it: a
// configured model, or one that is a valid deployment name. Anything else is
// arbitrary client bytes, and is not shown.
func (e *accessEntry) shownModel() (string, bool) {
	if e.configured || validDeploymentName(e.model) {
		return e.model, true
	}
	return "", false
}

// responseRecorder notes the status and size of a response for the access log.
// Flush and Unwrap keep streaming and protocol switches working through it.
type responseRecorder struct {
	http.ResponseWriter
	start     time.Time
	firstByte time.Duration // until the status line went out
	status    int
	bytes     atomic.Int64 // after a protocol switch, written by ReverseProxy's copying goroutine
	sessions  *sessionTracker
}

func (r *responseRecorder) WriteHeader(status int) {
	if r.status == 0 && status >= 200 {
		r.status = status
		r.firstByte = time.Since(r.start)
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *responseRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
		r.firstByte = time.Since(r.start)
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes.Add(int64(n))
	return n, err
}

// Hijack hands the connection to ReverseProxy for a protocol switch
// (websockets): the session is tracked so that shutdown waits for it, and
// what it sends the client is counted for the log.
func (r *responseRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	r.status = http.StatusSwitchingProtocols
	r.firstByte = time.Since(r.start)
	return r.sessions.track(conn, &r.bytes), brw, nil
}

func (r *responseRecorder) Flush() {
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

func (r *responseRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// statusClientClosed is logged when the client went away before the answer
// was complete (nginx's convention).
const statusClientClosed = 499

// finish logs a request and adds it to the metrics.
func (h *proxyHandler) finish(r *http.Request, rec *responseRecorder, entry *accessEntry, start time.Time, aborted bool) {
	status := h.logAccess(r, rec, entry, start, aborted)
	model, _ := entry.shownModel()
	h.metrics.record(requestRecord{
		route: entry.route, model: model, deployment: entry.deployment, backend: entry.backend,
		configured: entry.configured, code: status, firstByte: rec.firstByte, total: time.Since(start),
		promptTokens: entry.usage.prompt(), completionTokens: entry.usage.completion(),
	})
}

// logAccess writes one line per request and returns the status it logged.
// It never logs a body, a query or a header but apim-request-id.
func (h *proxyHandler) logAccess(r *http.Request, rec *responseRecorder, entry *accessEntry, start time.Time, aborted bool) int {
	status := rec.status
	if r.Context().Err() != nil && (status == 0 || aborted) {
		status = statusClientClosed
	} else if status == 0 {
		status = http.StatusOK
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", status),
		slog.Duration("duration", time.Since(start)),
		slog.Int64("bytes", rec.bytes.Load()),
	}
	if entry.model != "" {
		model, ok := entry.shownModel()
		if !ok {
			model = "(invalid)"
		}
		attrs = append(attrs, slog.String("model", model))
	}
	if entry.backend != "" {
		attrs = append(attrs, slog.String("backend", entry.backend), slog.String("deployment", entry.deployment),
			slog.Int("attempts", entry.attempts))
	}
	if id := rec.Header().Get("Apim-Request-Id"); id != "" {
		attrs = append(attrs, slog.String("apim_request_id", id))
	}
	if u := entry.usage; u.prompt() > 0 || u.completion() > 0 {
		attrs = append(attrs, slog.Int64("prompt_tokens", u.prompt()), slog.Int64("completion_tokens", u.completion()))
	}
	if aborted {
		attrs = append(attrs, slog.Bool("aborted", true))
	}
	h.log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
	return status
}
