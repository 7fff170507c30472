package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/test/lab"
)

// BenchmarkExecStorm times a RUN that forks and execs a static binary
// (busybox true) 10,000 times, traced against untraced (target ≤ 1.03).
// Nine rounds: the hooks' share is about 1 %, and rounds of one arm spread
// by ±10-20 % on the lab's machines, so five rounds' medians missed the
// target or met it from one run to the next. The floor arm (an empty
// sys_exit program) splits the kernel's share from the tracer's: the
// storm makes about a hundred system calls a cycle, each of which takes
// the slow path while any syscall hook is attached.
func BenchmarkExecStorm(b *testing.B) {
	l := lab.Require(b)
	l.RequireTracer(b)
	dir := hostloadContext(b, l, fmt.Sprintf("FROM %s\nCOPY hostload /hostload\nRUN /hostload exec -n 10000 -bin /bin/true\n", l.BaseImage))
	benchStep(b, l, stepBench{dir: dir, rounds: benchRounds(b, 9), floor: true})
}

// compileMain is a small net/http program; `go build -a` compiles it and
// the standard library it needs (about 20 s on the lab).
const compileMain = `package main

import (
	"fmt"
	"log"
	"net/http"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s\n", r.URL.Path)
	})
	log.Fatal(http.ListenAndServe("127.0.0.1:8080", nil))
}
`

// BenchmarkCompile times `go build -a` of a small net/http program in a RUN
// of a Go toolchain image, traced against untraced (target ≤ 1.03).
func BenchmarkCompile(b *testing.B) {
	l := lab.Require(b)
	l.RequireTracer(b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	image := goImage(b, ctx, l)
	df := fmt.Sprintf(`FROM %s
COPY hostload /hostload
COPY main.go go.mod /src/
WORKDIR /src
ENV PATH=/usr/local/go/bin:/usr/local/bin:/usr/bin:/bin GOCACHE=/tmp/gocache GOPATH=/tmp/gopath HOME=/tmp GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-buildvcs=false CGO_ENABLED=0
RUN /hostload run go build -a -o /tmp/hello .
`, image)
	dir := hostloadContext(b, l, df)
	for name, body := range map[string]string{"main.go": compileMain, "go.mod": "module example.com/hello\n\ngo 1.22\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("toolchain image %s", image)
	benchStep(b, l, stepBench{dir: dir, rounds: benchRounds(b, 7), floor: true})
}

// goImage returns a Go toolchain image in the lab registry:
// library/golang:<this machine's Go version> when the lab has one, else
// bench/golang:<version>, built once from the busybox base and this
// machine's /usr/local/go (without its tests and docs) and kept there.
func goImage(b *testing.B, ctx context.Context, l *lab.Lab) string {
	b.Helper()
	v, err := os.ReadFile("/usr/local/go/VERSION")
	if err != nil {
		b.Fatalf("this machine's Go toolchain: %v", err)
	}
	ver := strings.TrimPrefix(strings.SplitN(string(v), "\n", 2)[0], "go")
	if registryHas(ctx, l, "library/golang", ver) {
		return l.Registry + "/library/golang:" + ver
	}
	image := l.Registry + "/bench/golang:" + ver
	if registryHas(ctx, l, "bench/golang", ver) {
		return image
	}
	// The context is /usr/local/go itself; Dockerfile.dockerignore (next to
	// the Dockerfile, which BuildKit reads for that Dockerfile) leaves out
	// what a compile does not need.
	dfDir := b.TempDir()
	df := fmt.Sprintf("FROM %s\nCOPY . /usr/local/go\nENV PATH=/usr/local/go/bin:/bin\n", l.BaseImage)
	for name, body := range map[string]string{"Dockerfile": df, "Dockerfile.dockerignore": "test\ndoc\napi\nmisc\n"} {
		if err := os.WriteFile(filepath.Join(dfDir, name), []byte(body), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now()
	pub := exec.CommandContext(ctx, filepath.Join(l.Dir, "bin", "buildctl"), "--addr", l.BuildkitAddr, "build",
		"--frontend", "dockerfile.v0", "--local", "context=/usr/local/go", "--local", "dockerfile="+dfDir,
		"--output", "type=image,name="+image+",push=true,registry.insecure=true")
	if out, err := pub.CombinedOutput(); err != nil {
		b.Fatalf("publishing %s: %v\n%s", image, err, out)
	}
	b.Logf("published %s in %v", image, time.Since(start).Round(time.Second))
	return image
}

// registryHas says whether the lab registry has repo:tag.
func registryHas(ctx context.Context, l *lab.Lab, repo, tag string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, "http://"+l.Registry+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		return false
	}
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
