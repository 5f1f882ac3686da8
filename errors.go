package main

import (
	"encoding/json"
	"net/http"
)

// apiError is the body OpenAI's API (and so every OpenAI SDK) understands:
// {"error":{"message":...,"type":...,"param":...,"code":...}}.
type apiError struct {
	Status  int         `json:"-"`
	Message string      `json:"message"`
	Type    string      `json:"type"`
	Param   *string     `json:"param"`
	Code    *string     `json:"code"`
	header  http.Header // sent with the error: Allow, Retry-After
}

func (e *apiError) Error() string { return e.Message }

// Error types as OpenAI names them.
const (
	typeInvalidRequest = "invalid_request_error"
	typeServer         = "server_error"
)

func newAPIError(status int, errType, code, param, message string) *apiError {
	e := &apiError{Status: status, Type: errType, Message: message}
	if code != "" {
		e.Code = &code
	}
	if param != "" {
		e.Param = &param
	}
	return e
}

func badRequest(code, param, message string) *apiError {
	return newAPIError(http.StatusBadRequest, typeInvalidRequest, code, param, message)
}

// writeError is the one place that writes an error the proxy itself makes.
func writeError(w http.ResponseWriter, e *apiError) {
	h := w.Header()
	for k, v := range e.header {
		h[k] = v
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(struct {
		Error *apiError `json:"error"`
	}{e})
}
