package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/test/lab"
)

// TestDockerContainerDriver builds through buildx's docker-container driver
// (hack/lab-dc.sh): buildkitd in a privileged container of Debian's Docker
// Engine, its build containers nested below that container's cgroup and
// mounted in its mount namespace, and buildtraced run from its image
// (Dockerfile.tracer) as a privileged host-PID container. The checks are
// those the remote builder passes: a traced build's attestation shows its
// processes, files and egress, verify passes, concurrent builds stay apart;
// and a builder on Docker's default bridge is traced and verifies.
func TestDockerContainerDriver(t *testing.T) {
	l := lab.Require(t)
	dc := l.RequireDC(t)
	dc.Host.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	t.Run("traced", func(t *testing.T) {
		h := dc.Host
		// Egress from the RUN step: the host-network builder's steps share
		// the host's network namespace, where this server listens.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		payload := "payload-" + randHex(8)
		go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, payload) }))
		port := ln.Addr().(*net.TCPAddr).Port
		n := randHex(8)
		dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(h, fmt.Sprintf(`FROM BASE
RUN echo %s > /greeting && wget -q -O /fetched http://127.0.0.1:%d/data && cat /greeting
`, n, port))})
		ref := h.Ref("dc-run")
		h.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
		_, preds := runtimeTraces(t, ctx, h, ref)
		p := single(t, preds)
		if !p.Buildtrace.Monitored || p.Buildtrace.Envelope == nil {
			t.Fatalf("not a monitored trace: %+v", p.Buildtrace)
		}
		s := stepByInstruction(t, p, "RUN echo "+n)
		if s.Status != attest.StatusExecuted || len(s.Runs) != 1 || s.Runs[0].DiffDigest == "" {
			t.Fatalf("step = %+v", s)
		}
		if !argvContains(p, s.StepID, n) || !argvContains(p, s.StepID, "wget") {
			t.Errorf("the step's processes lack its commands: %+v", p.MonitorLog.Process)
		}
		sum := sha256.Sum256([]byte(n + "\n"))
		if f, ok := fileAccess(p, s.StepID, "/greeting", attest.SourceDiff); !ok || f.Digest["sha256"] != hex.EncodeToString(sum[:]) {
			t.Errorf("diff entry for /greeting = %+v (found %v), want sha256 %x", f, ok, sum)
		}
		fsum := sha256.Sum256([]byte(payload))
		if f, ok := fileAccess(p, s.StepID, "/fetched", attest.SourceDiff); !ok || f.Digest["sha256"] != hex.EncodeToString(fsum[:]) {
			t.Errorf("diff entry for /fetched = %+v (found %v)", f, ok)
		}
		var egress bool
		for _, e := range p.MonitorLog.Network {
			if e.IP == "127.0.0.1" && int(e.Port) == port && e.InvokingProcess.Step == s.StepID && e.BytesReceived > 0 {
				egress = true
			}
		}
		if !egress {
			t.Errorf("no egress to 127.0.0.1:%d from the step in %+v", port, p.MonitorLog.Network)
		}
		// The host view: PIDs the host's /proc knows, not the container's.
		for _, pr := range p.MonitorLog.Process {
			if pr.Step == s.StepID && pr.PID < 100 {
				t.Errorf("process %d (%v) has a PID from inside a container", pr.PID, pr.Argv)
			}
		}
		if out, code := runCLI(t, h, "verify", ref, "--key", h.TracerPub); code != 0 {
			t.Errorf("verify exited %d:\n%s", code, out)
		}
	})

	t.Run("concurrent builds stay apart", func(t *testing.T) {
		h := dc.Host
		var traceIDs []string
		for i, b := range concurrentBuilds(t, ctx, h, "dc-concurrent") {
			traceIDs = append(traceIDs, b.pred.Buildtrace.BuildTraceID)
			if out, code := runCLI(t, h, "verify", b.ref, "--key", h.TracerPub); code != 0 {
				t.Errorf("build %d: verify exited %d:\n%s", i, code, out)
			}
		}
		if len(traceIDs) == 2 && traceIDs[0] == traceIDs[1] {
			t.Errorf("both builds have trace ID %s", traceIDs[0])
		}
	})

	// The tracer container is the lab's only tracer meanwhile: it follows
	// the host's buildkitd too, through the host's mount namespace.
	t.Run("remote builder, tracer from its image", func(t *testing.T) {
		n := randHex(8)
		dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, `FROM BASE
RUN echo `+n+` > /greeting
`)})
		ref := l.Ref("dc-remote")
		l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
		_, preds := runtimeTraces(t, ctx, l, ref)
		p := single(t, preds)
		s := stepByInstruction(t, p, "RUN echo "+n)
		if s.Status != attest.StatusExecuted {
			t.Fatalf("step %+v", s)
		}
		if _, ok := fileAccess(p, s.StepID, "/greeting", attest.SourceDiff); !ok {
			t.Errorf("diff lacks /greeting: %+v", s.Runs)
		}
		if out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub); code != 0 {
			t.Errorf("verify exited %d:\n%s", code, out)
		}
	})

	t.Run("bridge", func(t *testing.T) {
		b := dc.Bridge
		n := randHex(8)
		// The same Dockerfile: buildkitd pulls 127.0.0.1:5000 images through
		// its mirror on the gateway; the frontend is told where the tracer is.
		dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, `FROM BASE
RUN echo `+n+` > /greeting && cat /greeting
`)})
		push := b.Ref("dc-bridge")
		b.MustBuild(t, ctx, lab.Build{Context: dir, Tag: push, Push: true, Args: []string{"--build-arg", "BUILDTRACE_TRACER=" + dc.TracerOnGW}})
		// One storage behind both listeners: read it back on loopback.
		ref := l.Registry + strings.TrimPrefix(push, b.Registry)
		_, preds := runtimeTraces(t, ctx, l, ref)
		p := single(t, preds)
		s := stepByInstruction(t, p, "RUN echo "+n)
		if !p.Buildtrace.Monitored || s.Status != attest.StatusExecuted || !argvContains(p, s.StepID, n) {
			t.Fatalf("bridge build not traced: %+v\nstep %+v", p.Buildtrace, s)
		}
		if _, ok := fileAccess(p, s.StepID, "/greeting", attest.SourceDiff); !ok {
			t.Errorf("bridge build's diff lacks /greeting")
		}
		if out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub); code != 0 {
			t.Errorf("verify exited %d:\n%s", code, out)
		}

		// The bridge listener is reachable from every container on the
		// bridge: one that is not a build's frontend gets nothing.
		out, err := exec.CommandContext(ctx, "docker", "run", "--rm", "--entrypoint", "wget", dc.BuildkitImage,
			"-q", "-O-", "http://"+dc.TracerOnGW+"/v1/builds/"+p.Buildtrace.BuildTraceID).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "403") || strings.Contains(string(out), "envelope") {
			t.Errorf("a container on the bridge asked for a build's trace: err=%v\n%s", err, out)
		}
	})

	// A hostile RUN step, nested below buildkitd's container, on either
	// network: every request to the tracer is refused.
	for _, c := range []struct {
		name string
		b    *lab.Lab
		addr string
	}{{"host network", dc.Host, l.TracerAddr}, {"bridge", dc.Bridge, dc.TracerOnGW}} {
		t.Run("RUN step refused, "+c.name, func(t *testing.T) {
			script := `id=$(echo $TRACEPARENT | cut -d- -f2)
wget -q -O- "http://` + c.addr + `/v1/builds/$id" 2>&1 | sed "s/^/GET-ANSWER /"
for p in "/v1/builds/$id/plan" "/v1/builds/$id/seal" ; do wget -q -O- --post-data '{"id":"x","platform":"linux/amd64","wait":"1s"}' "http://` + c.addr + `$p" 2>&1 | sed "s/^/POST-ANSWER /"; done
echo STEP-DONE`
			dir := lab.WriteContext(t, map[string]string{
				"Dockerfile": dockerfile(l, "FROM BASE\nRUN "+strings.ReplaceAll(script, "\n", " ; ")+" ; echo "+randHex(8)+"\n"),
			})
			res := c.b.MustBuild(t, ctx, lab.Build{Context: dir, Args: []string{"--build-arg", "BUILDTRACE_TRACER=" + c.addr}})
			if !strings.Contains(res.Output, "STEP-DONE") {
				t.Fatalf("the step did not run:\n%s", res.Output)
			}
			requireRefusals(t, res.Output, 3)
		})
	}
}
