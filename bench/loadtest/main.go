// Command loadtest measures the proxy against the floor (a bare
// httputil.ReverseProxy, bench/floor) under the same load, in the same run.
// It builds both from this checkout, starts a fake upstream (plain and TLS
// with HTTP/2) on loopback, and prints each measurement and the ratio.
//
//	go run ./bench/loadtest                 # every scenario but llm
//	go run ./bench/loadtest -mode streams   # only open streams and RSS
//	go run ./bench/loadtest -mode llm       # paced token streams: CPU per event, added delay
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "upstream" {
		serveUpstream(os.Args[2], os.Args[3], os.Args[4], os.Args[5])
		return
	}
	mode := flag.String("mode", "all", "all, throughput, streams or llm")
	duration := flag.Duration("duration", 5*time.Second, "length of one measurement")
	rounds := flag.Int("rounds", 3, "measurements per target (in llm mode too); the median counts")
	streams := flag.Int("streams", 1000, "streams held open in the streams mode")
	llmStreams := flag.Int("llm-streams", 2000, "concurrent paced streams in the llm mode")
	llmPace := flag.Duration("llm-pace", 30*time.Millisecond, "time between two chunks of a paced stream")
	llmLength := flag.Duration("llm-length", 20*time.Second, "how long each paced stream lasts")
	flag.Parse()

	dir, err := os.MkdirTemp("", "loadtest-")
	check(err)
	defer os.RemoveAll(dir)
	certFile, keyFile := writeCert(dir)
	proxyBin, floorBin := filepath.Join(dir, "azure-openai-proxy"), filepath.Join(dir, "floor")
	build(proxyBin, ".")
	build(floorBin, "./bench/floor")

	plainAddr, tlsAddr := freeAddr(), freeAddr()
	self, err := os.Executable()
	check(err)
	upstream := start(self, nil, "upstream", plainAddr, tlsAddr, certFile, keyFile)
	defer upstream.Process.Kill()
	waitListening(plainAddr)
	waitListening(tlsAddr)

	endpoints := map[string]string{"plain": "http://" + plainAddr, "TLS": "https://" + tlsAddr}
	targets := map[string]*target{}
	for kind, endpoint := range endpoints {
		floorAddr, proxyAddr := freeAddr(), freeAddr()
		floor := start(floorBin, []string{"SSL_CERT_FILE=" + certFile}, "-listen", floorAddr, "-endpoint", endpoint, "-deployment", "gpt-4o")
		// Both trust the fake through SSL_CERT_FILE: AZURE_OPENAI_PROXY_CA_FILE
		// would load the system roots eagerly, at start, which neither does
		// otherwise before its first request.
		// The dated API, the shape the floor sends; -listen on loopback, as a sidecar.
		proxy := start(proxyBin, []string{"AZURE_OPENAI_ENDPOINT=" + endpoint, "SSL_CERT_FILE=" + certFile,
			"AZURE_OPENAI_API_VER=2024-10-21", "AZURE_OPENAI_PROXY_MAX_CONNECTIONS=100000"}, "-listen", proxyAddr)
		defer floor.Process.Kill()
		defer proxy.Process.Kill()
		waitListening(floorAddr)
		waitListening(proxyAddr)
		targets["floor "+kind] = &target{url: "http://" + floorAddr, pid: floor.Process.Pid}
		targets["proxy "+kind] = &target{url: "http://" + proxyAddr, pid: proxy.Process.Pid}
	}
	fmt.Printf("idle RSS: proxy %.1f MB, floor %.1f MB (target: proxy <= 8 MB)\n\n",
		mb(rss(targets["proxy TLS"].pid)), mb(rss(targets["floor TLS"].pid)))

	if *mode == "all" || *mode == "throughput" {
		small := chatBody(300)
		large := chatBody(1 << 20)
		fmt.Printf("%-52s %14s %14s %7s  %s\n", "scenario (TLS upstream, HTTP/2)", "floor", "proxy", "ratio", "target")
		compare("small chat POST (~300 B), 32 connections", *rounds, *duration, targets, small, 32, "req/s", ">= 1.0")
		compare("1 MiB chat body, model last, 8 connections", *rounds, *duration, targets, large, 8, "req/s", ">= 1.0")
		// Not CPU-bound: what holding the body until it is whole (to read the
		// model and refuse bad JSON) costs when the floor streams it on.
		compare("1 MiB chat body, model last, one connection", *rounds, *duration, targets, large, 1, "req/s", "none")
		compare("4 MiB chat, two base64 images, model last, 8 conns", *rounds, *duration, targets, imageChatBody(2<<20), 8, "req/s", ">= 1.0")
		compare("one connection, sequential: p50 latency", *rounds, *duration, targets, small, 1, "p50", "<= 1.1")
		fmt.Println()
	}
	if *mode == "llm" {
		events := int(*llmLength / *llmPace)
		fmt.Printf("%d paced streams over a TLS/HTTP/2 upstream, a chunk every %s for %s (%d chunks each); floor and proxy in turn, %d rounds, medians\n",
			*llmStreams, *llmPace, *llmLength, events, *rounds)
		var floorRuns, proxyRuns []paced
		for range *rounds {
			floorRuns = append(floorRuns, paceStreams(targets["floor TLS"], *llmStreams, events, *llmPace))
			proxyRuns = append(proxyRuns, paceStreams(targets["proxy TLS"], *llmStreams, events, *llmPace))
		}
		f, p := medianPaced(floorRuns), medianPaced(proxyRuns)
		fmt.Printf("%-44s %12s %12s %7s\n", "", "floor", "proxy", "ratio")
		fmt.Printf("%-44s %12.2f %12.2f %7.2f  (target <= 1.2)\n", "CPU seconds per 100k events", f.cpuPer100k, p.cpuPer100k, p.cpuPer100k/f.cpuPer100k)
		fmt.Printf("%-44s %12.3f %12.3f %+7.3f ms\n", "p50 delay per event (ms)", f.p50, p.p50, p.p50-f.p50)
		fmt.Printf("%-44s %12.3f %12.3f %+7.3f ms  (target <= +1 ms)\n", "p99 delay per event (ms)", f.p99, p.p99, p.p99-f.p99)
		fmt.Printf("%-44s %12.1f %12.1f\n", "RSS during the streams (MB)", f.rssMB, p.rssMB)
		fmt.Printf("%-44s %11.0f%% %11.0f%%\n", "machine busy (all processes, all CPUs)", 100*f.busy, 100*p.busy)
		fmt.Printf("%-44s %12d %12d\n", "events relayed, all rounds", f.events, p.events)
		fmt.Printf("%-44s %12d %12d  (target 0)\n", "failed streams, all rounds", f.failures, p.failures)
		for i := range floorRuns {
			fmt.Printf("  round %d: CPU/100k %.2f / %.2f, p50 %.3f / %.3f ms, p99 %.3f / %.3f ms, machine busy %.0f%% / %.0f%%\n", i+1,
				floorRuns[i].cpuPer100k, proxyRuns[i].cpuPer100k, floorRuns[i].p50, proxyRuns[i].p50, floorRuns[i].p99, proxyRuns[i].p99,
				100*floorRuns[i].busy, 100*proxyRuns[i].busy)
		}
	}
	if *mode == "all" || *mode == "streams" {
		for _, kind := range []string{"plain", "TLS"} {
			f, fConns := holdStreams(targets["floor "+kind], *streams, upstream.Process.Pid)
			p, pConns := holdStreams(targets["proxy "+kind], *streams, upstream.Process.Pid)
			fmt.Printf("%d open SSE streams opened at once, %s upstream: floor %.1f KB/stream, proxy %.1f KB/stream; "+
				"upstream connections: floor %d, proxy %d\n", *streams, kind, f/1024, p/1024, fConns, pConns)
		}
	}
}

