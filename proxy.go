package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"sync/atomic"
	"time"
)

// maxEphemeralBody bounds the body of a request only a WebRTC ephemeral key
// vouches for: an SDP offer is a few kilobytes.
const maxEphemeralBody = 1 << 20

// serverState is what changes while the server runs: readiness (cleared while
// draining) and the route table (swapped on reload).
type serverState struct {
	ready         atomic.Bool
	closingConns  atomic.Bool  // draining: every answer closes its connection
	cutByShutdown atomic.Bool  // the drain timeout passed: what is cut now was cut by the proxy
	handling      atomic.Int64 // requests in the handler, until their log line is written
	routes        atomic.Pointer[routeTable]
	sessions      sessionTracker // websocket sessions, which Shutdown does not wait for
	clients       clientLedger   // named clients' usage, kept across reloads
}

// proxyHandler validates and resolves each request, then hands it to one
// httputil.ReverseProxy.
type proxyHandler struct {
	cfg     Config
	log     *slog.Logger
	state   *serverState
	metrics *metrics
	cors    corsPolicy
	proxy   *httputil.ReverseProxy
	bodies  *bodyPool
	started int64 // unix seconds, the "created" of GET /v1/models
}

// newHandler returns the proxy's whole HTTP surface.
func newHandler(cfg Config, logger *slog.Logger, state *serverState, m *metrics) http.Handler {
	h := &proxyHandler{
		cfg:     cfg,
		log:     logger,
		state:   state,
		metrics: m,
		cors:    newCORSPolicy(cfg.CORSOrigins),
		bodies:  &bodyPool{},
		started: time.Now().Unix(),
	}
	h.proxy = &httputil.ReverseProxy{
		Rewrite:        stripClientHeaders,
		Transport:      newBackendTransport(newUpstreamTransport(cfg), cfg.UpstreamTimeout, logger, cfg.Now, cfg.Entra, m),
		FlushInterval:  -1, // server-sent events reach the client as Azure sends them
		ModifyResponse: h.modifyResponse,
		ErrorHandler:   h.upstreamError,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		BufferPool:     &copyBufferPool{},
	}
	return h
}

func (h *proxyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.answeredUnrecorded(w, r) {
		return
	}
	rec := &responseRecorder{ResponseWriter: w, sessions: &h.state.sessions, start: time.Now()}
	outcome := &requestOutcome{route: "unknown"}
	h.metrics.inFlight.Add(1)
	h.state.handling.Add(1)
	defer func() {
		// ReverseProxy aborts a response it cannot finish by panicking with
		// http.ErrAbortHandler; record the request, then let the server see it.
		h.finish(r, rec, outcome, recover())
	}()
	h.serveAPI(rec, r, outcome)
}

// answeredUnrecorded answers what needs no access log line: the ops
// endpoints, and the 503 of a proxy at its connection cap.
func (h *proxyHandler) answeredUnrecorded(w http.ResponseWriter, r *http.Request) bool {
	if h.state.closingConns.Load() || overCapacity(r.Context()) {
		w.Header().Set("Connection", "close") // the client's next request goes elsewhere, or waits its turn
	}
	h.cors.setHeaders(w.Header(), r)
	if serveOps(w, r, h.state, h.metrics, h.cfg.clock, h.cfg.MetricsAddr == "", true) {
		return true
	}
	if overCapacity(r.Context()) {
		e := newAPIError(http.StatusServiceUnavailable, typeServer, "server_busy", "",
			"The proxy holds as many connections as it serves at once (AZURE_OPENAI_PROXY_MAX_CONNECTIONS); retry shortly.")
		e.header = http.Header{"Retry-After": {"1"}}
		writeError(w, e)
		return true
	}
	return false
}

// finish records a request that has ended, p being what ReverseProxy
// panicked with, if it did, which it then passes on.
func (h *proxyHandler) finish(r *http.Request, rec *responseRecorder, outcome *requestOutcome, p any) {
	h.metrics.inFlight.Add(-1)
	outcome.settle(r, rec, p != nil, h.state.cutByShutdown.Load())
	h.charge(outcome)
	logAccess(h.log, r, rec.Header(), outcome)
	h.metrics.record(outcome)
	h.state.handling.Add(-1)
	if p != nil {
		panic(p)
	}
}

