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
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil || mediaType != "multipart/form-data" {
		return "", false
	}
	return params["boundary"], true
}

// isJSON reports whether a body of this content type is JSON that the proxy may read.
func isJSON(contentType string) bool {
	mediaType, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mediaType == "application/json" || strings.HasSuffix(mediaType, "+json"))
}

// modelFromBody returns the model a deployment route's body names: the
// multipart field "model", or the JSON body's top-level "model".
func modelFromBody(contentType string, body []byte) ([]byte, *apiError) {
	if boundary, ok := isMultipart(contentType); ok {
		return modelFromMultipart(body, boundary)
	}
	field, err := findModel(body)
	switch {
	case err != nil:
		return nil, badRequest("invalid_json", "",
			"We could not parse the JSON body of your request: "+err.Error()+". The body must be one JSON object.")
	case !field.found:
		return nil, missingModel()
	case !field.isString:
		return nil, badRequest("invalid_model", "model", "The 'model' parameter must be a string.")
	}
	return field.value, nil
}

// maxMultipartModel bounds how much of a multipart "model" field is read.
const maxMultipartModel = 256

// modelFromMultipart reads the form field "model", which clients often send
// after the file: the parts before it are skipped, never copied.
func modelFromMultipart(body []byte, boundary string) ([]byte, *apiError) {
	if boundary == "" {
		return nil, badRequest("invalid_multipart", "", "The multipart/form-data Content-Type has no boundary.")
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return nil, missingModel()
		}
		if err != nil {
			return nil, badRequest("invalid_multipart", "", "The multipart/form-data body cannot be parsed.")
		}
		if part.FormName() != "model" || part.FileName() != "" {
			continue
		}
		value, err := io.ReadAll(io.LimitReader(part, maxMultipartModel+1))
		if err != nil {
			return nil, badRequest("invalid_multipart", "", "The multipart/form-data body cannot be parsed.")
		}
		if len(value) > maxMultipartModel {
			return nil, invalidModel(string(value))
		}
		if len(value) == 0 {
			return nil, missingModel()
		}
		return value, nil
	}
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