type target struct {
	url string
	pid int
}

// compare measures floor and proxy alternately, rounds times each, and prints
// the medians, and the CPU time each spent per request.
func compare(name string, rounds int, d time.Duration, targets map[string]*target, body []byte, conns int, unit, goal string) {
	var floor, proxy []float64
	var cpu [2]time.Duration
	var requests [2]float64
	var busy [2][]float64
	for range rounds {
		for i, t := range []*target{targets["floor TLS"], targets["proxy TLS"]} {
			before, boxBefore := cpuTime(t.pid), boxCPU()
			v, n := measure(t.url, body, conns, d, unit)
			cpu[i] += cpuTime(t.pid) - before
			busy[i] = append(busy[i], boxCPU().busySince(boxBefore))
			requests[i] += n
			if i == 0 {
				floor = append(floor, v)
			} else {
				proxy = append(proxy, v)
			}
		}
	}
	f, p := median(floor), median(proxy)
	ratio := p / f
	perRequest := fmt.Sprintf("CPU/request: floor %.0f µs, proxy %.0f µs; machine busy: floor %.0f%%, proxy %.0f%%",
		float64(cpu[0].Microseconds())/requests[0], float64(cpu[1].Microseconds())/requests[1],
		100*median(busy[0]), 100*median(busy[1]))
	if unit == "p50" {
		fmt.Printf("%-52s %11.0f µs %11.0f µs %7.2f  %-7s %s\n", name, f, p, ratio, goal, perRequest)
		return
	}
	fmt.Printf("%-52s %8.0f req/s %8.0f req/s %7.2f  %-7s %s\n", name, f, p, ratio, goal, perRequest)
}

