package main

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is everything the proxy needs, built and validated once at start-up.
// Only the route table is built again, on reload.
type Config struct {
	Routes          *routeTable // backends and models, from the config file or the environment
	ConfigFile      string      // "" when the environment alone configures the proxy
	Env             func(string) string
	ListenAddr      string
	MetricsAddr     string         // "": /metrics is served on ListenAddr
	RootCAs         *x509.CertPool // nil: the system's roots
	MaxBodyBytes    int64
	UpstreamTimeout time.Duration // for response headers; the body may then stream for as long as it takes
	BodyTimeout     time.Duration // the longest a request body may pause
	ReloadInterval  time.Duration // how often the config and key files are checked for changes
	MaxConnections  int           // client connections served at once; beyond it, only health checks
	ShutdownTimeout time.Duration
	DrainDelay      time.Duration    // after SIGTERM, serving on while load balancers notice readiness is off
	CORSOrigins     []string         // none by default when the proxy is open (routeTable.open)
	AllowedHosts    []string         // Host values an open proxy answers besides IP literals and localhost
	LogFormat       string           // "text" or "json"
	Now             func() time.Time // nil: time.Now; tests set a clock
	RawStream       bool             // pass Azure's chat streams as they are, without dropping the chunks OpenAI never sends
	MaxEventBytes   int              // the largest streamed event the filter holds whole
	RealtimePreview bool             // realtime websockets of dated backends go to the preview URL
	CheckKey        string           // -check's key for backends without one of their own; never logged
	Entra           *entraCredential // nil when the environment describes no usable token source
	entraErr        error            // why Entra is nil
}

// setting documents one environment variable; -h prints them and the README lists them.
type setting struct {
	env, def, help string
}

