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
	"strings"
	"sync/atomic"
	"time"
)

// upstreamCall is what the handler decided about one request. It travels in
// the request's context to the ReverseProxy hooks, which act on it and decide
// nothing. It holds the key: never log it.
type upstreamCall struct {
	target *url.URL
	apiKey string
	body   *bodyLease // nil: no body
	size   int64
}

type upstreamCallKey struct{}

// proxyHandler validates and resolves each request, then hands it to one
// httputil.ReverseProxy.
type proxyHandler struct {
	cfg     Config
	log     *slog.Logger
	ready   *atomic.Bool
	cors    corsPolicy
	proxy   *httputil.ReverseProxy
	bodies  *bodyPool
	started int64 // unix seconds, the "created" of GET /v1/models
}

// newHandler returns the proxy's whole HTTP surface. ready reports readiness
// for /readyz; the server clears it while draining.
func newHandler(cfg Config, logger *slog.Logger, ready *atomic.Bool) http.Handler {
	h := &proxyHandler{
		cfg:     cfg,
		log:     logger,
		ready:   ready,
		cors:    newCORSPolicy(cfg.CORSOrigins),
		bodies:  &bodyPool{},
		started: time.Now().Unix(),
	}
	h.proxy = &httputil.ReverseProxy{
		Rewrite:        rewriteUpstream,
		Transport:      newUpstreamTransport(cfg),
		FlushInterval:  -1, // server-sent events reach the client as Azure sends them
		ModifyResponse: stripUpstreamCORS,
		ErrorHandler:   h.upstreamError,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		BufferPool:     &copyBufferPool{},
	}
	return h
}

func (h *proxyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.cors.setHeaders(w.Header(), r)
	switch r.URL.Path {
	case "/healthz":
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return
	case "/readyz":
		if !h.ready.Load() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
		return
	}

	start := time.Now()
	rec := &responseRecorder{ResponseWriter: w}
	var entry accessEntry
	defer func() {
		// ReverseProxy aborts a response it cannot finish by panicking with
		// http.ErrAbortHandler; log the request, then let the server see it.
		p := recover()
		h.logAccess(r, rec, &entry, start, p != nil)
		if p != nil {
			panic(p)
		}
	}()
	if r.Method == http.MethodOptions {
		h.cors.preflight(rec, r)
		return
	}
	if e := h.serveAPI(rec, r, &entry); e != nil {
		writeError(rec, e)
	}
}

// serveAPI validates r and resolves where it goes; bad input is answered here
// and never reaches Azure.
func (h *proxyHandler) serveAPI(w http.ResponseWriter, r *http.Request, entry *accessEntry) *apiError {
	rt, e := resolveRoute(r.URL.EscapedPath())
	if e != nil {
		return e
	}
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
	if key == "" {
		return newAPIError(http.StatusUnauthorized, typeInvalidRequest, "missing_api_key", "",
			"You didn't provide an API key. Send your Azure OpenAI key as 'Authorization: Bearer KEY' or as an 'api-key' header.")
	}
	switch rt.kind {
	case routeModelList:
		return h.serveModelList(w)
	case routeModel:
		return h.serveModel(w, rt.model)
	}

	apiVersion := h.cfg.APIVersion
	if rt.family == apiPreview {
		apiVersion = h.cfg.PreviewAPIVersion
	}
	query, e := withAPIVersion(r.URL.RawQuery, apiVersion)
	if e != nil {
		return e
	}
	body, e := readBody(w, r, h.cfg.MaxBodyBytes, h.bodies)
	if e != nil {
		return e
	}
	// Whatever happens below, the buffer goes back to the pool once the
	// request is over: the lease owns it from here.
	lease := &bodyLease{buf: body, pool: h.bodies}
	defer lease.release()

	var upstreamPath string
	switch rt.kind {
	case routeDeployment, routeEngine:
		model := []byte(rt.model)
		if rt.kind == routeDeployment {
			if model, e = modelFromBody(r.Header.Get("Content-Type"), body); e != nil {
				return e
			}
		}
		deployment, _ := h.cfg.Models.deployment(model)
		entry.model, entry.deployment = string(model), deployment
		if !validDeploymentName(deployment) {
			return invalidModel(entry.model)
		}
		upstreamPath = "/openai/deployments/" + deployment + "/" + rt.op
	case routePassthrough:
		if isJSON(r.Header.Get("Content-Type")) && len(body) > 0 {
			rewritten, e := h.mapBodyModel(body, entry)
			if e != nil {
				return e
			}
			if rewritten != nil {
				lease.release()
				lease = &bodyLease{buf: rewritten}
				body = rewritten
			}
		}
		upstreamPath = "/openai/" + rt.op
	}
	target, err := upstreamURL(h.cfg.Endpoint, upstreamPath, query)
	if err != nil {
		return badRequest("invalid_path", "", "The request path has an invalid escape sequence.")
	}
	call := &upstreamCall{target: target, apiKey: key, size: int64(len(body))}
	if len(body) > 0 {
		call.body = lease
	}
	h.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), upstreamCallKey{}, call)))
	return nil
}

