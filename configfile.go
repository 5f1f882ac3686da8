package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// The configuration file (--config FILE or AZURE_OPENAI_PROXY_CONFIG) names
// several backends and, per model, the deployments that serve it:
//
//	{
//	  "api_version": "2024-10-21",
//	  "preview_api_version": "2025-04-01-preview",
//	  "default_backend": "eastus",
//	  "max_attempts": 3,
//	  "backends": {
//	    "eastus": {"endpoint": "https://a.openai.azure.com", "api_key_env": "EASTUS_KEY"},
//	    "sweden": {"endpoint": "https://b.openai.azure.com", "api_key_file": "/run/secrets/sweden", "api_version": "v1"},
//	    "westus": {"endpoint": "https://c.openai.azure.com", "auth": "entra"}
//	  },
//	  "models": {
//	    "gpt-4o": [{"backend": "eastus", "deployment": "gpt4o"}, {"backend": "sweden", "deployment": "gpt-4o", "weight": 2}]
//	  },
//	  "clients": {"team-search": {"key_env": "SEARCH_KEY", "limits": {"tokens_per_minute": 200000}}}
//	}
//
// api_version is v1 (Azure's v1 API) unless the file or AZURE_OPENAI_API_VER
// names a dated one. Keys come from an environment variable or a file the
// config names, never from the config itself. Where the file is silent the core environment
// variables apply. Every error names the JSON path of the bad value.

// configPathError is a bad value in the configuration file.
type configPathError struct {
	file, path, msg string
}

func (e *configPathError) Error() string {
	if e.path == "" {
		return fmt.Sprintf("config %s: %s", e.file, e.msg)
	}
	return fmt.Sprintf("config %s: %s: %s", e.file, e.path, e.msg)
}

// member is one name/value pair of a JSON object, in the order written.
type member struct {
	key   string
	value json.RawMessage
}

// loadRouteTable reads the configuration file at path.
func loadRouteTable(path string, getenv func(string) string) (*routeTable, error) {
	files := newSourceFiles()
	data, err := files.read(path, false)
	if err != nil {
		return nil, &configError{msg: fmt.Sprintf("config %s: cannot read it: %v", path, unwrapPathError(err))}
	}
	p := configParser{file: path, getenv: getenv, files: files}
	t, err := p.parse(data)
	if err != nil {
		return nil, &configError{msg: err.Error()}
	}
	return t, nil
}

type configParser struct {
	file   string
	getenv func(string) string
	files  *sourceFiles // every file read, for the table
}

func (p *configParser) errorf(path, format string, args ...any) error {
	return &configPathError{file: p.file, path: path, msg: fmt.Sprintf(format, args...)}
}

// object returns the members of the JSON object raw, refusing duplicates and
// any key not in known.
func (p *configParser) object(raw json.RawMessage, path string, known ...string) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, p.errorf(path, "must be a JSON object")
	}
	var members []member
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, p.errorf(path, "is not valid JSON: %v", err)
		}
		key := tok.(string)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, p.errorf(join(path, key), "is not valid JSON: %v", err)
		}
		if seen[key] {
			return nil, p.errorf(join(path, key), "is given twice")
		}
		seen[key] = true
		if known != nil && !slices.Contains(known, key) {
			return nil, p.errorf(join(path, key), "unknown field (known: %s)", strings.Join(known, ", "))
		}
		members = append(members, member{key, value})
	}
	if _, err := dec.Token(); err != nil {
		return nil, p.errorf(path, "is not valid JSON: %v", err)
	}
	return members, nil
}

// lineAndColumn gives the 1-based line and column, as editors count them,
// of the byte a json.SyntaxError stopped at (its Offset counts it as read).
func lineAndColumn(data []byte, offset int64) (line, col int) {
	before := data[:min(max(int(offset)-1, 0), len(data))]
	line = bytes.Count(before, []byte("\n")) + 1
	col = len(before) - bytes.LastIndexByte(before, '\n')
	return line, col
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (p *configParser) str(raw json.RawMessage, path string) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", p.errorf(path, "must be a string")
	}
	return strings.TrimSpace(s), nil
}

