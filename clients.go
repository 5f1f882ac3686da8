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

// checkModelAllowed refuses a request for a model its client may not call.
// A request that names no model (files, vector stores, a stored response)
// passes, but for a new batch: its deployments are inside an uploaded file
// the proxy does not read.
func checkModelAllowed(who *client, rt route, method string, model []byte) *apiError {
	if who == nil || who.models == nil {
		return nil
	}
	if model == nil {
		if method == http.MethodPost && rt.kind == routePassthrough && rt.opPath == "batches" {
			return newAPIError(http.StatusForbidden, typeInvalidRequest, "model_not_allowed", "",
				"The client '"+who.name+"' may call only some models, so it may not create batches: "+
					"their models are named inside the input file, which this proxy does not read.")
		}
		return nil
	}
	if !who.allowsModel(string(model)) {
		return modelNotAllowed(who, string(model))
	}
	return nil
}

func modelNotAllowed(who *client, model string) *apiError {
	return newAPIError(http.StatusForbidden, typeInvalidRequest, "model_not_allowed", "model",
		fmt.Sprintf("The client '%s' may not use the model '%s' on this proxy. Its models: %s.",
			who.name, shorten(model), strings.Join(who.models, ", ")))
}
