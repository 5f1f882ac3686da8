package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
)

// readBody buffers the request body in a buffer from pool, refusing one over
// limit bytes without reading the rest: a declared Content-Length over the
// limit is refused before any byte is read, a chunked body as soon as it
// passes the limit. The caller returns the buffer to the pool.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, pool *bodyPool) ([]byte, *apiError) {
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	var buf []byte
	var err error
	if r.ContentLength > 0 {
		buf = pool.get(int(r.ContentLength))
		if _, err = io.ReadFull(body, buf); err != nil {
			pool.put(buf)
		}
	} else {
		buf, err = pool.readAll(body)
	}
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooLarge(limit)
		}
		return nil, badRequest("invalid_body", "", "The request body could not be read completely.")
	}
	return buf, nil
}

func tooLarge(limit int64) *apiError {
	return newAPIError(http.StatusRequestEntityTooLarge, typeInvalidRequest, "request_too_large", "",
		fmt.Sprintf("The request body is larger than this proxy's limit of %d bytes (AZURE_OPENAI_PROXY_MAX_BODY).", limit))
}

func isMultipart(contentType string) (boundary string, ok bool) {
	if !hasMediaType(contentType, "multipart/form-data") {
		return "", false // most bodies are JSON: no need to parse parameters
	}
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil || mediaType != "multipart/form-data" {
		return "", false
	}
	return params["boundary"], true
}

// isJSON reports whether a body of this content type is JSON that the proxy may read.
func isJSON(contentType string) bool {
	mediaType, _, _ := strings.Cut(contentType, ";")
	mediaType = strings.ToLower(strings.TrimSpace(mediaType))
	return mediaType == "application/json" || strings.HasSuffix(mediaType, "+json")
}

// hasMediaType reports whether contentType names mediaType, whatever its
// parameters and case, without allocating.
func hasMediaType(contentType, mediaType string) bool {
	t, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(t), mediaType)
}

// requestModel is the model a request names (in its body, path or query),
// and where the body names it, so that each attempt can name its own
// deployment there instead.
type requestModel struct {
	name       []byte // nil: the request names no model
	valid      bool   // name is a valid deployment name (validDeploymentName)
	edit       bodyEdit
	start, end int // the bytes edit replaces (start == end: an insertion point)
}

// bodyEdit says how to put a deployment into the body.
type bodyEdit int

const (
	editNone           bodyEdit = iota
	editJSONValue               // replace the "model" value with "deployment"
	editJSONInsert              // insert "model":"deployment", at the start of the object
	editJSONInsertOnly          // insert "model":"deployment" into an empty object
	editMultipartValue          // replace the "model" field's content
)

// findRequestModel finds the model the request names, by the route's kind:
// deployment routes need one in the body; engines and realtime name it in
// the path or query; other routes may carry one in a JSON body.
func findRequestModel(rt route, contentType string, body []byte) (requestModel, *apiError) {
	m, e := modelByRoute(rt, contentType, body)
	m.valid = validDeploymentName(string(m.name))
	return m, e
}

func modelByRoute(rt route, contentType string, body []byte) (requestModel, *apiError) {
	switch rt.kind {
	case routeDeployment:
		return modelFromBody(contentType, body)
	case routeRealtime:
		return requestModel{name: []byte(rt.model)}, nil
	case routeEngine:
		// The legacy engines route names the model in the path; a v1
		// backend needs it in the body.
		m := requestModel{name: []byte(rt.model)}
		if len(body) == 0 {
			return m, nil
		}
		field, e := jsonModel(body, "model")
		if e != nil {
			return m, e
		}
		if field.found {
			m.edit, m.start, m.end = editJSONValue, field.start, field.end
		} else {
			m.edit, m.start, m.end = modelInsertion(body)
		}
		return m, nil
	case routePassthrough:
		return optionalModel(rt, contentType, body)
	}
	return requestModel{}, nil
}

// optionalModel finds the model a route without a deployment in the path may
// name: a JSON body's top-level "model" (or the one in rt.modelIn), or, on
// v1-only routes (video uploads), a multipart form's "model" field.
func optionalModel(rt route, contentType string, body []byte) (requestModel, *apiError) {
	if len(body) == 0 {
		return requestModel{}, nil
	}
	if boundary, ok := isMultipart(contentType); ok && rt.family == apiV1Only {
		return multipartModel(body, boundary)
	}
	if !isJSON(contentType) {
		return requestModel{}, nil
	}
	key := "model"
	if rt.modelIn != "" {
		key = rt.modelIn
	}
	field, e := jsonModel(body, key)
	if e != nil {
		return requestModel{}, e
	}
	offset := 0
	if rt.modelIn != "" {
		// The model inside a top-level object, e.g. a realtime client
		// secret's session.model.
		if !field.found || body[field.start] != '{' {
			return requestModel{}, nil
		}
		offset = field.start
		field, _ = findModel(body[field.start:field.end]) // valid JSON: no error
	}
	if !field.found || !field.isString {
		return requestModel{}, nil
	}
	return requestModel{name: field.value, edit: editJSONValue, start: offset + field.start, end: offset + field.end}, nil
}

// modelFromBody returns the model a deployment route's body names: the
// multipart field "model", or the JSON body's top-level "model".
func modelFromBody(contentType string, body []byte) (requestModel, *apiError) {
	if boundary, ok := isMultipart(contentType); ok {
		m, e := multipartModel(body, boundary)
		if e == nil && m.name == nil {
			e = missingModel()
		}
		return m, e
	}
	field, e := jsonModel(body, "model")
	switch {
	case e != nil:
		return requestModel{}, e
	case !field.found:
		return requestModel{}, missingModel()
	case !field.isString:
		return requestModel{}, badRequest("invalid_model", "model", "The 'model' parameter must be a string.")
	}
	return requestModel{name: field.value, edit: editJSONValue, start: field.start, end: field.end}, nil
}

