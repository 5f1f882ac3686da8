package main

import (
	"fmt"
	"maps"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A named client's limits hold per replica. requests_per_minute and
// tokens_per_minute are leaky buckets: each holds what the client used,
// draining at the limit per minute, so a client may burst to its limit and
// then go on at its rate. tokens_per_day counts from midnight UTC. A request
// is admitted while its client's windows are not spent. Once its body is
// read, a request that runs a model reserves an estimate of its prompt
// (reserve), checked against the token limits again, so that a burst of
// requests in flight counts before their answers do; when the answer ends,
// its usage replaces the estimate (charge), so the request that crosses a
// line finishes.

// clientLedger keeps every named client's usage. It lives as long as the
// server: a reload keeps the counters of the clients that still exist.
type clientLedger struct {
	mu      sync.Mutex
	clients map[string]*clientUsage
}

// clientUsage is one client's usage: its buckets and its day.
type clientUsage struct {
	requests, tokens leakyBucket
	day              int64 // days since 1970-01-01 UTC that the counts below are for
	today            usageCounts
	reservedToday    int64       // the estimates of requests in flight, against tokens_per_day
	total            usageCounts // since the proxy started
}

type usageCounts struct {
	Requests         int64 `json:"requests"`
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
}

func (u usageCounts) tokens() int64 { return u.PromptTokens + u.CompletionTokens }

// leakyBucket holds what was used, draining at its limit a minute.
type leakyBucket struct {
	used  float64
	at    time.Time
	limit int64 // the limit it last drained at
}

// drain brings the bucket to now under limit. A bucket without a limit holds
// nothing (a limit a reload adds starts empty), and one whose limit a reload
// lowered holds at most the new limit: a client is never locked out for
// longer than a minute by a change of configuration.
func (b *leakyBucket) drain(now time.Time, limit int64) {
	if limit <= 0 {
		*b = leakyBucket{}
		return
	}
	if b.limit != limit {
		b.used, b.limit = math.Min(b.used, float64(limit)), limit
	}
	if !b.at.IsZero() && now.After(b.at) {
		b.used = math.Max(0, b.used-now.Sub(b.at).Minutes()*float64(limit))
	}
	if b.at.IsZero() || now.After(b.at) {
		b.at = now
	}
}

// add puts n into the bucket (n < 0 takes out), if it has a limit.
func (b *leakyBucket) add(n float64) {
	if b.limit > 0 {
		b.used = math.Max(0, b.used+n)
	}
}

// until is how long the bucket takes to drain to level.
func (b *leakyBucket) until(level float64) time.Duration {
	if b.used <= level || b.limit <= 0 {
		return 0
	}
	return time.Duration((b.used - level) / float64(b.limit) * float64(time.Minute))
}

// bucketSlack absorbs the rounding of draining in floating point, so that a
// bucket drained to exactly its line counts as there.
const bucketSlack = 1e-6

// whole is a bucket's content as the headers and the usage report count it.
func whole(used float64) int64 { return int64(math.Ceil(used - bucketSlack)) }

// rateLimit names a limit, as the 429 and the metrics name it.
type rateLimit struct {
	setting string // as in the configuration
	short   string // as OpenAI's messages name it
	kind    string // the error type: "requests" or "tokens"
}

var (
	limitRPM = rateLimit{"requests_per_minute", "requests per minute (RPM)", "requests"}
	limitTPM = rateLimit{"tokens_per_minute", "tokens per minute (TPM)", "tokens"}
	limitTPD = rateLimit{"tokens_per_day", "tokens per day (TPD)", "tokens"}
)

// rateRefusal is a request refused for a limit.
type rateRefusal struct {
	limit      rateLimit
	max, used  int64
	retryAfter time.Duration
}

// admit counts a request of c's at now, unless one of c's limits is spent.
// It returns the headers that tell the client where it stands (none for a
// client without limits), and the refusal, if any.
func (l *clientLedger) admit(c *client, now time.Time) (http.Header, *rateRefusal) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.usage(c, now)
	refusal := u.requestsSpent(c.limits)
	if refusal == nil {
		refusal = u.tokensSpent(c.limits, now)
	}
	if refusal == nil {
		u.requests.add(1)
		u.today.Requests++
		u.total.Requests++
	}
	return u.headers(c.limits, now), refusal.rounded()
}

// reserve holds an estimate of the tokens a request of c's will use until
// charge replaces it, unless c's token limits are spent already (by requests
// in flight, or since admit).
func (l *clientLedger) reserve(c *client, tokens int64, now time.Time) (http.Header, *rateRefusal) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.usage(c, now)
	refusal := u.tokensSpent(c.limits, now)
	if refusal == nil {
		u.tokens.add(float64(tokens))
		u.reservedToday += tokens
	}
	return u.headers(c.limits, now), refusal.rounded()
}

