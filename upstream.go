package main

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// This file says where a request goes on Azure: for a route the handler has
// resolved and a candidate the transport has chosen, the URL, api-version,
// credential header and body of one attempt. check.go builds its URLs here too.

// apiV1 is the api_version that selects Azure's v1 API: OpenAI's own paths
// under /openai/v1/, the deployment in the body, no dated api-version.
const apiV1 = "v1"

// upstreamCall is what the handler decided about one request: its route,
// where it may go, and what it carries. It travels in the request's context
// to the transport, which decides nothing but which candidate to try. It
// holds the client's key: never log it.
type upstreamCall struct {
	route            route
	table            *routeTable
	model            *modelRoute // the model's configured candidates; nil: the default backend
	deployment       string      // with model nil: the client's model, used as the deployment name ("" if none)
	clientKey        string
	ephemeral        bool         // clientKey is a WebRTC ephemeral key: sent as the Bearer token, no key of the proxy's
	body             *bodyLease   // nil: no body
	bodyModel        requestModel // where the body names the model, for the backends that read the deployment there
	placesDeployment bool         // each attempt names its candidate's deployment: only then do its failures cool the candidate down
	usageSplices     []bodySplice // ask Azure for the usage of a stream whose client did not (usageinject.go)
	outcome          *requestOutcome
}

type upstreamCallKey struct{}

// candidates lists where this request may go.
func (c *upstreamCall) candidates() []candidate {
	if c.model != nil {
		return c.model.candidates
	}
	return []candidate{{backend: c.table.defaultBackend, deployment: c.deployment, weight: 1}}
}

// maxAttempts is how many candidates the request may try.
func (c *upstreamCall) maxAttempts() int { return c.table.attempts(c.model) }

// attemptBackendKey carries the backend of an attempt to the transport's Proxy function.
type attemptBackendKey struct{}

// attempt is the outbound request for one candidate: its URL, api-version,
// credential and body. req is ReverseProxy's outbound request; bearer, when
// set, is an Entra ID token sent instead of any key.
func (c *upstreamCall) attempt(ctx context.Context, req *http.Request, cand candidate, bearer string) *http.Request {
	b := cand.backend
	out := req.Clone(context.WithValue(ctx, attemptBackendKey{}, b))
	out.URL = azureURL(b, c.route, cand.deployment)
	out.Host = ""
	switch {
	case c.ephemeral:
		out.Header.Set("Authorization", "Bearer "+c.clientKey) // Azure checks it
	case bearer != "":
		out.Header.Set("Authorization", "Bearer "+bearer)
	case b.apiKey != "":
		out.Header.Set("Api-Key", b.apiKey)
	default:
		out.Header.Set("Api-Key", c.clientKey)
	}
	out.Body, out.GetBody, out.ContentLength = nil, nil, 0
	if c.body != nil {
		splices := c.splices(b, cand.deployment)
		out.Body = c.body.reader(splices)
		if req.Header.Get("Idempotency-Key") == "" && req.Header.Get("X-Idempotency-Key") == "" {
			// With these headers Go's transport would resend a POST itself
			// after a reset; without GetBody it cannot: resending is the
			// failover code's decision alone.
			out.GetBody = func() (io.ReadCloser, error) { return c.body.reader(splices), nil }
		}
		out.ContentLength = c.body.splicedLength(splices)
	}
	return out
}

// splices are the edits an attempt at backend b makes to the body: the
// deployment where Azure reads it from the body, and the request for a
// stream's usage (usageinject.go).
func (c *upstreamCall) splices(b *backend, deployment string) []bodySplice {
	var splices []bodySplice
	if m := c.bodyModel; m.edit != editNone && deploymentInBody(b, c.route) {
		splices = append(splices, bodySplice{m.start, m.end, m.replacement(deployment)})
	}
	if c.asksStreamUsage(b) {
		splices = append(splices, c.usageSplices...)
		slices.SortStableFunc(splices, func(x, y bodySplice) int { return x.start - y.start })
	}
	return splices
}

func (b *backend) v1() bool { return b.apiVersion == apiV1 }

