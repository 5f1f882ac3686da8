package main

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The deployment files cannot be applied here; these checks keep them true
// to the code: every variable they set exists, the probes hit real
// endpoints, and the pod waits longer than the proxy drains.
func TestDeploymentFiles(t *testing.T) {
	var known []string
	for _, s := range settings() {
		known = append(known, strings.Split(s.env, ", ")...)
	}
	timeout, _ := parseDuration(mapEnv(nil), "AZURE_OPENAI_PROXY_SHUTDOWN_TIMEOUT")
	delay, _ := parseDuration(mapEnv(nil), "AZURE_OPENAI_PROXY_DRAIN_DELAY")
	drain := delay + timeout // the longest a SIGTERMed proxy takes
	readme, _ := os.ReadFile("README.md")
	for _, path := range []string{"deploy/docker-compose.yml", "deploy/kubernetes/sidecar.yaml", "deploy/kubernetes/gateway.yaml"} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		for _, name := range regexp.MustCompile(`\bAZURE_[A-Z_]+\b`).FindAllString(text, -1) {
			if !slices.Contains(known, name) {
				t.Errorf("%s sets %s, which the proxy does not read", path, name)
			}
		}
		if !strings.Contains(string(readme), "("+path+")") {
			t.Errorf("the README does not link %s", path)
		}
		if strings.HasSuffix(path, "docker-compose.yml") {
			m := regexp.MustCompile(`stop_grace_period: (\d+)s`).FindStringSubmatch(text)
			if secs := 0; m == nil {
				t.Errorf("%s sets no stop_grace_period above the drain timeout", path)
			} else if secs, _ = strconv.Atoi(m[1]); float64(secs) <= drain.Seconds() {
				t.Errorf("%s: stop_grace_period %ds is not above the drain timeout %s", path, secs, drain)
			}
		}
		if !strings.HasPrefix(path, "deploy/kubernetes/") {
			continue
		}
		// The sidecar's user settings belong to the proxy's container: at
		// the pod's level they would apply to the user's app too.
		if pod, _, _ := strings.Cut(text, "containers:"); strings.HasSuffix(path, "sidecar.yaml") && strings.Contains(pod, "runAsUser") {
			t.Errorf("%s sets runAsUser for the whole pod", path)
		}
		for _, want := range []string{"path: /healthz", "path: /readyz", "runAsNonRoot: true", "readOnlyRootFilesystem: true", "AZURE_OPENAI_PROXY_METRICS_ADDRESS"} {
			if !strings.Contains(text, want) {
				t.Errorf("%s lacks %q", path, want)
			}
		}
		m := regexp.MustCompile(`terminationGracePeriodSeconds: (\d+)`).FindStringSubmatch(text)
		if m == nil {
			t.Errorf("%s sets no terminationGracePeriodSeconds", path)
		} else if secs, _ := strconv.Atoi(m[1]); float64(secs) <= drain.Seconds() {
			t.Errorf("%s: terminationGracePeriodSeconds %d is not above the drain timeout %s", path, secs, drain)
		}
	}
}

// TestGatewayConfigLoads loads the gateway's config.json as the pod would,
// with its Secret's keys in files and its environment.
func TestGatewayConfigLoads(t *testing.T) {
	data, err := os.ReadFile("deploy/kubernetes/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	_, config, ok := strings.Cut(text, "  config.json: |\n")
	if !ok {
		t.Fatal("gateway.yaml has no config.json")
	}
	var lines []string
	for line := range strings.SplitSeq(config, "\n") {
		if !strings.HasPrefix(line, "    ") {
			break
		}
		lines = append(lines, line[4:])
	}
	dir := t.TempDir()
	json := strings.Join(lines, "\n")
	for _, name := range []string{"team-search", "batch-jobs"} {
		path := dir + "/" + name
		os.WriteFile(path, []byte("sk-"+name+"-key\n"), 0o440)
		json = strings.ReplaceAll(json, "/run/secrets/gateway/"+name, path)
	}
	env := mapEnv(map[string]string{"AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com", "AZURE_OPENAI_API_KEY": "k",
		"AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=gpt-4o,text-embedding-3-small=emb"})
	cfg, err := loadConfig(options{listen: ":0", config: writeConfig(t, json)}, env)
	if err != nil {
		t.Fatalf("the gateway's config.json does not load: %v", err)
	}
	search := cfg.Routes.clientKeys.lookup("sk-team-search-key")
	if search == nil || search.name != "team-search" || search.limits.TokensPerMinute != 100000 || len(search.models) != 2 {
		t.Errorf("team-search: %+v", search)
	}
	if got := strings.Join(cfg.Routes.clientNames(), ","); got != "team-search,batch-jobs" {
		t.Errorf("clients %q", got)
	}
	for _, name := range []string{"team-search", "batch-jobs"} {
		if !strings.Contains(text, "{ key: "+name+", path: "+name+" }") {
			t.Errorf("the Secret volume does not project %s's key", name)
		}
	}
}
