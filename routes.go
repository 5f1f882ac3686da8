package main

import (
	"net/http"
	"net/url"
	"strings"
)

// This file is the whole API surface: which OpenAI paths the proxy serves and
// where each goes on Azure.
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

type route struct {
	kind   routeKind
	op     string // deployment routes: the operation ("chat/completions"); passthrough: the escaped rest of the path
	model  string // engines: the model named in the path; models/{id}: the id
	family apiFamily
}

// deploymentOp reports whether Azure serves op under /openai/deployments/{deployment}/,
// and with which api-version.
func deploymentOp(op string) (apiFamily, bool) {
	switch op {
	case "chat/completions", "completions", "embeddings",
		"audio/transcriptions", "audio/translations", "images/generations":
		return apiGA, true
	case "audio/speech", "images/edits": // not in the GA api-version
		return apiPreview, true
	}
	return apiGA, false
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

// resolveRoute maps the request's escaped path to a route. It rejects dot
// segments, empty segments, bad escapes, and encoded slashes, backslashes and
// control characters (which a server or gateway upstream might decode into a
// dot segment), so that no client path can climb out of /openai/ upstream.
func resolveRoute(escapedPath string) (route, *apiError) {
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

	if family, ok := deploymentOp(rest); ok {
		return route{kind: routeDeployment, op: rest, family: family}, nil
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
		op := strings.Join(segments[2:], "/")
		family, ok := deploymentOp(op)
		if !ok {
			return route{}, notFound(escapedPath)
		}
		return route{kind: routeEngine, op: op, model: segments[1], family: family}, nil
	}
	family, withoutV1 := passthroughFamily(segments[0])
	if !hasV1 && !withoutV1 {
		return route{}, notFound(escapedPath)
	}
	return route{kind: routePassthrough, op: rest, family: family}, nil
}

func notFound(escapedPath string) *apiError {
	return newAPIError(http.StatusNotFound, typeInvalidRequest, "unknown_url", "",
		"Unknown request URL: "+escapedPath+". Please check the URL for typos; the proxy serves the OpenAI API under /v1/.")
}

// upstreamURL joins the endpoint (with any path prefix it has) and an escaped
// path below it, keeping the client's escaping.
func upstreamURL(endpoint *url.URL, escapedSuffix, rawQuery string) (*url.URL, error) {
	suffix, err := url.PathUnescape(escapedSuffix)
	if err != nil {
		return nil, err
	}
	u := *endpoint
	u.Path = strings.TrimSuffix(endpoint.Path, "/") + suffix
	u.RawPath = strings.TrimSuffix(endpoint.EscapedPath(), "/") + escapedSuffix
	u.RawQuery = rawQuery
	u.Fragment, u.RawFragment = "", ""
	return &u, nil
}

// checkQuery refuses a query string that cannot be parsed.
func checkQuery(rawQuery string) *apiError {
	if rawQuery == "" {
		return nil
	}
	if _, err := url.ParseQuery(rawQuery); err != nil {
		return badRequest("invalid_query", "", "The request query string cannot be parsed.")
	}
	return nil
}

// withAPIVersion adds api-version to the client's (checked) query unless the
// client gave one: the client's wins and is never duplicated.
func withAPIVersion(rawQuery, version string) string {
	add := "api-version=" + url.QueryEscape(version)
	if rawQuery == "" {
		return add
	}
	if q, _ := url.ParseQuery(rawQuery); q.Has("api-version") {
		return rawQuery
	}
	return rawQuery + "&" + add
}
