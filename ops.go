package main

import (
	"net/http"
	"time"
)

// serveOps answers the operational endpoints, which never reach Azure:
// /healthz (alive) and /readyz (503 while draining), which need no key, and,
// when withMetrics, /metrics, which on the API port (apiPort) needs a client
// key when client keys are set; and the clients' usage (clientusage.go). It
// reports whether r was one of them.
func serveOps(w http.ResponseWriter, r *http.Request, state *serverState, m *metrics, now func() time.Time, withMetrics, apiPort bool) bool {
	switch r.URL.Path {
	case usagePath:
		serveUsage(w, r, state, now(), apiPort)
	case "/healthz":
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	case "/readyz":
		if !state.ready.Load() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
		} else {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
		}
	case "/metrics":
		if !withMetrics {
			return false
		}
		if keys := state.routes.Load().clientKeys; apiPort && keys != nil && !keys.allows(clientKey(r.Header)) {
			// On the API port the metrics name models, deployments and
			// backends: clients present their key, as for the API.
			writeError(w, newAPIError(http.StatusUnauthorized, typeInvalidRequest, "invalid_api_key", "",
				"The metrics on the API port need a client key (or set AZURE_OPENAI_PROXY_METRICS_ADDRESS)."))
			return true
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		m.write(w)
	default:
		return false
	}
	return true
}

// newOpsHandler serves the operational endpoints alone, for the listener at
// AZURE_OPENAI_PROXY_METRICS_ADDRESS: Prometheus and the probes reach it,
// while the API port can stay on loopback.
func newOpsHandler(state *serverState, m *metrics, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !serveOps(w, r, state, m, now, true, false) {
			http.NotFound(w, r)
		}
	})
}
