package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestConfigErrorsNameTheSetting(t *testing.T) {
	base := map[string]string{"AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com"}
	cases := []struct {
		set      map[string]string
		args     []string
		wantText []string
	}{
		{map[string]string{"AZURE_OPENAI_ENDPOINT": ""}, nil, []string{"AZURE_OPENAI_ENDPOINT", "not set"}},
		{map[string]string{"AZURE_OPENAI_ENDPOINT": "res.openai.azure.com"}, nil, []string{"AZURE_OPENAI_ENDPOINT", `"res.openai.azure.com"`}},
		{map[string]string{"AZURE_OPENAI_ENDPOINT": "ftp://res"}, nil, []string{"AZURE_OPENAI_ENDPOINT", "ftp://res"}},
		{map[string]string{"AZURE_OPENAI_ENDPOINT": "https://res/%zz"}, nil, []string{"AZURE_OPENAI_ENDPOINT"}},
		{map[string]string{"AZURE_OPENAI_ENDPOINT": "https://user:pw@res"}, nil, []string{"AZURE_OPENAI_ENDPOINT", "user:xxxxx@"}},
		{map[string]string{"AZURE_OPENAI_MODEL_MAPPER": "gpt-4=gpt4,gpt-35-turbo"}, nil, []string{"AZURE_OPENAI_MODEL_MAPPER", `"gpt-35-turbo"`}},
		// Set to no key at all: refused, not read as "no client keys".
		{map[string]string{"AZURE_OPENAI_PROXY_KEYS": " , ", "AZURE_OPENAI_API_KEY": "k"}, nil, []string{"AZURE_OPENAI_PROXY_KEYS", "holds no key"}},
		{map[string]string{"AZURE_OPENAI_MODEL_MAPPER": "gpt-4=gpt/4"}, nil, []string{"AZURE_OPENAI_MODEL_MAPPER", `"gpt-4=gpt/4"`}},
		{map[string]string{"AZURE_OPENAI_MODEL_MAPPER": "=x"}, nil, []string{"AZURE_OPENAI_MODEL_MAPPER", `"=x"`}},
		{map[string]string{"AZURE_OPENAI_MODEL_MAPPER": "a=b,a=c"}, nil, []string{"AZURE_OPENAI_MODEL_MAPPER", `"a=c"`}},
		{map[string]string{"AZURE_OPENAI_API_VER": "2024-10-21&x=1"}, nil, []string{"AZURE_OPENAI_API_VER", "2024-10-21&x=1"}},
		{map[string]string{"AZURE_OPENAI_PREVIEW_API_VER": "a b"}, nil, []string{"AZURE_OPENAI_PREVIEW_API_VER"}},
		{map[string]string{"AZURE_OPENAI_PROXY_MAX_BODY": "64MB"}, nil, []string{"AZURE_OPENAI_PROXY_MAX_BODY", "64MB"}},
		{map[string]string{"AZURE_OPENAI_PROXY_UPSTREAM_TIMEOUT": "soon"}, nil, []string{"AZURE_OPENAI_PROXY_UPSTREAM_TIMEOUT", "soon"}},
		{map[string]string{"AZURE_OPENAI_PROXY_SHUTDOWN_TIMEOUT": "-1s"}, nil, []string{"AZURE_OPENAI_PROXY_SHUTDOWN_TIMEOUT"}},
		{map[string]string{"AZURE_OPENAI_PROXY_CORS_ORIGINS": "chat.example.com"}, nil, []string{"AZURE_OPENAI_PROXY_CORS_ORIGINS", "chat.example.com"}},
		{map[string]string{"AZURE_OPENAI_PROXY_LOG_FORMAT": "xml"}, nil, []string{"AZURE_OPENAI_PROXY_LOG_FORMAT", "xml"}},
		{map[string]string{"AZURE_OPENAI_HTTP_PROXY": "http://a:1", "AZURE_OPENAI_SOCKS_PROXY": "socks5://b:1"}, nil, []string{"AZURE_OPENAI_HTTP_PROXY", "AZURE_OPENAI_SOCKS_PROXY"}},
		{map[string]string{"AZURE_OPENAI_SOCKS_PROXY": "http://b:1"}, nil, []string{"AZURE_OPENAI_SOCKS_PROXY", "socks5"}},
		{map[string]string{"AZURE_OPENAI_HTTP_PROXY": "http://user:hunter2@p:1/%zz"}, nil, []string{"AZURE_OPENAI_HTTP_PROXY", "user:xxxxx@p:1"}},
		{map[string]string{"AZURE_OPENAI_ENDPOINT": "ftp://user:hunter2@res/%zz"}, nil, []string{"AZURE_OPENAI_ENDPOINT"}},
		{map[string]string{"AZURE_OPENAI_PROXY_CA_FILE": "/nonexistent/ca.pem"}, nil, []string{"AZURE_OPENAI_PROXY_CA_FILE", "/nonexistent/ca.pem"}},
		{map[string]string{"AZURE_OPENAI_PROXY_ADDRESS": "8080"}, nil, []string{"AZURE_OPENAI_PROXY_ADDRESS", `"8080"`}},
		{nil, []string{"-listen"}, []string{"listen"}},
		{nil, []string{"-bogus"}, []string{"bogus"}},
		{nil, []string{"serve"}, []string{`"serve"`}},
	}
	for _, tc := range cases {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for k, v := range tc.set {
			env[k] = v
		}
		err := run(context.Background(), tc.args, mapEnv(env), &bytes.Buffer{}, &bytes.Buffer{})
		if _, ok := errors.AsType[*configError](err); !ok {
			t.Errorf("%v %v: err = %v, want a configError", tc.set, tc.args, err)
			continue
		}
		for _, want := range tc.wantText {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%v: error %q does not mention %q", tc.set, err, want)
			}
		}
		if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), ":pw@") || strings.Contains(err.Error(), "\n") {
			t.Errorf("error %q shows a password or spans lines", err)
		}
	}
}

