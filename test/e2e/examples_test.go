package e2e

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/test/lab"
)

// exfilAddr is where examples/compromised's install script sends the
// build's npm token.
const exfilAddr = "127.0.0.1:8787"

// exampleBuild is one examples/<name> built through buildx as a user would.
type exampleBuild struct {
	ref    string
	pred   *attest.Predicate
	signed *trace.Build
}

// buildExample builds examples/<name> with --no-cache (every step runs, so
// the trace shows what the step does, not evidence of an earlier run), the
// lab's Go version, and token as the npm_token secret, pushes it and reads
// its attestation and the tracer's signed trace of the build.
func buildExample(t *testing.T, ctx context.Context, l *lab.Lab, name, token string) exampleBuild {
	t.Helper()
	goVersion := l.GolangImage[strings.LastIndex(l.GolangImage, ":")+1:]
	ref := l.Ref(name)
	t.Setenv("BUILDTRACE_EXAMPLE_NPM_TOKEN", token)
	res := l.MustBuild(t, ctx, lab.Build{
		Context: filepath.Join(l.Repo, "examples", name), Tag: ref, Push: true,
		Args: []string{"--no-cache", "--build-arg", "GO_VERSION=" + goVersion,
			"--secret", "id=npm_token,env=BUILDTRACE_EXAMPLE_NPM_TOKEN"},
	})
	pred := runtimeTrace(t, ctx, l, ref)
	img := l.Image(t, ctx, ref)
	att, _ := img.ForManifest(img.Manifests[0].Descriptor.Digest)
	st, _ := att.Statement(attest.PredicateType)
	t.Logf("%s: build %.1fs, runtime-trace statement %d bytes", name, res.Duration.Seconds(), len(st.Data))
	return exampleBuild{ref: ref, pred: pred, signed: fetchSignedTrace(t, ctx, l, pred.Buildtrace.BuildTraceID)}
}

// verifyExample runs verify with the example's policy and wants exit code want.
func verifyExample(t *testing.T, l *lab.Lab, name, ref string, want int) string {
	t.Helper()
	start := time.Now()
	args := []string{"verify", ref, "--key", l.TracerPub, "--policy", filepath.Join(l.Repo, "examples", name, "policy.yaml")}
	out, code := runCLI(t, l, args...)
	t.Logf("%s: verify %.2fs, exit %d", name, time.Since(start).Seconds(), code)
	expectCode(t, out, code, want, args...)
	return out
}

// oneStepWith returns the one signed step having a process that matches
// (what names it in the failure), and fails the test unless there is
// exactly one.
func oneStepWith(t *testing.T, b *trace.Build, what string, pred func(trace.Process) bool) *trace.Step {
	t.Helper()
	var out []*trace.Step
	for i := range b.Steps {
		if _, ok := findProcess(&b.Steps[i], pred); ok {
			out = append(out, &b.Steps[i])
		}
	}
	if len(out) != 1 {
		t.Fatalf("want one step running %s, got %d", what, len(out))
	}
	return out[0]
}

// binaryIs matches a process by the base name of its binary, of the name
// it was executed as (gcc runs as, which is x86_64-linux-gnu-as), or of
// argv[0].
func binaryIs(name string) func(trace.Process) bool {
	return func(p trace.Process) bool {
		return path.Base(p.Binary) == name || p.Filename != "" && path.Base(p.Filename) == name ||
			len(p.Argv) > 0 && path.Base(p.Argv[0]) == name
	}
}

// reached says whether the step reached tcp ip:port.
func reached(s *trace.Step, ip string, port uint16) bool {
	return destination(s, "tcp", ip, port) != nil
}

// materialsFrom counts the step's materials downloaded from port.
func materialsFrom(s *trace.Step, port uint16) int {
	n := 0
	for _, m := range s.Materials {
		if m.Endpoint.Port == port {
			n++
		}
	}
	return n
}

func inDiff(s *trace.Step, p string) bool {
	for _, c := range s.Diff.Changes {
		if c.Path == p {
			return true
		}
	}
	return false
}

