// Command azure-openai-proxy serves the OpenAI API from Azure OpenAI, so that
// programs written for OpenAI use Azure unchanged.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx = withEnvironNames(ctx, os.Environ())
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "azure-openai-proxy:", err)
		if _, ok := errors.AsType[*configError](err); ok {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// run is the whole program: main only supplies the process's context,
// arguments, environment and output. It returns when ctx is cancelled and the
// server has drained, or on a start-up error.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	opts, err := parseFlags(args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout)
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case opts.version:
		fmt.Fprintln(stdout, "azure-openai-proxy", version())
		return nil
	case opts.healthcheck:
		return healthcheck(ctx, opts.listen)
	}
	cfg, err := loadConfig(opts, getenv)
	if err != nil {
		return err
	}
	if opts.check {
		return runCheck(ctx, cfg, stdout)
	}
	logger := newLogger(cfg.LogFormat, stderr)
	warnUnknownSettings(environNames(ctx), logger)
	return serve(ctx, cfg, logger)
}

func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}

// serve listens and serves until ctx is done, then drains: readiness turns
// 503, the listener closes, and in-flight requests and streams get up to
// ShutdownTimeout to finish before their connections are closed. With a
// config file or a keys file, SIGHUP, or a change to one of its files,
// reloads them.
func serve(ctx context.Context, cfg Config, logger *slog.Logger) error {
	tcpLn, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	ln := &connLimiter{Listener: tcpLn, max: int64(cfg.MaxConnections)}
	state := &serverState{}
	state.ready.Store(true)
	state.routes.Store(cfg.Routes)
	m := newMetrics()
	srv := &http.Server{
		Handler:           newHandler(cfg, logger, state, m),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    1 << 20,
		ConnContext:       ln.connContext,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		// No WriteTimeout: a completion may stream for many minutes.
	}
	started := []any{"listen", ln.Addr().String(), "version", version()}
	var ops *http.Server
	if cfg.MetricsAddr != "" {
		opsLn, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s (AZURE_OPENAI_PROXY_METRICS_ADDRESS): %w", cfg.MetricsAddr, err)
		}
		ops = &http.Server{Handler: newOpsHandler(state, m, cfg.clock), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
		go ops.Serve(opsLn)
		defer ops.Close()
		started = append(started, "metrics_listen", opsLn.Addr().String())
	}
	logger.Info("azure-openai-proxy started", append(started, cfg.Routes.summary()...)...)
	cfg.Routes.logNotes(logger)

	warnIfOpen(cfg, ln.Addr(), logger)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if err := watch(ctx, cfg, state, logger, served); err != nil {
		return err
	}
	drain(cfg, srv, state, logger)
	<-served
	logger.Info("stopped")
	return nil
}

// warnIfOpen warns when the proxy holds Azure credentials of its own but lets
// anyone who can reach it use them: on loopback too, where every program on
// the host (and, but for exposure.go's checks, every web page) can.
func warnIfOpen(cfg Config, addr net.Addr, logger *slog.Logger) {
	if !cfg.Routes.open() {
		return
	}
	reach := "every program on this host"
	if tcp, ok := addr.(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
		reach = "anyone who can connect to " + addr.String()
	}
	logger.Warn("OPEN PROXY: this proxy sends its own Azure credential for every request and requires no client key, so "+
		reach+" can use your Azure quota. Set AZURE_OPENAI_PROXY_KEYS (or _FILE) unless that is what you want; web pages are "+
		"kept out (no CORS origins unless AZURE_OPENAI_PROXY_CORS_ORIGINS names them, Host checked).", "listen", addr.String())
}

