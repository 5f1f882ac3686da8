package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var (
	metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// scrape is a parsed exposition: each sample by "name{label="value",…}" with
// labels sorted, and each family's type.
type scrape struct {
	samples map[string]float64
	types   map[string]string
}

// parseExposition reads the Prometheus text format strictly, failing the test
// on anything a real Prometheus would refuse or that breaks its conventions.
func parseExposition(t *testing.T, text string) scrape {
	t.Helper()
	s := scrape{samples: map[string]float64{}, types: map[string]string{}}
	helps := map[string]bool{}
	finished := map[string]bool{} // families whose samples are over
	current := ""
	type bucket struct {
		le    float64
		count float64
	}
	buckets := map[string][]bucket{} // histogram series (without le) → buckets in order
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		fail := func(format string, args ...any) { t.Fatalf("line %d %q: %s", n, line, fmt.Sprintf(format, args...)) }
		if line == "" {
			fail("empty line")
		}
		if rest, ok := strings.CutPrefix(line, "# "); ok {
			kind, rest, _ := strings.Cut(rest, " ")
			name, value, _ := strings.Cut(rest, " ")
			if !metricName.MatchString(name) || value == "" {
				fail("bad %s line", kind)
			}
			switch kind {
			case "HELP":
				if helps[name] {
					fail("second HELP")
				}
				helps[name] = true
			case "TYPE":
				if _, dup := s.types[name]; dup || !slices.Contains([]string{"counter", "gauge", "histogram", "summary", "untyped"}, value) {
					fail("bad or second TYPE")
				}
				if value == "counter" && !strings.HasSuffix(name, "_total") {
					fail("a counter's name should end in _total")
				}
				s.types[name] = value
			default:
				fail("unknown comment")
			}
			if current != "" && current != name {
				finished[current] = true
			}
			current = name
			continue
		}
		// name{labels} value
		nameEnd := strings.IndexAny(line, "{ ")
		if nameEnd < 0 {
			fail("no value")
		}
		name := line[:nameEnd]
		family := name
		if s.types[current] == "histogram" {
			family = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		}
		if family != current || s.types[family] == "" || !helps[family] || finished[family] {
			fail("sample outside its family's HELP/TYPE block")
		}
		rest := line[nameEnd:]
		var pairs []string
		labelsOf := map[string]string{}
		if strings.HasPrefix(rest, "{") {
			i := 1
			for rest[i] != '}' {
				eq := strings.IndexByte(rest[i:], '=')
				if eq < 0 {
					fail("label without =")
				}
				ln := rest[i : i+eq]
				if !labelName.MatchString(ln) || rest[i+eq+1] != '"' {
					fail("bad label %q", ln)
				}
				j := i + eq + 2
				var v strings.Builder
				for ; rest[j] != '"'; j++ {
					if rest[j] == '\\' {
						j++
						switch rest[j] {
						case '\\', '"':
							v.WriteByte(rest[j])
						case 'n':
							v.WriteByte('\n')
						default:
							fail("bad escape \\%c", rest[j])
						}
						continue
					}
					if rest[j] == '\n' {
						fail("raw newline in a label value")
					}
					v.WriteByte(rest[j])
				}
				if _, dup := labelsOf[ln]; dup {
					fail("label %s twice", ln)
				}
				labelsOf[ln] = v.String()
				pairs = append(pairs, ln+"="+strconv.Quote(v.String()))
				i = j + 1
				if rest[i] == ',' {
					i++
				}
			}
			rest = rest[i+1:]
		}
		value, err := strconv.ParseFloat(strings.TrimPrefix(rest, " "), 64)
		if !strings.HasPrefix(rest, " ") || err != nil {
			fail("bad value")
		}
		slices.Sort(pairs)
		key := name + "{" + strings.Join(pairs, ",") + "}"
		if _, dup := s.samples[key]; dup {
			fail("duplicate series")
		}
		s.samples[key] = value
		if strings.HasSuffix(name, "_bucket") {
			le, ok := labelsOf["le"]
			if !ok {
				fail("bucket without le")
			}
			bound, err := strconv.ParseFloat(le, 64)
			if err != nil {
				fail("bad le")
			}
			series := strings.Replace(key, `,le=`+strconv.Quote(le), "", 1)
			series = strings.Replace(series, `le=`+strconv.Quote(le)+`,`, "", 1)
			buckets[series] = append(buckets[series], bucket{bound, value})
		}
	}
	for series, bs := range buckets {
		for i := 1; i < len(bs); i++ {
			if bs[i].le <= bs[i-1].le || bs[i].count < bs[i-1].count {
				t.Fatalf("%s: buckets not in order or not cumulative", series)
			}
		}
		last := bs[len(bs)-1]
		count := s.samples[strings.Replace(series, "_bucket{", "_count{", 1)]
		if !math.IsInf(last.le, 1) || last.count != count {
			t.Fatalf("%s: the +Inf bucket must be last and equal _count", series)
		}
		if _, ok := s.samples[strings.Replace(series, "_bucket{", "_sum{", 1)]; !ok {
			t.Fatalf("%s: no _sum", series)
		}
	}
	return s
}