// mapBodyModel returns a copy of body with the value of its top-level "model"
// replaced by the mapped deployment, every other byte as sent (on routes
// without a deployment in the path, Azure reads the deployment there), or nil
// when there is nothing to replace.
func (h *proxyHandler) mapBodyModel(body []byte, entry *accessEntry) ([]byte, *apiError) {
	field, err := findModel(body)
	if err != nil {
		return nil, badRequest("invalid_json", "",
			"We could not parse the JSON body of your request: "+err.Error()+". The body must be one JSON object.")
	}
	if !field.found || !field.isString {
		return nil, nil
	}
	deployment, mapped := h.cfg.Models.deployment(field.value)
	entry.model, entry.deployment = string(field.value), deployment
	if !mapped {
		return nil, nil
	}
	out := make([]byte, 0, len(body)-(field.end-field.start)+len(deployment)+2)
	out = append(out, body[:field.start]...)
	out = append(out, '"')
	out = append(out, deployment...) // a valid deployment name needs no escaping
	out = append(out, '"')
	return append(out, body[field.end:]...), nil
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

// rewriteUpstream sets the outbound URL, headers and body from the handler's
// decision. ReverseProxy runs it after removing hop-by-hop headers, so a
// client's Connection header cannot strip what it sets.
func rewriteUpstream(pr *httputil.ProxyRequest) {
	call := pr.In.Context().Value(upstreamCallKey{}).(*upstreamCall)
	pr.Out.URL = call.target
	pr.Out.Host = ""
	h := pr.Out.Header
	h.Del("Authorization")
	h.Del("Cookie")
	h.Del("Expect") // the body is already here; a 100 Continue would only add a round trip
	h.Set("Api-Key", call.apiKey)
	pr.Out.ContentLength = call.size
	if call.body == nil {
		pr.Out.Body, pr.Out.GetBody = nil, nil
		return
	}
	pr.Out.Body = call.body.reader()
	pr.Out.GetBody = func() (io.ReadCloser, error) { return call.body.reader(), nil }
}

// upstreamError answers when no response came from Azure. Nothing is written
// when the client has gone: there is nobody to read it.
func (h *proxyHandler) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	host := h.cfg.Endpoint.Host
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

func (h *proxyHandler) serveModelList(w http.ResponseWriter) *apiError {
	list := struct {
		Object string        `json:"object"`
		Data   []modelObject `json:"data"`
	}{Object: "list", Data: []modelObject{}}
	for _, m := range h.cfg.Models.models {
		list.Data = append(list.Data, h.modelObject(m))
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

func (h *proxyHandler) serveModel(w http.ResponseWriter, id string) *apiError {
	if _, ok := h.cfg.Models.deployments[id]; !ok {
		return newAPIError(http.StatusNotFound, typeInvalidRequest, "model_not_found", "model",
			"The model '"+shorten(id)+"' does not exist: it is not in AZURE_OPENAI_MODEL_MAPPER.")
	}
	writeJSON(w, http.StatusOK, h.modelObject(id))
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
