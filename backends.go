package main

import (
	"net/url"
	"strings"
	"sync"
)

// backend is one Azure OpenAI resource (or a gateway in front of one).
type backend struct {
	name              string
	endpoint          *url.URL // scheme, host and any path prefix
	apiKey            string   // sent instead of the client's key; "" passes the client's key through
	apiVersion        string
	previewAPIVersion string
	proxy             *url.URL // outbound proxy for this endpoint; nil: direct
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
	modelNames     []string // configured order, for GET /v1/models
	maxAttempts    int      // 0: one per candidate, at most maxAttemptsCap
	source         string   // "environment" or the config file's path, for logs
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

// needsClientKey reports whether a request for m may reach a backend that
// has no key of its own, and so needs the client's.
func (t *routeTable) needsClientKey(m *modelRoute) bool {
	if m == nil {
		return t.defaultBackend.apiKey == ""
	}
	for _, c := range m.candidates {
		if c.backend.apiKey == "" {
			return true
		}
	}
	return false
}

// summary describes the table for the start-up and reload log lines; no key.
func (t *routeTable) summary() []any {
	var backends []string
	for _, name := range t.backendNames {
		b := t.backends[name]
		backends = append(backends, name+"="+b.endpoint.Host+b.endpoint.Path)
	}
	return []any{
		"source", t.source,
		"backends", strings.Join(backends, ","),
		"default_backend", t.defaultBackend.name,
		"api_version", t.defaultBackend.apiVersion,
		"preview_api_version", t.defaultBackend.previewAPIVersion,
		"models", strings.Join(t.modelNames, ","),
	}
}

// routeTableFromEnv is the configuration without a file: one backend from
// AZURE_OPENAI_ENDPOINT, models from AZURE_OPENAI_MODEL_MAPPER.
func routeTableFromEnv(getenv func(string) string) (*routeTable, error) {
	b, err := envBackend(getenv)
	if err != nil {
		return nil, err
	}
	t := &routeTable{backends: map[string]*backend{b.name: b}, backendNames: []string{b.name}, defaultBackend: b, source: "environment"}
	if err := t.addMapperModels(getenv); err != nil {
		return nil, err
	}
	return t, nil
}

// envBackend is the backend the core environment variables describe.
func envBackend(getenv func(string) string) (*backend, error) {
	b := &backend{name: "default"}
	var err error
	if b.endpoint, err = parseEndpoint("AZURE_OPENAI_ENDPOINT", getenv("AZURE_OPENAI_ENDPOINT")); err != nil {
		return nil, err
	}
	if b.apiVersion, err = parseAPIVersion("AZURE_OPENAI_API_VER", envOr(getenv, "AZURE_OPENAI_API_VER")); err != nil {
		return nil, err
	}
	if b.previewAPIVersion, err = parseAPIVersion("AZURE_OPENAI_PREVIEW_API_VER", envOr(getenv, "AZURE_OPENAI_PREVIEW_API_VER")); err != nil {
		return nil, err
	}
	if b.proxy, err = parseUpstreamProxy(b.endpoint, getenv); err != nil {
		return nil, err
	}
	return b, nil
}

// addMapperModels adds AZURE_OPENAI_MODEL_MAPPER's models, each served by the default backend.
func (t *routeTable) addMapperModels(getenv func(string) string) error {
	mapper, err := parseModelMapper(getenv("AZURE_OPENAI_MODEL_MAPPER"))
	if err != nil {
		return settingError("AZURE_OPENAI_MODEL_MAPPER", "%v", err)
	}
	t.models = map[string]*modelRoute{}
	for _, m := range mapper.models {
		t.models[m] = newModelRoute([]candidate{{backend: t.defaultBackend, deployment: mapper.deployments[m], weight: 1}})
		t.modelNames = append(t.modelNames, m)
	}
	return nil
}
