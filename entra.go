package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Entra ID (Azure AD) tokens, from the first source present, in the order
// Azure's own SDKs try them.
const (
	defaultEntraScope     = "https://cognitiveservices.azure.com/.default"
	defaultAuthorityHost  = "https://login.microsoftonline.com/"
	defaultIMDSEndpoint   = "http://169.254.169.254/metadata/identity/oauth2/token"
	tokenRefreshMargin    = 5 * time.Minute  // refresh this long before expiry
	tokenRetryAfterFailed = 5 * time.Second  // after a failed fetch with no valid token, callers wait this long for the next try
	tokenFetchTimeout     = 30 * time.Second // one fetch, whoever is waiting
)

// tokenError says which source failed and why; it never holds a secret or a token.
type tokenError struct {
	source string
	reason string
}

func (e *tokenError) Error() string {
	return "could not get an Entra ID token from " + e.source + ": " + e.reason
}

// entraCredential caches one access token and refreshes it before expiry,
// one refresh at a time however many requests wait. A request never waits
// while a valid token is cached: a refresh that fails keeps that token.
type entraCredential struct {
	source string // which source, for messages
	fetch  func(ctx context.Context) (token string, expiresAt time.Time, err error)
	now    func() time.Time

	mu          sync.Mutex
	token       string
	expires     time.Time
	refreshAt   time.Time
	refreshing  chan struct{} // closed when the running refresh ends; nil when none runs
	lastErr     error
	nextAttempt time.Time // after a failure with no valid token
}

// Token returns a valid access token.
func (c *entraCredential) Token(ctx context.Context) (string, error) {
	c.mu.Lock()
	now := c.now()
	valid := c.token != "" && now.Before(c.expires)
	if valid && now.Before(c.refreshAt) {
		defer c.mu.Unlock()
		return c.token, nil
	}
	if !valid && c.lastErr != nil && now.Before(c.nextAttempt) {
		defer c.mu.Unlock()
		return "", c.lastErr
	}
	if c.refreshing == nil {
		c.refreshing = make(chan struct{})
		go c.refresh(c.refreshing)
	}
	done := c.refreshing
	if valid {
		defer c.mu.Unlock()
		return c.token, nil // in its last minutes: use it while the refresh runs
	}
	c.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && c.now().Before(c.expires) {
		return c.token, nil
	}
	return "", c.lastErr
}

func (c *entraCredential) refresh(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), tokenFetchTimeout)
	token, expires, err := c.fetch(ctx)
	cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if err == nil {
		c.token, c.expires, c.lastErr = token, expires, nil
		// Refresh five minutes early, or at half-life for a short-lived token.
		c.refreshAt = expires.Add(-min(tokenRefreshMargin, expires.Sub(now)/2))
	} else {
		c.lastErr = &tokenError{source: c.source, reason: err.Error()}
		c.nextAttempt = now.Add(tokenRetryAfterFailed)
	}
	c.refreshing = nil
	close(done)
}

// newEntraCredential chooses the token source from the environment:
// workload identity, then a client secret, then managed identity (App
// Service / Container Apps, else the instance metadata endpoint).
func newEntraCredential(getenv func(string) string, client *http.Client, now func() time.Time) (*entraCredential, error) {
	env := func(name string) string { return strings.TrimSpace(getenv(name)) }
	scope := env("AZURE_OPENAI_ENTRA_SCOPE")
	if scope == "" {
		scope = defaultEntraScope
	}
	clientID, tenantID := env("AZURE_CLIENT_ID"), env("AZURE_TENANT_ID")
	authority := env("AZURE_AUTHORITY_HOST")
	if authority == "" {
		authority = defaultAuthorityHost
	}
	c := &entraCredential{now: now}
	// Both Entra ID sources are the client-credentials grant against the
	// tenant's token endpoint; they differ in how the client proves itself.
	clientCredentials := func(setting string, proof func() (url.Values, error)) error {
		if clientID == "" || tenantID == "" {
			return settingError(setting, "also needs AZURE_CLIENT_ID and AZURE_TENANT_ID")
		}
		endpoint, err := tokenEndpoint(authority, tenantID)
		if err != nil {
			return err
		}
		c.fetch = func(ctx context.Context) (string, time.Time, error) {
			form, err := proof()
			if err != nil {
				return "", time.Time{}, err
			}
			form.Set("grant_type", "client_credentials")
			form.Set("client_id", clientID)
			form.Set("scope", scope)
			return postTokenRequest(ctx, client, now, endpoint, form)
		}
		return nil
	}
	switch tokenFile, secret := env("AZURE_FEDERATED_TOKEN_FILE"), env("AZURE_CLIENT_SECRET"); {
	case tokenFile != "":
		c.source = "workload identity (AZURE_FEDERATED_TOKEN_FILE)"
		err := clientCredentials("AZURE_FEDERATED_TOKEN_FILE", func() (url.Values, error) {
			// Re-read on every refresh: the kubelet rotates the file.
			assertion, err := os.ReadFile(tokenFile)
			if err != nil {
				return nil, fmt.Errorf("cannot read the federated token file %s: %v", tokenFile, unwrapPathError(err))
			}
			return url.Values{
				"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
				"client_assertion":      {strings.TrimSpace(string(assertion))},
			}, nil
		})
		if err != nil {
			return nil, err
		}
	case secret != "":
		c.source = "client secret (AZURE_CLIENT_SECRET)"
		if err := clientCredentials("AZURE_CLIENT_SECRET", func() (url.Values, error) {
			return url.Values{"client_secret": {secret}}, nil
		}); err != nil {
			return nil, err
		}
	default:
		// Managed identity asks for a resource, not a scope.
		resource := strings.TrimSuffix(scope, "/.default")
		managed := func(endpoint, apiVersion, header, value string) func(context.Context) (string, time.Time, error) {
			return func(ctx context.Context) (string, time.Time, error) {
				q := url.Values{"api-version": {apiVersion}, "resource": {resource}}
				if clientID != "" {
					q.Set("client_id", clientID) // a user-assigned identity
				}
				return getManagedIdentityToken(ctx, client, now, endpoint, q, header, value)
			}
		}
		if identityEndpoint, identityHeader := env("IDENTITY_ENDPOINT"), env("IDENTITY_HEADER"); identityEndpoint != "" && identityHeader != "" {
			c.source = "managed identity (IDENTITY_ENDPOINT)"
			c.fetch = managed(identityEndpoint, "2019-08-01", "X-Identity-Header", identityHeader)
		} else {
			imds := env("AZURE_OPENAI_PROXY_IMDS_ENDPOINT")
			if imds == "" {
				imds = defaultIMDSEndpoint
			}
			c.source = "managed identity (instance metadata endpoint)"
			c.fetch = managed(imds, "2018-02-01", "Metadata", "true")
		}
	}
	return c, nil
}