func settings() []setting {
	return []setting{
		{"AZURE_OPENAI_ENDPOINT", "", "required without a config file: https://RES.openai.azure.com (a path prefix, for gateways in front of Azure, is kept)"},
		{"AZURE_OPENAI_PROXY_CONFIG", "", "JSON file of several backends and per-model deployments (flag --config); SIGHUP reloads it"},
		{"AZURE_OPENAI_API_VER", "v1", "v1: Azure's v1 API (/openai/v1/…, deployment in the body's model); or a dated api-version such as 2024-10-21 (deployment in the path)"},
		{"AZURE_OPENAI_PREVIEW_API_VER", "2025-04-01-preview", "with a dated AZURE_OPENAI_API_VER: the api-version for vector_stores, responses, audio/speech, images/edits, realtime HTTP"},
		{"AZURE_OPENAI_MODEL_MAPPER", "", "model=deployment pairs, comma-separated: gpt-3.5-turbo=gpt-35-turbo,gpt-4=gpt4"},
		{"AZURE_OPENAI_API_KEY", "", "the key the proxy sends to Azure; clients' keys then never reach Azure"},
		{"AZURE_OPENAI_AUTH", "key", "key, or entra: send an Entra ID token (workload identity, client secret or managed identity)"},
		{"AZURE_OPENAI_PROXY_KEYS", "", "keys clients must present (Bearer or api-key), comma-separated"},
		{"AZURE_OPENAI_PROXY_KEYS_FILE", "", "file of client keys, one per line; SIGHUP re-reads it"},
		{"AZURE_OPENAI_ENTRA_SCOPE", "https://cognitiveservices.azure.com/.default", "the scope of Entra ID tokens"},
		{"AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_CLIENT_SECRET, AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST, IDENTITY_ENDPOINT, IDENTITY_HEADER", "", "Entra ID token sources, as Azure's SDKs read them"},
		{"AZURE_OPENAI_PROXY_IMDS_ENDPOINT", "http://169.254.169.254/metadata/identity/oauth2/token", "the instance metadata endpoint for managed identity"},
		{"AZURE_OPENAI_PROXY_ADDRESS", ":8080", "address to listen on (flag --listen, -l)"},
		{"AZURE_OPENAI_HTTP_PROXY", "", "HTTP proxy for requests to Azure: http://host:port"},
		{"AZURE_OPENAI_SOCKS_PROXY", "", "SOCKS5 proxy for requests to Azure: socks5://host:port"},
		{"HTTPS_PROXY, HTTP_PROXY, NO_PROXY", "", "the standard proxy variables, used when neither of the two above is set"},
		{"AZURE_OPENAI_PROXY_CA_FILE", "", "PEM file of extra CA certificates to trust upstream (a gateway with a private CA)"},
		{"AZURE_OPENAI_PROXY_MAX_BODY", "67108864", "largest request body in bytes (64 MiB); larger ones get 413"},
		{"AZURE_OPENAI_PROXY_UPSTREAM_TIMEOUT", "10m", "how long to wait for Azure's response headers; then 504"},
		{"AZURE_OPENAI_PROXY_BODY_TIMEOUT", "30s", "how long a request body may send nothing; then 408"},
		{"AZURE_OPENAI_PROXY_RELOAD_INTERVAL", "5s", "how often the config file and key files are checked; a change reloads them"},
		{"AZURE_OPENAI_PROXY_MAX_CONNECTIONS", "4096", "client connections at once; beyond, 503 for all but /healthz and /readyz"},
		{"AZURE_OPENAI_PROXY_SHUTDOWN_TIMEOUT", "25s", "on SIGTERM, how long in-flight requests and streams may take to finish"},
		{"AZURE_OPENAI_PROXY_DRAIN_DELAY", "3s", "on SIGTERM, how long to keep serving (not ready, closing connections) before draining; 0: none"},
		{"AZURE_OPENAI_PROXY_CORS_ORIGINS", "*", "origins browsers may call from, comma-separated (none by default when the proxy holds a key and requires none)"},
		{"AZURE_OPENAI_PROXY_ALLOWED_HOSTS", "", "when the proxy holds a key and requires none: Host names it answers besides IP literals and localhost"},
		{"AZURE_OPENAI_PROXY_LOG_FORMAT", "text", "text or json"},
		{"AZURE_OPENAI_PROXY_CHECK_KEY", "", "-check only: the Azure key to check backends that have none of their own (clients bring theirs)"},
		{"AZURE_OPENAI_PROXY_METRICS_ADDRESS", "", "a separate listener for /metrics, /healthz and /readyz (then /metrics is not on the API port)"},
		{"AZURE_OPENAI_PROXY_MAX_EVENT", "1048576", "largest streamed event the stream filter holds (1 MiB); past it the stream passes unfiltered"},
		{"AZURE_OPENAI_PROXY_RAW_STREAM", "0", "1: pass chat streams as Azure sends them, empty-choices and annotation-only chunks included"},
		{"AZURE_OPENAI_PROXY_REALTIME_PREVIEW", "0", "1: realtime websockets of dated backends use the preview URL (/openai/realtime?api-version=…&deployment=…, deprecated by Azure), for regions without the GA one"},
	}
}

// configError is a bad setting; the process exits with status 2.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func settingError(name, format string, args ...any) error {
	return &configError{msg: name + ": " + fmt.Sprintf(format, args...)}
}

// options are the command-line flags.
type options struct {
	listen      string
	config      string
	healthcheck bool
	check       bool
	version     bool
}

