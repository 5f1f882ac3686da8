package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// serverState is what changes while the server runs: readiness (cleared while
// draining) and the route table (swapped on reload).
type serverState struct {
	ready    atomic.Bool
	routes   atomic.Pointer[routeTable]
	sessions sessionTracker // websocket sessions, which Shutdown does not wait for
}

// upstreamCall is what the handler decided about one request. It travels in
// the request's context to the ReverseProxy hooks and the transport, which
// act on it and decide nothing but which candidate to try. It holds the
// client's key: never log it.
type upstreamCall struct {
	table     *routeTable
	route     *modelRoute // the model's candidates; nil: the default backend
	model     string      // with route nil on a deployment route: the model, used as the deployment name
	kind      routeKind
	op        string // deployment operation, or the escaped path below /openai/ on other routes
	family    apiFamily
	rawQuery  string // the client's query
	clientKey string
	body      *bodyLease // nil: no body
	bodyModel bodyModel  // where the body names the model, for the backends that read the deployment there

	// Set by the transport and the response taps, for the log, the metrics and the error messages.
	backend, deployment, host string
	attempts                  int
	usage                     tokenUsage
}

type upstreamCallKey struct{}

// candidates lists where this request may go.
func (c *upstreamCall) candidates() []candidate {
	if c.route != nil {
		return c.route.candidates
	}
	return []candidate{{backend: c.table.defaultBackend, deployment: c.model, weight: 1}}
}

// apiV1 is the api_version that selects Azure's v1 API: OpenAI's own paths
// under /openai/v1/, the deployment in the body, no dated api-version.
const apiV1 = "v1"

// attemptRequest is the outbound request for one candidate: its URL,
// api-version, key and body. req is ReverseProxy's outbound request.
func (c *upstreamCall) attemptRequest(req *http.Request, cand candidate) *http.Request {
	b := cand.backend
	out := req.Clone(context.WithValue(req.Context(), attemptBackendKey{}, b))
	v1 := b.apiVersion == apiV1
	var path, query string
	switch {
	case c.kind == routeRealtime:
		path, query = "/openai/realtime", realtimeQuery(c.rawQuery, b, cand.deployment)
		if v1 {
			path = "/openai/v1/realtime"
		}
	case v1:
		path, query = "/openai/v1/"+c.op, c.rawQuery
		if strings.HasPrefix(c.op, "audio/") || strings.HasPrefix(c.op, "images/") {
			query = withAPIVersion(c.rawQuery, "preview") // v1 serves these as preview
		}
	default:
		apiVersion := b.apiVersion
		if c.family == apiPreview {
			apiVersion = b.previewAPIVersion
		}
		path, query = "/openai/"+c.op, withAPIVersion(c.rawQuery, apiVersion)
		if c.kind == routeDeployment || c.kind == routeEngine {
			path = "/openai/deployments/" + cand.deployment + "/" + c.op
		}
	}
	out.URL, _ = upstreamURL(b.endpoint, path, query) // cannot fail: resolveRoute has unescaped this path already
	out.Host = ""
	key := b.apiKey
	if key == "" {
		key = c.clientKey
	}
	out.Header.Set("Api-Key", key)
	out.Body, out.GetBody, out.ContentLength = nil, nil, 0
	if c.body != nil {
		// The deployment goes into the body where Azure reads it there: on
		// every v1 route, and on dated routes without it in the path.
		var start, end int
		var replacement []byte
		if m := c.bodyModel; m.edit != editNone && (v1 || c.kind == routePassthrough) {
			start, end, replacement = m.start, m.end, m.replacement(cand.deployment)
		}
		out.Body = c.body.reader(start, end, replacement)
		out.GetBody = func() (io.ReadCloser, error) { return c.body.reader(start, end, replacement), nil }
		out.ContentLength = int64(c.body.size - (end - start) + len(replacement))
	}
	return out
}

