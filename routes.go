package main

import (
	"net/http"
	"net/url"
	"strings"
)

// This file is the whole API surface: which OpenAI paths the proxy serves,
// and what kind of route each is. upstream.go says where each kind goes on
// Azure; the README's route table shows both modes side by side.
//
//	OpenAI path (with or without /v1)     dated api-version (e.g. 2024-10-21)           v1 (the default)
//	/chat/completions, /completions,      /openai/deployments/{d}/{op}?api-version=GA   /openai/v1/{op}, d in the body
//	/embeddings, /audio/transcriptions,
//	/audio/translations, /images/generations
//	/audio/speech, /images/edits          /openai/deployments/{d}/{op}?…=preview ver.   /openai/v1/{op}
//	  (audio and images on v1 carry api-version=preview)
//	/engines/{model}/{op}                 as {op}                                       as {op}
//	/files…, /uploads…, /batches…,        /openai/{rest}?api-version=GA                 /openai/v1/{rest}
//	/fine_tuning/…, any other /v1/{rest}
//	/assistants…, /threads…               answered by the proxy: retired by Azure on 2026-08-26
//	/vector_stores…, /responses…          /openai/{rest}?api-version=preview ver.       /openai/v1/{rest}
//	v1-only families (v1OnlyFamily)       /openai/v1/{rest}, on every backend
//	/v1/realtime?model=M (websocket)      /openai/v1/realtime?model={d} on every backend (preview URL on request)
//	/v1/responses (websocket)             /openai/v1/responses on every backend
//	/models, /models/{id}                 answered by the proxy from the configured models
//	/healthz, /readyz                     answered by the proxy

type routeKind int

const (
	routeDeployment  routeKind = iota + 1 // deployment in the Azure path, model from the body
	routeEngine                           // legacy /engines/{model}/{op}: model from the path
	routePassthrough                      // /openai/{rest}; a deployment, if any, travels in the body's model
	routeModelList                        // GET /v1/models
	routeModel                            // GET /v1/models/{id}
	routeRealtime                         // GET /v1/realtime?model=M, upgraded to a websocket
)

// apiFamily says which api-version a route takes.
type apiFamily int

const (
	apiGA      apiFamily = iota // dated: the backend's api-version; v1: none
	apiPreview                  // dated: the backend's preview api-version; v1: none
	apiV1Only                   // /openai/v1/ on every backend, whatever its api-version
)

// route is what the request line says: which kind of route, the operation,
// and the query, each parsed once here for the whole request.
type route struct {
	kind            routeKind
	op              string // deployment routes: the operation ("chat/completions"); passthrough: the escaped rest of the path
	opPath          string // op unescaped
	model           string // engines: the model named in the path; models/{id}: the id; realtime: the query's model
	family          apiFamily
	chat            bool   // a chat or text completion: its stream gets OpenAI's shape (stream.go)
	v1Preview       bool   // on /openai/v1/, Azure serves it as preview: api-version=preview unless the client names one
	modelIn         string // where a JSON body names the model: "" at the top level, else in this top-level object
	clientBearer    bool   // the client's Bearer token (a WebRTC ephemeral key) goes to Azure as it is: no proxy or Azure key
	namesDeployment bool   // a passthrough route whose body's model names the deployment (bodyDeploymentOps)
	labelName       string // the metrics' route label, when not derived from the path

	rawQuery       string     // the client's query, as sent
	query          url.Values // the same, parsed; nil when there is none
	v1Query        string     // the client's query for a /openai/v1/ path: without a dated api-version, which Azure refuses there
	v1VersionGiven bool       // the client named an api-version that /openai/v1/ takes
	upgrade        bool       // a websocket handshake
}

// deploymentOp describes an operation Azure serves under /openai/deployments/{deployment}/.
type deploymentOp struct {
	family    apiFamily
	chat      bool
	v1Preview bool
}

