package main

import (
	"fmt"
	"strings"
)

// The configuration without a file: one backend from the core environment
// variables, and its models from AZURE_OPENAI_MODEL_MAPPER.

// modelMapper is AZURE_OPENAI_MODEL_MAPPER ("gpt-3.5-turbo=gpt-35-turbo,gpt-4=gpt4"):
// the model names clients send, and the deployment each maps to. A model it
// does not name is used as the deployment name as it is (most deployments
// are named after their model).
type modelMapper struct {
	deployments map[string]string
	models      []string // configured order, for GET /v1/models
}

// parseModelMapper parses "model=deployment,..." with spaces trimmed and empty
// entries ignored. Each error names the offending pair so the operator can find it.
func parseModelMapper(spec string) (*modelMapper, error) {
	m := &modelMapper{deployments: map[string]string{}}
	for pair := range strings.SplitSeq(spec, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		model, deployment, ok := strings.Cut(pair, "=")
		model, deployment = strings.TrimSpace(model), strings.TrimSpace(deployment)
		switch {
		case !ok:
			return nil, fmt.Errorf("pair %q has no '=' (want model=deployment)", pair)
		case model == "":
			return nil, fmt.Errorf("pair %q has an empty model name", pair)
		case deployment == "":
			return nil, fmt.Errorf("pair %q has an empty deployment name", pair)
		case !validDeploymentName(deployment):
			return nil, fmt.Errorf("pair %q: deployment %q is not a valid deployment name (letters, digits, '-', '_', '.', at most 64 characters)", pair, deployment)
		}
		if _, dup := m.deployments[model]; dup {
			return nil, fmt.Errorf("pair %q maps model %q a second time", pair, model)
		}
		m.deployments[model] = deployment
		m.models = append(m.models, model)
	}
	return m, nil
}

// routeTableFromEnv is the configuration without a file: one backend from
// AZURE_OPENAI_ENDPOINT, models from AZURE_OPENAI_MODEL_MAPPER.
func routeTableFromEnv(getenv func(string) string) (*routeTable, error) {
	b, err := envBackend(getenv)
	if err != nil {
		return nil, err
	}
	t := &routeTable{backends: map[string]*backend{b.name: b}, backendNames: []string{b.name}, defaultBackend: b, source: "environment",
		files: newSourceFiles()}
	if err := t.addMapperModels(getenv); err != nil {
		return nil, err
	}
	if err := t.attachClientKeys(getenv, nil); err != nil {
		return nil, err
	}
	return t, nil
}

// envBackend is the backend the core environment variables describe.
func envBackend(getenv func(string) string) (*backend, error) {
	b := &backend{name: "default"}
	var err error
	if b.endpoint, b.endpointNote, err = parseEndpoint(getenv("AZURE_OPENAI_ENDPOINT")); err != nil {
		return nil, settingError("AZURE_OPENAI_ENDPOINT", "%v", err)
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
	b.apiKey = strings.TrimSpace(getenv("AZURE_OPENAI_API_KEY"))
	switch auth := strings.TrimSpace(getenv("AZURE_OPENAI_AUTH")); auth {
	case "", "key":
	case "entra":
		if b.apiKey != "" {
			return nil, settingError("AZURE_OPENAI_AUTH", "is entra, so AZURE_OPENAI_API_KEY must not be set: use one or the other")
		}
		b.entra = true
	default:
		return nil, settingError("AZURE_OPENAI_AUTH", "%q is not key or entra", auth)
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
