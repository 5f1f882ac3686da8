package main

import (
	"crypto/sha256"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
)

// sourceFiles are the files a route table was built from (the config file,
// key files), each with a digest of what was read, so that the server can
// notice a change and reload without a signal: a Kubernetes Secret update
// swaps a symlink, and the scratch image has no kill. Reading a key file
// readable by every user notes a warning.
type sourceFiles struct {
	digests  map[string][sha256.Size]byte
	warnings []string
}

func newSourceFiles() *sourceFiles {
	return &sourceFiles{digests: map[string][sha256.Size]byte{}}
}

// read reads a file the table is built from; secret marks a key file.
func (s *sourceFiles) read(path string, secret bool) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s.digests[path] = sha256.Sum256(data)
	if info, err := os.Stat(path); secret && err == nil && info.Mode().Perm()&0o004 != 0 {
		s.warnings = append(s.warnings, fmt.Sprintf("the key file %s is readable by every user on this host (mode %#o): "+
			"chmod 600 it (in Kubernetes, defaultMode: 0440 with an fsGroup)", path, info.Mode().Perm()))
	}
	return data, nil
}

// state describes what the files hold now: equal states, equal files. A
// file that cannot be read counts as its error.
func (s *sourceFiles) state(now bool) string {
	var b strings.Builder
	for _, path := range slices.Sorted(maps.Keys(s.digests)) {
		sum := s.digests[path]
		if now {
			data, err := os.ReadFile(path)
			if err != nil {
				fmt.Fprintf(&b, "%s:%v;", path, err)
				continue
			}
			sum = sha256.Sum256(data)
		}
		fmt.Fprintf(&b, "%s:%x;", path, sum)
	}
	return b.String()
}