// deploymentOps is every operation with the deployment in Azure's path (in
// dated mode). Audio and images are documented on v1 only in the "v1 preview"
// reference, with api-version=preview (Microsoft Learn, "Azure OpenAI v1
// preview REST API reference"), so they keep it there.
var deploymentOps = map[string]deploymentOp{
	"chat/completions":     {apiGA, true, false},
	"completions":          {apiGA, true, false},
	"embeddings":           {apiGA, false, false},
	"audio/transcriptions": {apiGA, false, true},
	"audio/translations":   {apiGA, false, true},
	"images/generations":   {apiGA, false, true},
	"audio/speech":         {apiPreview, false, true}, // not in the GA api-version
	"images/edits":         {apiPreview, false, true},
}

// deploymentRoute is the route of an operation with the deployment in the path.
func deploymentRoute(op string) (route, bool) {
	d, ok := deploymentOps[op]
	return route{kind: routeDeployment, op: op, opPath: op, family: d.family, chat: d.chat, v1Preview: d.v1Preview}, ok
}

// v1OnlyFamily reports whether Azure serves the path (its unescaped segments
// below /v1/) only under /openai/v1/, and how. These go there from every
// backend, dated ones included, with the backend's key; a JSON body's model
// is mapped as on every other route. Sources, all Microsoft Learn:
func v1OnlyFamily(segments []string) (route, bool) {
	rt := route{kind: routePassthrough, family: apiV1Only}
	switch first := segments[0]; {
	case first == "videos": // "Video generation (Sora 2)": /openai/v1/videos, /videos/{id}[/content|/remix]
		rt.labelName = "videos"
	case first == "video" && len(segments) > 1 && segments[1] == "generations":
		// "v1 preview REST API reference": Sora 1, /openai/v1/video/generations/jobs…?api-version=preview
		rt.labelName, rt.v1Preview = "videos", true
	case first == "conversations": // Conversations REST reference: /openai/v1/conversations[/{id}[/items…]]
		rt.labelName = "conversations"
	case first == "containers": // Foundry REST reference, containers: /openai/v1/containers…
		rt.labelName = "containers"
	case first == "evals": // "API version lifecycle": /openai/v1/evals, GA on v1
		rt.labelName = "evals"
	case first == "responses" && len(segments) == 2 && segments[1] == "compact": // "Responses API", Compact a response
		rt.labelName = "responses"
	case first == "realtime" && len(segments) == 2 && segments[1] == "client_secrets":
		// "Realtime API via WebRTC": the session's model is the deployment.
		rt.labelName, rt.modelIn = "realtime", "session"
	case first == "realtime" && len(segments) >= 2 && segments[1] == "calls":
		// "Realtime API via WebRTC" and "via SIP": the SDP offer, with the
		// browser's ephemeral key; call control (accept, hangup…) with a key.
		rt.labelName, rt.clientBearer = "realtime", len(segments) == 2
	case first == "chat" && len(segments) >= 3 && segments[1] == "completions":
		// "Stored completions": /openai/v1/chat/completions/{id}[/messages]
		rt.labelName = "chat/completions"
	default:
		return route{}, false
	}
	return rt, true
}

// storedCompletions is GET /v1/chat/completions: the list of stored
// completions ("Stored completions", Microsoft Learn), v1 only.
var storedCompletions = route{kind: routePassthrough, op: "chat/completions", opPath: "chat/completions",
	family: apiV1Only, labelName: "chat/completions"}

// passthroughFamily gives the api-version family of a path without a deployment,
// by its first segment, and whether that family is also accepted without /v1.
func passthroughFamily(first string) (family apiFamily, withoutV1 bool) {
	switch first {
	case "files", "uploads", "batches", "fine_tuning":
		return apiGA, true
	case "assistants", "threads", "vector_stores", "responses":
		return apiPreview, true
	case "realtime":
		return apiPreview, false
	}
	return apiGA, false
}

