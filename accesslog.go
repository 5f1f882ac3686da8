package main

import (
	"bufio"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

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

// logAccess writes one line for a settled request. It never logs a body, a
// query or a header but apim-request-id.
func logAccess(log *slog.Logger, r *http.Request, respHeader http.Header, o *requestOutcome) {
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", shownPath(r.URL.Path)),
		slog.Int("status", o.status),
		slog.Float64("duration_ms", float64(o.total.Microseconds())/1000),
		slog.Int64("bytes", o.bytes),
	}
	if o.client != nil {
		attrs = append(attrs, slog.String("client", o.client.name))
	}
	switch {
	case o.shownModel != "":
		attrs = append(attrs, slog.String("model", o.shownModel))
	case o.modelHidden:
		attrs = append(attrs, slog.String("model", "(invalid)"))
	}
	if o.backend != "" {
		attrs = append(attrs, slog.String("backend", o.backend), slog.String("deployment", o.deployment),
			slog.Int("attempts", o.attempts))
	}
	if id := respHeader.Get("Apim-Request-Id"); id != "" {
		attrs = append(attrs, slog.String("apim_request_id", id))
	}
	if u := o.usage; u.prompt() > 0 || u.completion() > 0 {
		attrs = append(attrs, slog.Int64("prompt_tokens", u.prompt()), slog.Int64("completion_tokens", u.completion()))
	}
	if o.aborted {
		attrs = append(attrs, slog.Bool("aborted", true))
	}
	if o.cutByShutdown {
		attrs = append(attrs, slog.Bool("cut_by_shutdown", true))
	}
	log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
}
