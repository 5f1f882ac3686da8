package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"strings"
	"time"
)

// readBody buffers the request body in a buffer from pool, refusing one over
// limit bytes without reading the rest: a declared Content-Length over the
// limit is refused before any byte is read, a chunked body as soon as it
// passes the limit. A body that sends nothing for idle is cut off with 408.
// The caller returns the buffer to the pool.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, idle time.Duration, pool *bodyPool) ([]byte, *apiError) {
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	conn := http.NewResponseController(w)
	defer conn.SetReadDeadline(time.Time{}) // the answer may stream for as long as it takes
	body := &progressReader{src: http.MaxBytesReader(w, r.Body, limit), conn: conn, idle: idle}
	max := limit
	if r.ContentLength > 0 {
		max = r.ContentLength
	}
	buf, err := pool.readAll(body, max, r.ContentLength > 0)
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooLarge(limit)
		}
		if netErr, ok := errors.AsType[net.Error](err); ok && netErr.Timeout() {
			return nil, newAPIError(http.StatusRequestTimeout, typeInvalidRequest, "request_timeout", "",
				fmt.Sprintf("The request body stopped arriving: no byte for %s (AZURE_OPENAI_PROXY_BODY_TIMEOUT).", idle))
		}
		return nil, badRequest("invalid_body", "", "The request body could not be read completely.")
	}
	return buf, nil
}

// progressReader gives each read of the request body idle to bring a byte:
// a body may take as long as it needs while it keeps coming.
type progressReader struct {
	src  io.Reader
	conn *http.ResponseController
	idle time.Duration
}