// resolveRoute reads the request line once: the route the path names, the
// query, the methods the route takes, and whether it is a realtime websocket.
func resolveRoute(r *http.Request) (route, *apiError) {
	rt, e := resolvePath(r.URL.EscapedPath())
	if e != nil {
		return rt, e
	}
	if rt.rawQuery = r.URL.RawQuery; rt.rawQuery != "" {
		var err error
		if rt.query, err = url.ParseQuery(rt.rawQuery); err != nil {
			return rt, badRequest("invalid_query", "", "The request query string cannot be parsed.")
		}
	}
	rt.v1Query = withoutDatedAPIVersion(rt.rawQuery, rt.query)
	rt.v1VersionGiven = rt.query.Has("api-version") && rt.v1Query == rt.rawQuery
	rt.upgrade = isWebsocketUpgrade(r)
	switch {
	case rt.kind == routeModelList || rt.kind == routeModel:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return rt, methodNotAllowed("GET, HEAD")
		}
	case rt.kind == routeDeployment && rt.op == "chat/completions" && r.Method == http.MethodGet:
		stored := storedCompletions
		stored.rawQuery, stored.query, stored.v1Query, stored.v1VersionGiven = rt.rawQuery, rt.query, rt.v1Query, rt.v1VersionGiven
		return stored, nil
	case rt.kind == routeDeployment && rt.op == "chat/completions" && r.Method != http.MethodPost:
		return rt, methodNotAllowed("GET, POST")
	case rt.kind == routeDeployment || rt.kind == routeEngine:
		if r.Method != http.MethodPost {
			return rt, methodNotAllowed("POST")
		}
	case rt.kind == routePassthrough && rt.opPath == "realtime" && rt.upgrade:
		// "Realtime API via WebSockets"; with call_id, an observer of a
		// WebRTC call, which names no model ("Realtime API via WebRTC").
		rt.kind, rt.model = routeRealtime, rt.query.Get("model")
		if rt.model == "" && !rt.query.Has("call_id") {
			return rt, missingModel()
		}
	case rt.kind == routePassthrough && rt.opPath == "responses" && rt.upgrade:
		// The Responses API's WebSocket mode ("Responses API", Microsoft Learn): v1 only.
		rt.family = apiV1Only
	case rt.upgrade:
		return rt, badRequest("websocket_not_supported", "",
			"Websocket upgrades are accepted only on /v1/realtime and /v1/responses.")
	case rt.clientBearer && r.Method != http.MethodPost:
		return rt, methodNotAllowed("POST") // only the SDP offer goes without a key of the proxy's
	case rt.kind == routePassthrough:
		first, _, _ := strings.Cut(rt.opPath, "/")
		if first == "assistants" || first == "threads" {
			return rt, assistantsRetired()
		}
		rt.namesDeployment = r.Method == http.MethodPost && bodyDeploymentOps[rt.opPath]
	}
	return rt, nil
}

// bodyDeploymentOps are the operations without a deployment in the path
// whose body's model names one (on POST): only on these does a model in the
// body choose candidates. Every other such route goes to the default backend
// whatever its body says: the model of a fine-tuning job is a base model, and
// files, batches or vector stores live in one resource.
var bodyDeploymentOps = map[string]bool{
	"responses":               true, // "Responses API", dated preview and v1
	"responses/compact":       true,
	"videos":                  true, // Sora 2 create
	"video/generations/jobs":  true, // Sora 1 create
	"realtime/client_secrets": true, // in session.model
}

// v1APIVersions are the api-versions Azure takes on /openai/v1/ paths
// (Microsoft Learn, Azure OpenAI v1 REST reference: v1, preview; latest
// named the v1 preview in 2025). A client's dated one is not sent there.
var v1APIVersions = map[string]bool{"v1": true, "preview": true, "latest": true}

// withoutDatedAPIVersion is the client's query without an api-version that
// Azure's v1 paths refuse; every other parameter stays as sent.
func withoutDatedAPIVersion(rawQuery string, q url.Values) string {
	if !q.Has("api-version") || v1APIVersions[q.Get("api-version")] && len(q["api-version"]) == 1 {
		return rawQuery
	}
	var kept []string
	for pair := range strings.SplitSeq(rawQuery, "&") {
		key, _, _ := strings.Cut(pair, "=")
		if k, err := url.QueryUnescape(key); err == nil && k == "api-version" {
			continue
		}
		kept = append(kept, pair)
	}
	return strings.Join(kept, "&")
}

// assistantsRetired answers the Assistants API, which Azure retired on
// 2026-08-26 ("Assistants API (Preview)", Microsoft Learn): Azure's own
// answer would be a bare 404.
func assistantsRetired() *apiError {
	return newAPIError(http.StatusNotFound, typeInvalidRequest, "api_retired", "",
		"Azure OpenAI retired the Assistants API (assistants, threads) on 2026-08-26. Use the Responses API (/v1/responses) or the Microsoft Foundry Agent Service.")
}

