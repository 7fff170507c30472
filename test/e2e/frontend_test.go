package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/registry"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
	"github.com/buildtrace/buildtrace/test/lab"
)

// These tests build through the buildtrace frontend image the lab publishes
// (# syntax=<registry>/buildtrace/frontend:dev) with docker buildx, then read
// the pushed index and its runtime-trace attestation back.

// dockerfile prefixes body with the frontend syntax line.
func dockerfile(l *lab.Lab, body string) string {
	return "# syntax=" + l.Frontend + "\n" + strings.ReplaceAll(body, "BASE", l.BaseImage)
}

// runtimeTraces returns the pushed image and its runtime-trace predicate for
// each image manifest, keyed by "os/arch".
func runtimeTraces(t *testing.T, ctx context.Context, l *lab.Lab, ref string) (*registry.Image, map[string]*attest.Predicate) {
	t.Helper()
	img := l.Image(t, ctx, ref)
	out := map[string]*attest.Predicate{}
	for _, m := range img.Manifests {
		att, ok := img.ForManifest(m.Descriptor.Digest)
		if !ok {
			t.Fatalf("no attestation manifest for %s", m.Descriptor.Digest)
		}
		st, ok := att.Statement(attest.PredicateType)
		if !ok {
			t.Fatalf("attestation of %s has no %s statement: %+v", m.Descriptor.Digest, attest.PredicateType, att.Statements)
		}
		p, err := attest.Parse(st.Data)
		if err != nil {
			t.Fatalf("runtime trace of %s: %v", m.Descriptor.Digest, err)
		}
		out[m.Platform.OS+"/"+m.Platform.Architecture] = p
	}
	return img, out
}

func single(t *testing.T, preds map[string]*attest.Predicate) *attest.Predicate {
	t.Helper()
	if len(preds) != 1 {
		t.Fatalf("want one platform, got %d", len(preds))
	}
	for _, p := range preds {
		return p
	}
	return nil
}

func stepByInstruction(t *testing.T, p *attest.Predicate, prefix string) attest.Step {
	t.Helper()
	for _, s := range p.Buildtrace.Steps {
		if strings.HasPrefix(s.Instruction, prefix) {
			return s
		}
	}
	t.Fatalf("no step with instruction %q in %+v", prefix, p.Buildtrace.Steps)
	return attest.Step{}
}

// argvContains reports whether a process of step ran with s in its argv
// (in its last or an earlier exec).
func argvContains(p *attest.Predicate, step, s string) bool {
	for _, pr := range p.MonitorLog.Process {
		if pr.Step != step {
			continue
		}
		if strings.Contains(strings.Join(pr.Argv, " "), s) {
			return true
		}
		// A process that exec'd again keeps its earlier images in Execs.
		for _, e := range pr.Execs {
			if strings.Contains(strings.Join(e.Argv, " "), s) {
				return true
			}
		}
	}
	return false
}

func fileAccess(p *attest.Predicate, step, path, source string) (attest.ResourceDescriptor, bool) {
	for _, f := range p.MonitorLog.FileAccess {
		if f.Annotations.Step == step && f.Name == path && f.Annotations.Source == source {
			return f, true
		}
	}
	return attest.ResourceDescriptor{}, false
}

func TestFrontendAttestsRuns(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n := randHex(8)
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, `FROM BASE
RUN echo `+n+` > /greeting && cat /greeting
`)})
	ref := l.Ref("frontend-run")
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true, Args: []string{"--attest", "type=provenance,mode=max"}})

	img, preds := runtimeTraces(t, ctx, l, ref)
	att, _ := img.ForManifest(img.Manifests[0].Descriptor.Digest)
	if _, ok := att.Statement("https://slsa.dev/provenance/v1"); !ok {
		if _, ok := att.Statement("https://slsa.dev/provenance/v0.2"); !ok {
			t.Errorf("no provenance statement next to the runtime trace: %+v", att.Statements)
		}
	}
	p := single(t, preds)
	if !p.Buildtrace.Monitored || p.Buildtrace.Envelope == nil || p.MonitoredProcess.Event != p.Buildtrace.BuildTraceID || !tracerapi.ValidTraceID(p.MonitoredProcess.Event) {
		t.Fatalf("not a monitored trace: %+v", p.Buildtrace)
	}
	s := stepByInstruction(t, p, "RUN echo "+n)
	if s.Status != attest.StatusExecuted || len(s.Runs) != 1 || s.Runs[0].DiffDigest == "" {
		t.Fatalf("step = %+v", s)
	}
	if len(s.Locations) != 1 || s.Locations[0].StartLine != 3 {
		t.Errorf("step location = %+v, want Dockerfile line 3", s.Locations)
	}
	if !argvContains(p, s.StepID, n) {
		t.Errorf("no process of the step has the command in its argv: %+v", p.MonitorLog.Process)
	}
	f, ok := fileAccess(p, s.StepID, "/greeting", attest.SourceDiff)
	sum := sha256.Sum256([]byte(n + "\n"))
	if !ok || f.Digest["sha256"] != hex.EncodeToString(sum[:]) {
		t.Errorf("diff entry for /greeting = %+v (found %v), want sha256 %x", f, ok, sum)
	}
	// The embedded payload is the same build's trace.
	b, err := attest.DecodeEnvelope(p.Buildtrace.Envelope)
	if err != nil || b.BuildTraceID != p.Buildtrace.BuildTraceID {
		t.Errorf("embedded envelope: %v, %v", b, err)
	}
}