// serveAPI plans the request, then hands it to ReverseProxy. It stays small,
// as ServeHTTP does: their frames are on the stack for as long as a stream
// is open, and net/http needs nearly 8 KiB of stack to write the first
// response headers beneath them; past 8 KiB every stream's goroutine would
// hold a 16 KiB stack.
func (h *proxyHandler) serveAPI(w *responseRecorder, r *http.Request, outcome *requestOutcome) {
	call, body, e := h.planRequest(w, r, outcome)
	if body != nil {
		// The buffer goes back to the pool once the request is over,
		// whatever happened.
		defer body.release()
	}
	switch {
	case e != nil:
		h.refuse(w, r, outcome, e)
	case call != nil:
		h.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), upstreamCallKey{}, call)))
	}
}

// refuse answers a request a stage refused.
func (h *proxyHandler) refuse(w http.ResponseWriter, r *http.Request, outcome *requestOutcome, e *apiError) {
	if !outcome.bodyRead && r.ContentLength != 0 {
		// Refused before its body was read: answer now and close, rather
		// than let the server wait to drain a body that may never come.
		w.Header().Set("Connection", "close")
	}
	writeError(w, e)
}

// planRequest takes a request through its stages, each of which refuses bad
// input itself, so that nothing it refuses reaches Azure; the call it
// returns is what the last stage does:
//  1. resolveRoute (routes.go): the route, its methods, the query
//  2. authorize (clientkeys.go): the client's key, and the client it names
//  3. admit (ratelimit.go): the named client's limits
//  4. readBody (body.go): the body, within the limit
//  5. findRequestModel (body.go): the model the request names, and
//     checkClientCall (clients.go): whether its client may make the call;
//     reserve (ratelimit.go): its prompt's estimate against the token limits
//  6. planCall (this file): the candidates, or the model as a deployment
//  7. ReverseProxy: stripClientHeaders, then backendTransport
//     (failover.go) tries candidates with attempts built in upstream.go,
//     and modifyResponse shapes the answer.
func (h *proxyHandler) planRequest(w http.ResponseWriter, r *http.Request, outcome *requestOutcome) (call *upstreamCall, body *bodyLease, e *apiError) {
	if r.Method == http.MethodOptions {
		outcome.route = "preflight"
		h.cors.preflight(w, r)
		return nil, nil, nil
	}
	table := h.state.routes.Load() // this request's configuration, even if a reload comes
	if e := h.checkExposure(r, table); e != nil {
		return nil, body, e
	}
	rt, e := resolveRoute(r)
	if e != nil {
		return nil, body, e
	}
	outcome.route = rt.label()
	key, ephemeral, who, e := authorize(table, r.Header, rt)
	if e != nil {
		return nil, body, e
	}
	if who != nil && who.name == "" {
		who = nil // an unnamed key: no models, limits or usage of its own
	}
	outcome.client = who
	if rt.answeredByProxy() {
		h.showLimits(w.Header(), who)
		return nil, nil, h.serveModels(w, table, rt, who)
	}
	if e := h.admit(w.Header(), outcome); e != nil {
		return nil, body, e
	}
	if e := checkContentType(rt, table, r); e != nil {
		return nil, body, e
	}
	limit := h.cfg.MaxBodyBytes
	if ephemeral {
		limit = min(limit, maxEphemeralBody) // no key of the proxy's vouches for this client
	}
	data, e := readBody(w, r, limit, h.cfg.BodyTimeout, h.bodies)
	if e != nil {
		return nil, body, e
	}
	outcome.bodyRead, outcome.bodyBytes = true, len(data)
	// Whatever happens below, the buffer goes back to the pool once the
	// request is over: the lease owns it from here.
	body = &bodyLease{buf: data, size: len(data), pool: h.bodies}
	contentType := r.Header.Get("Content-Type")
	model, e := findRequestModel(rt, contentType, data)
	if e != nil {
		return nil, body, e
	}
	outcome.model, outcome.modelValid = string(model.name), model.valid
	outcome.generating = r.Method == http.MethodPost && (rt.kind == routeDeployment || rt.kind == routeEngine || len(model.name) > 0)
	_, multipart := isMultipart(contentType)
	outcome.jsonBody = len(data) > 0 && !multipart
	if e := checkClientCall(who, rt, r.Method, model.name, data); e != nil {
		return nil, body, e
	}
	if e := h.reserve(w.Header(), outcome); e != nil {
		return nil, body, e
	}
	call, e = planCall(table, rt, model, key, ephemeral, body, outcome)
	if e != nil {
		return nil, body, e
	}
	if e := askStreamUsage(call, data); e != nil {
		return nil, body, e
	}
	outcome.configured = call.model != nil
	outcome.deploymentChosen = call.model != nil || call.deployment != ""
	return call, body, nil
}