// watch serves until ctx is done (or the server fails), reloading the
// configuration on SIGHUP and when its files change. A SIGHUP never ends the
// process (Go's default for it): with files to read it reloads them;
// without, it says so. Changed files are noticed every ReloadInterval.
func watch(ctx context.Context, cfg Config, state *serverState, logger *slog.Logger, served <-chan error) error {
	reload := make(chan os.Signal, 1)
	signal.Notify(reload, syscall.SIGHUP)
	defer signal.Stop(reload)
	poll := time.NewTicker(cfg.ReloadInterval)
	defer poll.Stop()
	rejected := "" // the files' state a reload was last refused for: not tried again until they change
	for {
		select {
		case err := <-served:
			return err
		case <-reload:
			if cfg.ConfigFile == "" && cfg.Env("AZURE_OPENAI_PROXY_KEYS_FILE") == "" {
				logger.Info("SIGHUP: nothing to reload (no config file or keys file); serving on")
				continue
			}
			if !reloadRoutes(cfg, state, logger) {
				rejected = state.routes.Load().files.state(true) // the poll need not try the same files again
			}
		case <-poll.C:
			files := state.routes.Load().files
			now := files.state(true)
			if now == files.state(false) || now == rejected {
				continue
			}
			logger.Info("configuration files changed; reloading")
			if !reloadRoutes(cfg, state, logger) {
				rejected = now
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// drain stops the server gracefully. Readiness turns 503 at once, but load
// balancers (Kubernetes endpoints) take a few seconds to notice: until
// DrainDelay has passed, requests are still served, each answer closing its
// connection. Then in-flight requests, streams and websocket sessions get up
// to ShutdownTimeout to finish; what is left is cut.
func drain(cfg Config, srv *http.Server, state *serverState, logger *slog.Logger) {
	state.ready.Store(false)
	state.closingConns.Store(true)
	if cfg.DrainDelay > 0 {
		logger.Info("draining: not ready; serving while load balancers notice", "delay", cfg.DrainDelay.String())
		time.Sleep(cfg.DrainDelay)
	}
	logger.Info("draining", "timeout", cfg.ShutdownTimeout.String())
	drainCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(drainCtx); err != nil {
		logger.Warn("shutdown timeout passed; closing the remaining connections")
		state.cutByShutdown.Store(true)
		srv.Close()
		// Close does not wait for the handlers it cuts: give them a moment
		// to write their log lines and metrics.
		for deadline := time.Now().Add(time.Second); state.handling.Load() > 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Shutdown does not wait for websocket sessions: they get what is left of the grace period.
	if !state.sessions.wait(drainCtx) {
		state.cutByShutdown.Store(true)
		if n := state.sessions.closeAll(); n > 0 {
			logger.Warn("shutdown timeout passed; closing the remaining websocket sessions", "sessions", n)
		}
	}
}

// reloadRoutes re-reads the configuration: a valid one replaces the route
// table at once (requests in flight finish on the old one); an invalid one is
// logged and the old table stays.
func reloadRoutes(cfg Config, state *serverState, logger *slog.Logger) bool {
	table, err := cfg.loadRoutes()
	if err != nil {
		logger.Error("reload rejected; the previous configuration stays", "error", err.Error())
		return false
	}
	state.routes.Store(table)
	state.clients.retain(table.clientKeys) // the clients that remain keep their counters
	logger.Info("configuration reloaded", table.summary()...)
	table.logNotes(logger)
	return true
}

// healthcheck asks the instance listening on listen for /healthz: the scratch
// image has no curl, so its HEALTHCHECK runs the binary itself.
func healthcheck(ctx context.Context, listen string) error {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return &configError{msg: fmt.Sprintf("--listen / AZURE_OPENAI_PROXY_ADDRESS: %q is not host:port", listen)}
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: /healthz answered %s", resp.Status)
	}
	return nil
}

// buildVersion is set at link time (-ldflags "-X main.buildVersion=v1.2.3",
// the Dockerfile's VERSION) and never changed after.
var buildVersion string

// version is the version stamped at link time, else the module version for
// `go install`ed binaries, else the VCS revision.
func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "devel-" + s.Value[:12]
		}
	}
	return "devel"
}
