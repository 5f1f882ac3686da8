package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const testClientSecret = "client-SECRET-value-42"

// tokenServer is a fake Entra ID / managed identity endpoint. It records
// each request and answers with tokens tok-1, tok-2, … valid for lifetime.
type tokenServer struct {
	*fakeAzure
	issued   atomic.Int32
	lifetime time.Duration
	fail     atomic.Bool
}

func newTokenServer(t *testing.T, lifetime time.Duration, answer func(ts *tokenServer, w http.ResponseWriter, r *http.Request, token string)) *tokenServer {
	ts := &tokenServer{lifetime: lifetime}
	ts.fakeAzure = newFakeAzure(t, fakeTLS, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if ts.fail.Load() {
			w.WriteHeader(401)
			io.WriteString(w, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value.\r\nTrace ID: 1\r\nCorrelation ID: 2","error_codes":[7000215]}`)
			return
		}
		answer(ts, w, r, fmt.Sprintf("tok-%d", ts.issued.Add(1)))
	})
	return ts
}

func entraAnswer(ts *tokenServer, w http.ResponseWriter, r *http.Request, token string) {
	fmt.Fprintf(w, `{"token_type":"Bearer","expires_in":%d,"ext_expires_in":%d,"access_token":%q}`, int(ts.lifetime.Seconds()), int(ts.lifetime.Seconds()), token)
}

func managedIdentityAnswer(ts *tokenServer, w http.ResponseWriter, r *http.Request, token string) {
	// Managed identity endpoints give numbers as strings.
	fmt.Fprintf(w, `{"access_token":%q,"expires_in":"%d","expires_on":"%d","resource":"https://cognitiveservices.azure.com","token_type":"Bearer"}`,
		token, int(ts.lifetime.Seconds()), time.Now().Add(ts.lifetime).Unix())
}