func parseFlags(args []string, getenv func(string) string) (options, error) {
	var o options
	fs := flag.NewFlagSet("azure-openai-proxy", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	defaultListen := envOr(getenv, "AZURE_OPENAI_PROXY_ADDRESS")
	fs.StringVar(&o.listen, "listen", defaultListen, "")
	fs.StringVar(&o.listen, "l", defaultListen, "")
	fs.StringVar(&o.config, "config", envOr(getenv, "AZURE_OPENAI_PROXY_CONFIG"), "")
	fs.BoolVar(&o.healthcheck, "healthcheck", false, "")
	fs.BoolVar(&o.check, "check", false, "")
	fs.BoolVar(&o.version, "version", false, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, &configError{msg: err.Error() + " (see -h)"}
	}
	if fs.NArg() > 0 {
		return o, &configError{msg: fmt.Sprintf("unexpected argument %q (see -h)", fs.Arg(0))}
	}
	return o, nil
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `azure-openai-proxy: serve the OpenAI API from Azure OpenAI.

Usage: azure-openai-proxy [flags]

Flags:
  -listen, -l ADDR  address to listen on (default from AZURE_OPENAI_PROXY_ADDRESS, else :8080)
  -config FILE      JSON file of backends and models (default from AZURE_OPENAI_PROXY_CONFIG)
  -healthcheck      request this instance's /healthz; exit 0 if healthy, 1 if not
  -check            send one minimal request to every configured deployment and print a table;
                    exit 0 only if all answer
  -version          print the version and exit
  -h, -help         print this help and exit

Environment:
`)
	for _, s := range settings() {
		head := s.env
		if s.def != "" {
			head += " (default " + s.def + ")"
		}
		fmt.Fprint(w, wrap(head, "  ", "    ", usageWidth))
		fmt.Fprint(w, wrap(s.help, "      ", "      ", usageWidth))
	}
}

// usageWidth is the widest line -h prints.
const usageWidth = 100

// wrap breaks text into lines of at most width characters at spaces, the
// first line starting with first and the others with rest.
func wrap(text, first, rest string, width int) string {
	var b strings.Builder
	line := first
	for i, word := range strings.Fields(text) {
		if i > 0 && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line = rest
		} else if i > 0 {
			line += " "
		}
		line += word
	}
	b.WriteString(line + "\n")
	return b.String()
}

// envOr returns the variable's value, or its documented default.
func envOr(getenv func(string) string, name string) string {
	if v := strings.TrimSpace(getenv(name)); v != "" {
		return v
	}
	for _, s := range settings() {
		if s.env == name {
			return s.def
		}
	}
	return ""
}

