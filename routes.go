package main

import (
	"net/http"
	"net/url"
	"strings"
)

// This file is the whole API surface: which OpenAI paths the proxy serves,
// and what kind of route each is. upstream.go says where each kind goes on Azure.
//
//	OpenAI path (with or without /v1)     Azure path under {endpoint}                                api-version
//	/chat/completions, /completions,      /openai/deployments/{deployment}/{op}                     GA
//	/embeddings, /audio/transcriptions,
//	/audio/translations, /images/generations
//	/audio/speech, /images/edits          /openai/deployments/{deployment}/{op}                     preview
//	/engines/{model}/{op}                 /openai/deployments/{deployment}/{op}                     as {op}
//	/files…, /uploads…, /batches…,        /openai/{rest}                                            GA
//	/fine_tuning/…
//	/assistants…, /threads…,              /openai/{rest}                                            preview
//	/vector_stores…, /responses…
//	/v1/realtime?model=M (websocket)      /openai/realtime?deployment={deployment}                  preview
//	/v1/realtime… (HTTP)                  /openai/realtime…                                         preview
//	any other /v1/{rest}                  /openai/{rest}                                            GA
//	/models, /models/{id}                 answered by the proxy from AZURE_OPENAI_MODEL_MAPPER
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

// apiFamily says which configured api-version a route takes.
type apiFamily int

const (
	apiGA apiFamily = iota
	apiPreview
)

// route is what the request line says: which kind of route, the operation,
// and the query, each parsed once here for the whole request.
type route struct {
	kind   routeKind
	op     string // deployment routes: the operation ("chat/completions"); passthrough: the escaped rest of the path
	opPath string // op unescaped
	model  string // engines: the model named in the path; models/{id}: the id; realtime: the query's model
	family apiFamily
	chat   bool // a chat or text completion: its stream gets OpenAI's shape (stream.go)

	rawQuery string     // the client's query, as sent
	query    url.Values // the same, parsed; nil when there is none
	upgrade  bool       // a websocket handshake
}

// deploymentOp describes an operation Azure serves under /openai/deployments/{deployment}/.
type deploymentOp struct {
	family apiFamily
	chat   bool
}

// deploymentOps is every operation with the deployment in Azure's path.
var deploymentOps = map[string]deploymentOp{
	"chat/completions":     {apiGA, true},
	"completions":          {apiGA, true},
	"embeddings":           {apiGA, false},
	"audio/transcriptions": {apiGA, false},
	"audio/translations":   {apiGA, false},
	"images/generations":   {apiGA, false},
	"audio/speech":         {apiPreview, false}, // not in the GA api-version
	"images/edits":         {apiPreview, false},
}

// deploymentRoute is the route of an operation with the deployment in the path.
func deploymentRoute(op string) (route, bool) {
	d, ok := deploymentOps[op]
	return route{kind: routeDeployment, op: op, opPath: op, family: d.family, chat: d.chat}, ok
}

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
	rt.upgrade = isWebsocketUpgrade(r)
	switch rt.kind {
	case routeModelList, routeModel:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return rt, methodNotAllowed("GET, HEAD")
		}
	case routeDeployment, routeEngine:
		if r.Method != http.MethodPost {
			return rt, methodNotAllowed("POST")
		}
	case routePassthrough:
		if rt.op == "realtime" && rt.upgrade {
			rt.kind, rt.model = routeRealtime, rt.query.Get("model")
			if rt.model == "" {
				return rt, missingModel()
			}
		}
	}
	return rt, nil
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
	switch segments[0] {
	case "models":
		switch len(segments) {
		case 1:
			return route{kind: routeModelList}, nil
		case 2:
			return route{kind: routeModel, model: segments[1]}, nil
		}
		return route{}, notFound(escapedPath)
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
	family, withoutV1 := passthroughFamily(segments[0])
	if !hasV1 && !withoutV1 {
		return route{}, notFound(escapedPath)
	}
	return route{kind: routePassthrough, op: rest, opPath: strings.Join(segments, "/"), family: family}, nil
}

// label names the route's family for the metrics and the log: a bounded set.
func (rt route) label() string {
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
		"Unknown request URL: "+escapedPath+". Please check the URL for typos; the proxy serves the OpenAI API under /v1/.")
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
