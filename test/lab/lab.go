// Package lab gives end-to-end tests the real build lab of hack/lab.sh:
// buildkitd with runc, the registry on 127.0.0.1:5000, the buildx builder
// "buildtrace", and buildtraced when it is built. Tests build through
// `docker buildx build --builder buildtrace`, as a user would, and read what
// came out with package registry.
package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/registry"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
)

// Lab is a running lab.
type Lab struct {
	Repo         string // repository root
	Dir          string // .lab
	Registry     string // 127.0.0.1:5000
	Builder      string // buildx builder name
	BuildkitAddr string // unix://...
	TracerAddr   string // host:port of buildtraced
	TracerAdmin  string // buildtraced's admin socket (root reads any trace)
	BaseImage    string // FROM line for test Dockerfiles
	Frontend     string // the buildtrace frontend image (syntax line)
	TracerPub    string // the tracer's public key file
	GolangImage  string // busybox + the host's Go toolchain (hack/images.sh)
	DebianImage  string // Debian bookworm with compilers, Python, Node
	GoProxy      string // the loopback Go module proxy's URL (hack/mirrors.sh)
	PyPI         string // the loopback Python index's simple/ URL
	NPM          string // the loopback npm registry's URL
}

var (
	upOnce sync.Once
	upLab  *Lab
	upErr  error
)

// RequireRoot skips the test (loudly) when not root; under CI=true it fails
// instead, so CI can never pass by skipping.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	msg := fmt.Sprintf("SKIP (needs root: %s)", why)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " — CI runs as root, so this is a failure")
	}
	t.Skip(msg)
}

// Require brings the lab up once per test binary (hack/lab.sh up is
// idempotent) and returns it. In -short mode it skips.
func Require(t testing.TB) *Lab {
	t.Helper()
	if testing.Short() {
		t.Skip("SKIP (-short: end-to-end test needs the build lab)")
	}
	RequireRoot(t, "the lab runs buildkitd, runc and eBPF")
	upOnce.Do(func() { upLab, upErr = up() })
	if upErr != nil {
		t.Fatalf("bringing the lab up: %v", upErr)
	}
	return upLab
}

func repoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cannot locate the repository")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..")), nil
}

func up() (*Lab, error) {
	repo, err := repoRoot()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(repo, "hack", "lab.sh"), "up")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("hack/lab.sh up: %v\n%s", err, out.String())
	}
	envOut, err := exec.Command(filepath.Join(repo, "hack", "lab.sh"), "env").Output()
	if err != nil {
		return nil, fmt.Errorf("hack/lab.sh env: %w", err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(envOut), "\n") {
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if ok {
			env[k] = v
		}
	}
	l := &Lab{
		Repo:         repo,
		Dir:          env["BUILDTRACE_LAB"],
		Registry:     env["BUILDTRACE_REGISTRY"],
		Builder:      env["BUILDTRACE_BUILDER"],
		BuildkitAddr: env["BUILDKIT_HOST"],
		TracerAddr:   env["BUILDTRACE_TRACER"],
		TracerAdmin:  env["BUILDTRACE_TRACER_ADMIN"],
		GolangImage:  env["BUILDTRACE_GOLANG_IMAGE"],
		DebianImage:  env["BUILDTRACE_DEBIAN_IMAGE"],
		GoProxy:      env["BUILDTRACE_GOPROXY"],
		PyPI:         env["BUILDTRACE_PYPI"],
		NPM:          env["BUILDTRACE_NPM"],
	}
	l.BaseImage = l.Registry + "/library/busybox:latest"
	l.Frontend = l.Registry + "/buildtrace/frontend:dev"
	l.TracerPub = filepath.Join(l.Dir, "keys", "tracer.pub")
	return l, nil
}

// Kill sends SIGKILL to one of the lab's services (buildkitd, buildtraced,
// registry), as a crash would.
func (l *Lab) Kill(t testing.TB, service string) {
	t.Helper()
	pid, err := os.ReadFile(filepath.Join(l.Dir, service+".pid"))
	if err != nil {
		t.Fatalf("pid of %s: %v", service, err)
	}
	if out, err := exec.Command("kill", "-9", strings.TrimSpace(string(pid))).CombinedOutput(); err != nil {
		t.Fatalf("kill %s: %v %s", service, err, out)
	}
}

// Up runs hack/lab.sh up again, which starts what is not running.
func (l *Lab) Up(t testing.TB) {
	t.Helper()
	if out, err := exec.Command(filepath.Join(l.Repo, "hack", "lab.sh"), "up").CombinedOutput(); err != nil {
		t.Fatalf("hack/lab.sh up: %v\n%s", err, out)
	}
}

// RequireTracer fails the test unless the lab's buildtraced answers.
func (l *Lab) RequireTracer(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := (&tracerapi.Client{Addr: l.TracerAddr}).Health(ctx); err != nil {
		t.Fatalf("buildtraced is not up at %s (make build && make lab): %v", l.TracerAddr, err)
	}
}

// Ref returns a fresh image reference in the lab registry.
func (l *Lab) Ref(name string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/test/%s:%s", l.Registry, name, hex.EncodeToString(b[:]))
}

