// Command loadtest measures the proxy against the floor (a bare
// httputil.ReverseProxy, bench/floor) under the same load, in the same run.
// It builds both from this checkout, starts a fake upstream (plain and TLS
// with HTTP/2) on loopback, and prints each measurement and the ratio.
//
//	go run ./bench/loadtest                 # every scenario
//	go run ./bench/loadtest -mode streams   # only open streams and RSS
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
	mode := flag.String("mode", "all", "all, throughput or streams")
	duration := flag.Duration("duration", 5*time.Second, "length of one measurement")
	rounds := flag.Int("rounds", 3, "measurements per target; the median counts")
	streams := flag.Int("streams", 1000, "streams held open in the streams mode")
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
		proxy := start(proxyBin, []string{"AZURE_OPENAI_ENDPOINT=" + endpoint, "SSL_CERT_FILE=" + certFile}, "-listen", proxyAddr)
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
		compare("1 MiB chat body, model last, 8 connections", *rounds, *duration, targets, large, 8, "req/s", ">= 0.9")
		compare("one connection, sequential: p50 latency", *rounds, *duration, targets, small, 1, "p50", "<= 1.1")
		fmt.Println()
	}
	if *mode == "all" || *mode == "streams" {
		for _, kind := range []string{"plain", "TLS"} {
			f := holdStreams(targets["floor "+kind], *streams)
			p := holdStreams(targets["proxy "+kind], *streams)
			fmt.Printf("%d open SSE streams, %s upstream: floor %.1f KB/stream, proxy %.1f KB/stream (target: proxy <= 32 KB)\n",
				*streams, kind, f/1024, p/1024)
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
	for range rounds {
		for i, t := range []*target{targets["floor TLS"], targets["proxy TLS"]} {
			before := cpuTime(t.pid)
			v, n := measure(t.url, body, conns, d, unit)
			cpu[i] += cpuTime(t.pid) - before
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
	perRequest := fmt.Sprintf("CPU/request: floor %.0f µs, proxy %.0f µs",
		float64(cpu[0].Microseconds())/requests[0], float64(cpu[1].Microseconds())/requests[1])
	if unit == "p50" {
		fmt.Printf("%-52s %11.0f µs %11.0f µs %7.2f  %-7s %s\n", name, f, p, ratio, goal, perRequest)
		return
	}
	fmt.Printf("%-52s %8.0f req/s %8.0f req/s %7.2f  %-7s %s\n", name, f, p, ratio, goal, perRequest)
}

// cpuTime is the user and system time a process has used, from /proc.
func cpuTime(pid int) time.Duration {
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

// holdStreams opens n streamed chat completions through t, waits until each
// has its first event, and returns the growth of t's resident memory per stream.
func holdStreams(t *target, n int) float64 {
	time.Sleep(time.Second) // let the previous load settle
	before := rss(t.pid)
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
	return float64(during-before) / float64(n)
}

// serveUpstream is the fake Azure: a small JSON answer, or for a streamed
// request one event and then an open connection until the client leaves.
func serveUpstream(plainAddr, tlsAddr, certFile, keyFile string) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
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

func median(v []float64) float64 {
	slices.Sort(v)
	return v[len(v)/2]
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
