package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// A shared gateway names its clients, so that the log, the metrics and the
// usage endpoint can say who used what, and so that each may be held to a
// list of models and to limits (ratelimit.go). In the configuration file:
//
//	"clients": {
//	  "team-search": {"key_env": "SEARCH_KEY", "models": ["gpt-4o"],
//	                  "limits": {"requests_per_minute": 600, "tokens_per_minute": 200000, "tokens_per_day": 5000000}},
//	  "batch-jobs":  {"key_file": "/run/secrets/batch", "limits": {"tokens_per_minute": 50000}}
//	}
//
// A keys file (AZURE_OPENAI_PROXY_KEYS_FILE) may name its keys too, one
// "name: key" a line; AZURE_OPENAI_PROXY_KEYS and unnamed lines are clients
// without a name, models or limits.

// client is one of the proxy's clients. Its key is not kept here: only its
// digest, in clientKeys.
type client struct {
	name   string   // "" for an unnamed key
	models []string // the models it may call, in the order configured; nil: any
	limits clientLimits
}

// clientLimits are a client's limits; 0 is no limit.
type clientLimits struct {
	RequestsPerMinute int64 `json:"requests_per_minute,omitempty"`
	TokensPerMinute   int64 `json:"tokens_per_minute,omitempty"`
	TokensPerDay      int64 `json:"tokens_per_day,omitempty"`
}

func (l clientLimits) any() bool {
	return l.RequestsPerMinute > 0 || l.TokensPerMinute > 0 || l.TokensPerDay > 0
}

func (l clientLimits) countsTokens() bool { return l.TokensPerMinute > 0 || l.TokensPerDay > 0 }

// allowsModel reports whether the client may call model.
func (c *client) allowsModel(model string) bool {
	return c == nil || c.models == nil || slices.Contains(c.models, model)
}

// label is the client's name as the log and the metrics show it.
func (c *client) label() string {
	if c == nil {
		return ""
	}
	return c.name
}

// clientSpec is a client as a source names it: the client and its key.
type clientSpec struct {
	client *client
	key    string
	source string // the setting it came from, for errors
}

// maxLimit bounds each limit: a typo of a few digits too many is an error.
const maxLimit = 1 << 50

// maxClientModels and maxClientModelName bound a client's model list.
const (
	maxClientModels    = 1000
	maxClientModelName = 256
)

// clients reads the configuration file's "clients" object.
func (p *configParser) clients(raw json.RawMessage) ([]clientSpec, error) {
	members, err := p.object(raw, "clients")
	if err != nil {
		return nil, err
	}
	var specs []clientSpec
	for _, m := range members {
		spec, err := p.client(m.key, m.value)
		if err != nil {
			return nil, err
		}
		specs = append(specs, spec)
	}
	return specs, nil
}

func (p *configParser) client(name string, raw json.RawMessage) (clientSpec, error) {
	path := "clients." + name
	if !validClientName(name) {
		return clientSpec{}, p.errorf(path, "client names are letters, digits, '-', '_' and '.', at most 64 characters")
	}
	members, err := p.object(raw, path, "key_env", "key_file", "models", "limits")
	if err != nil {
		return clientSpec{}, err
	}
	spec := clientSpec{client: &client{name: name}, source: path}
	var keyEnv, keyFile string
	for _, m := range members {
		field := join(path, m.key)
		switch m.key {
		case "key_env":
			keyEnv, err = p.str(m.value, field)
		case "key_file":
			keyFile, err = p.str(m.value, field)
		case "models":
			spec.client.models, err = p.modelList(m.value, field)
		case "limits":
			spec.client.limits, err = p.limits(m.value, field)
		}
		if err != nil {
			return clientSpec{}, err
		}
	}
	switch {
	case keyEnv != "" && keyFile != "":
		return clientSpec{}, p.errorf(path, "give key_env or key_file, not both")
	case keyEnv != "":
		if spec.key = strings.TrimSpace(p.getenv(keyEnv)); spec.key == "" {
			return clientSpec{}, p.errorf(join(path, "key_env"), "the environment variable %s is not set", keyEnv)
		}
	case keyFile != "":
		data, err := p.files.read(keyFile, true)
		if err != nil {
			return clientSpec{}, p.errorf(join(path, "key_file"), "cannot read %s: %v", keyFile, unwrapPathError(err))
		}
		if spec.key = strings.TrimSpace(string(data)); spec.key == "" {
			return clientSpec{}, p.errorf(join(path, "key_file"), "%s is empty", keyFile)
		}
	default:
		return clientSpec{}, p.errorf(path, "needs key_env or key_file")
	}
	return spec, nil
}

func (p *configParser) modelList(raw json.RawMessage, path string) ([]string, error) {
	var models []string
	if err := json.Unmarshal(raw, &models); err != nil || len(models) == 0 || len(models) > maxClientModels {
		return nil, p.errorf(path, "must be a list of 1 to %d model names", maxClientModels)
	}
	for i, m := range models {
		if m == "" || len(m) > maxClientModelName {
			return nil, p.errorf(path, "entry %d is not a model name", i)
		}
		if slices.Contains(models[:i], m) {
			return nil, p.errorf(path, "names %q twice", m)
		}
	}
	return models, nil
}