// multipartModel is the form's "model" field, where each attempt can replace it.
func multipartModel(body []byte, boundary string) (requestModel, *apiError) {
	value, start, end, e := modelFromMultipart(body, boundary)
	m := requestModel{name: value}
	if e == nil && end > start {
		m.edit, m.start, m.end = editMultipartValue, start, end
	}
	return m, e
}

// jsonModel finds the top-level member key (the model) of a body that must
// be one JSON object.
func jsonModel(body []byte, key string) (modelField, *apiError) {
	field, err := findMember(body, key)
	if err != nil {
		return field, badRequest("invalid_json", "",
			"We could not parse the JSON body of your request: "+err.Error()+". The body must be one JSON object.")
	}
	return field, nil
}

// modelInsertion is where a JSON object without a model can take one: just
// after its opening brace.
func modelInsertion(body []byte) (edit bodyEdit, start, end int) {
	open := bytes.IndexByte(body, '{') + 1
	rest := bytes.TrimLeft(body[open:], " \t\r\n")
	edit = editJSONInsert
	if len(rest) > 0 && rest[0] == '}' {
		edit = editJSONInsertOnly
	}
	return edit, open, open
}

// replacement is what an edit writes for deployment.
func (m requestModel) replacement(deployment string) []byte {
	switch m.edit { // a valid deployment name needs no escaping
	case editJSONValue:
		return []byte(`"` + deployment + `"`)
	case editJSONInsert:
		return []byte(`"model":"` + deployment + `",`)
	case editJSONInsertOnly:
		return []byte(`"model":"` + deployment + `"`)
	case editMultipartValue:
		return []byte(deployment)
	}
	return nil
}

// maxMultipartModel bounds how much of a multipart "model" field is read.
const maxMultipartModel = 256

// modelFromMultipart reads the form field "model", which clients often send
// after the file: the parts before it are skipped, never copied. It returns
// the value as a slice of body, so that it can be replaced in place; nil when
// the form has no model or an empty one.
func modelFromMultipart(body []byte, boundary string) (value []byte, start, end int, e *apiError) {
	if boundary == "" {
		return nil, 0, 0, badRequest("invalid_multipart", "", "The multipart/form-data Content-Type has no boundary.")
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for part := 0; ; part++ {
		p, err := mr.NextPart()
		if err == io.EOF {
			return nil, 0, 0, nil
		}
		if err != nil {
			return nil, 0, 0, badRequest("invalid_multipart", "", "The multipart/form-data body cannot be parsed.")
		}
		if p.FormName() != "model" || p.FileName() != "" {
			continue
		}
		decoded, err := io.ReadAll(io.LimitReader(p, maxMultipartModel+1))
		if err != nil {
			return nil, 0, 0, badRequest("invalid_multipart", "", "The multipart/form-data body cannot be parsed.")
		}
		switch {
		case len(decoded) > maxMultipartModel:
			return nil, 0, 0, invalidModel(string(decoded))
		case len(decoded) == 0:
			return nil, 0, 0, nil
		}
		start, end, ok := multipartContentSpan(body, boundary, part)
		if !ok || !bytes.Equal(body[start:end], decoded) {
			// Encoded (quoted-printable): no span to replace.
			return decoded, 0, 0, nil
		}
		return body[start:end], start, end, nil
	}
}

// multipartContentSpan finds the bytes of part k's content in a body that
// mime/multipart has already read as valid: between the blank line after its
// headers and the line break before the next boundary.
func multipartContentSpan(body []byte, boundary string, k int) (start, end int, ok bool) {
	delim := []byte("--" + boundary)
	next := func(from int) int { // the next boundary line at or after from
		for i := from; i <= len(body)-len(delim); {
			j := bytes.Index(body[i:], delim)
			if j < 0 {
				return -1
			}
			at := i + j
			if at == 0 || body[at-1] == '\n' {
				return at
			}
			i = at + 1
		}
		return -1
	}
	at := next(0)
	for part := 0; at >= 0; part++ {
		nl := bytes.IndexByte(body[at:], '\n')
		if nl < 0 {
			return 0, 0, false
		}
		headers := at + nl + 1
		var content int
		switch {
		case bytes.HasPrefix(body[headers:], []byte("\r\n")):
			content = headers + 2
		case bytes.HasPrefix(body[headers:], []byte("\n")):
			content = headers + 1
		default:
			crlf, lf := bytes.Index(body[headers:], []byte("\r\n\r\n")), bytes.Index(body[headers:], []byte("\n\n"))
			switch {
			case crlf >= 0 && (lf < 0 || crlf <= lf):
				content = headers + crlf + 4
			case lf >= 0:
				content = headers + lf + 2
			default:
				return 0, 0, false
			}
		}
		following := next(content)
		if following < 0 {
			return 0, 0, false
		}
		if part == k {
			end := following - 1 // the '\n' before the boundary line
			if end > content && body[end-1] == '\r' {
				end--
			}
			return content, max(end, content), true
		}
		at = following
	}
	return 0, 0, false
}

func missingModel() *apiError {
	return badRequest("missing_model", "model", "You must provide a model parameter.")
}

func invalidModel(model string) *apiError {
	return badRequest("invalid_model", "model", fmt.Sprintf(
		"The model %q cannot be used as an Azure deployment name: deployment names are letters, digits, '-', '_' and '.', at most 64 characters. Map it with AZURE_OPENAI_MODEL_MAPPER.", shorten(model)))
}

// shorten bounds a client-supplied value before it goes into an error message.
func shorten(s string) string {
	const maxShown = 80
	if len(s) <= maxShown {
		return s
	}
	return s[:maxShown] + "…"
}