func (s scrape) get(name string, labels ...string) float64 {
	var pairs []string
	for i := 0; i+1 < len(labels); i += 2 {
		pairs = append(pairs, labels[i]+"="+strconv.Quote(labels[i+1]))
	}
	slices.Sort(pairs)
	return s.samples[name+"{"+strings.Join(pairs, ",")+"}"]
}

func (s scrape) distinct(name, label string) []string {
	var values []string
	re := regexp.MustCompile(`\b` + label + `="((?:[^"\\]|\\.)*)"`)
	for key := range s.samples {
		if strings.HasPrefix(key, name+"{") {
			if m := re.FindStringSubmatch(key); m != nil && !slices.Contains(values, m[1]) {
				values = append(values, m[1])
			}
		}
	}
	return values
}

func getMetrics(t *testing.T, url string) scrape {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/plain; version=0.0.4; charset=utf-8" {
		t.Fatalf("/metrics: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return parseExposition(t, string(body))
}

func TestMetricsScrapeCleanly(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.Contains(r.URL.Path, "embeddings"):
			io.WriteString(w, `{"object":"list","data":[],"model":"e","usage":{"prompt_tokens":5,"total_tokens":5}}`)
		case strings.Contains(r.URL.Path, "responses"):
			io.WriteString(w, `{"id":"resp_1","output":[{"content":[{"text":"the \"usage\": {\"prompt_tokens\": 999}"}]}],"usage":{"input_tokens":7,"output_tokens":3,"total_tokens":10}}`)
		case strings.Contains(string(readAllBody(r)), `"stream":true`):
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, azureFirstChunk+contentChunk+finishChunk+usageChunk+doneEvent)
		default:
			io.WriteString(w, `{"id":"c","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":11,"completion_tokens":4,"total_tokens":15}}`)
		}
	})
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_MODEL_MAPPER": `gpt-4o=prod4o, we"ird\model=prod4o`})
	for range 3 {
		p.postJSON(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	}
	p.postJSON(t, "/v1/chat/completions", `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}`)
	p.postJSON(t, "/v1/chat/completions", `{"model":"we\"ird\\model"}`)
	p.postJSON(t, "/v1/embeddings", `{"model":"emb-deployment","input":"x"}`)
	p.postJSON(t, "/v1/responses", `{"model":"gpt-4o","input":"x"}`)
	p.postJSON(t, "/v1/chat/completions", `{"model":"../x"}`)
	p.do(t, "GET", "/dashboard", nil, nil)
	for i := range 300 { // junk models a client makes up: bounded label values
		p.postJSON(t, "/v1/chat/completions", fmt.Sprintf(`{"model":"junk-%d"}`, i))
	}
	const requests = 3 + 1 + 1 + 1 + 1 + 1 + 1 + 300
	m := waitForRequests(t, p.URL, p.URL, requests)

	chat := func(model, deployment, code string) float64 {
		return m.get("azure_openai_proxy_requests_total", "route", "chat/completions", "model", model, "deployment", deployment, "backend", "default", "code", code)
	}
	if got := chat("gpt-4o", "prod4o", "200"); got != 4 {
		t.Errorf("gpt-4o chat requests = %v, want 4", got)
	}
	if got := chat(`we"ird\model`, "prod4o", "200"); got != 1 {
		t.Errorf("a model with a quote and a backslash: %v (label escaping)", got)
	}
	if got := m.get("azure_openai_proxy_requests_total", "route", "chat/completions", "model", "", "deployment", "", "backend", "", "code", "400"); got != 1 {
		t.Errorf("the invalid model's request = %v, want 1 with empty model", got)
	}
	if got := m.get("azure_openai_proxy_requests_total", "route", "unknown", "model", "", "deployment", "", "backend", "", "code", "404"); got != 1 {
		t.Errorf("unknown route = %v", got)
	}
	// Tokens from a JSON answer's usage, a stream's usage chunk, the Responses
	// API (input/output tokens; an escaped "usage" in the text is not it), and embeddings.
	tok := func(model, deployment, kind string) float64 {
		return m.get("azure_openai_proxy_tokens_total", "model", model, "deployment", deployment, "kind", kind)
	}
	if p, c := tok("gpt-4o", "prod4o", "prompt"), tok("gpt-4o", "prod4o", "completion"); p != 3*11+9+7 || c != 3*4+2+3 {
		t.Errorf("gpt-4o tokens: prompt %v completion %v, want %v and %v", p, c, 3*11+9+7, 3*4+2+3)
	}
	if got := tok("emb-deployment", "emb-deployment", "prompt"); got != 5 {
		t.Errorf("embedding tokens = %v", got)
	}
	if got := m.get("azure_openai_proxy_upstream_attempts_total", "backend", "default", "outcome", "2xx"); got != requests-2 {
		t.Errorf("2xx attempts = %v, want %v", got, requests-2)
	}
	if got := m.get("azure_openai_proxy_request_duration_seconds_count", "route", "chat/completions", "phase", "total"); got != requests-3 {
		t.Errorf("chat duration count = %v, want %v", got, requests-3)
	}
	if got := m.get("azure_openai_proxy_in_flight_requests"); got != 0 {
		t.Errorf("in flight = %v after every request ended", got)
	}
	// 300 made-up models: at most maxSeenModels get values of their own.
	models := m.distinct("azure_openai_proxy_requests_total", "model")
	if len(models) > maxSeenModels+5 || !slices.Contains(models, "other") {
		t.Errorf("%d distinct model label values; want them bounded, the rest as other", len(models))
	}
}

