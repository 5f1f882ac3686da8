package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// metrics holds the proxy's Prometheus metrics and writes them in the text
// exposition format (version 0.0.4). Label values are bounded: a hostile
// client cannot make the proxy remember values of its own choosing.
type metrics struct {
	mu        sync.Mutex
	requests  map[[6]string]uint64 // route, model, deployment, backend, code, client
	durations map[[2]string]*histogram
	attempts  map[[2]string]uint64 // backend, outcome
	tokens    map[[4]string]uint64 // model, deployment, kind, client
	limited   map[[2]string]uint64 // client, limit
	models    map[string]bool      // unconfigured models Azure has answered 2xx for, up to maxSeenModels
	inFlight  atomic.Int64
}

// maxSeenModels bounds the unconfigured model names (used as deployments)
// that get a label value of their own; beyond it they count as "other".
const maxSeenModels = 100

// durationBuckets suit language models: from a cached embedding to a
// reasoning model thinking for minutes.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

func newMetrics() *metrics {
	return &metrics{
		requests:  map[[6]string]uint64{},
		durations: map[[2]string]*histogram{},
		attempts:  map[[2]string]uint64{},
		tokens:    map[[4]string]uint64{},
		limited:   map[[2]string]uint64{},
		models:    map[string]bool{},
	}
}

type histogram struct {
	counts []uint64 // per bucket, not cumulative; the last is +Inf
	sum    float64
	count  uint64
}

func (h *histogram) observe(v float64) {
	i, _ := slices.BinarySearch(durationBuckets, v)
	h.counts[i]++
	h.sum += v
	h.count++
}

// record adds one settled request to the metrics.
func (m *metrics) record(o *requestOutcome) {
	m.mu.Lock()
	defer m.mu.Unlock()
	model, deployment := o.shownModel, o.deployment
	if !o.configured {
		// Unconfigured models are used as deployment names; only one Azure
		// has answered for, as the deployment the proxy named, gets a value
		// of its own, and only so many. Azure's own status counts: a stream
		// the client cut short was still served.
		known := m.models[model]
		if !known && model != "" && o.deploymentChosen && o.upstreamStatus/100 == 2 && len(m.models) < maxSeenModels {
			m.models[model], known = true, true
		}
		if !known && model != "" {
			model = "other"
		}
		if deployment != "" && !known {
			deployment = "other"
		}
	}
	client := o.client.label() // a configured name: bounded
	m.requests[[6]string{o.route, model, deployment, o.backend, strconv.Itoa(o.status), client}]++
	for _, p := range [...]struct {
		phase string
		d     time.Duration
	}{{"first_byte", o.firstByte}, {"total", o.total}} {
		if p.d <= 0 {
			continue
		}
		key := [2]string{o.route, p.phase}
		h := m.durations[key]
		if h == nil {
			h = &histogram{counts: make([]uint64, len(durationBuckets)+1)}
			m.durations[key] = h
		}
		h.observe(p.d.Seconds())
	}
	if n := o.usage.prompt(); n > 0 {
		m.tokens[[4]string{model, deployment, "prompt", client}] += uint64(n)
	}
	if n := o.usage.completion(); n > 0 {
		m.tokens[[4]string{model, deployment, "completion", client}] += uint64(n)
	}
}

// clientLimited counts a request refused for one of its client's limits.
func (m *metrics) clientLimited(client, limit string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.limited[[2]string{client, limit}]++
}

func (m *metrics) attempt(backend, outcome string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.attempts[[2]string{backend, outcome}]++
}

// write renders every metric in the Prometheus text format.
func (m *metrics) write(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	family := func(name, kind, help string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, kind)
	}

	family("azure_openai_proxy_requests_total", "counter", "Requests answered, by route, model, deployment, backend, status code and named client.")
	for _, k := range sortedKeys(m.requests) {
		fmt.Fprintf(&b, "azure_openai_proxy_requests_total%s %d\n",
			labels("route", k[0], "model", k[1], "deployment", k[2], "backend", k[3], "code", k[4], "client", k[5]), m.requests[k])
	}

	family("azure_openai_proxy_request_duration_seconds", "histogram", "Time to the first byte of the answer, and to its end (for streams, the whole stream).")
	for _, k := range sortedKeys(m.durations) {
		h := m.durations[k]
		var cumulative uint64
		for i, upper := range durationBuckets {
			cumulative += h.counts[i]
			fmt.Fprintf(&b, "azure_openai_proxy_request_duration_seconds_bucket%s %d\n",
				labels("route", k[0], "phase", k[1], "le", formatFloat(upper)), cumulative)
		}
		fmt.Fprintf(&b, "azure_openai_proxy_request_duration_seconds_bucket%s %d\n", labels("route", k[0], "phase", k[1], "le", "+Inf"), h.count)
		fmt.Fprintf(&b, "azure_openai_proxy_request_duration_seconds_sum%s %s\n", labels("route", k[0], "phase", k[1]), formatFloat(h.sum))
		fmt.Fprintf(&b, "azure_openai_proxy_request_duration_seconds_count%s %d\n", labels("route", k[0], "phase", k[1]), h.count)
	}

	family("azure_openai_proxy_upstream_attempts_total", "counter", "Attempts at an Azure backend, by outcome.")
	for _, k := range sortedKeys(m.attempts) {
		fmt.Fprintf(&b, "azure_openai_proxy_upstream_attempts_total%s %d\n", labels("backend", k[0], "outcome", k[1]), m.attempts[k])
	}

	family("azure_openai_proxy_in_flight_requests", "gauge", "Requests being served now, open streams and websocket sessions included.")
	fmt.Fprintf(&b, "azure_openai_proxy_in_flight_requests %d\n", m.inFlight.Load())

	family("azure_openai_proxy_tokens_total", "counter", "Tokens Azure reported in usage, by model, deployment, kind (prompt or completion) and named client.")
	for _, k := range sortedKeys(m.tokens) {
		fmt.Fprintf(&b, "azure_openai_proxy_tokens_total%s %d\n", labels("model", k[0], "deployment", k[1], "kind", k[2], "client", k[3]), m.tokens[k])
	}

	family("azure_openai_proxy_client_limited_total", "counter", "Requests refused with 429 for one of their named client's limits, by client and limit.")
	for _, k := range sortedKeys(m.limited) {
		fmt.Fprintf(&b, "azure_openai_proxy_client_limited_total%s %d\n", labels("client", k[0], "limit", k[1]), m.limited[k])
	}
	io.WriteString(w, b.String())
}

// sortedKeys orders label sets so that the output is stable from scrape to scrape.
func sortedKeys[K comparable, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b K) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return keys
}

// labels renders {name="value",...}, escaping values as the format requires.
// An empty client label is left out (to Prometheus an empty label is no
// label): a proxy without named clients keeps the series it always had.
func labels(pairs ...string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i] == "client" && pairs[i+1] == "" {
			continue
		}
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		b.WriteString(pairs[i])
		b.WriteString(`="`)
		b.WriteString(escapeLabelValue(pairs[i+1]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

func escapeLabelValue(v string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v)
}

func formatFloat(f float64) string {
	if math.IsInf(f, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}