// loadConfig builds the Config from flags and environment. Errors name the
// setting and the bad value; no value read here is a secret.
func loadConfig(o options, getenv func(string) string) (Config, error) {
	cfg := Config{ListenAddr: o.listen, ConfigFile: o.config, Env: getenv}
	var err error
	if cfg.RootCAs, err = loadCAFile(getenv("AZURE_OPENAI_PROXY_CA_FILE")); err != nil {
		return cfg, err
	}
	if cfg.RealtimePreview, err = parseSwitch(getenv, "AZURE_OPENAI_PROXY_REALTIME_PREVIEW"); err != nil {
		return cfg, err
	}
	// The token source is chosen from the environment once; a backend that
	// uses Entra ID, now or after a reload, needs one.
	cfg.Entra, cfg.entraErr = newEntraCredential(getenv, tokenHTTPClient(cfg.RootCAs), time.Now)
	if cfg.Routes, err = cfg.loadRoutes(); err != nil {
		return cfg, err
	}
	if _, _, err := net.SplitHostPort(cfg.ListenAddr); err != nil {
		return cfg, settingError("--listen / AZURE_OPENAI_PROXY_ADDRESS", "%q is not host:port", cfg.ListenAddr)
	}
	if cfg.MetricsAddr = envOr(getenv, "AZURE_OPENAI_PROXY_METRICS_ADDRESS"); cfg.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.MetricsAddr); err != nil {
			return cfg, settingError("AZURE_OPENAI_PROXY_METRICS_ADDRESS", "%q is not host:port", cfg.MetricsAddr)
		}
	}
	maxBody := envOr(getenv, "AZURE_OPENAI_PROXY_MAX_BODY")
	if cfg.MaxBodyBytes, err = strconv.ParseInt(maxBody, 10, 64); err != nil || cfg.MaxBodyBytes <= 0 {
		return cfg, settingError("AZURE_OPENAI_PROXY_MAX_BODY", "%q is not a positive number of bytes", maxBody)
	}
	if cfg.UpstreamTimeout, err = parseDuration(getenv, "AZURE_OPENAI_PROXY_UPSTREAM_TIMEOUT"); err != nil {
		return cfg, err
	}
	if cfg.ShutdownTimeout, err = parseDuration(getenv, "AZURE_OPENAI_PROXY_SHUTDOWN_TIMEOUT"); err != nil {
		return cfg, err
	}
	if delay := envOr(getenv, "AZURE_OPENAI_PROXY_DRAIN_DELAY"); delay != "0" {
		if cfg.DrainDelay, err = parseDuration(getenv, "AZURE_OPENAI_PROXY_DRAIN_DELAY"); err != nil {
			return cfg, err
		}
	}
	if cfg.BodyTimeout, err = parseDuration(getenv, "AZURE_OPENAI_PROXY_BODY_TIMEOUT"); err != nil {
		return cfg, err
	}
	if cfg.ReloadInterval, err = parseDuration(getenv, "AZURE_OPENAI_PROXY_RELOAD_INTERVAL"); err != nil {
		return cfg, err
	}
	maxEvent := envOr(getenv, "AZURE_OPENAI_PROXY_MAX_EVENT")
	if cfg.MaxEventBytes, err = strconv.Atoi(maxEvent); err != nil || cfg.MaxEventBytes <= 0 {
		return cfg, settingError("AZURE_OPENAI_PROXY_MAX_EVENT", "%q is not a positive number of bytes", maxEvent)
	}
	maxConns := envOr(getenv, "AZURE_OPENAI_PROXY_MAX_CONNECTIONS")
	if cfg.MaxConnections, err = strconv.Atoi(maxConns); err != nil || cfg.MaxConnections <= 0 {
		return cfg, settingError("AZURE_OPENAI_PROXY_MAX_CONNECTIONS", "%q is not a positive number", maxConns)
	}
	corsOrigins := envOr(getenv, "AZURE_OPENAI_PROXY_CORS_ORIGINS")
	if strings.TrimSpace(getenv("AZURE_OPENAI_PROXY_CORS_ORIGINS")) == "" && cfg.Routes.open() {
		// A proxy that spends its own credential for anyone who reaches
		// it lets no web page call it unless the operator says which.
		corsOrigins = ""
	}
	for o := range strings.SplitSeq(corsOrigins, ",") {
		if o = strings.TrimSpace(o); o == "" {
			continue
		}
		if u, err := url.Parse(o); o != "*" && (err != nil || u.Scheme == "" || u.Host == "" || u.Path != "") {
			return cfg, settingError("AZURE_OPENAI_PROXY_CORS_ORIGINS", "%q is not an origin like https://chat.example.com, or *", o)
		}
		cfg.CORSOrigins = append(cfg.CORSOrigins, o)
	}
	if cfg.RawStream, err = parseSwitch(getenv, "AZURE_OPENAI_PROXY_RAW_STREAM"); err != nil {
		return cfg, err
	}
	cfg.CheckKey = strings.TrimSpace(getenv("AZURE_OPENAI_PROXY_CHECK_KEY"))
	for h := range strings.SplitSeq(getenv("AZURE_OPENAI_PROXY_ALLOWED_HOSTS"), ",") {
		if h = strings.ToLower(strings.TrimSpace(h)); h != "" {
			cfg.AllowedHosts = append(cfg.AllowedHosts, h)
		}
	}
	switch cfg.LogFormat = envOr(getenv, "AZURE_OPENAI_PROXY_LOG_FORMAT"); cfg.LogFormat {
	case "text", "json":
	default:
		return cfg, settingError("AZURE_OPENAI_PROXY_LOG_FORMAT", "%q is not text or json", cfg.LogFormat)
	}
	return cfg, nil
}

// loadRoutes builds the route table from the config file, or from the
// environment alone; at start-up and again on each reload.
func (cfg Config) loadRoutes() (*routeTable, error) {
	var t *routeTable
	var err error
	if cfg.ConfigFile != "" {
		t, err = loadRouteTable(cfg.ConfigFile, cfg.Env)
	} else {
		t, err = routeTableFromEnv(cfg.Env)
	}
	if err != nil {
		return nil, err
	}
	if t.usesEntra() && cfg.Entra == nil {
		return nil, cfg.entraErr // names the variable that is missing
	}
	for _, b := range t.backends {
		b.realtimePreview = cfg.RealtimePreview
	}
	return t, nil
}