func (p *configParser) limits(raw json.RawMessage, path string) (clientLimits, error) {
	members, err := p.object(raw, path, "requests_per_minute", "tokens_per_minute", "tokens_per_day")
	if err != nil {
		return clientLimits{}, err
	}
	var l clientLimits
	for _, m := range members {
		var n int64
		if err := json.Unmarshal(m.value, &n); err != nil || n < 1 || n > maxLimit {
			return l, p.errorf(join(path, m.key), "must be a whole number from 1 to %d", int64(maxLimit))
		}
		switch m.key {
		case "requests_per_minute":
			l.RequestsPerMinute = n
		case "tokens_per_minute":
			l.TokensPerMinute = n
		case "tokens_per_day":
			l.TokensPerDay = n
		}
	}
	return l, nil
}

func validClientName(name string) bool {
	return validDeploymentName(name) // the alphabet of backend names: it appears in logs and metrics
}

// keysFileLine reads one line of a keys file: "name: key" names the key; a
// line without ": " is a key alone (keys hold no spaces).
func keysFileLine(line string) (name, key string) {
	if n, k, ok := strings.Cut(line, ": "); ok && validClientName(strings.TrimSpace(n)) {
		return strings.TrimSpace(n), strings.TrimSpace(k)
	}
	return "", line
}

// checkClientCall refuses what a named client's models or token limits do
// not allow. It fails closed: a client with a models list may send a request
// that could run a model only when the proxy found the model in it and it is
// on the list; otherwise only reads, deletes, and the operations that run no
// model (files, uploads, vector stores, containers, conversations, cancels).
// A client with token limits may make only calls whose tokens the proxy can
// count (checkCountable).
func checkClientCall(who *client, rt route, method string, model, body []byte) *apiError {
	if who == nil {
		return nil
	}
	if who.limits.countsTokens() {
		if e := checkCountable(who, rt, method, model, body); e != nil {
			return e
		}
	}
	if who.models == nil {
		return nil
	}
	switch {
	case len(model) > 0 && (!rt.upgrade || rt.kind == routeRealtime):
		if !who.allowsModel(string(model)) {
			return modelNotAllowed(who, string(model))
		}
		return nil
	case rt.upgrade:
		return operationNotAllowed(who, "it may call only some models, and a websocket session can name any")
	case method == http.MethodGet || method == http.MethodHead || method == http.MethodDelete:
		return nil
	case rt.kind == routePassthrough && runsNoModel(rt.opPath):
		return nil
	}
	return operationNotAllowed(who, "it may call only some models, and this request could run one the proxy cannot see")
}

// checkCountable refuses, for a client with token limits, a call whose tokens
// would never pass the proxy as usage it reads: websockets and realtime
// sessions, batches, evals, fine-tuning, background responses (their usage
// comes later, to whoever reads them) — any POST that runs a model the proxy
// did not find, and is not one of those that run none.
func checkCountable(who *client, rt route, method string, model, body []byte) *apiError {
	why := ""
	switch {
	case rt.upgrade || rt.kind == routeRealtime || rt.kind == routePassthrough && isRealtimeOp(rt.opPath):
		why = "realtime sessions' tokens"
	case method != http.MethodPost || rt.kind != routePassthrough:
		return nil
	case len(model) == 0 && !runsNoModel(rt.opPath):
		why = "the tokens of a call whose model it does not read (a batch, an eval, fine-tuning)"
	case strings.EqualFold(rt.opPath, "responses") && isBackgroundResponse(body):
		why = "a background response's tokens"
	default:
		return nil
	}
	return operationNotAllowed(who, "its tokens are limited, and "+why+" cannot be counted by the proxy")
}

// isBackgroundResponse reports whether a JSON body asks for a background
// response ("background": true).
func isBackgroundResponse(body []byte) bool {
	if len(body) == 0 {
		return false
	}
	m, err := findMember(body, "background")
	return err != nil || m.found && string(body[m.start:m.end]) != "false"
}

// runsNoModel reports whether a POST to the passthrough operation opPath
// stores or cancels something without running a model.
func runsNoModel(opPath string) bool {
	opPath = strings.ToLower(opPath) // whatever case a gateway may route
	first, _, _ := strings.Cut(opPath, "/")
	switch first {
	case "files", "uploads", "vector_stores", "containers", "conversations":
		return true
	}
	return strings.HasSuffix(opPath, "/cancel") ||
		strings.HasPrefix(opPath, "chat/completions/") // a stored completion's metadata
}

// isRealtimeOp reports whether a passthrough operation makes or joins a
// realtime session (client secrets, sessions, WebRTC calls).
func isRealtimeOp(opPath string) bool {
	first, _, _ := strings.Cut(opPath, "/")
	return strings.HasPrefix(strings.ToLower(first), "realtime")
}

func operationNotAllowed(who *client, why string) *apiError {
	return newAPIError(http.StatusForbidden, typeInvalidRequest, "operation_not_allowed", "",
		"The client '"+who.name+"' may not make this request on this proxy: "+why+".")
}

func modelNotAllowed(who *client, model string) *apiError {
	listed := who.models
	if len(listed) > maxListedModels {
		listed = append(listed[:maxListedModels:maxListedModels], "…")
	}
	return newAPIError(http.StatusForbidden, typeInvalidRequest, "model_not_allowed", "model",
		fmt.Sprintf("The client '%s' may not use the model '%s' on this proxy. Its models: %s.",
			who.name, shorten(model), strings.Join(listed, ", ")))
}

// maxListedModels bounds the models a refusal lists.
const maxListedModels = 20