func tokenEndpoint(authority, tenantID string) (string, error) {
	u, err := url.Parse(authority)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", settingError("AZURE_AUTHORITY_HOST", "%q is not a URL like https://login.microsoftonline.com/", authority)
	}
	return strings.TrimSuffix(u.String(), "/") + "/" + url.PathEscape(tenantID) + "/oauth2/v2.0/token", nil
}

// tokenResponse covers Entra ID's and the managed identity endpoints'
// answers; they disagree on whether numbers are JSON numbers or strings.
type tokenResponse struct {
	AccessToken      string          `json:"access_token"`
	ExpiresIn        json.RawMessage `json:"expires_in"`
	ExpiresOn        json.RawMessage `json:"expires_on"`
	Error            string          `json:"error"`
	ErrorDescription string          `json:"error_description"`
	Message          string          `json:"message"`
}

func postTokenRequest(ctx context.Context, client *http.Client, now func() time.Time, endpoint string, form url.Values) (string, time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", time.Time{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	return doTokenRequest(client, now, req)
}

func getManagedIdentityToken(ctx context.Context, client *http.Client, now func() time.Time, endpoint string, q url.Values, header, value string) (string, time.Time, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("the endpoint %q is not a URL", endpoint)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", time.Time{}, err
	}
	req.Header.Set(header, value)
	return doTokenRequest(client, now, req)
}

func doTokenRequest(client *http.Client, now func() time.Time, req *http.Request) (string, time.Time, error) {
	start := now()
	resp, err := client.Do(req)
	if err != nil {
		return "", time.Time{}, errors.New(describeNetError(err) + " (" + req.URL.Host + ")")
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("reading the answer from %s: %v", req.URL.Host, err)
	}
	var tr tokenResponse
	jsonErr := json.Unmarshal(data, &tr)
	if resp.StatusCode != http.StatusOK || tr.AccessToken == "" {
		reason := resp.Status
		switch {
		case tr.Error != "":
			reason += ": " + tr.Error
			if desc, _, _ := strings.Cut(tr.ErrorDescription, "\r\n"); desc != "" {
				reason += ": " + shorten(desc) // Entra's AADSTS text names the problem, never the secret
			}
		case tr.Message != "":
			reason += ": " + shorten(tr.Message)
		case jsonErr != nil:
			reason += ": the answer is not JSON"
		case resp.StatusCode == http.StatusOK:
			reason = "the answer has no access_token"
		}
		return "", time.Time{}, fmt.Errorf("%s answered %s", req.URL.Host, reason)
	}
	if secs, ok := jsonSeconds(tr.ExpiresOn); ok && secs > 0 {
		return tr.AccessToken, time.Unix(secs, 0), nil
	}
	if secs, ok := jsonSeconds(tr.ExpiresIn); ok && secs > 0 {
		return tr.AccessToken, start.Add(time.Duration(secs) * time.Second), nil
	}
	return "", time.Time{}, fmt.Errorf("%s answered a token without expires_in or expires_on", req.URL.Host)
}

// jsonSeconds reads a whole number of seconds given as a JSON number or string.
func jsonSeconds(raw json.RawMessage) (int64, bool) {
	s := strings.Trim(string(raw), `"`)
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}
