package main

import (
	"net/http"
	"strings"
)

// The Realtime API is a websocket: GET /v1/realtime?model=M with Upgrade:
// websocket. httputil.ReverseProxy switches protocols itself; the proxy only
// resolves the model (routes.go), moves the key into api-key, and builds
// Azure's URL (upstream.go):
// dated:  {endpoint}/openai/realtime?api-version={preview}&deployment={D}
// v1:     {endpoint}/openai/v1/realtime?model={D}

// insecureKeyProtocol prefixes the key that browser clients, which cannot
// set headers on a websocket, send as a subprotocol.
const insecureKeyProtocol = "openai-insecure-api-key."

func isWebsocketUpgrade(r *http.Request) bool {
	if r.Method != http.MethodGet || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return false
	}
	for _, v := range r.Header.Values("Connection") {
		for token := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(token), "upgrade") {
				return true
			}
		}
	}
	return false
}

// subprotocolKey returns the key sent as an openai-insecure-api-key
// subprotocol, and the other subprotocols, which go on to Azure.
func subprotocolKey(h http.Header) (key string, others []string) {
	for _, v := range h.Values("Sec-Websocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			p = strings.TrimSpace(p)
			if k, ok := strings.CutPrefix(p, insecureKeyProtocol); ok {
				key = k
			} else if p != "" {
				others = append(others, p)
			}
		}
	}
	return key, others
}

// stripKeyProtocol removes the key subprotocol from an outbound handshake:
// the key travels as api-key (or not at all).
func stripKeyProtocol(h http.Header) {
	if key, others := subprotocolKey(h); key != "" {
		h.Del("Sec-Websocket-Protocol")
		if len(others) > 0 {
			h.Set("Sec-Websocket-Protocol", strings.Join(others, ", "))
		}
	}
}