// WriteContext writes files (path → content) into a new build context dir.
func WriteContext(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Build is one `docker buildx build` invocation.
type Build struct {
	Context    string
	Dockerfile string   // -f, optional
	Tag        string   // -t, optional
	Push       bool     // --push
	Args       []string // more flags, e.g. --attest type=provenance,mode=max
}

// Result is what the build printed and how it ended.
type Result struct {
	Output   string // stdout and stderr, plain progress
	Err      error
	Duration time.Duration
}

// Buildx runs `docker buildx build --builder <lab builder>` with b.
func (l *Lab) Buildx(ctx context.Context, b Build) Result {
	args := []string{"buildx", "build", "--builder", l.Builder, "--progress", "plain"}
	if b.Dockerfile != "" {
		args = append(args, "-f", b.Dockerfile)
	}
	if b.Tag != "" {
		args = append(args, "-t", b.Tag)
	}
	if b.Push {
		args = append(args, "--push")
	}
	args = append(args, b.Args...)
	args = append(args, b.Context)
	cmd := exec.CommandContext(ctx, "docker", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	res := Result{Output: out.String(), Duration: time.Since(start)}
	if err != nil {
		res.Err = fmt.Errorf("docker %s: %w", strings.Join(args, " "), err)
	}
	return res
}

// MustBuild runs Buildx and fails the test when the build fails.
func (l *Lab) MustBuild(t testing.TB, ctx context.Context, b Build) Result {
	t.Helper()
	res := l.Buildx(ctx, b)
	if res.Err != nil {
		t.Fatalf("%v\n%s", res.Err, res.Output)
	}
	return res
}

// Image reads ref's index and attestations from the lab registry.
func (l *Lab) Image(t testing.TB, ctx context.Context, ref string) *registry.Image {
	t.Helper()
	img, err := registry.New(registry.Options{}).Read(ctx, ref)
	if err != nil {
		t.Fatalf("reading %s: %v", ref, err)
	}
	return img
}

// DC is the docker-container part of the lab (hack/lab-dc.sh): dockerd,
// the builders of buildx's docker-container driver, and buildtraced run
// from its image in place of the host's.
type DC struct {
	Host          *Lab // the lab with Builder set to the host-network builder
	Bridge        *Lab // the lab with Builder set to the bridge builder, Registry to the gateway's listener
	Gateway       string
	TracerOnGW    string // the tracer's address on the bridge gateway
	TracerImage   string
	BuildkitImage string
}

var (
	dcOnce sync.Once
	dcLab  *DC
	dcErr  error
	dcSkip string
)

// RequireDC brings the docker-container lab up once per test binary and
// takes it down (restoring the host's tracer) when the test ends. It skips,
// saying so, only when no Docker Engine can run on this machine; under
// CI=true that fails instead.
func (l *Lab) RequireDC(t testing.TB) *DC {
	t.Helper()
	dcOnce.Do(func() { dcLab, dcSkip, dcErr = l.upDC() })
	if dcSkip != "" {
		msg := "SKIP (no Docker Engine can run here: " + dcSkip + ")"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " — CI must run the docker-container tests")
		}
		t.Skip(msg)
	}
	if dcErr != nil {
		t.Fatalf("bringing the docker-container lab up: %v", dcErr)
	}
	t.Cleanup(func() {
		// The host's buildtraced again, for the tests that follow.
		out, err := exec.Command(filepath.Join(l.Repo, "hack", "lab-dc.sh"), "down").CombinedOutput()
		if err != nil {
			t.Errorf("hack/lab-dc.sh down: %v\n%s", err, out)
		}
		l.Up(t)
		dcOnce = sync.Once{}
	})
	return dcLab
}

func (l *Lab) upDC() (*DC, string, error) {
	script := filepath.Join(l.Repo, "hack", "lab-dc.sh")
	if out, err := exec.Command(script, "deps").CombinedOutput(); err != nil {
		return nil, fmt.Sprintf("installing docker.io: %v: %s", err, strings.TrimSpace(string(out))), nil
	}
	if _, err := exec.LookPath("dockerd"); err != nil {
		return nil, "no dockerd after installing docker.io", nil
	}
	start := time.Now()
	out, err := exec.Command(script, "up").CombinedOutput()
	if err != nil {
		return nil, "", fmt.Errorf("hack/lab-dc.sh up: %v\n%s", err, out)
	}
	fmt.Fprintf(os.Stderr, "lab: the docker-container lab came up in %s\n", time.Since(start).Round(time.Second))
	envOut, err := exec.Command(script, "env").Output()
	if err != nil {
		return nil, "", fmt.Errorf("hack/lab-dc.sh env: %w", err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(envOut), "\n") {
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if ok {
			env[k] = v
		}
	}
	host, bridge := *l, *l
	host.Builder = env["BUILDTRACE_DC_BUILDER"]
	bridge.Builder = env["BUILDTRACE_DC_BRIDGE_BUILDER"]
	_, port, _ := strings.Cut(l.Registry, ":")
	bridge.Registry = env["BUILDTRACE_DC_GATEWAY"] + ":" + port
	_, tport, _ := strings.Cut(l.TracerAddr, ":")
	return &DC{
		Host: &host, Bridge: &bridge, Gateway: env["BUILDTRACE_DC_GATEWAY"],
		TracerOnGW:    env["BUILDTRACE_DC_GATEWAY"] + ":" + tport,
		TracerImage:   env["BUILDTRACE_DC_TRACER_IMAGE"],
		BuildkitImage: env["BUILDTRACE_DC_BUILDKIT_IMAGE"],
	}, "", nil
}