// resendableAfterTimeout reports whether the request may go to another
// candidate after one timed out waiting for response headers, when that one
// may still be working on it: only stateless inference (chat, completions,
// embeddings, audio, images, and responses with "store": false), where a
// second copy costs tokens but changes nothing. Routes that create or change
// state (files, uploads, batches, fine-tuning, stored responses,
// conversations, vector stores, videos, evals) are never sent twice.
func (c *upstreamCall) resendableAfterTimeout() bool {
	switch {
	case c.route.kind == routeDeployment || c.route.kind == routeEngine:
		return true
	case c.route.opPath == "responses" && c.body != nil:
		c.body.mu.Lock()
		defer c.body.mu.Unlock()
		if c.body.buf == nil {
			return false
		}
		store, err := findMember(c.body.buf, "store")
		return err == nil && store.found && string(c.body.buf[store.start:store.end]) == "false"
	}
	return false
}

// deploymentInBody reports whether Azure reads the deployment from the
// body's model on this route: on every v1 route, and on dated routes
// without it in the path.
func deploymentInBody(b *backend, rt route) bool {
	return b.v1() || rt.kind == routePassthrough
}

// azureURL is where rt goes on backend b, for deployment: the one place
// Azure's paths and api-versions are chosen.
func azureURL(b *backend, rt route, deployment string) *url.URL {
	var path, rawPath, query string
	switch {
	case rt.kind == routeRealtime:
		// GA: /openai/v1/realtime?model={deployment}, no api-version
		// ("Realtime API via WebSockets", Microsoft Learn). The preview URL,
		// deprecated since 2026-04-30, only for operators whose region lags.
		preview := b.realtimePreview && !b.v1() && rt.model != ""
		path = "/openai/v1/realtime"
		if preview {
			path = "/openai/realtime"
		}
		rawPath, query = path, realtimeQuery(rt, b, deployment, preview)
	case b.v1() || rt.family == apiV1Only:
		path, rawPath, query = "/openai/v1/"+rt.opPath, "/openai/v1/"+rt.op, rt.v1Query
		if rt.v1Preview && !rt.v1VersionGiven {
			query = withParam(query, "api-version=preview")
		}
	default:
		apiVersion := b.apiVersion
		if rt.family == apiPreview {
			apiVersion = b.previewAPIVersion
		}
		path, rawPath, query = "/openai/"+rt.opPath, "/openai/"+rt.op, withAPIVersion(rt, apiVersion)
		if rt.kind == routeDeployment || rt.kind == routeEngine {
			// deployment is a valid deployment name: nothing to escape.
			path = "/openai/deployments/" + deployment + "/" + rt.opPath
			rawPath = "/openai/deployments/" + deployment + "/" + rt.op
		}
	}
	return upstreamURL(b.endpoint, path, rawPath, query)
}

// upstreamURL joins the endpoint (with any path prefix it has) and a path
// below it, given both unescaped and as the client escaped it.
func upstreamURL(endpoint *url.URL, path, rawPath, rawQuery string) *url.URL {
	u := *endpoint
	u.Path = strings.TrimSuffix(endpoint.Path, "/") + path
	u.RawPath = strings.TrimSuffix(endpoint.EscapedPath(), "/") + rawPath
	u.RawQuery = rawQuery
	u.Fragment, u.RawFragment = "", ""
	return &u
}

// withAPIVersion adds api-version to the client's query unless the client
// gave one: the client's wins and is never duplicated.
func withAPIVersion(rt route, version string) string {
	if rt.query.Has("api-version") {
		return rt.rawQuery
	}
	return withParam(rt.rawQuery, "api-version="+url.QueryEscape(version))
}

// withParam appends an encoded name=value pair to a raw query.
func withParam(rawQuery, pair string) string {
	if rawQuery == "" {
		return pair
	}
	return rawQuery + "&" + pair
}

// realtimeQuery is the upstream query of a realtime handshake for
// deployment: the client's parameters but model, with the deployment named
// as Azure wants it. An observer (call_id) names no deployment.
func realtimeQuery(rt route, b *backend, deployment string, preview bool) string {
	q := url.Values{}
	for k, v := range rt.query {
		// The proxy names the deployment: the client's model or deployment,
		// in any case, does not reach Azure.
		if !strings.EqualFold(k, "model") && !strings.EqualFold(k, "deployment") {
			q[k] = v
		}
	}
	if !preview {
		q.Del("deployment") // the preview URL's name for it: the proxy names the deployment
		if !rt.v1VersionGiven {
			q.Del("api-version") // a dated one: the GA URL refuses it (realtime migration guide)
		}
		if deployment != "" {
			q.Set("model", deployment)
		}
		return q.Encode()
	}
	q.Set("deployment", deployment)
	if !q.Has("api-version") {
		q.Set("api-version", b.previewAPIVersion)
	}
	return q.Encode()
}
