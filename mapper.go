package main

import (
	"fmt"
	"strings"
)

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

// validDeploymentName reports whether name can be placed in the Azure URL path
// as a deployment: ASCII letters, digits, '-', '_' and '.', 1 to 64 characters,
// and not a dot segment. Nothing else may reach the path, so no model value can
// change the upstream path, query or host.
func validDeploymentName(name string) bool {
	if name == "" || len(name) > 64 || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}