// parseSwitch reads a 0/1 setting.
func parseSwitch(getenv func(string) string, name string) (bool, error) {
	switch v := envOr(getenv, name); v {
	case "0", "false":
		return false, nil
	case "1", "true":
		return true, nil
	default:
		return false, settingError(name, "%q is not 0 or 1", v)
	}
}

// parseEndpoint checks an Azure endpoint. Endpoints are copied from Azure's
// portal and samples with /openai or /openai/v1 at the end: that suffix is
// dropped (the proxy adds Azure's paths itself), and note says so. A whole
// request URL (the portal's "Target URI") is refused with the part to keep.
// Errors hold no setting name: callers add it.
func parseEndpoint(raw string) (u *url.URL, note string, err error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, "", errors.New("not set; set it to your resource's endpoint, e.g. https://RES.openai.azure.com")
	}
	u, err = url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Hostname() == "" {
		return nil, "", fmt.Errorf("%q is not an http(s) URL like https://RES.openai.azure.com", redactUserinfo(raw))
	}
	if u.User != nil {
		return nil, "", fmt.Errorf("%q may not have user info", redactUserinfo(raw))
	}
	// Cut the escaped path, so that a gateway prefix keeps its escaping.
	prefix, azurePath, hasOpenAI := strings.Cut(strings.TrimRight(u.EscapedPath(), "/")+"/", "/openai/")
	prefix, azurePath = strings.TrimSuffix(prefix, "/"), strings.TrimSuffix(azurePath, "/")
	withPrefix := func(v *url.URL) {
		v.Path, _ = url.PathUnescape(prefix)
		v.RawPath = prefix
	}
	if hasOpenAI && azurePath != "" && azurePath != "v1" || u.Query().Has("api-version") {
		keep := *u
		withPrefix(&keep)
		keep.RawQuery, keep.Fragment = "", ""
		asked := *u
		asked.RawQuery, asked.Fragment = "", "" // the query is not repeated
		return nil, "", fmt.Errorf("%s is a request URL (the portal's Target URI), not an endpoint: keep only %s, "+
			"and name the deployment in AZURE_OPENAI_MODEL_MAPPER or the config file's models", asked.String(), keep.String())
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, "", fmt.Errorf("%q may not have a query or a fragment", raw)
	}
	if hasOpenAI {
		suffix := "/openai"
		if azurePath == "v1" {
			suffix += "/v1"
		}
		withPrefix(u)
		note = fmt.Sprintf("the endpoint %s ends in %s, which the proxy adds itself: using %s", raw, suffix, u.String())
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = strings.TrimRight(u.RawPath, "/")
	return u, note, nil
}

// parseAPIVersion keeps api-versions to characters that cannot change the query.
func parseAPIVersion(name, v string) (string, error) {
	if v == "" {
		return "", settingError(name, "is empty")
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "", settingError(name, "%q is not an api-version like 2024-10-21", v)
		}
	}
	return v, nil
}

// parseDuration accepts Go durations ("90s", "10m") or a number of seconds.
func parseDuration(getenv func(string) string, name string) (time.Duration, error) {
	v := envOr(getenv, name)
	if secs, err := strconv.ParseFloat(v, 64); err == nil && secs > 0 {
		return time.Duration(secs * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, settingError(name, "%q is not a positive duration like 30s or 10m", v)
	}
	return d, nil
}

func loadCAFile(path string) (*x509.CertPool, error) {
	const name = "AZURE_OPENAI_PROXY_CA_FILE"
	if path = strings.TrimSpace(path); path == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, settingError(name, "cannot read %q: %v", path, errors.Unwrap(err))
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, settingError(name, "%q holds no PEM certificate", path)
	}
	return pool, nil
}