func TestConfigDefaultsAndParsing(t *testing.T) {
	o, err := parseFlags(nil, mapEnv(nil))
	if err != nil || o.listen != ":8080" {
		t.Fatalf("default listen = %q, %v", o.listen, err)
	}
	if o, _ := parseFlags([]string{"--listen", "127.0.0.1:9"}, mapEnv(map[string]string{"AZURE_OPENAI_PROXY_ADDRESS": ":7"})); o.listen != "127.0.0.1:9" {
		t.Errorf("--listen should win over the env: %q", o.listen)
	}
	if o, _ := parseFlags([]string{"-l", ":5"}, mapEnv(nil)); o.listen != ":5" {
		t.Errorf("-l: %q", o.listen)
	}
	if o, _ := parseFlags(nil, mapEnv(map[string]string{"AZURE_OPENAI_PROXY_ADDRESS": ":7"})); o.listen != ":7" {
		t.Errorf("AZURE_OPENAI_PROXY_ADDRESS: %q", o.listen)
	}
	cfg, err := loadConfig(options{listen: ":8080"}, mapEnv(map[string]string{
		"AZURE_OPENAI_ENDPOINT":     " https://res.openai.azure.com/ ",
		"AZURE_OPENAI_MODEL_MAPPER": " gpt-3.5-turbo = gpt-35-turbo ,, gpt-4=gpt4, ",
	}))
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Routes.defaultBackend
	if b.endpoint.String() != "https://res.openai.azure.com" || b.apiVersion != apiV1 || // v1 is the default
		cfg.RealtimePreview ||
		b.previewAPIVersion != "2025-04-01-preview" || cfg.MaxBodyBytes != 64<<20 ||
		cfg.UpstreamTimeout != 10*time.Minute || cfg.ShutdownTimeout != 25*time.Second ||
		strings.Join(cfg.CORSOrigins, ",") != "*" || cfg.LogFormat != "text" || b.proxy != nil || b.apiKey != "" {
		t.Errorf("defaults: %+v %+v", cfg, b)
	}
	if r := cfg.Routes.route([]byte("gpt-3.5-turbo")); r == nil || r.candidates[0].deployment != "gpt-35-turbo" ||
		strings.Join(cfg.Routes.modelNames, ",") != "gpt-3.5-turbo,gpt-4" {
		t.Errorf("mapper: %+v", cfg.Routes)
	}
	if d, err := parseDuration(mapEnv(map[string]string{"X": "90"}), "X"); err != nil || d != 90*time.Second {
		t.Errorf("plain seconds: %v %v", d, err)
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{arg}, mapEnv(nil), &out, &bytes.Buffer{}); err != nil {
			t.Fatalf("%s: %v", arg, err)
		}
		for _, s := range settings() {
			for _, name := range strings.Split(s.env, ", ") {
				if !strings.Contains(out.String(), name) || (s.def != "" && !strings.Contains(out.String(), s.def)) {
					t.Errorf("%s output lacks %s or its default %q", arg, name, s.def)
				}
			}
		}
		for _, line := range strings.Split(out.String(), "\n") {
			if n := utf8.RuneCountInString(line); n > usageWidth {
				t.Errorf("a %d-column line in %s: %q", n, arg, line)
			}
		}
		for _, flag := range []string{"-listen", "-l ", "-config", "-healthcheck", "-check", "-version"} {
			if !strings.Contains(out.String(), flag) {
				t.Errorf("%s output lacks %s", arg, flag)
			}
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-version"}, mapEnv(nil), &out, &bytes.Buffer{}); err != nil || !strings.HasPrefix(out.String(), "azure-openai-proxy ") {
		t.Errorf("-version: %q %v", out.String(), err)
	}
}

