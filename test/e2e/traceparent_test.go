package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/test/lab"
)

// TestSharedTraceparent: a CI job that exports one TRACEPARENT for all its
// builds gets each build traced and verified on its own; the second build's
// trace holds none of the first build's containers.
func TestSharedTraceparent(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tp := "00-" + randHex(16) + "-" + randHex(8) + "-01"
	var refs []string
	for i, body := range []string{"RUN echo first " + randHex(8) + " > /a; sleep 1", "RUN echo second " + randHex(8) + " > /b; sleep 1"} {
		dir := lab.WriteContext(t, map[string]string{"Dockerfile": "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\n" + body + "\n"})
		ref := l.Ref("sharedtp")
		cmd := exec.CommandContext(ctx, "docker", "buildx", "build", "--builder", l.Builder, "--progress", "plain", "-t", ref, "--push", dir)
		cmd.Env = append(os.Environ(), "TRACEPARENT="+tp)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %d with a shared TRACEPARENT: %v\n%s", i+1, err, out)
		}
		refs = append(refs, ref)
	}
	for _, ref := range refs {
		out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub)
		expectCode(t, out, code, 0, "verify", ref)
	}
	p := runtimeTrace(t, ctx, l, refs[1])
	if len(p.Buildtrace.Steps) != 1 || !strings.Contains(p.Buildtrace.Steps[0].Instruction, "second") || len(p.MonitorLog.Process) == 0 {
		t.Fatalf("the second build's trace: %+v", p.Buildtrace.Steps)
	}
	for _, pr := range p.MonitorLog.Process {
		if strings.Contains(strings.Join(pr.Argv, " "), "first") {
			t.Fatalf("the second build's trace holds the first build's process %+v", pr)
		}
	}
}