// attemptBackendKey carries the backend of an attempt to the transport's Proxy function.
type attemptBackendKey struct{}

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
		Rewrite:        rewriteUpstream,
		Transport:      newBackendTransport(newUpstreamTransport(cfg), logger, cfg.Now, cfg.Entra, m),
		FlushInterval:  -1, // server-sent events reach the client as Azure sends them
		ModifyResponse: h.modifyResponse,
		ErrorHandler:   h.upstreamError,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		BufferPool:     &copyBufferPool{},
	}
	return h
}

func (h *proxyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.cors.setHeaders(w.Header(), r)
	if serveOps(w, r, h.state, h.metrics, h.cfg.MetricsAddr == "") {
		return
	}

	start := time.Now()
	rec := &responseRecorder{ResponseWriter: w, sessions: &h.state.sessions, start: start}
	entry := accessEntry{route: "unknown"}
	h.metrics.inFlight.Add(1)
	defer func() {
		// ReverseProxy aborts a response it cannot finish by panicking with
		// http.ErrAbortHandler; log the request, then let the server see it.
		p := recover()
		h.metrics.inFlight.Add(-1)
		h.finish(r, rec, &entry, start, p != nil)
		if p != nil {
			panic(p)
		}
	}()
	if r.Method == http.MethodOptions {
		entry.route = "preflight"
		h.cors.preflight(rec, r)
		return
	}
	if e := h.serveAPI(rec, r, &entry); e != nil {
		writeError(rec, e)
	}
}

// serveAPI validates r and resolves where it may go; bad input is answered
// here and never reaches Azure.
func (h *proxyHandler) serveAPI(w http.ResponseWriter, r *http.Request, entry *accessEntry) *apiError {
	table := h.state.routes.Load() // this request's configuration, even if a reload comes
	rt, e := resolveRoute(r.URL.EscapedPath())
	if e != nil {
		return e
	}
	entry.route = routeLabel(rt, true)
	switch rt.kind {
	case routeModelList, routeModel:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return methodNotAllowed(w, "GET, HEAD")
		}
	case routeDeployment, routeEngine:
		if r.Method != http.MethodPost {
			return methodNotAllowed(w, "POST")
		}
	}
	key := clientKey(r.Header)
	upgrade := isWebsocketUpgrade(r)
	if key == "" && upgrade {
		key, _ = subprotocolKey(r.Header)
	}
	if table.clientKeys != nil {
		if !table.clientKeys.allows(key) {
			return newAPIError(http.StatusUnauthorized, typeInvalidRequest, "invalid_api_key", "",
				"Incorrect API key provided: this proxy accepts only its own client keys (as 'Authorization: Bearer KEY' or 'api-key').")
		}
		key = "" // a proxy key, not an Azure key: it goes no further
	}
	switch rt.kind {
	case routeModelList:
		if key == "" && table.clientKeys == nil {
			return missingKey()
		}
		return h.serveModelList(w, table)
	case routeModel:
		if key == "" && table.clientKeys == nil {
			return missingKey()
		}
		return h.serveModel(w, table, rt.model)
	}
	if key == "" && !table.anyCredential() {
		return missingKey() // no backend could serve it: refuse before reading a body
	}
	if e := checkQuery(r.URL.RawQuery); e != nil {
		return e
	}
	body, e := readBody(w, r, h.cfg.MaxBodyBytes, h.bodies)
	if e != nil {
		return e
	}
	// Whatever happens below, the buffer goes back to the pool once the
	// request is over: the lease owns it from here.
	lease := &bodyLease{buf: body, size: len(body), pool: h.bodies}
	defer lease.release()

	call := &upstreamCall{table: table, kind: rt.kind, op: rt.op, family: rt.family, rawQuery: r.URL.RawQuery, clientKey: key}
	if len(body) > 0 {
		call.body = lease
	}
	switch rt.kind {
	case routeDeployment, routeEngine:
		model := []byte(rt.model)
		if rt.kind == routeDeployment {
			if call.bodyModel, e = modelFromBody(r.Header.Get("Content-Type"), body); e != nil {
				return e
			}
			model = call.bodyModel.value
		} else if len(body) > 0 {
			// The legacy engines route names the model in the path; a v1
			// backend needs it in the body.
			field, e := jsonModel(body)
			if e != nil {
				return e
			}
			call.bodyModel = modelInsertion(body)
			if field.found {
				call.bodyModel = bodyModel{edit: editJSONValue, start: field.start, end: field.end}
			}
		}
		entry.model = string(model)
		if call.route = table.route(model); call.route == nil {
			if !validDeploymentName(entry.model) {
				return invalidModel(entry.model)
			}
			call.model = entry.model
		}
	case routePassthrough:
		if rt.op == "realtime" && upgrade {
			call.kind = routeRealtime
			entry.route = "realtime"
			q, _ := url.ParseQuery(r.URL.RawQuery)
			model := q.Get("model")
			if model == "" {
				return missingModel()
			}
			entry.model = model
			if call.route = table.route([]byte(model)); call.route == nil {
				if !validDeploymentName(model) {
					return invalidModel(model)
				}
				call.model = model
			}
			break
		}
		if isJSON(r.Header.Get("Content-Type")) && len(body) > 0 {
			field, e := jsonModel(body)
			if e != nil {
				return e
			}
			if field.found && field.isString {
				entry.model = string(field.value)
				// A configured model goes to its deployments, named in the
				// body's model (Azure reads it there); any other goes as sent.
				if call.route = table.route(field.value); call.route != nil {
					call.bodyModel = bodyModel{edit: editJSONValue, start: field.start, end: field.end}
				}
			}
		}
	}
	if key == "" && table.needsClientKey(call.route) {
		return missingKey()
	}
	entry.configured = call.route != nil
	h.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), upstreamCallKey{}, call)))
	entry.backend, entry.deployment, entry.attempts, entry.usage = call.backend, call.deployment, call.attempts, call.usage
	return nil
}