func TestFrontendMultiStage(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n := randHex(8)
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, `FROM BASE AS build
RUN echo `+n+` > /out
FROM BASE
COPY --from=build /out /out
RUN cat /out > /copied-`+n+`
`)})
	ref := l.Ref("frontend-multistage")
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true, Args: []string{"--attest", "type=provenance,mode=max"}})
	_, preds := runtimeTraces(t, ctx, l, ref)
	p := single(t, preds)
	first := stepByInstruction(t, p, "RUN echo "+n)
	second := stepByInstruction(t, p, "RUN cat /out")
	if first.Stage != "build" || second.Stage != "stage-1" {
		t.Errorf("stages = %q, %q", first.Stage, second.Stage)
	}
	for _, s := range []attest.Step{first, second} {
		if s.Status != attest.StatusExecuted {
			t.Errorf("step %q status %s", s.Instruction, s.Status)
		}
	}
	if _, ok := fileAccess(p, first.StepID, "/out", attest.SourceDiff); !ok {
		t.Errorf("build stage's diff lacks /out")
	}
	if _, ok := fileAccess(p, second.StepID, "/copied-"+n, attest.SourceDiff); !ok {
		t.Errorf("final stage's diff lacks /copied-%s; its runs: %+v", n, second.Runs)
	}
}

func TestFrontendFailingRun(t *testing.T) {
	l := lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n := randHex(8)
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, `FROM BASE
RUN echo `+n+` && exit 3
`)})
	ref := l.Ref("frontend-fail")
	// allow: this test is about the RUN's error reaching the user, with or
	// without a tracer.
	res := l.Buildx(ctx, lab.Build{Context: dir, Tag: ref, Push: true, Args: []string{"--build-arg", "BUILDTRACE_UNMONITORED=allow"}})
	if res.Err == nil {
		t.Fatalf("failing RUN built:\n%s", res.Output)
	}
	if !strings.Contains(res.Output, "exit code: 3") || !strings.Contains(res.Output, "echo "+n) {
		t.Errorf("output lacks the RUN's error:\n%s", res.Output)
	}
	if _, err := registry.New(registry.Options{}).Read(ctx, ref); err == nil {
		t.Errorf("%s was pushed although the build failed", ref)
	}
}

func TestFrontendSyntaxError(t *testing.T) {
	l := lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, `FROM BASE
RUNN echo nope
`)})
	res := l.Buildx(ctx, lab.Build{Context: dir, Args: []string{"--build-arg", "BUILDTRACE_UNMONITORED=allow"}})
	if res.Err == nil {
		t.Fatalf("Dockerfile with a syntax error built:\n%s", res.Output)
	}
	if !strings.Contains(res.Output, "unknown instruction: RUNN") {
		t.Errorf("output lacks the stock parse error:\n%s", res.Output)
	}
}

