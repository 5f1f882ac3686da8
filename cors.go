package main

import (
	"net/http"
	"strings"
)

// corsPolicy lets browser clients (chat UIs served from another origin) call
// the proxy. Preflights are answered by the proxy; Azure never sees them.
type corsPolicy struct {
	anyOrigin bool
	origins   map[string]bool
}

func newCORSPolicy(origins []string) corsPolicy {
	p := corsPolicy{origins: map[string]bool{}}
	for _, o := range origins {
		if o == "*" {
			p.anyOrigin = true
		}
		p.origins[o] = true
	}
	return p
}

// Response headers a browser client may read: request ids for support
// tickets, the rate-limit headers the SDKs' retry logic uses, and the
// Location of a WebRTC call (its id).
const corsExposedHeaders = "apim-request-id, x-request-id, x-ms-region, retry-after, retry-after-ms, " +
	"x-ratelimit-limit-requests, x-ratelimit-limit-tokens, x-ratelimit-remaining-requests, " +
	"x-ratelimit-remaining-tokens, x-ratelimit-reset-requests, x-ratelimit-reset-tokens, " +
	"openai-processing-ms, openai-version, location"

// allows reports whether a page at origin may call the proxy.
func (p corsPolicy) allows(origin string) bool { return p.anyOrigin || p.origins[origin] }

// setHeaders adds the CORS headers for r's origin to h, and reports whether the origin is allowed.
func (p corsPolicy) setHeaders(h http.Header, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if !p.anyOrigin {
		h.Add("Vary", "Origin")
	}
	if origin == "" {
		return false
	}
	switch {
	case p.anyOrigin:
		h.Set("Access-Control-Allow-Origin", "*")
	case p.origins[origin]:
		h.Set("Access-Control-Allow-Origin", origin)
	default:
		return false
	}
	h.Set("Access-Control-Expose-Headers", corsExposedHeaders)
	return true
}

// preflight answers an OPTIONS request locally with 204.
func (p corsPolicy) preflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Allow", "GET, POST, PUT, PATCH, DELETE, OPTIONS")
	if p.setHeaders(h, r) && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Add("Vary", "Access-Control-Request-Method")
		h.Add("Vary", "Access-Control-Request-Headers")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS")
		if requested := r.Header.Values("Access-Control-Request-Headers"); len(requested) > 0 {
			h.Set("Access-Control-Allow-Headers", strings.Join(requested, ", "))
		}
		h.Set("Access-Control-Max-Age", "86400")
	}
	w.WriteHeader(http.StatusNoContent)
}

// stripUpstreamCORS removes CORS headers from Azure's answer: the proxy's own
// policy decides, and duplicate Access-Control-Allow-Origin headers make browsers refuse the answer.
func stripUpstreamCORS(resp *http.Response) {
	for name := range resp.Header {
		if strings.HasPrefix(name, "Access-Control-") {
			delete(resp.Header, name)
		}
	}
}