// waitForRequests scrapes metricsURL until the proxy has recorded n requests
// (it records each one just after answering it).
func waitForRequests(t *testing.T, metricsURL, _ string, n float64) scrape {
	t.Helper()
	var m scrape
	waitUntil(t, func() bool {
		m = getMetrics(t, metricsURL)
		total := 0.0
		for key, v := range m.samples {
			if strings.HasPrefix(key, "azure_openai_proxy_requests_total{") {
				total += v
			}
		}
		return total == n
	}, fmt.Sprintf("%v requests in the metrics", n))
	return m
}

func TestMetricsInFlightDuringStream(t *testing.T) {
	stream := newSteppedStream("data: 1\n\n", "data: 2\n\n")
	p := startProxy(t, newFakeAzure(t, fakeTLS, stream.serve), nil)
	_, r := p.openStream(t, t.Context())
	readEvent(t, r)
	if got := getMetrics(t, p.URL).get("azure_openai_proxy_in_flight_requests"); got != 1 {
		t.Errorf("in flight during a stream = %v, want 1", got)
	}
	stream.ack <- struct{}{}
	readEvent(t, r)
	stream.ack <- struct{}{}
}

func TestMetricsOnASeparateListener(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_PROXY_METRICS_ADDRESS": "127.0.0.1:0"})
	m := regexp.MustCompile(`metrics_listen=(127\.0\.0\.1:\d+)`).FindStringSubmatch(p.logs.String())
	if m == nil {
		t.Fatalf("no metrics listener in the start-up line:\n%s", p.logs)
	}
	ops := "http://" + m[1]
	p.postJSON(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	waitForRequests(t, ops, "", 1)
	if resp, body := p.do(t, "GET", "/metrics", nil, nil); resp.StatusCode != 404 {
		t.Errorf("/metrics on the API port: %d %s, want 404 when it has its own listener", resp.StatusCode, body)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(ops + path)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("%s on the metrics listener: %v %v", path, resp, err)
		}
	}
}