func TestHealthcheckFlag(t *testing.T) {
	p := startProxy(t, newFakeAzure(t, fakeTLS, nil), nil)
	addr := strings.TrimPrefix(p.URL, "http://")
	port := addr[strings.LastIndex(addr, ":"):]
	for _, listen := range []string{addr, port, "0.0.0.0" + port} {
		if err := run(context.Background(), []string{"-healthcheck", "-listen", listen}, mapEnv(nil), &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
			t.Errorf("-healthcheck -listen %s against a live proxy: %v", listen, err)
		}
	}
	if err := run(context.Background(), []string{"-healthcheck"}, mapEnv(map[string]string{"AZURE_OPENAI_PROXY_ADDRESS": addr}), &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Errorf("-healthcheck with AZURE_OPENAI_PROXY_ADDRESS: %v", err)
	}
	if err := run(context.Background(), []string{"-healthcheck", "-listen", closedAddr(t)}, mapEnv(nil), &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Error("-healthcheck against nothing succeeded")
	}
}

// TestExitStatus runs the real main in a child process: a bad setting exits 2
// with one line naming the variable; a failed health check exits 1; -h exits 0.
func TestExitStatus(t *testing.T) {
	cases := []struct {
		args     []string
		env      []string
		code     int
		wantLine string
	}{
		{nil, nil, 2, "AZURE_OPENAI_ENDPOINT"},
		{nil, []string{"AZURE_OPENAI_ENDPOINT=::"}, 2, "AZURE_OPENAI_ENDPOINT"},
		{[]string{"-healthcheck", "-listen", closedAddr(t)}, nil, 1, "healthcheck"},
		{[]string{"-check"}, []string{"AZURE_OPENAI_ENDPOINT=https://127.0.0.1:1"}, 1, "check"},
		{[]string{"-h"}, nil, 0, ""},
	}
	for _, tc := range cases {
		cmd := exec.Command(os.Args[0], tc.args...)
		cmd.Env = append(cleanEnv(), append(tc.env, "AZURE_OPENAI_PROXY_TEST_AS_MAIN=1")...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		code := 0
		if exitErr, ok := errors.AsType[*exec.ExitError](err); ok {
			code = exitErr.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code {
			t.Errorf("%v %v: exit %d, want %d (stderr %q)", tc.args, tc.env, code, tc.code, stderr.String())
		}
		if tc.wantLine != "" {
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tc.wantLine) {
				t.Errorf("%v %v: stderr %q, want one line naming %s", tc.args, tc.env, stderr.String(), tc.wantLine)
			}
		}
	}
}

// cleanEnv is this process's environment without the proxy's own variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AZURE_OPENAI_") {
			env = append(env, kv)
		}
	}
	return env
}