// cpuTime is the time a process has run on a CPU: the sum of its threads'
// schedstat, exact to the nanosecond (a Go process keeps its threads, so
// none is lost between two readings), or where that is missing the user
// and system time of /proc/PID/stat, which counts in 10 ms ticks and is
// sampled: at a few seconds of CPU that alone is off by several percent.
func cpuTime(pid int) time.Duration {
	if tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid)); err == nil {
		var total time.Duration
		ok := true
		for _, task := range tasks {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, task.Name()))
			if err != nil {
				ok = false
				break
			}
			ns, err := strconv.ParseInt(strings.Fields(string(stat))[0], 10, 64)
			if err != nil {
				ok = false
				break
			}
			total += time.Duration(ns)
		}
		if ok {
			return total
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	check(err)
	// Fields after the parenthesised command name; utime and stime are the 14th and 15th fields.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, err := strconv.ParseInt(fields[11], 10, 64)
	check(err)
	stime, err := strconv.ParseInt(fields[12], 10, 64)
	check(err)
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// measure drives url with conns concurrent connections for d (after a short
// warm-up) and returns requests per second, or the p50 latency in µs, and the
// number of requests made (warm-up included).
func measure(url string, body []byte, conns int, d time.Duration, unit string) (float64, float64) {
	transport := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport}
	run := func(d time.Duration) (int, []time.Duration) {
		deadline := time.Now().Add(d)
		var mu sync.Mutex
		var count atomic.Int64
		var latencies []time.Duration
		var wg sync.WaitGroup
		for range conns {
			wg.Go(func() {
				var mine []time.Duration
				for time.Now().Before(deadline) {
					t0 := time.Now()
					req, _ := http.NewRequest("POST", url+"/v1/chat/completions", bytes.NewReader(body))
					req.Header.Set("Authorization", "Bearer bench-key")
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err != nil {
						log.Fatalf("%s: %v", url, err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						log.Fatalf("%s: status %d", url, resp.StatusCode)
					}
					mine = append(mine, time.Since(t0))
					count.Add(1)
				}
				mu.Lock()
				latencies = append(latencies, mine...)
				mu.Unlock()
			})
		}
		wg.Wait()
		return int(count.Load()), latencies
	}
	warm, _ := run(time.Second)
	n, latencies := run(d)
	if unit == "p50" {
		slices.Sort(latencies)
		return float64(latencies[len(latencies)/2].Microseconds()), float64(warm + n)
	}
	return float64(n) / d.Seconds(), float64(warm + n)
}

// holdStreams opens n streamed chat completions through t at once (cold:
// t holds no upstream connection before), waits until each has its first
// event, and returns the growth of t's resident memory per stream and how
// many connections the upstream process gained.
func holdStreams(t *target, n, upstreamPid int) (float64, int) {
	time.Sleep(time.Second) // let the previous load settle
	before := rss(t.pid)
	socketsBefore := sockets(upstreamPid)
	ctx, cancel := context.WithCancel(context.Background())
	transport := &http.Transport{MaxIdleConnsPerHost: n, DisableCompression: true}
	client := &http.Client{Transport: transport}
	var ready sync.WaitGroup
	for range n {
		ready.Add(1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "POST", t.url+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o","stream":true}`))
			req.Header.Set("Authorization", "Bearer bench-key")
			resp, err := client.Do(req)
			if err != nil {
				log.Fatalf("stream: %v", err)
			}
			defer resp.Body.Close()
			r := bufio.NewReader(resp.Body)
			if _, err := r.ReadString('\n'); err != nil {
				log.Fatalf("stream: %v", err)
			}
			ready.Done()
			<-ctx.Done()
		}()
	}
	ready.Wait()
	opened := sockets(upstreamPid) - socketsBefore
	// RSS follows the GC's heap goal and the scavenger, not only live memory:
	// sample for a few seconds and take the settled (lowest) value.
	during := rss(t.pid)
	for range 15 {
		time.Sleep(200 * time.Millisecond)
		during = min(during, rss(t.pid))
	}
	cancel()
	transport.CloseIdleConnections()
	time.Sleep(time.Second)
	return float64(during-before) / float64(n), opened
}

// sockets counts a process's open sockets, from /proc.
func sockets(pid int) int {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	check(err)
	n := 0
	for _, fd := range fds {
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(link, "socket:") {
			n++
		}
	}
	return n
}

// paced is what one llm-mode run of a target measured.
type paced struct {
	cpuPer100k, p50, p99, rssMB float64
	busy                        float64 // the machine's CPUs, all processes: 1 is saturated
	events, failures            int
}

// paceStreams runs n streams through t, each of events chunks a pace apart,
// and measures t's CPU per event relayed, each event's delay (the upstream's
// timestamp in it against its arrival here), and t's memory.
func paceStreams(t *target, n, events int, pace time.Duration) paced {
	time.Sleep(time.Second) // let the previous load settle
	transport := &http.Transport{MaxIdleConnsPerHost: n, DisableCompression: true}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport}
	body := fmt.Sprintf(`{"messages":[{"role":"user","content":"Tell me a story."}],"stream":true,"stream_options":{"include_usage":true},"bench_events":%d,"bench_pace_ms":%d,"model":"gpt-4o"}`,
		events, pace.Milliseconds())
	var mu sync.Mutex
	var delays []time.Duration
	var relayed, failures int
	var peakRSS int64
	stop := make(chan struct{})
	go func() { // sample memory while the streams run
		for {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
				mu.Lock()
				peakRSS = max(peakRSS, rss(t.pid))
				mu.Unlock()
			}
		}
	}()
	before, boxBefore := cpuTime(t.pid), boxCPU()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * pace / time.Duration(n)) // spread the starts over one pace
			req, _ := http.NewRequest("POST", t.url+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer bench-key")
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				mu.Lock()
				failures++
				mu.Unlock()
				return
			}
			defer resp.Body.Close()
			var mine []time.Duration
			r := bufio.NewReader(resp.Body)
			for {
				line, err := r.ReadSlice('\n')
				if err != nil {
					break
				}
				if i := bytes.Index(line, []byte(`"bench_t":`)); i >= 0 {
					rest := line[i+len(`"bench_t":`):]
					end := bytes.IndexAny(rest, ",}")
					if ns, err := strconv.ParseInt(string(rest[:end]), 10, 64); err == nil {
						mine = append(mine, time.Since(time.Unix(0, ns)))
					}
				}
			}
			mu.Lock()
			delays = append(delays, mine...)
			relayed += len(mine)
			if len(mine) != events {
				failures++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	cpu, busy := cpuTime(t.pid)-before, boxCPU().busySince(boxBefore)
	close(stop)
	slices.Sort(delays)
	ms := func(q float64) float64 {
		if len(delays) == 0 {
			return 0
		}
		return float64(delays[int(q*float64(len(delays)-1))].Microseconds()) / 1000
	}
	return paced{cpuPer100k: cpu.Seconds() / float64(max(relayed, 1)) * 1e5, p50: ms(0.5), p99: ms(0.99),
		rssMB: mb(peakRSS), busy: busy, events: relayed, failures: failures}
}

