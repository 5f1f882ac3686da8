package main

import (
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// A proxy that holds a credential and asks clients for none is a sidecar or a
// developer's local proxy: only programs on the same host or network should
// spend its quota. These checks keep web pages out of it. A page the user
// opens can post to http://localhost:8080 (no CORS preflight for a simple
// request) or reach it through a domain of its own that resolves to
// 127.0.0.1 (DNS rebinding).

// checkExposure refuses, before anything is read or sent:
//   - a browser request from an origin the CORS policy does not allow (the
//     Origin header, which browsers always send on cross-origin requests);
//   - on an open proxy, a Host that is not an IP literal, localhost, or listed
//     in AZURE_OPENAI_PROXY_ALLOWED_HOSTS.
func (h *proxyHandler) checkExposure(r *http.Request, table *routeTable) *apiError {
	if origin := r.Header.Get("Origin"); origin != "" && !h.cors.allows(origin) {
		return newAPIError(http.StatusForbidden, typeInvalidRequest, "origin_not_allowed", "",
			"Requests from web pages at "+shorten(origin)+" are not allowed: add the origin to AZURE_OPENAI_PROXY_CORS_ORIGINS.")
	}
	if table.open() && !hostAllowed(r.Host, h.cfg.AllowedHosts) {
		return newAPIError(http.StatusForbidden, typeInvalidRequest, "host_not_allowed", "",
			"This proxy answers only requests addressed to an IP address, localhost, or a name in AZURE_OPENAI_PROXY_ALLOWED_HOSTS; "+
				"it got Host "+shorten(r.Host)+".")
	}
	return nil
}

// hostAllowed reports whether a Host header (with or without a port) names
// an IP literal, localhost, or one of allowed.
func hostAllowed(hostport string, allowed []string) bool {
	host := strings.ToLower(hostport)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSuffix(host, "."), "["), "]")
	return net.ParseIP(host) != nil || host == "localhost" || strings.HasSuffix(host, ".localhost") || slices.Contains(allowed, host)
}

// checkContentType refuses, on an open proxy, a body on a route that reads
// JSON (or a form) whose Content-Type says otherwise: text/plain is what a
// web page can post without asking the browser's CORS check first.
func checkContentType(rt route, table *routeTable, r *http.Request) *apiError {
	if !table.open() || rt.kind != routeDeployment && rt.kind != routeEngine || r.ContentLength == 0 {
		return nil
	}
	contentType := r.Header.Get("Content-Type")
	if _, form := isMultipart(contentType); isJSON(contentType) || form {
		return nil
	}
	return newAPIError(http.StatusUnsupportedMediaType, typeInvalidRequest, "unsupported_media_type", "",
		"This route takes a JSON body (Content-Type: application/json) or a multipart form, not "+shorten(strconv.Quote(contentType))+".")
}