func (p *configParser) parse(data []byte) (*routeTable, error) {
	var top json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		if syntax, ok := errors.AsType[*json.SyntaxError](err); ok {
			line, col := lineAndColumn(data, syntax.Offset)
			return nil, p.errorf("", "is not valid JSON: line %d, column %d: %v", line, col, err)
		}
		return nil, p.errorf("", "is not valid JSON: %v", err)
	}
	members, err := p.object(top, "", "api_version", "preview_api_version", "default_backend", "max_attempts", "backends", "models", "clients")
	if err != nil {
		return nil, err
	}
	t := &routeTable{backends: map[string]*backend{}, source: p.file, files: p.files}
	fields := map[string]json.RawMessage{}
	for _, m := range members {
		fields[m.key] = m.value
	}

	apiVersion, previewAPIVersion := envOr(p.getenv, "AZURE_OPENAI_API_VER"), envOr(p.getenv, "AZURE_OPENAI_PREVIEW_API_VER")
	for key, dst := range map[string]*string{"api_version": &apiVersion, "preview_api_version": &previewAPIVersion} {
		if raw, ok := fields[key]; ok {
			v, err := p.str(raw, key)
			if err != nil {
				return nil, err
			}
			if *dst, err = parseAPIVersion(key, v); err != nil {
				return nil, p.errorf(key, "%q is not an api-version like 2024-10-21", v)
			}
		}
	}

	if raw, ok := fields["backends"]; ok {
		backends, err := p.object(raw, "backends")
		if err != nil {
			return nil, err
		}
		if len(backends) == 0 {
			return nil, p.errorf("backends", "names no backend")
		}
		for _, m := range backends {
			b, err := p.backend(m.key, m.value, apiVersion, previewAPIVersion)
			if err != nil {
				return nil, err
			}
			t.backends[m.key] = b
			t.backendNames = append(t.backendNames, m.key)
		}
	} else {
		// No backends in the file: the one the environment describes.
		b, err := envBackend(p.getenv)
		if err != nil {
			return nil, err
		}
		b.apiVersion, b.previewAPIVersion = apiVersion, previewAPIVersion
		t.backends[b.name] = b
		t.backendNames = []string{b.name}
	}

	if raw, ok := fields["default_backend"]; ok {
		name, err := p.str(raw, "default_backend")
		if err != nil {
			return nil, err
		}
		if t.defaultBackend = t.backends[name]; t.defaultBackend == nil {
			return nil, p.errorf("default_backend", "no backend is named %q", name)
		}
	} else if len(t.backendNames) == 1 {
		t.defaultBackend = t.backends[t.backendNames[0]]
	} else {
		return nil, p.errorf("default_backend", "required when there are several backends")
	}

	if raw, ok := fields["max_attempts"]; ok {
		if err := json.Unmarshal(raw, &t.maxAttempts); err != nil || t.maxAttempts < 1 || t.maxAttempts > 10 {
			return nil, p.errorf("max_attempts", "must be a whole number from 1 to 10")
		}
	}

	if raw, ok := fields["models"]; ok {
		if err := p.models(t, raw); err != nil {
			return nil, err
		}
	} else if err := t.addMapperModels(p.getenv); err != nil {
		return nil, err
	}
	if err := p.attachClients(t, fields["clients"]); err != nil {
		return nil, err
	}
	return t, nil
}

// attachClients gives the table its clients: the file's (raw, when it
// names any) and the environment's keys.
func (p *configParser) attachClients(t *routeTable, raw json.RawMessage) error {
	var clients []clientSpec
	if raw != nil {
		var err error
		if clients, err = p.clients(raw); err != nil {
			return err
		}
	}
	return t.attachClientKeys(p.getenv, clients)
}