func newTestCredential(t *testing.T, env map[string]string, ts *tokenServer, now func() time.Time) *entraCredential {
	t.Helper()
	pool, err := loadCAFile(ts.caFile(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := newEntraCredential(mapEnv(env), tokenHTTPClient(pool), now)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestEntraTokenSourcesSendWhatAzureExpects(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "azure-identity-token")
	os.WriteFile(tokenFile, []byte("federated.jwt.v1\n"), 0o600)

	t.Run("workload identity", func(t *testing.T) {
		ts := newTokenServer(t, time.Hour, entraAnswer)
		c := newTestCredential(t, map[string]string{
			"AZURE_FEDERATED_TOKEN_FILE": tokenFile, "AZURE_CLIENT_ID": "cid", "AZURE_TENANT_ID": "tid",
			"AZURE_AUTHORITY_HOST": ts.URL + "/", "AZURE_CLIENT_SECRET": "ignored: workload identity comes first",
		}, ts, time.Now)
		if tok, err := c.Token(context.Background()); err != nil || tok != "tok-1" {
			t.Fatalf("token %q %v", tok, err)
		}
		r := ts.only(t)
		form, _ := url.ParseQuery(string(r.Body))
		want := url.Values{"grant_type": {"client_credentials"}, "client_id": {"cid"}, "scope": {defaultEntraScope},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {"federated.jwt.v1"}}
		if r.Method != "POST" || r.Path != "/tid/oauth2/v2.0/token" || form.Encode() != want.Encode() ||
			r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			t.Errorf("request %s %s %v %q", r.Method, r.Path, form, r.Header.Get("Content-Type"))
		}
	})
	t.Run("client secret", func(t *testing.T) {
		ts := newTokenServer(t, time.Hour, entraAnswer)
		c := newTestCredential(t, map[string]string{"AZURE_CLIENT_SECRET": testClientSecret, "AZURE_CLIENT_ID": "cid",
			"AZURE_TENANT_ID": "tid", "AZURE_AUTHORITY_HOST": ts.URL, "AZURE_OPENAI_ENTRA_SCOPE": "api://custom/.default"}, ts, time.Now)
		if tok, err := c.Token(context.Background()); err != nil || tok != "tok-1" {
			t.Fatalf("token %q %v", tok, err)
		}
		r := ts.only(t)
		form, _ := url.ParseQuery(string(r.Body))
		want := url.Values{"grant_type": {"client_credentials"}, "client_id": {"cid"}, "scope": {"api://custom/.default"}, "client_secret": {testClientSecret}}
		if r.Path != "/tid/oauth2/v2.0/token" || form.Encode() != want.Encode() {
			t.Errorf("request %s %v", r.Path, form)
		}
	})
	t.Run("App Service managed identity", func(t *testing.T) {
		ts := newTokenServer(t, time.Hour, managedIdentityAnswer)
		c := newTestCredential(t, map[string]string{"IDENTITY_ENDPOINT": ts.URL + "/msi/token", "IDENTITY_HEADER": "hdr-secret", "AZURE_CLIENT_ID": "uami"}, ts, time.Now)
		if tok, err := c.Token(context.Background()); err != nil || tok != "tok-1" {
			t.Fatalf("token %q %v", tok, err)
		}
		r := ts.only(t)
		q, _ := url.ParseQuery(r.Query)
		if r.Method != "GET" || r.Path != "/msi/token" || r.Header.Get("X-Identity-Header") != "hdr-secret" ||
			q.Get("api-version") != "2019-08-01" || q.Get("resource") != "https://cognitiveservices.azure.com" || q.Get("client_id") != "uami" {
			t.Errorf("request %s %s %v %v", r.Method, r.Path, q, r.Header)
		}
	})
	t.Run("instance metadata endpoint", func(t *testing.T) {
		ts := newTokenServer(t, time.Hour, managedIdentityAnswer)
		c := newTestCredential(t, map[string]string{"AZURE_OPENAI_PROXY_IMDS_ENDPOINT": ts.URL + "/metadata/identity/oauth2/token"}, ts, time.Now)
		if tok, err := c.Token(context.Background()); err != nil || tok != "tok-1" {
			t.Fatalf("token %q %v", tok, err)
		}
		r := ts.only(t)
		q, _ := url.ParseQuery(r.Query)
		if r.Method != "GET" || r.Path != "/metadata/identity/oauth2/token" || r.Header.Get("Metadata") != "true" ||
			q.Get("api-version") != "2018-02-01" || q.Get("resource") != "https://cognitiveservices.azure.com" || q.Has("client_id") {
			t.Errorf("request %s %s %v %v", r.Method, r.Path, q, r.Header)
		}
	})
	if c, err := newEntraCredential(mapEnv(nil), http.DefaultClient, time.Now); err != nil || !strings.Contains(c.source, "instance metadata") {
		t.Errorf("with nothing set, the last source is the instance metadata endpoint: %v %v", c, err)
	}
	if _, err := newEntraCredential(mapEnv(map[string]string{"AZURE_FEDERATED_TOKEN_FILE": "/x"}), http.DefaultClient, time.Now); err == nil ||
		!strings.Contains(err.Error(), "AZURE_CLIENT_ID") {
		t.Errorf("a federated token file without a client id: %v", err)
	}
}

// countingSource is a token source that counts fetches and can be told to fail.
type countingSource struct {
	clock   *fakeClock
	fetches atomic.Int32
	fail    atomic.Bool
	release chan struct{} // when non-nil, each fetch waits for it
}

func (s *countingSource) credential() *entraCredential {
	return &entraCredential{source: "test source", now: s.clock.Now, fetch: func(ctx context.Context) (string, time.Time, error) {
		n := s.fetches.Add(1)
		if s.release != nil {
			<-s.release
		}
		if s.fail.Load() {
			return "", time.Time{}, fmt.Errorf("login.example answered 503 Service Unavailable")
		}
		return fmt.Sprintf("tok-%d", n), s.clock.Now().Add(time.Hour), nil
	}}
}

func TestEntraTokenCachedAndFetchedOnce(t *testing.T) {
	src := &countingSource{clock: &fakeClock{now: time.Unix(1e9, 0)}, release: make(chan struct{})}
	c := src.credential()
	var wg sync.WaitGroup
	tokens := make(chan string, 50)
	for range 50 {
		wg.Go(func() {
			tok, err := c.Token(context.Background())
			if err != nil {
				t.Error(err)
			}
			tokens <- tok
		})
	}
	time.Sleep(50 * time.Millisecond) // let every caller reach the wait
	close(src.release)
	wg.Wait()
	close(tokens)
	for tok := range tokens {
		if tok != "tok-1" {
			t.Errorf("a caller got %q", tok)
		}
	}
	if n := src.fetches.Load(); n != 1 {
		t.Errorf("%d token requests for 50 concurrent callers, want 1", n)
	}
}

func TestEntraTokenRefreshedBeforeExpiry(t *testing.T) {
	src := &countingSource{clock: &fakeClock{now: time.Unix(1e9, 0)}}
	c := src.credential()
	ctx := context.Background()
	if tok, _ := c.Token(ctx); tok != "tok-1" {
		t.Fatal(tok)
	}
	src.clock.Advance(54 * time.Minute)
	if tok, _ := c.Token(ctx); tok != "tok-1" || src.fetches.Load() != 1 {
		t.Fatalf("54 minutes into an hour: %q after %d fetches, want the cached token", tok, src.fetches.Load())
	}
	src.clock.Advance(2 * time.Minute) // inside the last five minutes
	if tok, _ := c.Token(ctx); tok != "tok-1" {
		t.Errorf("while refreshing, the still-valid token should be used: %q", tok)
	}
	waitUntil(t, func() bool { tok, _ := c.Token(ctx); return tok == "tok-2" }, "the refreshed token")

	// A failed refresh keeps the valid token; past its expiry the error names the source.
	src.fail.Store(true)
	src.clock.Advance(56 * time.Minute)
	if tok, err := c.Token(ctx); tok != "tok-2" || err != nil {
		t.Errorf("a failed refresh should keep the valid token: %q %v", tok, err)
	}
	waitUntil(t, func() bool { return src.fetches.Load() == 3 }, "the failed refresh")
	src.clock.Advance(5 * time.Minute)
	_, err := c.Token(ctx)
	if err == nil || !strings.Contains(err.Error(), "test source") || !strings.Contains(err.Error(), "503") {
		t.Errorf("with no valid token: %v", err)
	}
	// Failing callers do not hammer the token endpoint.
	before := src.fetches.Load()
	for range 10 {
		c.Token(ctx)
	}
	if src.fetches.Load() > before+1 {
		t.Errorf("%d fetches for 10 callers right after a failure", src.fetches.Load()-before)
	}
}

func TestFederatedTokenFileReReadOnRefresh(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("jwt-one"), 0o600)
	ts := newTokenServer(t, 4*time.Minute, entraAnswer) // short-lived: refreshed at half-life
	clock := &fakeClock{now: time.Now()}
	c := newTestCredential(t, map[string]string{"AZURE_FEDERATED_TOKEN_FILE": tokenFile, "AZURE_CLIENT_ID": "c",
		"AZURE_TENANT_ID": "t", "AZURE_AUTHORITY_HOST": ts.URL}, ts, clock.Now)
	c.Token(context.Background())
	os.WriteFile(tokenFile, []byte("jwt-two"), 0o600) // the kubelet rotates it
	clock.Advance(3 * time.Minute)
	c.Token(context.Background())
	waitUntil(t, func() bool { return len(ts.all()) == 2 }, "the refresh")
	var assertions []string
	for _, r := range ts.all() {
		form, _ := url.ParseQuery(string(r.Body))
		assertions = append(assertions, form.Get("client_assertion"))
	}
	if strings.Join(assertions, ",") != "jwt-one,jwt-two" {
		t.Errorf("assertions sent %v, want the file's content at each refresh", assertions)
	}
}

