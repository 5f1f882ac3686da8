package main

import (
	"net/http"
	"time"
)

// requestOutcome is everything the access log line and the metrics say about
// one request, in one place. The handler, the transport and the response taps
// write it as they learn each fact; it is settled and read once, when the
// request ends, even when ReverseProxy aborts a stream (it panics with
// http.ErrAbortHandler, and nothing after its ServeHTTP runs).
type requestOutcome struct {
	// Written by the handler.
	route      string  // the route's label (route.label)
	model      string  // as the client named it: arbitrary bytes until settled
	modelValid bool    // model is a valid deployment name
	configured bool    // the model is in the route table
	bodyRead   bool    // the request body was read whole
	bodyBytes  int     // its size
	client     *client // the named client; nil: none, or an unnamed key
	generating bool    // a POST that runs a model: charged to its client
	jsonBody   bool    // the body is JSON (not a form): its size estimates a prompt
	reserved   int64   // the prompt's estimate held against the client's token limits
	// The proxy chose the deployment (a configured one, or the model's name
	// on a route with the deployment in the path), rather than passing on
	// whatever the client's body says.
	deploymentChosen bool

	// Written by the transport and the response taps.
	backend, deployment string // of the last attempt
	attempts            int
	upstreamStatus      int // Azure's status on the answer relayed; 0 when none came
	usage               tokenUsage
	streamEvents        int // events of a stream passed on to the client

	// Settled when the request ends.
	status           int    // what the client got; statusClientClosed if it left first
	aborted          bool   // the answer was cut off (ErrAbortHandler)
	cutByShutdown    bool   // by the proxy's own shutdown, not by the client
	shownModel       string // model as the log and the metrics may show it ("" if none or not shown)
	modelHidden      bool   // the client named a model that may not be shown
	firstByte, total time.Duration
	bytes            int64
}

// statusClientClosed is logged when the client went away before the answer
// was complete (nginx's convention).
const statusClientClosed = 499

// settle works out, once, what the log and the metrics both read.
func (o *requestOutcome) settle(r *http.Request, rec *responseRecorder, aborted, shuttingDown bool) {
	o.aborted = aborted
	o.status = rec.status
	cut := r.Context().Err() != nil && (o.status == 0 || aborted)
	switch {
	case cut && shuttingDown:
		o.cutByShutdown = true
		if o.status == 0 {
			o.status = http.StatusServiceUnavailable
		}
	case cut:
		o.status = statusClientClosed
	case o.status == 0:
		o.status = http.StatusOK
	}
	// A configured model, or one that is a valid deployment name, may be
	// shown; anything else is arbitrary client bytes.
	if o.model != "" {
		if o.configured || o.modelValid {
			o.shownModel = o.model
		} else {
			o.modelHidden = true
		}
	}
	o.firstByte, o.total, o.bytes = rec.firstByte, time.Since(rec.start), rec.bytes.Load()
}

// maxShownPath bounds a request path in logs and error messages.
const maxShownPath = 256

// shownPath is a client's path as logs and error messages show it.
func shownPath(p string) string {
	if len(p) <= maxShownPath {
		return p
	}
	return p[:maxShownPath] + "…"
}
