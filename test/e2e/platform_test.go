package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/test/lab"
)

// foreignPlatform is the platform the lab emulates with qemu-user-static
// and binfmt_misc (hack/lab.sh ensure_foreign_platform).
const foreignPlatform = "linux/arm64"

// requireWorkerPlatform fails unless buildkitd's worker lists platform: the
// lab is supposed to register the emulator before starting buildkitd.
func requireWorkerPlatform(t *testing.T, l *lab.Lab, platform string) {
	t.Helper()
	out, err := exec.Command(filepath.Join(l.Dir, "bin", "buildctl"), "--addr", l.BuildkitAddr, "debug", "workers").CombinedOutput()
	if err != nil {
		t.Fatalf("buildctl debug workers: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), platform) {
		t.Fatalf("buildkitd's worker does not list %s (is qemu-%s registered in /proc/sys/fs/binfmt_misc with flag F, and was buildkitd started after?):\n%s",
			platform, strings.TrimPrefix(platform, "linux/"), out)
	}
}

// TestFrontendTwoPlatforms builds one Dockerfile for linux/amd64 and, under
// qemu, linux/arm64 through the buildtrace frontend, and checks that each
// image manifest gets its own runtime trace holding only its own platform's
// RUN, executed, and that the CLI verifies both.
func TestFrontendTwoPlatforms(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	requireWorkerPlatform(t, l, foreignPlatform)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n := randHex(8)
	out := "/arch-" + n
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, `FROM BASE
RUN uname -m > `+out+` && echo `+n+`
`)})
	ref := l.Ref("frontend-platforms")
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true, Args: []string{
		"--platform", "linux/amd64," + foreignPlatform,
		"--build-arg", "BUILDTRACE_TRACER=" + l.TracerAddr,
	}})

	img, preds := runtimeTraces(t, ctx, l, ref)
	if len(img.Manifests) != 2 || len(preds) != 2 {
		t.Fatalf("want 2 image manifests with a runtime trace each, got %d manifests, traces for %v", len(img.Manifests), platformKeys(preds))
	}
	want := map[string]string{"linux/amd64": "x86_64\n", foreignPlatform: "aarch64\n"}
	stepIDs := map[string]string{}
	var traceID string
	for platform, machine := range want {
		p, ok := preds[platform]
		if !ok {
			t.Errorf("no runtime trace for %s (have %v)", platform, platformKeys(preds))
			continue
		}
		if p.Buildtrace.Platform != platform {
			t.Errorf("%s: trace says platform %q", platform, p.Buildtrace.Platform)
		}
		if traceID == "" {
			traceID = p.Buildtrace.BuildTraceID
		} else if p.Buildtrace.BuildTraceID != traceID {
			t.Errorf("one build, two trace IDs: %s and %s", traceID, p.Buildtrace.BuildTraceID)
		}
		if !p.Buildtrace.Complete {
			t.Errorf("%s: trace incomplete: %v", platform, p.Buildtrace.Reasons)
		}
		if len(p.Buildtrace.Steps) != 1 {
			t.Fatalf("%s: %d steps, want only its own RUN: %+v", platform, len(p.Buildtrace.Steps), p.Buildtrace.Steps)
		}
		s := p.Buildtrace.Steps[0]
		stepIDs[platform] = s.StepID
		if s.Platform != platform || s.Status != attest.StatusExecuted || len(s.Runs) != 1 || s.Runs[0].DiffDigest == "" {
			t.Errorf("%s: step = %+v", platform, s)
		}
		if !argvContains(p, s.StepID, n) {
			t.Errorf("%s: no process of the RUN has its command in argv: %+v", platform, p.MonitorLog.Process)
		}
		for _, pr := range p.MonitorLog.Process {
			if pr.Step != s.StepID {
				t.Errorf("%s: process of another step %s: %+v", platform, pr.Step, pr)
			}
		}
		if len(p.MonitorLog.Process) > 0 {
			first := p.MonitorLog.Process[0]
			t.Logf("%s: first process binary %q argv %q", platform, first.Binary, first.Argv)
		}
		f, ok := fileAccess(p, s.StepID, out, attest.SourceDiff)
		sum := sha256.Sum256([]byte(machine))
		if !ok || f.Digest["sha256"] != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: diff entry for %s = %+v (found %v), want the digest of %q", platform, out, f, ok, machine)
		}
		for _, fa := range p.MonitorLog.FileAccess {
			if fa.Annotations.Step != s.StepID {
				t.Errorf("%s: file access of another step: %+v", platform, fa)
			}
		}
	}
	if len(stepIDs) == 2 && stepIDs["linux/amd64"] == stepIDs[foreignPlatform] {
		t.Errorf("both platforms' RUNs have step ID %s", stepIDs["linux/amd64"])
	}

	args := []string{"verify", ref, "--key", l.TracerPub}
	vout, code := runCLI(t, l, args...)
	expectCode(t, vout, code, 0, args...)
	for platform := range want {
		if !strings.Contains(vout, "PASS  "+ref+" "+platform) {
			t.Errorf("verify output lacks a PASS for %s:\n%s", platform, vout)
		}
	}
}

func platformKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
