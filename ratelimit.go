package main

import (
	"fmt"
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
// is admitted while its client's buckets are not full; its tokens are added
// when its answer ends, so the request that crosses a line finishes.

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
	total            usageCounts // since the proxy started
}

type usageCounts struct {
	Requests         int64 `json:"requests"`
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
}

func (u usageCounts) tokens() int64 { return u.PromptTokens + u.CompletionTokens }

// leakyBucket holds what was used, draining at perMinute a minute.
type leakyBucket struct {
	used float64
	at   time.Time
}

// drain brings the bucket to now.
func (b *leakyBucket) drain(now time.Time, perMinute int64) {
	if !b.at.IsZero() && now.After(b.at) {
		b.used = math.Max(0, b.used-now.Sub(b.at).Minutes()*float64(perMinute))
	}
	if b.at.IsZero() || now.After(b.at) {
		b.at = now
	}
}

// until is how long the bucket takes to drain to level.
func (b *leakyBucket) until(level float64, perMinute int64) time.Duration {
	if b.used <= level {
		return 0
	}
	return time.Duration((b.used - level) / float64(perMinute) * float64(time.Minute))
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
	lim := c.limits
	var refusal *rateRefusal
	switch {
	case lim.RequestsPerMinute > 0 && u.requests.used+1 > float64(lim.RequestsPerMinute)+bucketSlack:
		refusal = &rateRefusal{limitRPM, lim.RequestsPerMinute, whole(u.requests.used),
			u.requests.until(float64(lim.RequestsPerMinute-1), lim.RequestsPerMinute)}
	case lim.TokensPerMinute > 0 && u.tokens.used > float64(lim.TokensPerMinute-1)+bucketSlack:
		// Not a whole token left: refused until there is one.
		refusal = &rateRefusal{limitTPM, lim.TokensPerMinute, whole(u.tokens.used),
			u.tokens.until(float64(lim.TokensPerMinute-1), lim.TokensPerMinute)}
	case lim.TokensPerDay > 0 && u.today.tokens() >= lim.TokensPerDay:
		refusal = &rateRefusal{limitTPD, lim.TokensPerDay, u.today.tokens(), untilMidnight(now)}
	default:
		u.requests.used++
		u.today.Requests++
		u.total.Requests++
	}
	if refusal != nil {
		// Whole milliseconds, rounded up, and at least one: a retry after
		// the wait finds the window freed.
		refusal.retryAfter = max((refusal.retryAfter + time.Millisecond - 1).Truncate(time.Millisecond), time.Millisecond)
	}
	return u.headers(lim, now), refusal
}

// charge adds the tokens of a request of c's that has ended.
func (l *clientLedger) charge(c *client, prompt, completion int64, now time.Time) {
	if prompt <= 0 && completion <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.clients[c.name] == nil {
		return // a reload removed the client while its request ran
	}
	u := l.usage(c, now)
	u.tokens.used += float64(prompt + completion)
	for _, counts := range []*usageCounts{&u.today, &u.total} {
		counts.PromptTokens += prompt
		counts.CompletionTokens += completion
	}
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
	u.requests.drain(now, max(c.limits.RequestsPerMinute, 1))
	u.tokens.drain(now, max(c.limits.TokensPerMinute, 1))
	if day := now.UTC().Unix() / 86400; day != u.day {
		u.day, u.today = day, usageCounts{}
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
		setRateHeaders(h, "requests", lim.RequestsPerMinute, lim.RequestsPerMinute-whole(u.requests.used),
			u.requests.until(0, lim.RequestsPerMinute))
	}
	tokenLimit, tokenLeft, tokenReset := int64(0), int64(math.MaxInt64), time.Duration(0)
	if lim.TokensPerMinute > 0 {
		tokenLimit, tokenLeft = lim.TokensPerMinute, lim.TokensPerMinute-whole(u.tokens.used)
		tokenReset = u.tokens.until(0, lim.TokensPerMinute)
	}
	if left := lim.TokensPerDay - u.today.tokens(); lim.TokensPerDay > 0 && left < tokenLeft {
		tokenLimit, tokenLeft, tokenReset = lim.TokensPerDay, left, 0
		if u.today.tokens() > 0 {
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
	for k, v := range rate {
		header[k] = v
	}
	if refusal != nil {
		h.metrics.clientLimited(o.client.name, refusal.limit.setting)
		return rateLimitError(o.client, refusal)
	}
	return nil
}

// charge adds an ended request's tokens to its named client's usage.
func (h *proxyHandler) charge(o *requestOutcome) {
	if o.client == nil {
		return
	}
	prompt, completion := chargedUsage(o)
	h.state.clients.charge(o.client, prompt, completion, h.now())
}

// chargedUsage is what a request is charged: the usage Azure reported or,
// for a stream that ended without it (the client left before the usage
// chunk, or the backend's api-version could not be asked for it), an
// estimate: a token for every four bytes of the request body and one for
// every event passed on (Azure sends about a token an event).
func chargedUsage(o *requestOutcome) (prompt, completion int64) {
	if p, c := o.usage.prompt(), o.usage.completion(); p > 0 || c > 0 {
		return p, c
	}
	if o.streamEvents > 0 {
		return int64(o.bodyBytes+3) / 4, int64(o.streamEvents)
	}
	return 0, 0
}

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