// charge settles an ended request of c's: its usage replaces what it reserved.
func (l *clientLedger) charge(c *client, reserved, prompt, completion int64, now time.Time) {
	if reserved <= 0 && prompt <= 0 && completion <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.clients[c.name] == nil {
		return // a reload removed the client while its request ran
	}
	u := l.usage(c, now)
	u.tokens.add(float64(prompt + completion - reserved))
	u.reservedToday = max(0, u.reservedToday-reserved)
	for _, counts := range []*usageCounts{&u.today, &u.total} {
		counts.PromptTokens += prompt
		counts.CompletionTokens += completion
	}
}

// peek returns c's headers without counting anything.
func (l *clientLedger) peek(c *client, now time.Time) http.Header {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.usage(c, now).headers(c.limits, now)
}

func (u *clientUsage) requestsSpent(lim clientLimits) *rateRefusal {
	if rpm := lim.RequestsPerMinute; rpm > 0 && u.requests.used+1 > float64(rpm)+bucketSlack {
		return &rateRefusal{limitRPM, rpm, whole(u.requests.used), u.requests.until(float64(rpm - 1))}
	}
	return nil
}

// tokensSpent refuses once less than a whole token is left in the minute, or
// the day's tokens (with the estimates of requests in flight) are spent.
func (u *clientUsage) tokensSpent(lim clientLimits, now time.Time) *rateRefusal {
	if tpm := lim.TokensPerMinute; tpm > 0 && u.tokens.used > float64(tpm-1)+bucketSlack {
		return &rateRefusal{limitTPM, tpm, whole(u.tokens.used), u.tokens.until(float64(tpm - 1))}
	}
	if used := u.today.tokens() + u.reservedToday; lim.TokensPerDay > 0 && used >= lim.TokensPerDay {
		return &rateRefusal{limitTPD, lim.TokensPerDay, used, untilMidnight(now)}
	}
	return nil
}

// rounded makes the wait whole milliseconds, rounded up, and at least one: a
// retry after it finds the window freed.
func (r *rateRefusal) rounded() *rateRefusal {
	if r != nil {
		r.retryAfter = max((r.retryAfter + time.Millisecond - 1).Truncate(time.Millisecond), time.Millisecond)
	}
	return r
}

// usage returns c's usage, brought to now. Callers hold l.mu.
func (l *clientLedger) usage(c *client, now time.Time) *clientUsage {
	if l.clients == nil {
		l.clients = map[string]*clientUsage{}
	}
	u := l.clients[c.name]
	if u == nil {
		u = &clientUsage{}
		l.clients[c.name] = u
	}
	u.requests.drain(now, c.limits.RequestsPerMinute)
	u.tokens.drain(now, c.limits.TokensPerMinute)
	if day := now.UTC().Unix() / 86400; day != u.day {
		u.day, u.today, u.reservedToday = day, usageCounts{}, 0
	}
	return u
}

// retain forgets the clients a reload removed; the others keep their counters.
func (l *clientLedger) retain(keys *clientKeys) {
	l.mu.Lock()
	defer l.mu.Unlock()
	kept := map[string]bool{}
	if keys != nil {
		for _, c := range keys.named {
			kept[c.name] = true
		}
	}
	for name := range l.clients {
		if !kept[name] {
			delete(l.clients, name)
		}
	}
}

func untilMidnight(now time.Time) time.Duration {
	utc := now.UTC()
	return time.Date(utc.Year(), utc.Month(), utc.Day()+1, 0, 0, 0, 0, time.UTC).Sub(utc)
}

// headers are the x-ratelimit-* headers OpenAI sends, for a client with
// limits. The token headers describe whichever token limit has less left.
func (u *clientUsage) headers(lim clientLimits, now time.Time) http.Header {
	if !lim.any() {
		return nil
	}
	h := http.Header{}
	if lim.RequestsPerMinute > 0 {
		setRateHeaders(h, "requests", lim.RequestsPerMinute, lim.RequestsPerMinute-whole(u.requests.used), u.requests.until(0))
	}
	tokenLimit, tokenLeft, tokenReset := int64(0), int64(math.MaxInt64), time.Duration(0)
	if lim.TokensPerMinute > 0 {
		tokenLimit, tokenLeft = lim.TokensPerMinute, lim.TokensPerMinute-whole(u.tokens.used)
		tokenReset = u.tokens.until(0)
	}
	if left := lim.TokensPerDay - u.today.tokens() - u.reservedToday; lim.TokensPerDay > 0 && left < tokenLeft {
		tokenLimit, tokenLeft, tokenReset = lim.TokensPerDay, left, 0
		if u.today.tokens()+u.reservedToday > 0 {
			tokenReset = untilMidnight(now)
		}
	}
	if tokenLimit > 0 {
		setRateHeaders(h, "tokens", tokenLimit, tokenLeft, tokenReset)
	}
	return h
}