func TestFrontendCachedRebuild(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n := randHex(8)
	dir := lab.WriteContext(t, map[string]string{
		"Dockerfile": dockerfile(l, `FROM BASE
COPY in.txt /in.txt
RUN cat /in.txt > /a
RUN echo `+n+` > /b
`),
		"in.txt": n + "\n",
	})
	first := l.Ref("frontend-cache")
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: first, Push: true})
	second := l.Ref("frontend-cache")
	res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: second, Push: true})
	for _, run := range []string{"RUN cat /in.txt > /a", "RUN echo " + n + " > /b"} {
		if !cachedInOutput(res.Output, run) {
			t.Errorf("%q was not CACHED on rebuild:\n%s", run, res.Output)
		}
	}

	_, p1 := runtimeTraces(t, ctx, l, first)
	_, p2 := runtimeTraces(t, ctx, l, second)
	a, b := single(t, p1), single(t, p2)
	if a.Buildtrace.BuildTraceID == b.Buildtrace.BuildTraceID {
		t.Errorf("both builds have trace ID %s", a.Buildtrace.BuildTraceID)
	}
	for _, s := range a.Buildtrace.Steps {
		if s.Status != attest.StatusExecuted {
			t.Errorf("first build: step %q is %s", s.Instruction, s.Status)
		}
	}
	if len(b.Buildtrace.Steps) != 2 {
		t.Fatalf("rebuild attests %d steps, want 2", len(b.Buildtrace.Steps))
	}
	for i, s := range b.Buildtrace.Steps {
		if s.Status != attest.StatusCached || len(s.Runs) != 0 {
			t.Errorf("rebuild: step %q is %s with %d runs, want cached", s.Instruction, s.Status, len(s.Runs))
		}
		// Same Dockerfile and context: same step IDs in a new session.
		if s.StepID != a.Buildtrace.Steps[i].StepID {
			t.Errorf("step ID changed across sessions: %s -> %s", a.Buildtrace.Steps[i].StepID, s.StepID)
		}
	}
	if len(b.MonitorLog.Process) != 0 || len(b.MonitorLog.FileAccess) != 0 || len(b.MonitorLog.Network) != 0 {
		t.Errorf("rebuild claims observations for cached steps: %+v", b.MonitorLog)
	}
}

// cachedInOutput reports whether buildx's plain progress shows the vertex
// whose name ends in run as CACHED.
func cachedInOutput(out, run string) bool {
	var vertex string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "#") && strings.HasSuffix(line, run) {
			vertex, _, _ = strings.Cut(line, " ")
			continue
		}
		if vertex != "" && line == vertex+" CACHED" {
			return true
		}
	}
	return false
}

func TestFrontendConcurrentBuilds(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	builds := concurrentBuilds(t, ctx, l, "frontend-concurrent")
	var stepIDs []string
	for i, b := range builds {
		stepIDs = append(stepIDs, b.step.StepID)
		other := builds[1-i]
		if strings.Contains(b.pred.Buildtrace.BuildTraceID, other.id) || b.pred.Buildtrace.BuildTraceID == "" {
			t.Errorf("build %d: bad trace ID %q", i, b.pred.Buildtrace.BuildTraceID)
		}
	}
	if len(stepIDs) == 2 && stepIDs[0] != stepIDs[1] {
		t.Logf("note: step IDs differ across contexts (%s, %s)", stepIDs[0], stepIDs[1])
	}
}

// concurrentBuild is one of concurrentBuilds' two builds.
type concurrentBuild struct {
	id, ref string
	pred    *attest.Predicate
	step    attest.Step // the RUN
}

// concurrentBuilds builds one Dockerfile from two contexts at once through
// l's builder. The RUN has the same step ID in both builds, so only the
// build trace ID keeps their observations apart: each image's trace must
// hold one executed run of the RUN and its own /copy, not the other's.
func concurrentBuilds(t *testing.T, ctx context.Context, l *lab.Lab, name string) []*concurrentBuild {
	t.Helper()
	df := dockerfile(l, `FROM BASE
COPY id.txt /id.txt
RUN cat /id.txt > /copy && sleep 2
`)
	builds := []*concurrentBuild{{id: randHex(8)}, {id: randHex(8)}}
	res := make([]lab.Result, len(builds))
	var wg sync.WaitGroup
	for i, b := range builds {
		b.ref = l.Ref(name)
		dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "id.txt": b.id + "\n"})
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = l.Buildx(ctx, lab.Build{Context: dir, Tag: b.ref, Push: true})
		}()
	}
	wg.Wait()
	for i, b := range builds {
		if res[i].Err != nil {
			t.Fatalf("build %d: %v\n%s", i, res[i].Err, res[i].Output)
		}
		_, preds := runtimeTraces(t, ctx, l, b.ref)
		b.pred = single(t, preds)
		b.step = stepByInstruction(t, b.pred, "RUN cat /id.txt")
		if b.step.Status != attest.StatusExecuted || len(b.step.Runs) != 1 {
			t.Errorf("build %d: step %+v, want one executed run", i, b.step)
			continue
		}
		sum := sha256.Sum256([]byte(b.id + "\n"))
		var copies int
		for _, f := range b.pred.MonitorLog.FileAccess {
			if f.Name == "/copy" && f.Annotations.Source == attest.SourceDiff {
				copies++
				if f.Digest["sha256"] != hex.EncodeToString(sum[:]) {
					t.Errorf("build %d: /copy digest %s is not of its own id.txt", i, f.Digest["sha256"])
				}
			}
		}
		if copies != 1 {
			t.Errorf("build %d: %d diff entries for /copy, want 1 (its own)", i, copies)
		}
	}
	return builds
}