func missingKey() *apiError {
	return newAPIError(http.StatusUnauthorized, typeInvalidRequest, "missing_api_key", "",
		"You didn't provide an API key. Send your Azure OpenAI key as 'Authorization: Bearer KEY' or as an 'api-key' header.")
}

// clientKey returns the Azure key the client sent, as 'api-key' or as
// 'Authorization: Bearer'.
func clientKey(h http.Header) string {
	if k := strings.TrimSpace(h.Get("Api-Key")); k != "" {
		return k
	}
	scheme, token, ok := strings.Cut(h.Get("Authorization"), " ")
	if ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(token)
	}
	return ""
}

func methodNotAllowed(w http.ResponseWriter, allow string) *apiError {
	w.Header().Set("Allow", allow)
	return newAPIError(http.StatusMethodNotAllowed, typeInvalidRequest, "method_not_allowed", "",
		"This route only accepts "+allow+".")
}

// modifyResponse shapes Azure's answer for OpenAI's clients: the proxy's CORS
// policy instead of Azure's, and chat streams as OpenAI sends them. It also
// taps successful answers for the token usage they report, as the bytes pass.
func (h *proxyHandler) modifyResponse(resp *http.Response) error {
	stripUpstreamCORS(resp)
	call, _ := resp.Request.Context().Value(upstreamCallKey{}).(*upstreamCall)
	if call == nil || resp.StatusCode/100 != 2 || call.kind == routeRealtime {
		return nil
	}
	switch contentType := resp.Header.Get("Content-Type"); {
	case hasMediaType(contentType, "text/event-stream"):
		isChat := (call.kind == routeDeployment || call.kind == routeEngine) && (call.op == "chat/completions" || call.op == "completions")
		resp.Body = newEventFilter(resp.Body, isChat && !h.cfg.RawStream, &call.usage)
		resp.ContentLength = -1
		resp.Header.Del("Content-Length")
	case hasMediaType(contentType, "application/json"):
		resp.Body = newUsageTap(resp.Body, &call.usage)
	}
	return nil
}