// medianPaced is the median of each measurement over runs (each on its own,
// so the figures may come from different runs), and the sum of the counts.
func medianPaced(runs []paced) paced {
	pick := func(get func(paced) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = get(r)
		}
		return median(v)
	}
	m := paced{
		cpuPer100k: pick(func(r paced) float64 { return r.cpuPer100k }),
		p50:        pick(func(r paced) float64 { return r.p50 }),
		p99:        pick(func(r paced) float64 { return r.p99 }),
		rssMB:      pick(func(r paced) float64 { return r.rssMB }),
		busy:       pick(func(r paced) float64 { return r.busy }),
	}
	for _, r := range runs {
		m.events += r.events
		m.failures += r.failures
	}
	return m
}

// serveUpstream is the fake Azure: a small JSON answer; for a streamed
// request one event and then an open connection until the client leaves; for
// a paced one (bench_events), Azure's first chunk, then a content chunk every
// bench_pace_ms carrying the time it was sent, a usage chunk and [DONE].
func serveUpstream(plainAddr, tlsAddr, certFile, keyFile string) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if events, pace := benchNumber(body, "bench_events"), benchNumber(body, "bench_pace_ms"); events > 0 {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, `data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}`+"\n\n")
			w.(http.Flusher).Flush()
			tick := time.NewTicker(time.Duration(pace) * time.Millisecond)
			defer tick.Stop()
			for i := range events {
				select {
				case <-tick.C:
				case <-r.Context().Done():
					return
				}
				fmt.Fprintf(w, `data: {"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"delta":{"content":"tok%d "},"finish_reason":null,"index":0}],"created":1,"id":"chatcmpl-b","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp","usage":null,"bench_t":%d}`+"\n\n", i, time.Now().UnixNano())
				w.(http.Flusher).Flush()
			}
			io.WriteString(w, `data: {"choices":[],"created":1,"id":"chatcmpl-b","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","usage":{"prompt_tokens":12,"completion_tokens":`+strconv.Itoa(events)+`,"total_tokens":`+strconv.Itoa(events+12)+`}}`+"\n\ndata: [DONE]\n\n")
			return
		}
		if bytes.Contains(body, []byte(`"stream":true`)) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}]}`)
	})
	go func() { log.Fatal(http.ListenAndServe(plainAddr, h)) }()
	srv := &http.Server{Addr: tlsAddr, Handler: h, MaxHeaderBytes: 1 << 20}
	log.Fatal(srv.ListenAndServeTLS(certFile, keyFile))
}

// imageChatBody is a vision request: two base64 image data URLs of
// imageSize bytes each, and model last, as openai-python writes it.
func imageChatBody(imageSize int) []byte {
	image := make([]byte, imageSize)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := range image {
		image[i] = alphabet[(i*7+i/13)%64]
	}
	part := `{"type":"image_url","image_url":{"url":"data:image/png;base64,` + string(image) + `"}}`
	return []byte(`{"messages":[{"role":"user","content":[{"type":"text","text":"What is in these images?"},` +
		part + `,` + part + `]}],"max_tokens":300,"model":"gpt-4o"}`)
}

// benchNumber reads a whole-number member of a bench request's body.
func benchNumber(body []byte, name string) int {
	i := bytes.Index(body, []byte(`"`+name+`":`))
	if i < 0 {
		return 0
	}
	rest := body[i+len(name)+3:]
	end := bytes.IndexAny(rest, ",}")
	n, _ := strconv.Atoi(string(rest[:end]))
	return n
}

func chatBody(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"messages":[`)
	turn := `{"role":"user","content":"` + strings.Repeat(`Explain the theory of relativity in simple terms, with \"examples\". `, 4) + `"},`
	for b.Len() < size-120 {
		b.WriteString(turn)
	}
	b.WriteString(`{"role":"user","content":"hi"}],"max_tokens":256,"model":"gpt-4o"}`)
	return b.Bytes()
}