// TestEntraEndToEnd: the proxy sends the token, not a key, and tells the
// client which source failed, without the secret, when it cannot get one.
func TestEntraEndToEnd(t *testing.T) {
	ts := newTokenServer(t, time.Hour, entraAnswer)
	fake := newFakeAzure(t, fakeTLS, nil)
	p := startProxy(t, fake, map[string]string{
		"AZURE_OPENAI_AUTH": "entra", "AZURE_CLIENT_ID": "cid", "AZURE_TENANT_ID": "tid",
		"AZURE_CLIENT_SECRET": testClientSecret, "AZURE_AUTHORITY_HOST": ts.URL,
	})
	// No client key is needed: the proxy authenticates itself.
	resp, body := p.do(t, "POST", "/v1/chat/completions", http.Header{"Content-Type": {"application/json"}}, []byte(`{"model":"gpt-4o"}`))
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if resp, _ = p.postJSON(t, "/v1/chat/completions", `{"model":"gpt-4o"}`); resp.StatusCode != 200 { // a client key is dropped
		t.Fatalf("with a client key: %d", resp.StatusCode)
	}
	reqs := fake.all()
	for _, r := range reqs {
		if r.Header.Get("Authorization") != "Bearer tok-1" || r.Header.Get("Api-Key") != "" {
			t.Errorf("upstream Authorization %q api-key %q, want only the token", r.Header.Get("Authorization"), r.Header.Get("Api-Key"))
		}
	}
	if len(ts.all()) != 1 {
		t.Errorf("%d token requests for 2 requests, want 1 (cached)", len(ts.all()))
	}

	ts2 := newTokenServer(t, time.Hour, entraAnswer)
	ts2.fail.Store(true)
	p2 := startProxy(t, fake, map[string]string{
		"AZURE_OPENAI_AUTH": "entra", "AZURE_CLIENT_ID": "cid", "AZURE_TENANT_ID": "tid",
		"AZURE_CLIENT_SECRET": testClientSecret, "AZURE_AUTHORITY_HOST": ts2.URL,
	})
	resp, body = p2.postJSON(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	msg, _, _, code := openAIError(t, body)
	if resp.StatusCode != 502 || code == nil || *code != "upstream_auth_failed" ||
		!strings.Contains(msg, "client secret (AZURE_CLIENT_SECRET)") || !strings.Contains(msg, "AADSTS7000215") {
		t.Errorf("got %d %s", resp.StatusCode, body)
	}
	p.shutdown(t)
	p2.shutdown(t)
	for _, s := range []string{string(body), p.logs.String(), p2.logs.String()} {
		if strings.Contains(s, testClientSecret) || strings.Contains(s, "tok-1") || strings.Contains(s, testKey) {
			t.Errorf("a secret, token or key leaked:\n%s", s)
		}
	}
}
