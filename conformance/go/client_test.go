// Package conformance drives the real proxy binary with the official Go SDK,
// openai-go v3, against a fake Azure on loopback.
package conformance

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

const key = "azure-key-0123456789"

type seen struct {
	path, apiVersion, apiKey, authorization string
	body                                    map[string]any
}

// fakeAzure answers chat (plain and streamed, Azure's empty first chunk
// included) and embeddings for the deployments it knows, and records requests.
type fakeAzure struct {
	*httptest.Server
	mu   sync.Mutex
	seen []seen
}

func newFakeAzure(t *testing.T, deployments ...string) *fakeAzure {
	f := &fakeAzure{}
	known := map[string]bool{}
	for _, d := range deployments {
		known[d] = true
	}
	route := regexp.MustCompile(`^/openai/deployments/([^/]+)/(chat/completions|embeddings)$`)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		f.mu.Lock()
		f.seen = append(f.seen, seen{r.URL.Path, r.URL.Query().Get("api-version"), r.Header.Get("api-key"), r.Header.Get("Authorization"), body})
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		m := route.FindStringSubmatch(r.URL.Path)
		switch {
		case r.Header.Get("api-key") == "":
			w.WriteHeader(401)
			io.WriteString(w, `{"error":{"code":"401","message":"Access denied due to invalid subscription key."}}`)
		case r.URL.Query().Get("api-version") == "" || m == nil:
			w.WriteHeader(404)
			io.WriteString(w, `{"error":{"code":"404","message":"Resource not found"}}`)
		case !known[m[1]]:
			w.WriteHeader(404)
			io.WriteString(w, `{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}`)
		case m[2] == "embeddings":
			writeEmbeddings(w, body)
		case body["stream"] == true:
			w.Header().Set("Content-Type", "text/event-stream")
			chunks := []string{
				`{"id":"","object":"","created":0,"model":"","choices":[],"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}`,
				`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"},"finish_reason":null}]}`,
				`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":" there"},"finish_reason":null}]}`,
				`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
			}
			for _, c := range chunks {
				fmt.Fprintf(w, "data: %s\n\n", c)
				w.(http.Flusher).Flush()
			}
			io.WriteString(w, "data: [DONE]\n\n")
		default:
			io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}`)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

func writeEmbeddings(w http.ResponseWriter, body map[string]any) {
	inputs, ok := body["input"].([]any)
	if !ok {
		inputs = []any{body["input"]}
	}
	var data []map[string]any
	for i := range inputs {
		vector := []float32{0.25 * float32(i+1), -0.5, 1}
		var embedding any = vector
		if body["encoding_format"] == "base64" {
			buf := make([]byte, 4*len(vector))
			for j, v := range vector {
				binary.LittleEndian.PutUint32(buf[4*j:], math.Float32bits(v))
			}
			embedding = base64.StdEncoding.EncodeToString(buf)
		}
		data = append(data, map[string]any{"object": "embedding", "index": i, "embedding": embedding})
	}
	json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": data, "model": "text-embedding-3-small",
		"usage": map[string]int{"prompt_tokens": 2, "total_tokens": 2}})
}

func (f *fakeAzure) take(t *testing.T) seen {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) != 1 {
		t.Fatalf("fake Azure saw %d requests, want 1", len(f.seen))
	}
	s := f.seen[0]
	f.seen = nil
	if s.apiKey != key || s.authorization != "" {
		t.Errorf("upstream api-key %q, Authorization %q: want the key as api-key only", s.apiKey, s.authorization)
	}
	return s
}

// startProxy builds the proxy from this checkout and runs it against endpoint.
func startProxy(t *testing.T, endpoint, mapper string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "azure-openai-proxy")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the proxy: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-listen", "127.0.0.1:0")
	// The dated API, as the fake and openai-go's azure package speak it.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "AZURE_OPENAI_ENDPOINT=" + endpoint, "AZURE_OPENAI_MODEL_MAPPER=" + mapper, "AZURE_OPENAI_API_VER=2024-10-21"}
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(stderr)
	listen := regexp.MustCompile(`listen=(127\.0\.0\.1:\d+)`)
	for lines.Scan() {
		if m := listen.FindStringSubmatch(lines.Text()); m != nil {
			go io.Copy(io.Discard, stderr)
			return "http://" + m[1]
		}
	}
	t.Fatal("the proxy exited before listening")
	return ""
}

func TestOpenAIGo(t *testing.T) {
	fake := newFakeAzure(t, "gpt4o-deploy", "emb-deploy")
	proxy := startProxy(t, fake.URL, "gpt-4o=gpt4o-deploy,text-embedding-3-small=emb-deploy")
	client := openai.NewClient(option.WithBaseURL(proxy+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	chatParams := openai.ChatCompletionNewParams{
		Model:    "gpt-4o",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
	}

	t.Run("chat", func(t *testing.T) {
		resp, err := client.Chat.Completions.New(ctx, chatParams)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Choices[0].Message.Content != "Hello there" || resp.Usage.TotalTokens != 11 {
			t.Errorf("response %+v", resp)
		}
		s := fake.take(t)
		if s.path != "/openai/deployments/gpt4o-deploy/chat/completions" || s.apiVersion != "2024-10-21" || s.body["model"] != "gpt-4o" {
			t.Errorf("upstream %+v", s)
		}
	})

	t.Run("chat streamed", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, chatParams)
		text, chunks := "", 0
		for stream.Next() {
			chunk := stream.Current()
			chunks++
			if len(chunk.Choices) > 0 {
				text += chunk.Choices[0].Delta.Content
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		// Azure's empty first chunk is dropped by the proxy: 3 of the 4 arrive.
		if text != "Hello there" || chunks != 3 {
			t.Errorf("streamed %q in %d chunks, want \"Hello there\" in 3", text, chunks)
		}
		if s := fake.take(t); s.body["stream"] != true || s.path != "/openai/deployments/gpt4o-deploy/chat/completions" {
			t.Errorf("upstream %+v", s)
		}
	})

	t.Run("embeddings", func(t *testing.T) {
		resp, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model: "text-embedding-3-small",
			Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"hello", "world"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Data) != 2 || fmt.Sprint(resp.Data[1].Embedding) != "[0.5 -0.5 1]" {
			t.Errorf("embeddings %+v", resp.Data)
		}
		if s := fake.take(t); s.path != "/openai/deployments/emb-deploy/embeddings" {
			t.Errorf("upstream %+v", s)
		}
	})

	t.Run("Azure error", func(t *testing.T) {
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "not-deployed", Messages: chatParams.Messages})
		apiErr, ok := err.(*openai.Error)
		if !ok || apiErr.StatusCode != 404 || apiErr.Code != "DeploymentNotFound" {
			t.Errorf("err = %v, want Azure's 404 DeploymentNotFound", err)
		}
		fake.take(t)
	})
}
