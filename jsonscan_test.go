package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// oracleModel is what encoding/json says about data's top-level "model":
// the one member whose key matches "model" as encoding/json matches a key to
// a struct field (in any case); dup when there are more.
func oracleModel(data []byte) (value string, isString, found, ok, dup bool) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil || m == nil {
		return "", false, false, false, false
	}
	var raw json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.Token() // {
	for dec.More() {
		key, _ := dec.Token()
		var v json.RawMessage
		dec.Decode(&v)
		if bytes.EqualFold([]byte(key.(string)), []byte("model")) {
			if found {
				return "", false, false, true, true
			}
			raw, found = v, true
		}
	}
	if !found {
		return "", false, false, true, false
	}
	// Unmarshal leaves a string untouched for null; a null model is not a string.
	if err := json.Unmarshal(raw, &value); err != nil || string(raw) == "null" {
		return "", false, true, true, false
	}
	return value, true, true, true, false
}

var scannerCases = []string{
	`{"model":"gpt-4o"}`,
	` {"messages":[{"role":"user","content":"{\"model\":\"x\"}"}],"model":"gpt-4o"} `,
	`{"model":"\u0067pt-4"}`,
	`{"mod\u0065l":"gpt-4"}`,
	`{"model":"a","model":"b"}`,
	`{"model":"a","model":1}`,
	`{"model":1,"model":"a"}`,
	`{"model":null}`,
	`{"model":{"name":"gpt"}}`,
	`{"Model":"gpt-4"}`,
	`{"model":"gpt-4o","Model":"secret"}`,
	`{"MODEL":"a","x":1}`,
	`{"mod\u0045l":"a","model":"b"}`,
	`{"model":"gpt\ud83d\ude00"}`,
	`{"model":"\ud800"}`,
	"{\"model\":\"caf\xc3\xa9\"}",
	"{\"model\":\"bad\xff\"}",
	`{}`,
	`{"a":[1,2,{"b":[true,false,null]}],"c":-0.5e+10,"model":"m"}`,
	`{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":-}`, `{"a":1e}`, `{"a":+1}`,
	`{"a":tru}`, `{"a":nul}`, `{"a":"\x"}`, `{"a":"\u12"}`, "{\"a\":\"\n\"}",
	`{"model":"gpt-4o"`, `{"model":"gpt-4o`, `{"model":`, `{"model"`, `{`, ``, `   `,
	`{"model":"a"}{}`, `{"model":"a"},`, `{"model":"a"}]`, `[{"model":"a"}]`, `"model"`, `null`, `1`,
	// Long runs (the memory-speed path), with what can end or break them.
	`{"a":"` + strings.Repeat("x", 100) + `","model":"m"}`,
	`{"a":"` + strings.Repeat("x", 100) + `\"` + strings.Repeat("y", 100) + `","model":"m"}`,
	`{"a":"` + strings.Repeat("x", 100) + "\x01" + `","model":"m"}`,
	`{"a":"` + strings.Repeat("x", 100) + `\q","model":"m"}`,
	`{"a":"` + strings.Repeat("x", 100) + `\u00e9` + strings.Repeat("z", 70) + `","model":"m"}`,
	`{"a":"` + strings.Repeat("x", 100),
	`{"a":"` + strings.Repeat("x", 100) + `\`,
	`{"model":"` + strings.Repeat("m", 100) + `"}`,
	`{"a":[}`, `{"a":{]}`, `{"a":[1,]}`, `{"a":{"b":1,}}`, `{,}`, `{"a" 1}`, `{1:2}`,
}

func TestFindModelAgreesWithEncodingJSON(t *testing.T) {
	for _, in := range scannerCases {
		checkAgainstOracle(t, []byte(in))
	}
}

func checkAgainstOracle(t *testing.T, data []byte) {
	t.Helper()
	f, err := findModel(data)
	want, wantString, wantFound, wantOK, wantDup := oracleModel(data)
	if _, dup := err.(*duplicateKeyError); dup != wantDup {
		t.Fatalf("%q: findModel err = %v, want a duplicate: %v", data, err, wantDup)
	}
	if wantDup {
		return
	}
	if (err == nil) != wantOK {
		t.Fatalf("%q: findModel err = %v, encoding/json ok = %v", data, err, wantOK)
	}
	if err != nil {
		return
	}
	if f.tooLong {
		if f.end-f.start <= maxDecodedValue {
			t.Fatalf("%q: a %d-byte value left undecoded", data, f.end-f.start)
		}
		return // refused as a model by jsonModel, not decoded
	}
	if f.found != wantFound || f.isString != wantString || string(f.value) != want {
		t.Fatalf("%q: findModel = %+v, encoding/json = %q string=%v found=%v", data, f, want, wantString, wantFound)
	}
	if f.found {
		var raw json.RawMessage
		if json.Unmarshal(data[f.start:f.end], &raw) != nil {
			t.Fatalf("%q: offsets [%d:%d] do not hold one JSON value", data, f.start, f.end)
		}
	}
}

func TestFindModelOffsets(t *testing.T) {
	in := `{"x":1, "model" : "gpt-4o" }`
	f, err := findModel([]byte(in))
	if err != nil || in[f.start:f.end] != `"gpt-4o"` {
		t.Fatalf("offsets [%d:%d] = %q, %v", f.start, f.end, in[f.start:f.end], err)
	}
}

func TestFindModelNestingLimit(t *testing.T) {
	for _, depth := range []int{9999, 10000, 10001} {
		// The top-level object counts as one level, as in encoding/json.
		in := `{"a":` + strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1) + `,"model":"m"}`
		checkAgainstOracle(t, []byte(in))
	}
}

func FuzzFindModel(f *testing.F) {
	for _, in := range scannerCases {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkAgainstOracle(t, data)
		// The SIMD string scan and the pure-Go one, from each of the first
		// 64 offsets (every alignment of a block).
		for i := 0; i < len(data) && i < 64; i++ {
			checkScanPlain(t, data[i:])
		}
	})
}

// TestScanStaysLinear: inputs that make a naive "find the closing quote,
// then look for escapes" scan quadratic: runs of plain bytes each followed by
// an escape, in one long string; and many strings just past the short-run
// length. The benchmark bounds nothing; this test only catches a blow-up.
func TestScanStaysLinear(t *testing.T) {
	for name, body := range map[string]string{
		"escapes in one long string": `{"a":"` + strings.Repeat(strings.Repeat("a", 70)+`\n`, 100_000) + `","model":"m"}`,
		"many strings past 64 bytes": `{"a":[` + strings.Repeat(`"`+strings.Repeat("b", 100)+`",`, 70_000) + `"x"],"model":"m"}`,
	} {
		start := time.Now()
		if f, err := findModel([]byte(body)); err != nil || string(f.value) != "m" {
			t.Fatalf("%s: %v %v", name, f, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: %d bytes took %v", name, len(body), d)
		}
	}
}
