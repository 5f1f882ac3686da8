package main

import (
	"log/slog"
	"net/url"
	"strings"
	"sync"
)

// backend is one Azure OpenAI resource (or a gateway in front of one).
type backend struct {
	name              string
	endpoint          *url.URL // scheme, host and any path prefix
	apiKey            string   // sent instead of the client's key; "" passes the client's key through
	entra             bool     // sends an Entra ID token instead of any key
	apiVersion        string
	previewAPIVersion string
	proxy             *url.URL // outbound proxy for this endpoint; nil: direct
	realtimePreview   bool     // dated backends send realtime websockets to the preview URL (AZURE_OPENAI_PROXY_REALTIME_PREVIEW)
	endpointNote      string   // what parseEndpoint changed in the endpoint as configured, for the start-up log
}

// candidate is one place a model can be served: a deployment on a backend.
type candidate struct {
	backend    *backend
	deployment string
	weight     int
}

// cooldownKey names a backend's deployment for its rest after a failure. It
// is built from the endpoint, not the backend's name, so a rest outlives a
// reload that renames backends.
func (c candidate) cooldownKey() string {
	return c.backend.endpoint.String() + "|" + c.deployment
}

// modelRoute holds one model's candidates and its smooth weighted
// round-robin state (as nginx's): each pick adds every eligible candidate's
// weight to its current weight, takes the largest, and subtracts the total
// from the one taken. Over any run of picks each gets its share, interleaved.
type modelRoute struct {
	candidates []candidate
	mu         sync.Mutex
	current    []int
}

func newModelRoute(candidates []candidate) *modelRoute {
	return &modelRoute{candidates: candidates, current: make([]int, len(candidates))}
}

// pick returns the index of the next candidate among those eligible, or -1.
func (m *modelRoute) pick(eligible func(i int) bool) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	best, total := -1, 0
	for i, c := range m.candidates {
		if !eligible(i) {
			continue
		}
		m.current[i] += c.weight
		total += c.weight
		if best < 0 || m.current[i] > m.current[best] {
			best = i
		}
	}
	if best >= 0 {
		m.current[best] -= total
	}
	return best
}

// routeTable is the whole routing configuration: backends, and for each
// configured model its candidates. It is built once (and again on each
// reload) and never changed: a reload swaps in a new table, and requests in
// flight finish on the one they started with.
type routeTable struct {
	backends       map[string]*backend
	backendNames   []string // configured order
	defaultBackend *backend
	models         map[string]*modelRoute
	modelNames     []string     // configured order, for GET /v1/models
	maxAttempts    int          // 0: one per candidate, at most maxAttemptsCap
	clientKeys     *clientKeys  // nil: clients are not checked
	source         string       // "environment" or the config file's path, for logs
	files          *sourceFiles // the files it was built from
}

const maxAttemptsCap = 5

// route returns the configured candidates for model, or nil when the model is
// not configured: then it goes to the default backend, as its own deployment.
func (t *routeTable) route(model []byte) *modelRoute {
	return t.models[string(model)]
}

// attempts is how many candidates one request may try.
func (t *routeTable) attempts(m *modelRoute) int {
	if m == nil {
		return 1
	}
	n := min(len(m.candidates), maxAttemptsCap)
	if t.maxAttempts > 0 {
		n = t.maxAttempts
	}
	return n
}

// hasCredential reports whether the backend authenticates itself, so the
// client's key is not needed (and never sent).
func (b *backend) hasCredential() bool { return b.apiKey != "" || b.entra }

// needsClientKey reports whether a request for m may reach a backend that
// has no credential of its own, and so needs the client's key.
func (t *routeTable) needsClientKey(m *modelRoute) bool {
	if m == nil {
		return !t.defaultBackend.hasCredential()
	}
	for _, c := range m.candidates {
		if !c.backend.hasCredential() {
			return true
		}
	}
	return false
}

// attachClientKeys loads the client keys (with the configuration file's
// clients) and checks that every backend can serve clients who present only
// a proxy key.
func (t *routeTable) attachClientKeys(getenv func(string) string, configured []clientSpec) error {
	var err error
	if t.clientKeys, err = loadClientKeys(getenv, t.files, configured); err != nil {
		return err
	}
	if t.clientKeys != nil {
		for _, name := range t.backendNames {
			if !t.backends[name].hasCredential() {
				return settingError("AZURE_OPENAI_PROXY_KEYS", "clients must present a proxy key, so backend %q needs a credential of its own "+
					"(AZURE_OPENAI_API_KEY, api_key_env, api_key_file or Entra ID): a client's proxy key is not an Azure key", name)
			}
		}
	}
	return nil
}

// clientNames are the named clients, in the order configured.
func (t *routeTable) clientNames() []string {
	var names []string
	if t.clientKeys != nil {
		for _, c := range t.clientKeys.named {
			names = append(names, c.name)
		}
	}
	return names
}

// open reports whether the proxy spends a credential of its own for anyone
// who reaches it: a backend holds a key (or Entra ID) and clients need no
// proxy key. Web pages and DNS rebinding are then kept out (exposure.go).
func (t *routeTable) open() bool { return t.clientKeys == nil && t.anyCredential() }

// anyCredential reports whether any backend authenticates itself; when none
// does, every request needs the client's key.
func (t *routeTable) anyCredential() bool {
	for _, b := range t.backends {
		if b.hasCredential() {
			return true
		}
	}
	return false
}

// usesEntra reports whether any backend authenticates with Entra ID.
func (t *routeTable) usesEntra() bool {
	for _, b := range t.backends {
		if b.entra {
			return true
		}
	}
	return false
}

func (b *backend) authMode() string {
	switch {
	case b.entra:
		return "entra"
	case b.apiKey != "":
		return "key"
	}
	return "client-key"
}

// logNotes logs, after the table's summary line, what parseEndpoint changed
// in the configured endpoints, and the warnings about its files.
func (t *routeTable) logNotes(logger *slog.Logger) {
	for _, name := range t.backendNames {
		if n := t.backends[name].endpointNote; n != "" {
			logger.Info("backend " + name + ": " + n)
		}
	}
	for _, w := range t.files.warnings {
		logger.Warn(w)
	}
}

// summary describes the table for the start-up and reload log lines; no key.
func (t *routeTable) summary() []any {
	var backends []string
	for _, name := range t.backendNames {
		b := t.backends[name]
		api := "v1 API"
		if !b.v1() {
			api = "dated " + b.apiVersion
		}
		backends = append(backends, name+"="+b.endpoint.Host+b.endpoint.Path+"("+b.authMode()+", "+api+")")
	}
	return []any{
		"source", t.source,
		"backends", strings.Join(backends, ","),
		"default_backend", t.defaultBackend.name,
		"api_version", t.defaultBackend.apiVersion,
		"preview_api_version", t.defaultBackend.previewAPIVersion,
		"models", strings.Join(t.modelNames, ","),
		"client_keys", t.clientKeys != nil,
		"clients", strings.Join(t.clientNames(), ","),
	}
}