// rewriteUpstream removes what must not reach Azure from the outbound
// request; the transport sets URL, key and body for each attempt.
// ReverseProxy runs it after removing hop-by-hop headers, so a client's
// Connection header cannot undo it.
func rewriteUpstream(pr *httputil.ProxyRequest) {
	h := pr.Out.Header
	h.Del("Authorization")
	h.Del("Cookie")
	h.Del("Api-Key")
	h.Del("Expect") // the body is already here; a 100 Continue would only add a round trip
	stripKeyProtocol(h)
}

// upstreamError answers when no response came from Azure. Nothing is written
// when the client has gone: there is nobody to read it.
func (h *proxyHandler) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	if resting, ok := errors.AsType[*allRestingError](err); ok {
		secs := strconv.Itoa(retryAfterSeconds(resting.wait))
		w.Header().Set("Retry-After", secs)
		w.Header().Set("Retry-After-Ms", strconv.FormatInt(max(resting.wait.Milliseconds(), 1), 10))
		writeError(w, newAPIError(http.StatusTooManyRequests, "requests", "rate_limit_exceeded", "",
			"Every Azure deployment of this model is resting after 429s or failures; retry after "+secs+" seconds."))
		return
	}
	call := r.Context().Value(upstreamCallKey{}).(*upstreamCall)
	host := call.host
	if tokenErr, ok := errors.AsType[*tokenError](err); ok {
		h.log.Error("no Entra ID token", "source", tokenErr.source, "reason", tokenErr.reason)
		writeError(w, newAPIError(http.StatusBadGateway, typeServer, "upstream_auth_failed", "",
			"The proxy "+tokenErr.Error()+", so it cannot call Azure OpenAI at "+host+"."))
		return
	}
	if errors.Is(err, errUpstreamTimeout) {
		h.log.Warn("upstream timeout", "host", host, "timeout", h.cfg.UpstreamTimeout.String())
		writeError(w, newAPIError(http.StatusGatewayTimeout, typeServer, "upstream_timeout", "",
			"Azure OpenAI at "+host+" sent no response headers within "+h.cfg.UpstreamTimeout.String()+
				" (AZURE_OPENAI_PROXY_UPSTREAM_TIMEOUT)."))
		return
	}
	reason := upstreamFailure(err)
	h.log.Warn("upstream unreachable", "host", host, "reason", reason)
	writeError(w, newAPIError(http.StatusBadGateway, typeServer, "upstream_unreachable", "",
		"Could not reach Azure OpenAI at "+host+": "+reason+"."))
}

// retryAfterSeconds rounds a wait up to whole seconds, at least one: a
// Retry-After of 0 would invite an immediate retry.
func retryAfterSeconds(wait time.Duration) int {
	return max(int((wait+time.Second-1)/time.Second), 1)
}

// upstreamFailure describes a transport error in words that hold no URL,
// header or key: only what failed.
func upstreamFailure(err error) string {
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

type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func (h *proxyHandler) modelObject(id string) modelObject {
	return modelObject{ID: id, Object: "model", Created: h.started, OwnedBy: "azure-openai-proxy"}
}

func (h *proxyHandler) serveModelList(w http.ResponseWriter, table *routeTable) *apiError {
	list := struct {
		Object string        `json:"object"`
		Data   []modelObject `json:"data"`
	}{Object: "list", Data: []modelObject{}}
	for _, m := range table.modelNames {
		list.Data = append(list.Data, h.modelObject(m))
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

func (h *proxyHandler) serveModel(w http.ResponseWriter, table *routeTable, id string) *apiError {
	if table.models[id] == nil {
		return newAPIError(http.StatusNotFound, typeInvalidRequest, "model_not_found", "model",
			"The model '"+shorten(id)+"' does not exist: it is not configured in this proxy.")
	}
	writeJSON(w, http.StatusOK, h.modelObject(id))
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