func (p *progressReader) Read(b []byte) (int, error) {
	_ = p.conn.SetReadDeadline(time.Now().Add(p.idle)) // unsupported (tests' recorders): no deadline
	return p.src.Read(b)
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
	if len(body) == 0 || !rt.namesDeployment {
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
		if field, e = jsonModel(body[field.start:field.end], "model"); e != nil {
			return requestModel{}, e // a session naming its model twice
		}
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
	if dup, ok := err.(*duplicateKeyError); ok {
		return field, badRequest("invalid_json", key, "The JSON body "+dup.Error()+" (keys are matched in any case).")
	}
	if err == nil && field.tooLong {
		return field, invalidModel(string(body[field.start : field.start+maxShownModel]))
	}
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
// the form has no model or an empty one. A form with two model fields is
// refused: Azure might read the other one. mime/multipart parses the form
// and a partWalker finds each part's bytes in lockstep, both in one linear
// pass over the body.
func modelFromMultipart(body []byte, boundary string) (value []byte, start, end int, e *apiError) {
	if boundary == "" {
		return nil, 0, 0, badRequest("invalid_multipart", "", "The multipart/form-data Content-Type has no boundary.")
	}
	if models, ok := multipartFastModel(body, boundary); ok {
		switch {
		case len(models) > 1:
			return nil, 0, 0, twoModelFields()
		case len(models) == 0 || models[0][0] == models[0][1]:
			return nil, 0, 0, nil
		case models[0][1]-models[0][0] > maxMultipartModel:
			return nil, 0, 0, invalidModel(string(body[models[0][0] : models[0][0]+maxMultipartModel+1]))
		}
		return body[models[0][0]:models[0][1]], models[0][0], models[0][1], nil
	}
	unparsable := badRequest("invalid_multipart", "", "The multipart/form-data body cannot be parsed.")
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	parts := partWalker{body: body, delim: []byte("--" + boundary)}
	found := false
	for count := 0; ; count++ {
		p, err := mr.NextPart()
		if err == io.EOF {
			return value, start, end, nil
		}
		if count == maxFormParts {
			return nil, 0, 0, badRequest("invalid_multipart", "", fmt.Sprintf("The multipart/form-data body has more than %d parts.", maxFormParts))
		}
		if err != nil {
			return nil, 0, 0, unparsable
		}
		spanStart, spanEnd, spanOK := parts.next()
		if p.FormName() != "model" || p.FileName() != "" {
			continue
		}
		if found {
			return nil, 0, 0, twoModelFields()
		}
		found = true
		decoded, err := io.ReadAll(io.LimitReader(p, maxMultipartModel+1))
		switch {
		case err != nil:
			return nil, 0, 0, unparsable
		case len(decoded) > maxMultipartModel:
			return nil, 0, 0, invalidModel(string(decoded))
		case len(decoded) == 0:
			value, start, end = nil, 0, 0
		case !spanOK || !bytes.Equal(body[spanStart:spanEnd], decoded):
			value, start, end = decoded, 0, 0 // encoded (quoted-printable): no span to replace
		default:
			value, start, end = body[spanStart:spanEnd], spanStart, spanEnd
		}
	}
}

// partWalker finds the content of each part of a multipart body that
// mime/multipart reads as valid: between the blank line after its headers and
// the line break before the next boundary line. Each call goes on from where
// the last one stopped, so a whole walk reads the body once.
type partWalker struct {
	body  []byte
	delim []byte // "--" + boundary
	at    int    // the start of the boundary line before the next part; -1 before the first
	began bool
}

// next returns the span of the next part's content.
func (w *partWalker) next() (start, end int, ok bool) {
	body := w.body
	if !w.began {
		w.began, w.at = true, w.boundaryLine(0)
	}
	if w.at < 0 {
		return 0, 0, false
	}
	nl := bytes.IndexByte(body[w.at:], '\n')
	if nl < 0 {
		w.at = -1
		return 0, 0, false
	}
	content := w.at + nl + 1
	for { // the header lines, up to an empty one
		j := bytes.IndexByte(body[content:], '\n')
		if j < 0 {
			w.at = -1
			return 0, 0, false
		}
		line := body[content : content+j]
		content += j + 1
		if len(line) == 0 || len(line) == 1 && line[0] == '\r' {
			break
		}
	}
	following := w.boundaryLine(content)
	w.at = following
	if following < 0 {
		return 0, 0, false
	}
	end = following - 1 // the '\n' before the boundary line
	if end > content && body[end-1] == '\r' {
		end--
	}
	return content, max(end, content), true
}

// boundaryLine returns where the next boundary line starts, at or after from; -1 if none.
func (w *partWalker) boundaryLine(from int) int {
	for i := from; i <= len(w.body)-len(w.delim); {
		j := bytes.Index(w.body[i:], w.delim)
		if j < 0 {
			return -1
		}
		at := i + j
		if (at == 0 || w.body[at-1] == '\n') && delimiterEnds(w.body[at+len(w.delim):]) {
			return at
		}
		i = at + 1
	}
	return -1
}

// delimiterEnds reports whether what follows "--boundary" makes it a
// boundary as mime/multipart reads one (matchAfterPrefix): a space, a tab, a
// line end, "--", or the end of the body. "--boundaryX" is content.
func delimiterEnds(after []byte) bool {
	if len(after) == 0 {
		return true
	}
	switch after[0] {
	case ' ', '\t', '\r', '\n':
		return true
	}
	return len(after) >= 2 && after[0] == '-' && after[1] == '-'
}

func twoModelFields() *apiError {
	return badRequest("invalid_multipart", "model", "The multipart/form-data body has more than one 'model' field.")
}

func missingModel() *apiError {
	return badRequest("missing_model", "model", "You must provide a model parameter.")
}

func invalidModel(model string) *apiError {
	return badRequest("invalid_model", "model", fmt.Sprintf(
		"The model %q cannot be used as an Azure deployment name: deployment names are letters, digits, '-', '_' and '.', at most 64 characters. Map it with AZURE_OPENAI_MODEL_MAPPER.", shorten(model)))
}

// maxShownModel is how much of an overlong model value an error quotes.
const maxShownModel = 80

// shorten bounds a client-supplied value before it goes into an error message.
func shorten(s string) string {
	const maxShown = 80
	if len(s) <= maxShown {
		return s
	}
	return s[:maxShown] + "…"
}
