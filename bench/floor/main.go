// Command floor is the benchmarks' baseline: a bare httputil.ReverseProxy that
// sends every request to one fixed deployment without reading the body. The
// proxy is measured against it in the same run.
package main

import (
	"flag"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "address to listen on")
	endpoint := flag.String("endpoint", "", "upstream, e.g. https://127.0.0.1:9443")
	deployment := flag.String("deployment", "gpt-4o", "the one deployment every request goes to")
	flag.Parse()
	target, err := url.Parse(*endpoint)
	if err != nil || target.Host == "" {
		log.Fatalf("-endpoint %q: %v", *endpoint, err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 256 // as the proxy's, so the floor is a fair one
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.Path = "/openai/deployments/" + *deployment + "/chat/completions"
			pr.Out.URL.RawQuery = "api-version=2024-10-21"
			pr.Out.Header.Set("Api-Key", strings.TrimPrefix(pr.In.Header.Get("Authorization"), "Bearer "))
			pr.Out.Header.Del("Authorization")
		},
		Transport:     transport,
		FlushInterval: -1,
	}
	log.Fatal(http.ListenAndServe(*listen, proxy))
}
