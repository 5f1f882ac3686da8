package main

import (
	"context"
	"log/slog"
	"strings"
)

// A misspelt setting is silently ignored by getenv: the proxy warns about
// every AZURE_OPENAI_* variable it does not read, naming the closest one it
// does. main passes the process's variable names in the context, since run
// reads values only through getenv.

type environNamesKey struct{}

// withEnvironNames records the names of environ ("NAME=value" entries) in ctx.
func withEnvironNames(ctx context.Context, environ []string) context.Context {
	names := make([]string, 0, len(environ))
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		names = append(names, name)
	}
	return context.WithValue(ctx, environNamesKey{}, names)
}

func environNames(ctx context.Context) []string {
	names, _ := ctx.Value(environNamesKey{}).([]string)
	return names
}

// warnUnknownSettings warns about each AZURE_OPENAI_* name the proxy does not read.
func warnUnknownSettings(names []string, logger *slog.Logger) {
	var known []string
	for _, s := range settings() {
		known = append(known, strings.Split(s.env, ", ")...)
	}
	known = append(known, "AZURE_OPENAI_PROXY_TEST_AS_MAIN") // the tests' own
	for _, name := range names {
		if !strings.HasPrefix(name, "AZURE_OPENAI_") {
			continue
		}
		closest, best := "", len(name)
		for _, k := range known {
			if k == name {
				closest = ""
				best = -1
				break
			}
			if d := editDistance(name, k); d < best {
				closest, best = k, d
			}
		}
		if best >= 0 {
			logger.Warn("unknown setting "+name+" is ignored; did you mean "+closest+"?", "variable", name, "closest", closest)
		}
	}
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