func (p *configParser) backend(name string, raw json.RawMessage, apiVersion, previewAPIVersion string) (*backend, error) {
	path := "backends." + name
	if !validBackendName(name) {
		return nil, p.errorf(path, "backend names are letters, digits, '-', '_' and '.', at most 64 characters")
	}
	members, err := p.object(raw, path, "endpoint", "auth", "api_key_env", "api_key_file", "api_version", "preview_api_version")
	if err != nil {
		return nil, err
	}
	b := &backend{name: name, apiVersion: apiVersion, previewAPIVersion: previewAPIVersion}
	var keyEnv, keyFile, auth string
	for _, m := range members {
		field := join(path, m.key)
		v, err := p.str(m.value, field)
		if err != nil {
			return nil, err
		}
		switch m.key {
		case "endpoint":
			if b.endpoint, b.endpointNote, err = parseEndpoint(v); err != nil {
				return nil, p.errorf(field, "%v", err)
			}
		case "auth":
			if auth = v; auth != "key" && auth != "entra" {
				return nil, p.errorf(field, "%q is not key or entra", v)
			}
		case "api_key_env":
			keyEnv = v
		case "api_key_file":
			keyFile = v
		case "api_version":
			if b.apiVersion, err = parseAPIVersion(field, v); err != nil {
				return nil, p.errorf(field, "%q is not an api-version like 2024-10-21", v)
			}
		case "preview_api_version":
			if b.previewAPIVersion, err = parseAPIVersion(field, v); err != nil {
				return nil, p.errorf(field, "%q is not an api-version like 2025-04-01-preview", v)
			}
		}
	}
	if b.endpoint == nil {
		return nil, p.errorf(join(path, "endpoint"), "required")
	}
	switch {
	case auth == "entra" && (keyEnv != "" || keyFile != ""):
		return nil, p.errorf(path, "auth is entra, so it takes no api_key_env or api_key_file")
	case auth == "entra":
		b.entra = true
	case keyEnv != "" && keyFile != "":
		return nil, p.errorf(path, "give api_key_env or api_key_file, not both")
	case keyEnv != "":
		if b.apiKey = strings.TrimSpace(p.getenv(keyEnv)); b.apiKey == "" {
			return nil, p.errorf(join(path, "api_key_env"), "the environment variable %s is not set", keyEnv)
		}
	case keyFile != "":
		data, err := p.files.read(keyFile, true)
		if err != nil {
			return nil, p.errorf(join(path, "api_key_file"), "cannot read %s: %v", keyFile, unwrapPathError(err))
		}
		if b.apiKey = strings.TrimSpace(string(data)); b.apiKey == "" {
			return nil, p.errorf(join(path, "api_key_file"), "%s is empty", keyFile)
		}
	}
	if b.proxy, err = parseUpstreamProxy(b.endpoint, p.getenv); err != nil {
		return nil, err
	}
	return b, nil
}

func (p *configParser) models(t *routeTable, raw json.RawMessage) error {
	models, err := p.object(raw, "models")
	if err != nil {
		return err
	}
	t.models = map[string]*modelRoute{}
	for _, m := range models {
		path := "models." + m.key
		if m.key == "" {
			return p.errorf(path, "a model name may not be empty")
		}
		var entries []json.RawMessage
		if err := json.Unmarshal(m.value, &entries); err != nil || len(entries) == 0 {
			return p.errorf(path, "must be a non-empty list of {\"backend\", \"deployment\", \"weight\"}")
		}
		var candidates []candidate
		for i, entry := range entries {
			c, err := p.candidate(t, fmt.Sprintf("%s[%d]", path, i), entry)
			if err != nil {
				return err
			}
			candidates = append(candidates, c)
		}
		t.models[m.key] = newModelRoute(candidates)
		t.modelNames = append(t.modelNames, m.key)
	}
	return nil
}

func (p *configParser) candidate(t *routeTable, path string, raw json.RawMessage) (candidate, error) {
	members, err := p.object(raw, path, "backend", "deployment", "weight")
	if err != nil {
		return candidate{}, err
	}
	c := candidate{weight: 1}
	for _, m := range members {
		field := join(path, m.key)
		switch m.key {
		case "backend":
			name, err := p.str(m.value, field)
			if err != nil {
				return c, err
			}
			if c.backend = t.backends[name]; c.backend == nil {
				return c, p.errorf(field, "no backend is named %q", name)
			}
		case "deployment":
			if c.deployment, err = p.str(m.value, field); err != nil {
				return c, err
			}
			if !validDeploymentName(c.deployment) {
				return c, p.errorf(field, "%q is not a deployment name (letters, digits, '-', '_', '.', at most 64 characters)", c.deployment)
			}
		case "weight":
			if err := json.Unmarshal(m.value, &c.weight); err != nil || c.weight < 1 || c.weight > 1000 {
				return c, p.errorf(field, "must be a whole number from 1 to 1000")
			}
		}
	}
	if c.backend == nil {
		return c, p.errorf(join(path, "backend"), "required")
	}
	if c.deployment == "" {
		return c, p.errorf(join(path, "deployment"), "required")
	}
	return c, nil
}

func validBackendName(name string) bool {
	return validDeploymentName(name) // the same alphabet: it appears in logs and metrics
}

// unwrapPathError drops the path an *os.PathError repeats, leaving the reason.
func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