// TestExamples builds every example under examples/ as `make examples`
// does and checks each verifies by default with its own allow-list policy
// (no incomplete.allow, no cached.allow), shows what it must, and that
// examples/compromised is caught for the right reasons.
func TestExamples(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	if l.GolangImage == "" || l.GoProxy == "" {
		t.Fatalf("the lab has no example images or mirrors (hack/images.sh, hack/mirrors.sh): %+v", l)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	t.Run("go-app", func(t *testing.T) {
		b := buildExample(t, ctx, l, "go-app", "unused-"+randHex(8))
		// The final stage COPYs the binary over busybox, above any RUN:
		// the witness binds that layer.
		out := verifyExample(t, l, "go-app", b.ref, 0)
		witnessAllBound(t, out)
		if !strings.Contains(out, "witness executed") {
			t.Errorf("go-app: no witness ran on the final stage:\n%s", out)
		}
		dl := oneStepWith(t, b.signed, "go mod download", func(p trace.Process) bool { return argvHas(p, "download") && path.Base(p.Binary) == "go" })
		if !reached(dl, "127.0.0.1", 5010) {
			t.Errorf("go mod download did not reach the Go proxy 127.0.0.1:5010: %+v", dl.Network)
		}
		if n := materialsFrom(dl, 5010); n < 2 {
			t.Errorf("go mod download: %d materials from the Go proxy, want the module zips and more: %+v", n, dl.Materials)
		}
		build := oneStepWith(t, b.signed, "the Go compiler", binaryIs("compile"))
		if len(build.Network) != 0 {
			t.Errorf("go build reached the network: %+v", build.Network)
		}
		if _, ok := findProcess(build, binaryIs("link")); !ok {
			t.Errorf("go build ran no linker")
		}
	})

	t.Run("c-app", func(t *testing.T) {
		b := buildExample(t, ctx, l, "c-app", "unused-"+randHex(8))
		verifyExample(t, l, "c-app", b.ref, 0)
		s := oneStepWith(t, b.signed, "make", binaryIs("make"))
		for _, bin := range []string{"cc1", "as", "collect2", "ld"} {
			if _, ok := findProcess(s, binaryIs(bin)); !ok {
				t.Errorf("the make step ran no %s", bin)
			}
		}
		if _, ok := findProcess(s, func(p trace.Process) bool { return argvHas(p, "checksum.c") }); !ok {
			t.Errorf("no process compiled checksum.c")
		}
		if !inDiff(s, "/usr/local/bin/c-app") {
			t.Errorf("the make step's diff lacks /usr/local/bin/c-app")
		}
		if len(s.Network) != 0 {
			t.Errorf("the C build reached the network: %+v", s.Network)
		}
	})

	t.Run("python-app", func(t *testing.T) {
		b := buildExample(t, ctx, l, "python-app", "unused-"+randHex(8))
		verifyExample(t, l, "python-app", b.ref, 0)
		s := oneStepWith(t, b.signed, "pip", func(p trace.Process) bool { return argvHas(p, "--index-url") })
		if !reached(s, "127.0.0.1", 5011) {
			t.Errorf("pip did not reach the Python index 127.0.0.1:5011: %+v", s.Network)
		}
		if materialsFrom(s, 5011) == 0 {
			t.Errorf("pip install lists no materials from the index: %+v", s.Materials)
		}
		for _, f := range []string{"textstats/__init__.py", "dateutil/parser/_parser.py", "idna/core.py"} {
			if !inDiff(s, "/usr/local/lib/python3.11/dist-packages/"+f) {
				t.Errorf("pip's step diff lacks %s", f)
			}
		}
	})

	var clean exampleBuild
	t.Run("node-app", func(t *testing.T) {
		clean = buildExample(t, ctx, l, "node-app", "npm_"+randHex(12))
		verifyExample(t, l, "node-app", clean.ref, 0)
		s := oneStepWith(t, clean.signed, "npm ci", func(p trace.Process) bool { return argvHas(p, "npm ci") })
		if !reached(s, "127.0.0.1", 5012) {
			t.Errorf("npm ci did not reach the npm registry 127.0.0.1:5012: %+v", s.Network)
		}
		if materialsFrom(s, 5012) == 0 {
			t.Errorf("npm ci lists no materials from the registry: %+v", s.Materials)
		}
		if !inDiff(s, "/app/node_modules/express/package.json") {
			t.Errorf("npm ci's diff lacks express")
		}
	})

	t.Run("compromised", func(t *testing.T) {
		if clean.ref == "" {
			t.Fatal("node-app (the clean build to compare with) did not build")
		}
		// Something listens where the token goes, so the test can see
		// the attack really happened.
		ln, err := net.Listen("tcp4", exfilAddr)
		if err != nil {
			t.Fatalf("listening on %s for the stolen token: %v", exfilAddr, err)
		}
		var mu sync.Mutex
		var got bytes.Buffer
		srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
			mu.Lock()
			got.Write(body)
			mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		})}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()

		token := "npm_" + randHex(16)
		b := buildExample(t, ctx, l, "compromised", token)
		mu.Lock()
		stolen := strings.Contains(got.String(), token)
		mu.Unlock()
		if !stolen {
			t.Errorf("the install script did not send the token to %s (the attack did not run)", exfilAddr)
		}

		out := verifyExample(t, l, "compromised", b.ref, 1)
		for _, want := range []string{
			"policy egress.allowed", "127.0.0.1:8787", // the destination
			"install.js",                                             // the process
			"policy files.denyWrite", "/usr/local/bin/colorful-logd", // the file
		} {
			if !strings.Contains(out, want) {
				t.Errorf("verify does not name %q:\n%s", want, out)
			}
		}

		out, code := runCLI(t, l, "diff", clean.ref, b.ref, "--key", l.TracerPub)
		expectCode(t, out, code, 1, "diff", clean.ref, b.ref)
		for _, want := range []string{"127.0.0.1:8787", "/usr/local/bin/colorful-logd"} {
			if !strings.Contains(out, want) {
				t.Errorf("diff does not show %q:\n%s", want, out)
			}
		}

		// The token never appears in what buildtrace stores or prints.
		img := l.Image(t, ctx, b.ref)
		att, _ := img.ForManifest(img.Manifests[0].Descriptor.Digest)
		for _, st := range att.Statements {
			if strings.Contains(string(st.Data), token) {
				t.Errorf("the attestation (%s) holds the npm token", st.PredicateType)
			}
		}
		show, code := runCLI(t, l, "show", b.ref, "--key", l.TracerPub, "--full")
		expectCode(t, show, code, 0)
		if strings.Contains(show, token) || strings.Contains(out, token) {
			t.Errorf("show or diff prints the npm token")
		}
		for _, f := range append([]string{filepath.Join(l.Dir, "logs", "buildtraced.log")}, tracerStoreFiles(t, l)...) {
			dt, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(dt, []byte(token)) {
				t.Errorf("%s holds the npm token", f)
			}
		}
	})
}
