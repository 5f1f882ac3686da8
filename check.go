package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"
)

// checkFailedError is -check finding a deployment that does not answer; the
// process exits 1.
type checkFailedError struct{ failed, total int }

func (e *checkFailedError) Error() string {
	if e.total == 0 {
		return "check: no models are configured"
	}
	return fmt.Sprintf("check: %d of %d deployments failed", e.failed, e.total)
}

// runCheck sends one minimal request to every configured deployment, through
// the transport serving uses (proxies, CA, Entra ID), and prints a table:
// model, backend, deployment, result. It answers the most common question
// about this kind of proxy, "DeploymentNotFound", before any client is involved.
func runCheck(ctx context.Context, cfg Config, stdout io.Writer) error {
	table := cfg.Routes
	if len(table.modelNames) == 0 {
		fmt.Fprintln(stdout, "No models are configured, so there is nothing to check: set AZURE_OPENAI_MODEL_MAPPER or the config file's models.")
		return &checkFailedError{}
	}
	client := &http.Client{Transport: newUpstreamTransport(cfg), Timeout: 2 * time.Minute}
	tw := tabwriter.NewWriter(stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tBACKEND\tDEPLOYMENT\tRESULT")
	failed, total := 0, 0
	for _, model := range table.modelNames {
		for _, c := range table.models[model].candidates {
			ok, result := checkDeployment(ctx, client, cfg, c)
			total++
			if !ok {
				failed++
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", model, c.backend.name, c.deployment, result)
		}
	}
	tw.Flush()
	if failed > 0 {
		return &checkFailedError{failed: failed, total: total}
	}
	return nil
}

// checkDeployment tries a one-token chat; a deployment Azure says cannot chat
// (an embeddings model) gets a one-word embedding instead.
func checkDeployment(ctx context.Context, client *http.Client, cfg Config, c candidate) (ok bool, result string) {
	b := c.backend
	var auth http.Header
	switch {
	case b.entra:
		token, err := cfg.Entra.Token(ctx)
		if err != nil {
			return false, err.Error()
		}
		auth = http.Header{"Authorization": {"Bearer " + token}}
	case b.apiKey != "":
		auth = http.Header{"Api-Key": {b.apiKey}}
	case cfg.CheckKey != "":
		auth = http.Header{"Api-Key": {cfg.CheckKey}} // clients bring theirs; this one is for the check alone
	default:
		return false, "cannot check: the backend has no key of its own (clients bring theirs); set AZURE_OPENAI_PROXY_CHECK_KEY for the check"
	}
	chat := map[string]any{"messages": []map[string]string{{"role": "user", "content": "ping"}}, "max_tokens": 1}
	status, code, message, err := checkRequest(ctx, client, b, c.deployment, "chat/completions", chat, auth)
	if err == nil && status == http.StatusBadRequest && strings.Contains(message, "max_tokens") {
		// Reasoning models take max_completion_tokens instead.
		delete(chat, "max_tokens")
		chat["max_completion_tokens"] = 16
		status, code, message, err = checkRequest(ctx, client, b, c.deployment, "chat/completions", chat, auth)
	}
	what := "chat"
	if err == nil && status == http.StatusBadRequest && code == "OperationNotSupported" {
		what = "embeddings"
		status, code, message, err = checkRequest(ctx, client, b, c.deployment, "embeddings", map[string]any{"input": "ping"}, auth)
	}
	switch {
	case err != nil:
		return false, "unreachable: " + describeNetError(err)
	case status/100 == 2:
		return true, "OK (" + what + ")"
	case status == http.StatusTooManyRequests:
		return true, "OK (" + what + "; 429: the deployment exists but is rate limited now)"
	case status == http.StatusUnauthorized:
		return false, "401 bad key"
	case status == http.StatusNotFound && code == "DeploymentNotFound":
		return false, "404 DeploymentNotFound"
	}
	result = fmt.Sprintf("%d", status)
	if code != "" {
		result += " " + code
	}
	if message != "" {
		result += ": " + shorten(message)
	}
	return false, result
}

// checkRequest posts body to one deployment's operation and returns Azure's
// status and error code and message.
func checkRequest(ctx context.Context, client *http.Client, b *backend, deployment, op string, body map[string]any, auth http.Header) (status int, code, message string, err error) {
	rt, _ := deploymentRoute(op)
	if deploymentInBody(b, rt) {
		body["model"] = deployment
	}
	u := azureURL(b, rt, deployment)
	data, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(context.WithValue(ctx, attemptBackendKey{}, b), http.MethodPost, u.String(), bytes.NewReader(data))
	if err != nil {
		return 0, "", "", err
	}
	req.Header = auth.Clone()
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	var answer struct {
		Error struct {
			Code    any    `json:"code"` // Azure sends strings, sometimes numbers as strings
			Message string `json:"message"`
		} `json:"error"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(raw, &answer) == nil && answer.Error.Code != nil {
		code = fmt.Sprint(answer.Error.Code)
	}
	return resp.StatusCode, code, answer.Error.Message, nil
}
