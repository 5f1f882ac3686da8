package main

import (
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// TestHTTPProxyForUpstream: with AZURE_OPENAI_HTTP_PROXY set, requests to
// Azure go through that proxy.
func TestHTTPProxyForUpstream(t *testing.T) {
	fake := newFakeAzure(t, fakePlain, nil)
	var proxied atomic.Int32
	forward := newFakeAzure(t, fakePlain, func(w http.ResponseWriter, r *http.Request) {
		if !r.URL.IsAbs() {
			http.Error(w, "not a proxy request", 400)
			return
		}
		proxied.Add(1)
		(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.Out.URL = r.URL }}).ServeHTTP(w, r)
	})
	p := startProxy(t, nil, map[string]string{
		"AZURE_OPENAI_ENDPOINT":   fake.URL,
		"AZURE_OPENAI_HTTP_PROXY": forward.URL,
	})
	resp, body := p.postJSON(t, "/v1/chat/completions", `{"model":"gpt-4o"}`)
	if resp.StatusCode != 200 || proxied.Load() != 1 {
		t.Fatalf("status %d %s; requests through the HTTP proxy: %d", resp.StatusCode, body, proxied.Load())
	}
	assertForwarded(t, fake.only(t), "POST", "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", []byte(`{"model":"gpt-4o"}`))
}

// TestSOCKSProxyForUpstream: with AZURE_OPENAI_SOCKS_PROXY set, the TLS
// connection to Azure is tunnelled through a SOCKS5 server.
func TestSOCKSProxyForUpstream(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, nil)
	socks, connects := startSOCKS5(t)
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_SOCKS_PROXY": "socks5://" + socks})
	resp, body := p.postJSON(t, "/v1/embeddings", `{"model":"emb"}`)
	if resp.StatusCode != 200 || connects.Load() != 1 {
		t.Fatalf("status %d %s; SOCKS connects: %d", resp.StatusCode, body, connects.Load())
	}
	assertForwarded(t, fake.only(t), "POST", "/openai/deployments/emb/embeddings?api-version=2024-10-21", []byte(`{"model":"emb"}`))

	// A large body goes over HTTP/1.1 on a connection of its own: through the tunnel too.
	large := `{"model":"emb","input":"` + strings.Repeat("x", largeBodyHTTP1) + `"}`
	if resp, body := p.postJSON(t, "/v1/embeddings", large); resp.StatusCode != 200 || connects.Load() != 2 {
		t.Fatalf("large body: status %d %.200s; SOCKS connects: %d, want 2", resp.StatusCode, body, connects.Load())
	}
	if sent := fake.all(); len(sent) != 2 || sent[1].ProtoMajor != 1 || string(sent[1].Body) != large {
		t.Errorf("Azure got %d requests; want the large body whole, over HTTP/1.1, as the second", len(sent))
	}
}

// startSOCKS5 runs a minimal SOCKS5 server (no auth, CONNECT only) on loopback.
func startSOCKS5(t *testing.T) (addr string, connects *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	connects = &atomic.Int32{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 262)
				// greeting: VER NMETHODS METHODS...
				if _, err := io.ReadFull(c, buf[:2]); err != nil || buf[0] != 5 {
					return
				}
				io.ReadFull(c, buf[:buf[1]])
				c.Write([]byte{5, 0})
				// request: VER CMD RSV ATYP ADDR PORT
				if _, err := io.ReadFull(c, buf[:4]); err != nil || buf[1] != 1 {
					return
				}
				var host string
				switch buf[3] {
				case 1:
					io.ReadFull(c, buf[:4])
					host = net.IP(buf[:4]).String()
				case 3:
					io.ReadFull(c, buf[:1])
					n := int(buf[0])
					io.ReadFull(c, buf[:n])
					host = string(buf[:n])
				default:
					return
				}
				io.ReadFull(c, buf[:2])
				port := binary.BigEndian.Uint16(buf[:2])
				up, err := net.Dial("tcp", net.JoinHostPort(host, strconv.Itoa(int(port))))
				if err != nil {
					c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0})
					return
				}
				defer up.Close()
				connects.Add(1)
				c.Write([]byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0})
				go io.Copy(up, c)
				io.Copy(c, up)
			}()
		}
	}()
	return ln.Addr().String(), connects
}

func TestUpstreamProxyChoice(t *testing.T) {
	azure := mustURL(t, "https://res.openai.azure.com")
	cases := []struct {
		name string
		env  map[string]string
		want string // "" for direct
	}{
		{"none", nil, ""},
		{"AZURE_OPENAI_HTTP_PROXY", map[string]string{"AZURE_OPENAI_HTTP_PROXY": "http://p:3128", "HTTPS_PROXY": "http://other:1"}, "http://p:3128"},
		{"AZURE_OPENAI_SOCKS_PROXY", map[string]string{"AZURE_OPENAI_SOCKS_PROXY": "socks5://s:1080"}, "socks5://s:1080"},
		{"HTTPS_PROXY", map[string]string{"HTTPS_PROXY": "http://corp:8080"}, "http://corp:8080"},
		{"https_proxy, bare host", map[string]string{"https_proxy": "corp:8080"}, "http://corp:8080"},
		{"HTTP_PROXY is not for https", map[string]string{"HTTP_PROXY": "http://corp:8080"}, ""},
		{"NO_PROXY domain", map[string]string{"HTTPS_PROXY": "http://corp:8080", "NO_PROXY": "localhost,azure.com"}, ""},
		{"NO_PROXY .domain", map[string]string{"HTTPS_PROXY": "http://corp:8080", "NO_PROXY": ".openai.azure.com"}, ""},
		{"NO_PROXY *", map[string]string{"HTTPS_PROXY": "http://corp:8080", "no_proxy": "*"}, ""},
		{"NO_PROXY other port", map[string]string{"HTTPS_PROXY": "http://corp:8080", "NO_PROXY": "res.openai.azure.com:8443"}, "http://corp:8080"},
		{"NO_PROXY same port", map[string]string{"HTTPS_PROXY": "http://corp:8080", "NO_PROXY": "res.openai.azure.com:443"}, ""},
		{"NO_PROXY unrelated", map[string]string{"HTTPS_PROXY": "http://corp:8080", "NO_PROXY": "notazure.com,example.org"}, "http://corp:8080"},
	}
	for _, tc := range cases {
		got, err := parseUpstreamProxy(azure, mapEnv(tc.env))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if (got == nil && tc.want != "") || (got != nil && got.String() != tc.want) {
			t.Errorf("%s: proxy = %v, want %q", tc.name, got, tc.want)
		}
	}
	for _, endpoint := range []string{"http://127.0.0.1:9000", "https://localhost"} {
		if got, _ := parseUpstreamProxy(mustURL(t, endpoint), mapEnv(map[string]string{"HTTPS_PROXY": "http://c:1", "HTTP_PROXY": "http://c:1"})); got != nil {
			t.Errorf("%s: loopback must not go through HTTPS_PROXY/HTTP_PROXY, got %v", endpoint, got)
		}
	}
	if got, _ := parseUpstreamProxy(mustURL(t, "http://10.1.2.3"), mapEnv(map[string]string{"HTTP_PROXY": "http://c:1", "NO_PROXY": "10.0.0.0/8"})); got != nil {
		t.Errorf("NO_PROXY CIDR not honoured")
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
