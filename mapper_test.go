package main

import (
	"strings"
	"testing"
)

func TestParseModelMapper(t *testing.T) {
	m, err := parseModelMapper(" gpt-3.5-turbo=gpt-35-turbo , ,gpt-4 = gpt4,")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(m.models, ",") != "gpt-3.5-turbo,gpt-4" {
		t.Errorf("models = %v", m.models)
	}
	for model, want := range map[string]string{"gpt-3.5-turbo": "gpt-35-turbo", "gpt-4": "gpt4"} {
		if got := m.deployments[model]; got != want {
			t.Errorf("deployment of %q = %q, want %q", model, got, want)
		}
	}
	if m, err := parseModelMapper(""); err != nil || len(m.models) != 0 {
		t.Errorf("empty mapper: %v %v", m, err)
	}
	for _, bad := range []string{"gpt-4", "=gpt4", "gpt-4=", "gpt-4=a/b", "gpt-4=..", "a=b,a=c", "x=" + strings.Repeat("d", 65)} {
		if _, err := parseModelMapper(bad); err == nil {
			t.Errorf("parseModelMapper(%q) accepted", bad)
		}
	}
}

func TestValidDeploymentName(t *testing.T) {
	for _, ok := range []string{"gpt-4o", "gpt-35-turbo", "my_deployment.v2", "A", strings.Repeat("a", 64), "..a", "a.."} {
		if !validDeploymentName(ok) {
			t.Errorf("%q rejected", ok)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "a b", "a?b", "a#b", "a%2f", "é", "a\n", strings.Repeat("a", 65)} {
		if validDeploymentName(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}