// TestEndpointsAsPeopleCopyThem: Azure's portal and samples show endpoints
// ending in /openai or /openai/v1; those work, with a line in the log. A
// whole request URL (the portal's Target URI) is refused with what to keep.
func TestEndpointsAsPeopleCopyThem(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"https://r.openai.azure.com/openai", "https://r.openai.azure.com"},
		{"https://r.openai.azure.com/openai/", "https://r.openai.azure.com"},
		{"https://r.openai.azure.com/openai/v1", "https://r.openai.azure.com"},
		{"https://r.openai.azure.com/openai/v1/", "https://r.openai.azure.com"},
		{"https://gw.example.com/team/openai/v1/", "https://gw.example.com/team"},
		{"https://gw.example.com/a%2Fb/openai/v1", "https://gw.example.com/a%2Fb"},
		{"https://r.cognitiveservices.azure.com/", "https://r.cognitiveservices.azure.com"},
		{"https://p.services.ai.azure.com", "https://p.services.ai.azure.com"},
	} {
		u, note, err := parseEndpoint(tc.raw)
		if err != nil || u.String() != tc.want {
			t.Errorf("%s: %v %v, want %s", tc.raw, u, err, tc.want)
		}
		if copied := strings.Contains(tc.raw, "/openai"); copied != (note != "") {
			t.Errorf("%s: note %q", tc.raw, note)
		}
	}
	targetURI := "https://r.cognitiveservices.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-05-01-preview"
	_, err := loadConfig(options{listen: ":0"}, mapEnv(map[string]string{"AZURE_OPENAI_ENDPOINT": targetURI}))
	if err == nil || !strings.Contains(err.Error(), "AZURE_OPENAI_ENDPOINT") || !strings.Contains(err.Error(), "keep only https://r.cognitiveservices.azure.com,") {
		t.Errorf("a Target URI: %v", err)
	}

	fake := newFakeAzure(t, fakeTLS, nil)
	p := startProxy(t, nil, map[string]string{"AZURE_OPENAI_ENDPOINT": fake.URL + "/openai/v1/", "AZURE_OPENAI_PROXY_CA_FILE": fake.caFile(t), "AZURE_OPENAI_API_VER": ""})
	p.postJSON(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	assertForwarded(t, fake.only(t), "POST", "/openai/v1/chat/completions", []byte(`{"model":"gpt-4o"}`))
	for _, want := range []string{"ends in /openai/v1, which the proxy adds itself: using " + fake.URL, "(client-key, v1 API)"} {
		if !strings.Contains(p.logs.String(), want) {
			t.Errorf("start-up log lacks %q:\n%s", want, p.logs)
		}
	}
}

// TestUnknownSettingsWarned: a misspelt AZURE_OPENAI_* variable is named at
// start-up with the setting it was probably meant to be.
func TestUnknownSettingsWarned(t *testing.T) {
	var logs bytes.Buffer
	warnUnknownSettings([]string{"PATH", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_PROXY_MAX_BODDY", "AZURE_OPENAI_MODEL_MAPPING"}, newLogger("text", &logs))
	for _, want := range []string{
		"unknown setting AZURE_OPENAI_PROXY_MAX_BODDY is ignored; did you mean AZURE_OPENAI_PROXY_MAX_BODY?",
		"unknown setting AZURE_OPENAI_MODEL_MAPPING is ignored; did you mean AZURE_OPENAI_MODEL_MAPPER?",
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no %q in\n%s", want, logs.String())
		}
	}
	if strings.Contains(logs.String(), "AZURE_OPENAI_ENDPOINT is ignored") {
		t.Error("a known setting was warned about")
	}
	// run reads the names main gives it.
	ctx, cancel := context.WithCancel(withEnvironNames(context.Background(), []string{"AZURE_OPENAI_API_VERSION=2024-10-21"}))
	cancel()
	var out bytes.Buffer
	run(ctx, []string{"-listen", "127.0.0.1:0"}, mapEnv(map[string]string{"AZURE_OPENAI_ENDPOINT": "https://x", "AZURE_OPENAI_PROXY_DRAIN_DELAY": "0"}), &bytes.Buffer{}, &out)
	if !strings.Contains(out.String(), "did you mean AZURE_OPENAI_API_VER?") {
		t.Errorf("run did not warn:\n%s", out.String())
	}
}