func TestUsageFromTail(t *testing.T) {
	long := `{"choices":[{"message":{"content":"` + strings.Repeat("x", 50000) + `"}}],"usage":{"prompt_tokens":3,"completion_tokens":2}}`
	var u tokenUsage
	got, err := io.ReadAll(newUsageTap(io.NopCloser(strings.NewReader(long)), &u))
	if err != nil || string(got) != long || u.prompt() != 3 || u.completion() != 2 {
		t.Errorf("usage %+v, body intact %v, %v", u, string(got) == long, err)
	}
	if u, ok := usageFromTail([]byte(`{"text":"say \"usage\": {\"prompt_tokens\": 9}"}`)); ok {
		t.Errorf("an escaped usage in a string was taken: %+v", u)
	}
}

func readAllBody(r *http.Request) []byte {
	b, _ := io.ReadAll(r.Body)
	return b
}

// TestMetricsLabelsAndAccess: only a model the proxy named as the deployment
// (and Azure answered for) gets a label value of its own, whatever clients
// put in other bodies; with client keys, /metrics on the API port needs one.
func TestMetricsLabelsAndAccess(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	p := startProxy(t, fake, nil)
	p.postJSON(t, "/v1/responses", `{"model":"client-chosen","input":"x"}`) // passed as sent: not the proxy's choice
	p.postJSON(t, "/v1/chat/completions", `{"model":"my-deployment"}`)      // the model as the deployment
	m := waitForRequests(t, p.URL, "", 2)
	models := m.distinct("azure_openai_proxy_requests_total", "model")
	if slices.Contains(models, "client-chosen") || !slices.Contains(models, "my-deployment") {
		t.Errorf("model label values %v: want my-deployment and not client-chosen", models)
	}

	keyed := startProxy(t, fake, map[string]string{"AZURE_OPENAI_PROXY_KEYS": "k", "AZURE_OPENAI_API_KEY": "server"})
	if resp, _ := keyed.do(t, "GET", "/metrics", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/metrics without a client key: %d, want 401", resp.StatusCode)
	}
	if resp, _ := keyed.do(t, "GET", "/metrics", http.Header{"Authorization": {"Bearer k"}}, nil); resp.StatusCode != 200 {
		t.Errorf("/metrics with a client key: %d", resp.StatusCode)
	}
	if resp, _ := keyed.do(t, "GET", "/healthz", nil, nil); resp.StatusCode != 200 {
		t.Errorf("/healthz needs no key: %d", resp.StatusCode)
	}
}

// TestUsageTailBounded: an answer whose tail nests "usage" in itself once
// made the tap decode the rest of the tail at every occurrence.
func TestUsageTailBounded(t *testing.T) {
	tail := []byte(strings.Repeat(`{"usage":`, 32<<10/9))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, ok := usageFromTail(tail); ok {
		t.Error("usage found in an unterminated tail")
	}
	runtime.ReadMemStats(&after)
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 4<<20 {
		t.Errorf("a 32 KiB tail allocated %d bytes", grown)
	}
	if u, ok := usageFromTail([]byte(`"x"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`)); !ok || u.prompt() != 3 {
		t.Errorf("a real usage: %+v %v", u, ok)
	}
}