// planCall decides where a request may go: a configured model's candidates,
// or the default backend (with the model as the deployment name on routes
// that name a deployment).
func planCall(table *routeTable, rt route, model requestModel, key string, ephemeral bool, body *bodyLease, outcome *requestOutcome) (*upstreamCall, *apiError) {
	call := &upstreamCall{route: rt, table: table, clientKey: key, ephemeral: ephemeral, model: table.route(model.name), outcome: outcome}
	if body.size > 0 {
		call.body = body
	}
	switch {
	case call.model != nil:
		call.bodyModel = model // each attempt names its candidate's deployment
	case rt.kind == routePassthrough || rt.kind == routeRealtime && rt.model == "":
		// No deployment in the path (a realtime observer, by call_id,
		// names none): an unconfigured model goes as sent.
	default:
		if !model.valid {
			return nil, invalidModel(string(model.name))
		}
		call.deployment, call.bodyModel = string(model.name), model
	}
	if key == "" && table.needsClientKey(call.model) {
		return nil, missingKey()
	}
	// Whether each attempt names its candidate's deployment: in the path or
	// query, or in the body where the body names the model in a form the
	// proxy can rewrite (not an encoded multipart field).
	call.placesDeployment = call.model != nil && (rt.kind != routePassthrough || model.edit != editNone)
	return call, nil
}

// modifyResponse shapes Azure's answer for OpenAI's clients: the proxy's CORS
// policy instead of Azure's, and chat streams as OpenAI sends them. It also
// taps successful answers for the token usage they report, as the bytes pass.
func (h *proxyHandler) modifyResponse(resp *http.Response) error {
	stripUpstreamCORS(resp)
	call := resp.Request.Context().Value(upstreamCallKey{}).(*upstreamCall)
	if c := call.outcome.client; c != nil && c.limits.any() {
		stripUpstreamRateHeaders(resp.Header) // the client's own limits were sent instead
	}
	if resp.StatusCode/100 != 2 || call.route.kind == routeRealtime {
		return nil
	}
	switch contentType := resp.Header.Get("Content-Type"); {
	case hasMediaType(contentType, "text/event-stream"):
		filter := newEventFilter(resp.Body, call.route.chat && !h.cfg.RawStream, &call.outcome.usage, h.cfg.MaxEventBytes, func() {
			h.log.Warn("a streamed event is larger than AZURE_OPENAI_PROXY_MAX_EVENT: the rest of the stream passes unfiltered",
				"max_event", h.cfg.MaxEventBytes, "backend", call.outcome.backend)
		})
		if b, ok := resp.Request.Context().Value(attemptBackendKey{}).(*backend); ok && call.asksStreamUsage(b) {
			filter.hideUsage = true
		}
		filter.events = &call.outcome.streamEvents
		resp.Body = filter
		resp.ContentLength = -1
		resp.Header.Del("Content-Length")
	case hasMediaType(contentType, "application/json"):
		resp.Body = newUsageTap(resp.Body, &call.outcome.usage)
	}
	return nil
}

// stripClientHeaders removes what must not reach Azure from the outbound
// request; the transport sets URL, key and body for each attempt.
// ReverseProxy runs it after removing hop-by-hop headers, so a client's
// Connection header cannot undo it.
func stripClientHeaders(pr *httputil.ProxyRequest) {
	h := pr.Out.Header
	h.Del("Authorization")
	h.Del("Cookie")
	h.Del("Api-Key")
	h.Del("Expect") // the body is already here; a 100 Continue would only add a round trip
	// The transport then asks for gzip itself and decompresses the answer,
	// so that the event filter and the usage taps read plain JSON and events.
	h.Del("Accept-Encoding")
	stripKeyProtocol(h)
}

// upstreamError answers when no response came from Azure. Nothing is written
// when the client has gone: there is nobody to read it.
func (h *proxyHandler) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	f, ok := errors.AsType[*upstreamFailure](err)
	if !ok { // ReverseProxy's own, after Azure answered (a failed protocol switch)
		f = &upstreamFailure{kind: failSent, err: err}
	}
	writeError(w, answerFailure(h.log, f, h.cfg.UpstreamTimeout))
}
