package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
)

func TestBodyPoolClasses(t *testing.T) {
	var p bodyPool
	for _, tc := range []struct{ n, wantCap int }{
		{1, 1}, {30, 30}, {16<<10 - 1, 16<<10 - 1}, {16 << 10, 16 << 10}, {16<<10 + 1, 32 << 10},
		{1 << 20, 1 << 20}, {1<<20 + 1, 2 << 20}, {16 << 20, 16 << 20},
	} {
		b := p.get(tc.n)
		if len(b) != tc.n || cap(b) != tc.wantCap {
			t.Errorf("get(%d): len %d cap %d, want cap %d", tc.n, len(b), cap(b), tc.wantCap)
		}
		p.put(b)
	}
	if b := p.get(16<<20 + 1); cap(b) != 16<<20+1 {
		t.Errorf("a body over the largest class should be allocated exactly, got cap %d", cap(b))
	}
}

func TestBodyPoolReadAll(t *testing.T) {
	var p bodyPool
	for _, n := range []int{0, 1, 32 << 10, 32<<10 + 1, 300 << 10} {
		want := bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
		got, err := p.readAll(io.MultiReader(bytes.NewReader(want[:n/2]), bytes.NewReader(want[n/2:])), 1<<30, false)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("readAll of %d bytes: %d bytes, %v", n, len(got), err)
		}
		p.put(got)
	}
	if _, err := p.readAll(io.MultiReader(strings.NewReader("abc"), errReader{}), 1<<30, false); err == nil {
		t.Error("readAll hid a read error")
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("boom") }

func TestBodyLeaseStopsReadersOnRelease(t *testing.T) {
	var p bodyPool
	buf := p.get(10)
	copy(buf, "0123456789")
	lease := &bodyLease{buf: buf, size: len(buf), pool: &p}
	r := lease.reader(nil)
	first := make([]byte, 4)
	if n, err := r.Read(first); n != 4 || err != nil || string(first) != "0123" {
		t.Fatalf("read %q %v", first[:n], err)
	}
	if all, err := io.ReadAll(lease.reader(nil)); err != nil || string(all) != "0123456789" {
		t.Fatalf("a second reader (GetBody) read %q %v", all, err)
	}
	for _, tc := range []struct {
		splices []bodySplice
		want    string
	}{
		{[]bodySplice{{2, 4, []byte(`"x"`)}}, `01"x"456789`},
		{[]bodySplice{{0, 10, nil}}, ""},
		{[]bodySplice{{0, 0, []byte("ab")}}, "ab0123456789"},
		{[]bodySplice{{9, 10, []byte("XYZ")}}, "012345678XYZ"},
		// Two insertions at one place, in order, and a replacement after them.
		{[]bodySplice{{1, 1, []byte("ab")}, {1, 1, []byte("cd")}, {3, 5, []byte("-")}}, "0abcd12-56789"},
		{[]bodySplice{{0, 1, nil}, {9, 10, nil}}, "12345678"},
	} {
		r := lease.reader(tc.splices)
		var got []byte
		one := make([]byte, 3) // small reads cross the splices' edges
		for {
			n, err := r.Read(one)
			got = append(got, one[:n]...)
			if err != nil {
				break
			}
		}
		if string(got) != tc.want {
			t.Errorf("reader(%v) read %q, want %q", tc.splices, got, tc.want)
		}
		if n := lease.splicedLength(tc.splices); n != int64(len(tc.want)) {
			t.Errorf("splicedLength(%v) = %d, want %d", tc.splices, n, len(tc.want))
		}
	}
	lease.release()
	lease.release() // twice is harmless
	if n, err := r.Read(first); n != 0 || !errors.Is(err, errBodyReleased) {
		t.Errorf("after release: %d bytes, %v; want errBodyReleased", n, err)
	}
}

// TestPooledBodiesNeverMix sends many different bodies at once; each must
// reach the fake exactly as sent, though their buffers are reused.
func TestPooledBodiesNeverMix(t *testing.T) {
	fake := newFakeAzure(t, fakeTLS, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sum := sha256.Sum256(body)
		if hex.EncodeToString(sum[:]) != r.Header.Get("X-Body-Sha256") {
			w.WriteHeader(http.StatusTeapot)
		}
	})
	p := startProxy(t, fake, map[string]string{"AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=prod"})
	var wg sync.WaitGroup
	errs := make(chan string, 400)
	for i := range 400 {
		wg.Go(func() {
			path, model := "/v1/chat/completions", "gpt-4o"
			if i%2 == 1 {
				path, model = "/v1/responses", "other" // passthrough: body read by the scanner, not rewritten
			}
			body := fmt.Sprintf(`{"model":%q,"n":%d,"pad":%q}`, model, i, strings.Repeat(string(rune('a'+i%26)), i*97%70000))
			sum := sha256.Sum256([]byte(body))
			req, _ := http.NewRequest("POST", p.URL+path, strings.NewReader(body))
			if i%3 == 0 {
				req.ContentLength = -1 // chunked: read through readAll
				req.Body = io.NopCloser(strings.NewReader(body))
			}
			req.Header.Set("Api-Key", testKey)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Body-Sha256", hex.EncodeToString(sum[:]))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Sprintf("request %d: status %d", i, resp.StatusCode)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := len(fake.all()); n != 400 {
		t.Errorf("fake saw %d requests, want 400", n)
	}
}

// TestBodyBufferGrowsWithTheBytes: a body that announces 63 MiB and sends
// 1 KiB holds about 1 KiB; one that fills the limit never holds more.
func TestBodyBufferGrowsWithTheBytes(t *testing.T) {
	p := &bodyPool{}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := p.readAll(io.MultiReader(bytes.NewReader(make([]byte, 1024)), errReader{}), 63<<20, true)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("the read error was lost")
	}
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 1<<20 {
		t.Errorf("1 KiB of a 63 MiB body allocated %d bytes", grown)
	}
	const limit = 24 << 20 // above the pooled classes
	buf, err := p.readAll(bytes.NewReader(make([]byte, limit)), limit, false)
	if err != nil || len(buf) != limit || cap(buf) > limit {
		t.Errorf("a body of exactly the limit: len %d cap %d, %v; want cap <= %d", len(buf), cap(buf), err, limit)
	}
	if _, err := p.readAll(bytes.NewReader(make([]byte, 100)), 99, true); err != errBodyOverrun {
		t.Errorf("a body longer than its bound: %v", err)
	}
}