// resolvePath maps the request's escaped path to a route. It rejects dot
// segments, empty segments, bad escapes, and encoded slashes, backslashes and
// control characters (which a server or gateway upstream might decode into a
// dot segment), so that no client path can climb out of /openai/ upstream.
func resolvePath(escapedPath string) (route, *apiError) {
	rest, hasV1 := strings.CutPrefix(escapedPath, "/v1/")
	if !hasV1 {
		rest = strings.TrimPrefix(escapedPath, "/")
	}
	segments := strings.Split(rest, "/")
	for i, seg := range segments {
		s, err := url.PathUnescape(seg)
		switch {
		case err != nil:
			return route{}, badRequest("invalid_path", "", "The request path has an invalid escape sequence.")
		case s == "." || s == "..":
			return route{}, badRequest("invalid_path", "", "The request path may not contain '.' or '..' segments.")
		case strings.ContainsFunc(s, func(r rune) bool { return r == '/' || r == '\\' || r < 0x20 || r == 0x7f }):
			return route{}, badRequest("invalid_path", "", "The request path may not contain encoded slashes, backslashes or control characters.")
		case s == "":
			return route{}, notFound(escapedPath)
		}
		segments[i] = s
	}

	if rt, ok := deploymentRoute(rest); ok {
		return rt, nil
	}
	if first := strings.ToLower(segments[0]); first == "deployments" || first == "openai" || first == "v1" {
		// Azure's own paths, in any case (/v1/v1/… would reach Azure's v1
		// API as a passthrough): the deployment would be the client's choice.
		return route{}, newAPIError(http.StatusNotFound, typeInvalidRequest, "unknown_url", "",
			"Unknown request URL: "+shownPath(escapedPath)+". The proxy serves OpenAI's paths: send POST /v1/chat/completions with the model in the body, not Azure's /deployments/… path.")
	}
	switch segments[0] {
	case "models":
		if len(segments) == 1 {
			return route{kind: routeModelList}, nil
		}
		// Model ids may hold slashes (openai/gpt-4o).
		return route{kind: routeModel, model: strings.Join(segments[1:], "/")}, nil
	case "engines":
		if len(segments) < 3 {
			return route{}, notFound(escapedPath)
		}
		rt, ok := deploymentRoute(strings.Join(segments[2:], "/"))
		if !ok {
			return route{}, notFound(escapedPath)
		}
		rt.kind, rt.model = routeEngine, segments[1]
		return rt, nil
	}
	rt, v1Only := v1OnlyFamily(segments)
	if !v1Only {
		family, withoutV1 := passthroughFamily(segments[0])
		if !hasV1 && !withoutV1 {
			return route{}, notFound(escapedPath)
		}
		rt = route{kind: routePassthrough, family: family}
	} else if !hasV1 {
		return route{}, notFound(escapedPath)
	}
	rt.op, rt.opPath = rest, strings.Join(segments, "/")
	return rt, nil
}

// label names the route's family for the metrics and the log: a bounded set.
func (rt route) label() string {
	if rt.labelName != "" {
		return rt.labelName
	}
	switch rt.kind {
	case routeDeployment, routeEngine:
		return rt.op
	case routeModelList, routeModel:
		return "models"
	case routeRealtime:
		return "realtime"
	}
	first, _, _ := strings.Cut(rt.op, "/")
	if _, known := passthroughFamily(first); known || first == "realtime" {
		return first
	}
	return "other"
}

// answeredByProxy reports whether the proxy answers the route itself.
func (rt route) answeredByProxy() bool {
	return rt.kind == routeModelList || rt.kind == routeModel
}

func notFound(escapedPath string) *apiError {
	return newAPIError(http.StatusNotFound, typeInvalidRequest, "unknown_url", "",
		"Unknown request URL: "+shownPath(escapedPath)+". Please check the URL for typos; the proxy serves the OpenAI API under /v1/.")
}

func methodNotAllowed(allow string) *apiError {
	e := newAPIError(http.StatusMethodNotAllowed, typeInvalidRequest, "method_not_allowed", "",
		"This route only accepts "+allow+".")
	e.header = http.Header{"Allow": {allow}}
	return e
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
