package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// BenchmarkOpenStreams holds 500 chat streams open through the proxy and
// through the floor (a bare ReverseProxy) in turn, each in this process with
// its clients and its upstream, and reports the goroutine stacks and the heap
// each open stream adds. The two differ only by the proxy, so the difference
// is the proxy's share; the load test (bench/loadtest -mode streams) measures
// the same as resident memory of separate processes.
func BenchmarkOpenStreams(b *testing.B) {
	for _, target := range []string{"proxy", "floor"} {
		b.Run(target, func(b *testing.B) {
			var stack, heap float64
			for b.Loop() {
				stack, heap = openStreamsMemory(b, target, 500)
			}
			b.ReportMetric(stack, "stack-KB/stream")
			b.ReportMetric(heap, "heap-KB/stream")
		})
	}
}

func openStreamsMemory(b *testing.B, target string, n int) (stackKB, heapKB float64) {
	release := make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"choices":[{"delta":{"content":"hi"},"index":0}]}`+"\n\n")
		w.(http.Flusher).Flush()
		<-release
	}))
	defer upstream.Close()
	defer close(release)
	var h http.Handler
	if target == "floor" {
		u, _ := url.Parse(upstream.URL)
		h = &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) }, FlushInterval: -1}
	} else {
		cfg, err := loadConfig(options{listen: ":0"}, mapEnv(map[string]string{"AZURE_OPENAI_ENDPOINT": upstream.URL,
			"AZURE_OPENAI_API_VER": datedAPIVersion, "AZURE_OPENAI_API_KEY": "k", "AZURE_OPENAI_PROXY_KEYS": "bench-key"}))
		if err != nil {
			b.Fatal(err)
		}
		state := &serverState{}
		state.ready.Store(true)
		state.routes.Store(cfg.Routes)
		h = newHandler(cfg, newLogger("text", io.Discard), state, newMetrics())
	}
	front := httptest.NewServer(h)
	defer front.Close()
	memory := func() runtime.MemStats {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m
	}
	before := memory()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := &http.Transport{MaxIdleConnsPerHost: n, DisableCompression: true}
	defer client.CloseIdleConnections()
	var open sync.WaitGroup
	for range n {
		open.Add(1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "POST", front.URL+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o","stream":true}`))
			req.Header.Set("Authorization", "Bearer bench-key")
			resp, err := client.RoundTrip(req)
			if err != nil {
				b.Error(err)
				open.Done()
				return
			}
			defer resp.Body.Close()
			bufio.NewReader(resp.Body).ReadString('\n')
			open.Done()
			<-ctx.Done()
		}()
	}
	open.Wait()
	during := memory()
	return float64(during.StackInuse-before.StackInuse) / 1024 / float64(n),
		float64(during.HeapInuse-before.HeapInuse) / 1024 / float64(n)
}
