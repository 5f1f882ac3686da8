package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// chatBody builds a chat request of about size bytes with model as the last
// key, the worst case for finding it.
func chatBody(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"messages":[`)
	turn := `{"role":"user","content":"` + strings.Repeat(`Explain the theory of relativity in simple terms, with \"examples\". `, 4) + `"},`
	for b.Len() < size-200 {
		b.WriteString(turn)
	}
	b.WriteString(`{"role":"user","content":"hi"}],"temperature":0.7,"max_tokens":256,"stream":false,"model":"gpt-4o"}`)
	return b.Bytes()
}

// BenchmarkModelLookup finds the model in a chat body and maps it to its
// deployment: what every request on a deployment route pays.
func BenchmarkModelLookup(b *testing.B) {
	table, err := routeTableFromEnv(mapEnv(map[string]string{
		"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com", "AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=gpt4o-prod,gpt-4o-mini=mini",
	}))
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{1 << 10, 1 << 20, 16 << 20} {
		body := chatBody(size)
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				f, err := findModel(body)
				if err != nil {
					b.Fatal(err)
				}
				if r := table.route(f.value); r == nil || r.candidates[0].deployment != "gpt4o-prod" {
					b.Fatal(r)
				}
			}
		})
	}
}

func BenchmarkMultipartModel(b *testing.B) {
	body, contentType := multipartBody(b, 8<<20, "model", "whisper-1")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if m, e := modelFromBody(contentType, body); e != nil || string(m.name) != "whisper-1" {
			b.Fatal(m, e)
		}
	}
}

// BenchmarkHandler sends chat requests through the whole handler to an
// in-process upstream that answers at once.
func BenchmarkHandler(b *testing.B) {
	var upstreamBytes atomic.Int64
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		upstreamBytes.Add(n)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","choices":[]}`)
	}))
	defer upstream.Close()
	cfg, err := loadConfig(options{listen: ":0"}, mapEnv(map[string]string{
		"AZURE_OPENAI_ENDPOINT": upstream.URL, "AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=gpt4o-prod",
	}))
	if err != nil {
		b.Fatal(err)
	}
	state := &serverState{}
	state.routes.Store(cfg.Routes)
	h := newHandler(cfg, newLogger("text", io.Discard), state, newMetrics())
	for _, size := range []int{300, 1 << 20} {
		body := chatBody(size)
		b.Run(fmt.Sprintf("%dB", len(body)), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest("POST", "/v1/chat/completions", bytes.NewReader(body))
				r.Header.Set("Authorization", "Bearer k")
				r.Header.Set("Content-Type", "application/json")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != 200 {
					b.Fatal(w.Code, w.Body.String())
				}
			}
		})
	}
}

// BenchmarkMultipartManyParts: the most tiny parts a form may have (about
// 500 KB) before the model: the shape that once made the walk quadratic.
func BenchmarkMultipartManyParts(b *testing.B) {
	body := manyParts(maxFormParts - 1)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if m, e := modelFromBody("multipart/form-data; boundary=B", body); e != nil || string(m.name) != "whisper" {
			b.Fatal(m, e)
		}
	}
}

// imageChatBody is a chat with two base64 image data URLs of imageSize bytes
// each and model last, as openai-python writes a vision request.
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

// BenchmarkModelScan measures the model scan on the bodies that matter, each
// beside bytes.IndexByte over the same bytes (a byte that never occurs: one
// full pass at the machine's memory speed), the physical reference.
func BenchmarkModelScan(b *testing.B) {
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"a_text_1MiB_escapes", chatBody(1 << 20)},
		{"b_images_2x2MiB_model_last", imageChatBody(2 << 20)},
		{"c_chat_1KiB", chatBody(1 << 10)},
	} {
		b.Run(tc.name+"/findModel", func(b *testing.B) {
			b.SetBytes(int64(len(tc.body)))
			b.ReportAllocs()
			for b.Loop() {
				if f, err := findModel(tc.body); err != nil || string(f.value) != "gpt-4o" {
					b.Fatal(f, err)
				}
			}
		})
		b.Run(tc.name+"/IndexByte", func(b *testing.B) {
			b.SetBytes(int64(len(tc.body)))
			b.ReportAllocs()
			for b.Loop() {
				if bytes.IndexByte(tc.body, 0x01) >= 0 {
					b.Fatal("found")
				}
			}
		})
	}
}
