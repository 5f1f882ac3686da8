package main

import (
	"bytes"
	"debug/elf"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The Dockerfile cannot be built here (no Docker engine), so these tests
// check what it relies on: a static binary, -healthcheck, and the CA path.

func TestDockerfile(t *testing.T) {
	df, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ARG VERSION=devel",
		`RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.buildVersion=${VERSION}" -o /out/azure-openai-proxy .`,
		"FROM scratch",
		"COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt",
		"COPY --from=build /out/azure-openai-proxy /azure-openai-proxy",
		"USER 65532:65532",
		"EXPOSE 8080",
		`CMD ["/azure-openai-proxy", "-healthcheck"]`,
		`ENTRYPOINT ["/azure-openai-proxy"]`,
		"COPY go.mod ./",
		"COPY *.go ./",
	} {
		if !bytes.Contains(df, []byte(want)) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	// Every source file must be in the build context the Dockerfile copies.
	if dirs, _ := filepath.Glob("*/*.go"); len(dirs) > 0 {
		t.Errorf("Go files outside the top folder are not copied by the Dockerfile: %v", dirs)
	}
	// The CA bundle goes where Go's crypto/x509 looks on Linux.
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Skip("no go command:", err)
	}
	roots, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(goroot)), "src/crypto/x509/root_linux.go"))
	if err != nil {
		t.Skip("no Go source:", err)
	}
	if !bytes.Contains(roots, []byte(`"/etc/ssl/certs/ca-certificates.crt"`)) {
		t.Error("Go no longer reads /etc/ssl/certs/ca-certificates.crt; move the CA bundle in the Dockerfile")
	}
}

// TestStaticBinary builds the binary as the Dockerfile does, checks it needs
// no dynamic loader, and runs its -healthcheck against a live proxy.
func TestStaticBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "azure-openai-proxy")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.buildVersion=v9.9.9-test", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary asks for a dynamic loader; it cannot run in a scratch image")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary links %v", libs)
	}

	p := startProxy(t, newFakeAzure(t, fakeTLS, nil), nil)
	hc := exec.Command(bin, "-healthcheck")
	hc.Env = append(cleanEnv(), "AZURE_OPENAI_PROXY_ADDRESS="+strings.TrimPrefix(p.URL, "http://"))
	if out, err := hc.CombinedOutput(); err != nil {
		t.Errorf("-healthcheck against a live proxy: %v %s", err, out)
	}
	// The version the Dockerfile's VERSION stamps.
	if out, err := exec.Command(bin, "-version").Output(); err != nil || string(out) != "azure-openai-proxy v9.9.9-test\n" {
		t.Errorf("-version: %q %v", out, err)
	}
}

func TestREADMEDocumentsTheProduct(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings() {
		for _, name := range strings.Split(s.env, ", ") {
			if !bytes.Contains(readme, []byte("`"+name+"`")) {
				t.Errorf("README does not document %s", name)
			}
		}
	}
	for _, flag := range []string{"--listen", "--config", "-healthcheck", "-check", "-version"} {
		if !bytes.Contains(readme, []byte(flag)) {
			t.Errorf("README does not document %s", flag)
		}
	}
	// The README's test command is the one CI runs.
	ci, err := os.ReadFile(".ci/run")
	if err != nil {
		t.Fatal(err)
	}
	testCmd := regexp.MustCompile("(?m)^go test[^\n]*$").Find(readme)
	if testCmd == nil || !bytes.Contains(ci, testCmd) {
		t.Errorf("the README's test command %q is not what .ci/run runs", testCmd)
	}
}

// TestREADMECodeMap: the code map names every source file, and each step of
// the request path names a function declared in the file it says.
func TestREADMECodeMap(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	mapStart := strings.Index(text, "### Code map")
	pathStart := strings.Index(text, "### The request path")
	if mapStart < 0 || pathStart < mapStart {
		t.Fatal("README lacks the code map or the request path")
	}
	codeMap := text[mapStart:pathStart]
	sources, _ := filepath.Glob("*.go")
	declared := map[string]string{} // function or Type.method → file
	fset := token.NewFileSet()
	for _, file := range sources {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		if !strings.Contains(codeMap, "`"+file+"`") {
			t.Errorf("the code map does not name %s", file)
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok {
				continue
			}
			name := fn.Name.Name
			if fn.Recv != nil {
				recv := fn.Recv.List[0].Type
				if star, ok := recv.(*ast.StarExpr); ok {
					recv = star.X
				}
				name = recv.(*ast.Ident).Name + "." + name
			}
			declared[name] = file
		}
	}
	step := regexp.MustCompile("(?m)^\\d+\\. `([\\w.]+)` \\(([\\w.]+\\.go)\\)(?: and `([\\w.]+)` \\(([\\w.]+\\.go)\\))?")
	steps := step.FindAllStringSubmatch(text[pathStart:], -1)
	if len(steps) < 8 {
		t.Fatalf("the request path lists %d steps", len(steps))
	}
	for _, s := range steps {
		for i := 1; i+1 < len(s) && s[i] != ""; i += 2 {
			if got := declared[s[i]]; got != s[i+1] {
				t.Errorf("request path: %s is declared in %q, not %s", s[i], got, s[i+1])
			}
		}
	}
}