func setRateHeaders(h http.Header, kind string, limit, remaining int64, reset time.Duration) {
	h.Set("X-Ratelimit-Limit-"+kind, strconv.FormatInt(limit, 10))
	h.Set("X-Ratelimit-Remaining-"+kind, strconv.FormatInt(max(remaining, 0), 10))
	h.Set("X-Ratelimit-Reset-"+kind, formatReset(reset))
}

// formatReset writes a duration as OpenAI's reset headers do: "1s", "6m0s", "20ms".
func formatReset(d time.Duration) string {
	if d < time.Second {
		return strconv.FormatInt(int64(math.Ceil(float64(d)/float64(time.Millisecond))), 10) + "ms"
	}
	return d.Round(time.Millisecond).String()
}

// rateLimitError is the 429 for a refusal, with Retry-After (seconds) and
// retry-after-ms, which the OpenAI SDKs wait for before they retry.
func rateLimitError(c *client, r *rateRefusal) *apiError {
	e := newAPIError(http.StatusTooManyRequests, r.limit.kind, "rate_limit_exceeded", "",
		fmt.Sprintf("Rate limit reached for client '%s' on %s: Limit %d, Used %d. Please try again in %s. "+
			"(This proxy's %s for the client; limits hold per replica.)",
			c.name, r.limit.short, r.max, r.used, formatReset(r.retryAfter), r.limit.setting))
	e.header = http.Header{
		"Retry-After":    {strconv.FormatInt(int64(math.Ceil(r.retryAfter.Seconds())), 10)},
		"Retry-After-Ms": {strconv.FormatInt(r.retryAfter.Milliseconds(), 10)},
	}
	return e
}

// admit counts the request against its named client's limits, or refuses it
// with 429. A limited client's answers all carry its x-ratelimit-* headers.
func (h *proxyHandler) admit(header http.Header, o *requestOutcome) *apiError {
	if o.client == nil {
		return nil
	}
	rate, refusal := h.state.clients.admit(o.client, h.now())
	return h.limited(header, rate, o.client, refusal)
}

// showLimits sets a limited client's rate headers on an answer that counts
// nothing (the models list, which the proxy answers itself).
func (h *proxyHandler) showLimits(header http.Header, c *client) {
	if c != nil && c.limits.any() {
		maps.Copy(header, h.state.clients.peek(c, h.now()))
	}
}

// reserve holds the estimate of a request's prompt against its client's
// token limits, once its body is read (see chargedUsage).
func (h *proxyHandler) reserve(header http.Header, o *requestOutcome) *apiError {
	if o.client == nil || !o.client.limits.countsTokens() || !o.generating || !o.jsonBody {
		return nil
	}
	o.reserved = promptEstimate(o.bodyBytes)
	rate, refusal := h.state.clients.reserve(o.client, o.reserved, h.now())
	if refusal != nil {
		o.reserved = 0
	}
	return h.limited(header, rate, o.client, refusal)
}

// limited sets a client's rate headers and turns a refusal into its 429.
func (h *proxyHandler) limited(header, rate http.Header, c *client, refusal *rateRefusal) *apiError {
	maps.Copy(header, rate)
	if refusal == nil {
		return nil
	}
	h.metrics.clientLimited(c.name, refusal.limit.setting)
	return rateLimitError(c, refusal)
}

// charge settles an ended request's tokens with its named client.
func (h *proxyHandler) charge(o *requestOutcome) {
	if o.client == nil {
		return
	}
	prompt, completion := chargedUsage(o)
	h.state.clients.charge(o.client, o.reserved, prompt, completion, h.now())
}

// chargedUsage is what a request is charged. Only requests that run a model
// are (reading a stored response is not), with the usage Azure reported. A
// JSON request Azure took but whose usage never came (a stream cut before its
// usage chunk, a client gone before the answer, a backend whose api-version
// could not be asked for a stream's usage) is charged an estimate: a token
// for every four bytes of the body, and one for every event passed on (Azure
// sends about a token an event).
func chargedUsage(o *requestOutcome) (prompt, completion int64) {
	if !o.generating {
		return 0, 0
	}
	if p, c := o.usage.prompt(), o.usage.completion(); p > 0 || c > 0 {
		return p, c
	}
	taken := o.upstreamStatus/100 == 2 || o.upstreamStatus == 0 && o.attempts > 0 && o.status == statusClientClosed
	if !taken || !o.jsonBody {
		return 0, 0
	}
	return promptEstimate(o.bodyBytes), int64(o.streamEvents)
}

func promptEstimate(bodyBytes int) int64 { return int64(bodyBytes+3) / 4 }

// stripUpstreamRateHeaders removes Azure's x-ratelimit-* headers, which
// describe the deployment's quota, from an answer to a client that has
// limits of its own: the proxy's describe the client's.
func stripUpstreamRateHeaders(h http.Header) {
	for k := range h {
		if strings.HasPrefix(k, "X-Ratelimit-") {
			delete(h, k)
		}
	}
}

func (h *proxyHandler) now() time.Time { return h.cfg.clock() }

// clock is the time: Now, which tests set, or time.Now.
func (c Config) clock() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}
