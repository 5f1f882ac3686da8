package main

import (
	"net/http"
	"time"
)

// GET /v1/proxy/usage reports each named client's usage on this replica: what
// its per-minute windows hold, and its counts for today (UTC) and since the
// proxy started. The ops listener (AZURE_OPENAI_PROXY_METRICS_ADDRESS), which
// Prometheus and operators reach, lists every client; on the API port a
// client sees its own entry alone, with its own key, so a team can watch its
// budget without learning of the others. The path is under /v1 so that it
// sits beside the API a client already calls; no OpenAI route has it.
const usagePath = "/v1/proxy/usage"

type usageReport struct {
	Object string        `json:"object"`
	Date   string        `json:"date"` // the UTC day "today" counts
	Data   []clientEntry `json:"data"`
}

type clientEntry struct {
	Client     string       `json:"client"`
	Models     []string     `json:"models,omitempty"`
	Limits     clientLimits `json:"limits"`
	Minute     windowCounts `json:"minute"` // what the per-minute windows (of the limits it has) hold now
	Today      usageCounts  `json:"today"`
	SinceStart usageCounts  `json:"since_start"`
}

type windowCounts struct {
	Requests *int64 `json:"requests,omitempty"`
	Tokens   *int64 `json:"tokens,omitempty"`
}

// serveUsage answers GET /v1/proxy/usage.
func serveUsage(w http.ResponseWriter, r *http.Request, state *serverState, now time.Time, apiPort bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		e := newAPIError(http.StatusMethodNotAllowed, typeInvalidRequest, "method_not_allowed", "", "Use GET for "+usagePath+".")
		e.header = http.Header{"Allow": {"GET, HEAD"}}
		writeError(w, e)
		return
	}
	keys := state.routes.Load().clientKeys
	var clients []*client
	switch {
	case !apiPort:
		if keys != nil {
			clients = keys.named
		}
	case keys == nil:
		writeError(w, newAPIError(http.StatusNotFound, typeInvalidRequest, "not_found", "",
			"This proxy names no clients, so it keeps no usage per client."))
		return
	default:
		who := keys.lookup(clientKey(r.Header))
		if who == nil || who.name == "" {
			writeError(w, newAPIError(http.StatusUnauthorized, typeInvalidRequest, "invalid_api_key", "",
				"The usage on the API port is a named client's own: present its key (or read every client's on AZURE_OPENAI_PROXY_METRICS_ADDRESS)."))
			return
		}
		clients = []*client{who}
	}
	report := usageReport{Object: "list", Date: now.UTC().Format(time.DateOnly), Data: []clientEntry{}}
	for _, c := range clients {
		report.Data = append(report.Data, state.clients.entry(c, now))
	}
	writeJSON(w, http.StatusOK, report)
}

// entry is c's usage at now.
func (l *clientLedger) entry(c *client, now time.Time) clientEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.usage(c, now)
	e := clientEntry{Client: c.name, Models: c.models, Limits: c.limits, Today: u.today, SinceStart: u.total}
	if c.limits.RequestsPerMinute > 0 {
		n := whole(u.requests.used)
		e.Minute.Requests = &n
	}
	if c.limits.TokensPerMinute > 0 {
		n := whole(u.tokens.used)
		e.Minute.Tokens = &n
	}
	return e
}