// parseUpstreamProxy chooses the outbound proxy once, at start-up, for the one
// endpoint: AZURE_OPENAI_HTTP_PROXY or AZURE_OPENAI_SOCKS_PROXY if set, else
// the standard HTTPS_PROXY/HTTP_PROXY/NO_PROXY as Go's ProxyFromEnvironment reads them.
func parseUpstreamProxy(endpoint *url.URL, getenv func(string) string) (*url.URL, error) {
	httpProxy := strings.TrimSpace(getenv("AZURE_OPENAI_HTTP_PROXY"))
	socksProxy := strings.TrimSpace(getenv("AZURE_OPENAI_SOCKS_PROXY"))
	switch {
	case httpProxy != "" && socksProxy != "":
		return nil, settingError("AZURE_OPENAI_HTTP_PROXY", "and AZURE_OPENAI_SOCKS_PROXY are both set; set one")
	case httpProxy != "":
		return parseProxyURL("AZURE_OPENAI_HTTP_PROXY", httpProxy, "http", "https")
	case socksProxy != "":
		return parseProxyURL("AZURE_OPENAI_SOCKS_PROXY", socksProxy, "socks5", "socks5h")
	}
	name := "HTTP_PROXY"
	if endpoint.Scheme == "https" {
		name = "HTTPS_PROXY"
	}
	value := firstEnv(getenv, name, strings.ToLower(name))
	if value == "" || bypassProxy(endpoint, firstEnv(getenv, "NO_PROXY", "no_proxy")) {
		return nil, nil
	}
	if !strings.Contains(value, "://") {
		value = "http://" + value // as ProxyFromEnvironment reads a bare host:port
	}
	return parseProxyURL(name, value, "http", "https", "socks5", "socks5h")
}

func firstEnv(getenv func(string) string, names ...string) string {
	for _, n := range names {
		if v := strings.TrimSpace(getenv(n)); v != "" {
			return v
		}
	}
	return ""
}

func parseProxyURL(name, raw string, schemes ...string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err == nil && u.Host != "" {
		for _, s := range schemes {
			if u.Scheme == s {
				return u, nil
			}
		}
	}
	return nil, settingError(name, "%q is not a proxy URL (%s://host:port)", redactUserinfo(raw), strings.Join(schemes, "|"))
}

// redactUserinfo hides a password in a URL string, even one url.Parse refuses.
func redactUserinfo(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		scheme, rest = "", raw
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return raw
	}
	user, _, _ := strings.Cut(rest[:at], ":")
	redacted := user + ":xxxxx" + rest[at:]
	if ok {
		return scheme + "://" + redacted
	}
	return redacted
}

// bypassProxy reports whether NO_PROXY exempts the endpoint, with the rules of
// Go's ProxyFromEnvironment: loopback is never proxied; "*" exempts all; a
// domain exempts itself and its subdomains, ".domain" only its subdomains; an
// IP or CIDR exempts matching addresses; an entry with a port needs that port.
func bypassProxy(endpoint *url.URL, noProxy string) bool {
	host := strings.ToLower(endpoint.Hostname())
	port := endpoint.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[endpoint.Scheme]
	}
	ip := net.ParseIP(host)
	if host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return true
	}
	for entry := range strings.SplitSeq(strings.ToLower(noProxy), ",") {
		entry = strings.TrimSpace(entry)
		switch {
		case entry == "":
			continue
		case entry == "*":
			return true
		}
		if _, cidr, err := net.ParseCIDR(entry); err == nil {
			if ip != nil && cidr.Contains(ip) {
				return true
			}
			continue
		}
		entryHost, entryPort := entry, ""
		if h, p, err := net.SplitHostPort(entry); err == nil {
			entryHost, entryPort = h, p
		}
		if entryPort != "" && entryPort != port {
			continue
		}
		if entryIP := net.ParseIP(entryHost); entryIP != nil {
			if ip != nil && entryIP.Equal(ip) {
				return true
			}
			continue
		}
		entryHost = strings.TrimPrefix(entryHost, "*")
		if strings.HasPrefix(entryHost, ".") {
			if strings.HasSuffix(host, entryHost) {
				return true
			}
			continue
		}
		if host == entryHost || strings.HasSuffix(host, "."+entryHost) {
			return true
		}
	}
	return false
}