func TestFrontendUnmonitored(t *testing.T) {
	l := lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	n := randHex(8)
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, `FROM BASE
RUN echo `+n+`
`)})

	// Default policy: no tracer, no build; the error names the address.
	res := l.Buildx(ctx, lab.Build{Context: dir, Args: []string{"--build-arg", "BUILDTRACE_TRACER=" + dead}})
	if res.Err == nil || !strings.Contains(res.Output, dead) || !strings.Contains(res.Output, "BUILDTRACE_UNMONITORED") {
		t.Errorf("build without tracer: err=%v\n%s", res.Err, res.Output)
	}

	ref := l.Ref("frontend-unmonitored")
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true, Args: []string{
		"--build-arg", "BUILDTRACE_TRACER=" + dead, "--build-arg", "BUILDTRACE_UNMONITORED=allow",
	}})
	_, preds := runtimeTraces(t, ctx, l, ref)
	p := single(t, preds)
	if p.Buildtrace.Monitored || p.Buildtrace.Complete || p.Buildtrace.Envelope != nil || !strings.Contains(p.Buildtrace.UnmonitoredReason, dead) {
		t.Errorf("unmonitored attestation = %+v", p.Buildtrace)
	}
	if !tracerapi.ValidTraceID(p.MonitoredProcess.Event) {
		t.Errorf("event %q is not the build trace ID", p.MonitoredProcess.Event)
	}
	s := stepByInstruction(t, p, "RUN echo "+n)
	if s.Status != attest.StatusUnknown || len(p.MonitorLog.Process) != 0 {
		t.Errorf("unmonitored step = %+v, log %+v", s, p.MonitorLog)
	}
}

// TestFrontendLargeTrace: a RUN that creates and deletes 50,000 files
// yields an attestation of tens of MiB, more than an LLB definition can
// carry inline (one gRPC message, 16 MiB). The build must still succeed,
// the attestation must hold every file operation, and verify must pass.
func TestFrontendLargeTrace(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := lab.WriteContext(t, map[string]string{
		"Dockerfile": dockerfile(l, "FROM BASE\nCOPY files.tar /files.tar\nRUN --mount=type=tmpfs,target=/x "+untarRunTmpfs+" # "+randHex(8)+"\n"),
		"files.tar":  string(smallFilesTar(t)),
	})
	ref := l.Ref("frontend-large")
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
	_, preds := runtimeTraces(t, ctx, l, ref)
	p := single(t, preds)
	step := stepByInstruction(t, p, "RUN --mount=type=tmpfs")
	if step.Status != attest.StatusExecuted {
		t.Fatalf("step status %s", step.Status)
	}
	var ops int
	for _, fa := range p.MonitorLog.FileAccess {
		if fa.Annotations.Source == attest.SourceSyscall && fa.Annotations.Step == step.StepID {
			ops++
		}
	}
	if ops < 2*untarFiles {
		t.Errorf("attestation holds %d file operations of the step, want at least %d (create and unlink of each file)", ops, 2*untarFiles)
	}
	if out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub); code != 0 {
		t.Errorf("verify exited %d:\n%s", code, out)
	}
}

// TestFrontendSubrequests: the stock frontend's subrequests answer through
// the buildtrace frontend as they do without it (--call targets, --call
// outline, --check lint), and nothing is built for them.
func TestFrontendSubrequests(t *testing.T) {
	l := lab.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n := randHex(8)
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, `FROM BASE AS base
ARG GREETING_`+n+`=hi
RUN echo $GREETING_`+n+`
from base as final
RUN true
`)})
	for _, c := range []struct {
		args []string
		want []string
		fail bool
	}{
		{args: []string{"--call", "targets"}, want: []string{"base", "final (default)"}},
		{args: []string{"--call", "outline"}, want: []string{"TARGET: final", "GREETING_" + n}},
		{args: []string{"--check"}, want: []string{"ConsistentInstructionCasing"}, fail: true},
	} {
		res := l.Buildx(ctx, lab.Build{Context: dir, Args: c.args})
		if (res.Err != nil) != c.fail {
			t.Errorf("%v: err = %v, want failure %v\n%s", c.args, res.Err, c.fail, res.Output)
		}
		for _, w := range c.want {
			if !strings.Contains(res.Output, w) {
				t.Errorf("%v: output lacks %q:\n%s", c.args, w, res.Output)
			}
		}
		if strings.Contains(res.Output, "[buildtrace] runtime trace") {
			t.Errorf("%v: a subrequest produced an attestation:\n%s", c.args, res.Output)
		}
	}
}