func writeCert(dir string) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "loadtest"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	check(err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	check(err)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	check(os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	check(os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	return certFile, keyFile
}

func build(out, pkg string) {
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stderr = os.Stderr
	check(cmd.Run())
}

func start(bin string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	check(cmd.Start()) // output discarded: the proxy's access log costs it a write per request, as in production
	return cmd
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer ln.Close()
	return ln.Addr().String()
}

func waitListening(addr string) {
	for range 200 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	log.Fatalf("nothing listens on %s", addr)
}

// rss is a process's resident memory in bytes, from /proc.
func rss(pid int) int64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			check(err)
			return kb * 1024
		}
	}
	log.Fatalf("no VmRSS for %d", pid)
	return 0
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// cpuTicks is the machine's CPU time, all CPUs, from /proc/stat: busy and
// in all, in ticks.
type cpuTicks struct{ busy, total int64 }

func boxCPU() cpuTicks {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTicks{}
	}
	line, _, _ := strings.Cut(string(stat), "\n")
	var t cpuTicks
	// cpu user nice system idle iowait irq softirq steal ...
	for i, field := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseInt(field, 10, 64)
		if i >= 8 { // guest time is counted in user already
			break
		}
		t.total += v
		if i != 3 && i != 4 {
			t.busy += v
		}
	}
	return t
}

// busySince is the share of the machine's CPU time that was busy since before.
func (t cpuTicks) busySince(before cpuTicks) float64 {
	if t.total == before.total {
		return 0
	}
	return float64(t.busy-before.busy) / float64(t.total-before.total)
}

func median(v []float64) float64 {
	slices.Sort(v)
	return v[len(v)/2]
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
