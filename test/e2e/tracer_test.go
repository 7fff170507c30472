package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/test/lab"
)

// These tests drive the tracer with the stock Dockerfile frontend and
// buildx's --cgroup-parent, the way the buildtrace frontend tags a step,
// and pick the build trace ID themselves through TRACEPARENT, which buildx
// hands to the build.

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// tracedBuild is one `docker buildx build` with a chosen trace ID and step.
type tracedBuild struct {
	traceID string
	stepID  string
	dir     string
}

func newTracedBuild(t *testing.T, l *lab.Lab, run string) tracedBuild {
	t.Helper()
	df := fmt.Sprintf("FROM %s\nRUN %s\n", l.BaseImage, run)
	return tracedBuild{
		traceID: randHex(16),
		stepID:  steptag.NewID([]byte(t.Name() + randHex(8))),
		dir:     lab.WriteContext(t, map[string]string{"Dockerfile": df}),
	}
}

func (b tracedBuild) run(ctx context.Context, l *lab.Lab) lab.Result {
	cmd := []string{"buildx", "build", "--builder", l.Builder, "--progress", "plain", "--no-cache",
		"--cgroup-parent", steptag.CgroupParent(b.stepID), b.dir}
	c := exec.CommandContext(ctx, "docker", cmd...)
	c.Env = append(os.Environ(), "TRACEPARENT=00-"+b.traceID+"-"+randHex(8)+"-01")
	start := time.Now()
	out, err := c.CombinedOutput()
	res := lab.Result{Output: string(out), Duration: time.Since(start)}
	if err != nil {
		res.Err = fmt.Errorf("docker %s: %w", strings.Join(cmd, " "), err)
	}
	return res
}

// waitRunning waits (up to a minute) until the step's container cgroup
// exists: runc has started it.
func (b tracedBuild) waitRunning(t *testing.T) {
	t.Helper()
	pattern := filepath.Join("/sys/fs/cgroup/unified", steptag.CgroupParent(b.stepID), "buildkit", "*")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the step's container never started (%s)", pattern)
		}
	}
}

func tracerLab(t *testing.T) *lab.Lab {
	l := lab.Require(t)
	l.RequireTracer(t)
	return l
}

func argvHas(p trace.Process, s string) bool {
	return slices.ContainsFunc(p.Argv, func(a string) bool { return strings.Contains(a, s) })
}

func findProcess(s *trace.Step, pred func(trace.Process) bool) (trace.Process, bool) {
	for _, p := range s.Processes {
		if pred(p) {
			return p, true
		}
	}
	return trace.Process{}, false
}

func findFileOp(s *trace.Step, op, path string) (trace.FileOp, bool) {
	for _, f := range s.Files {
		if f.Op == op && f.Path == path {
			return f, true
		}
	}
	return trace.FileOp{}, false
}

// TestTracerFollowsOneRun: one RUN fetches from the lab registry with wget,
// writes, renames and deletes files, leaves a setsid child that writes after
// its parent exited, and has a subshell exit 3. Each shows up in the step
// with the process that did it.
func TestTracerFollowsOneRun(t *testing.T) {
	l := tracerLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b := newTracedBuild(t, l, `set -e; `+
		`wget -q -O /fetched http://`+l.Registry+`/v2/; `+
		`echo data > /a; mv /a /b; echo gone > /c; rm /c; `+
		`(setsid sh -c 'sleep 0.3; echo late > /late' &); `+
		`(exit 3) || echo "subshell said $?" > /sub; `+
		`sleep 1`)
	if res := b.run(ctx, l); res.Err != nil {
		t.Fatalf("%v\n%s", res.Err, res.Output)
	}
	bt := fetchSignedTrace(t, ctx, l, b.traceID)
	if len(bt.Steps) != 1 {
		t.Fatalf("want 1 step, got %d", len(bt.Steps))
	}
	s := &bt.Steps[0]
	if s.StepID != b.stepID {
		t.Errorf("step ID %s, want %s", s.StepID, b.stepID)
	}
	if !s.Completeness.Complete {
		t.Errorf("step incomplete: %+v", s.Completeness)
	}

	wget, ok := findProcess(s, func(p trace.Process) bool { return len(p.Argv) > 0 && p.Argv[0] == "wget" })
	if !ok {
		t.Fatalf("no wget process in %+v", s.Processes)
	}
	if wget.ExitCode == nil || *wget.ExitCode != 0 {
		t.Errorf("wget exit code %v", wget.ExitCode)
	}
	var reg *trace.Destination
	for i, d := range s.Network {
		if d.IP == "127.0.0.1" && d.Port == 5000 && d.Protocol == "tcp" {
			reg = &s.Network[i]
		}
	}
	if reg == nil {
		t.Fatalf("no tcp destination 127.0.0.1:5000 in %+v", s.Network)
	}
	if !slices.Contains(reg.PIDs, wget.PID) || reg.BytesSent == 0 || reg.BytesReceived == 0 {
		t.Errorf("registry destination %+v: want wget's pid %d and bytes both ways", reg, wget.PID)
	}

	// busybox sh execs the last command of a chain in place, so the RUN's
	// shell may carry its own argv only in Execs.
	shell, ok := findProcess(s, func(p trace.Process) bool {
		return p.Exec && (argvHas(p, "wget -q") || slices.ContainsFunc(p.Execs, func(e trace.Exec) bool {
			return slices.ContainsFunc(e.Argv, func(a string) bool { return strings.Contains(a, "wget -q") })
		}))
	})
	if !ok {
		t.Fatal("no exec of the RUN's shell")
	}
	for _, want := range []struct{ op, path string }{{trace.OpCreate, "/a"}, {trace.OpRename, "/a"}, {trace.OpUnlink, "/c"}} {
		f, ok := findFileOp(s, want.op, want.path)
		if !ok {
			t.Errorf("no %s %s in %+v", want.op, want.path, s.Files)
			continue
		}
		// The shell writes /a itself; mv and rm are applets busybox runs in a child.
		if want.op == trace.OpCreate && f.PID != shell.PID {
			t.Errorf("%s %s by pid %d, want the shell %d", want.op, want.path, f.PID, shell.PID)
		}
		if want.op == trace.OpRename && f.Target != "/b" {
			t.Errorf("rename target %q, want /b", f.Target)
		}
	}

	late, ok := findFileOp(s, trace.OpCreate, "/late")
	if !ok {
		t.Fatalf("the setsid child's write to /late is missing: %+v", s.Files)
	}
	writer, ok := findProcess(s, func(p trace.Process) bool { return p.PID == late.PID })
	if !ok || !argvHas(writer, "echo late") {
		t.Fatalf("/late written by pid %d, which is not the setsid child (%+v)", late.PID, writer)
	}
	parent, ok := findProcess(s, func(p trace.Process) bool { return p.PID == writer.PPID })
	if !ok || parent.End == nil || !parent.End.Before(late.Time) {
		t.Errorf("the setsid child's parent (%+v) should have exited before the write at %s", parent, late.Time)
	}

	if _, ok := findProcess(s, func(p trace.Process) bool { return p.ExitCode != nil && *p.ExitCode == 3 }); !ok {
		t.Error("no process exited with code 3 (the subshell)")
	}

	changes := map[string]string{}
	for _, c := range s.Diff.Changes {
		changes[c.Path] = c.Change
	}
	for _, p := range []string{"/fetched", "/b", "/late", "/sub"} {
		if changes[p] != trace.ChangeCreated {
			t.Errorf("diff: %s is %q, want created (diff %+v)", p, changes[p], s.Diff)
		}
	}
	for _, p := range []string{"/a", "/c"} {
		if _, ok := changes[p]; ok {
			t.Errorf("diff lists %s, which the step removed again", p)
		}
	}
	if s.Diff.Digest == "" {
		t.Errorf("no diff digest: %s", s.Diff.Error)
	}
	if s.Resources.Processes < 5 || s.Resources.WallNanos < int64(time.Second) {
		t.Errorf("resources %+v: want >= 5 processes and >= 1s wall time", s.Resources)
	}
}

// TestTracerKeepsConcurrentBuildsApart runs two builds of the same step ID
// at once; each trace holds only its own processes. A host process that
// runs meanwhile appears in neither.
func TestTracerKeepsConcurrentBuildsApart(t *testing.T) {
	l := tracerLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	markA, markB, outside := "mark-a-"+randHex(4), "mark-b-"+randHex(4), "outside-"+randHex(4)
	a := newTracedBuild(t, l, "echo "+markA+" > /mark; sleep 1.5; cat /mark")
	b := newTracedBuild(t, l, "echo "+markB+" > /mark; sleep 1.5; cat /mark")
	b.stepID = a.stepID

	var wg sync.WaitGroup
	results := make([]lab.Result, 2)
	for i, tb := range []tracedBuild{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); results[i] = tb.run(ctx, l) }()
	}
	time.Sleep(time.Second)
	if out, err := exec.Command("/bin/busybox", "sh", "-c", "echo "+outside+" > /dev/null; sleep 0.2").CombinedOutput(); err != nil {
		t.Fatalf("host process: %v %s", err, out)
	}
	wg.Wait()
	for _, r := range results {
		if r.Err != nil {
			t.Fatalf("%v\n%s", r.Err, r.Output)
		}
	}
	for _, c := range []struct {
		b          tracedBuild
		own, other string
	}{{a, markA, markB}, {b, markB, markA}} {
		bt := fetchSignedTrace(t, ctx, l, c.b.traceID)
		raw, _ := json.Marshal(bt)
		if !strings.Contains(string(raw), c.own) {
			t.Errorf("trace %s lacks its own marker %s", c.b.traceID, c.own)
		}
		if strings.Contains(string(raw), c.other) {
			t.Errorf("trace %s holds the other build's marker %s", c.b.traceID, c.other)
		}
		if strings.Contains(string(raw), outside) {
			t.Errorf("trace %s holds a host process outside any build", c.b.traceID)
		}
		if len(bt.Steps) != 1 {
			t.Errorf("trace %s: want 1 step, got %d", c.b.traceID, len(bt.Steps))
		}
	}
}

// TestTracerRestartMidStep kills buildtraced while a step runs; after the
// lab restarts it, the step is served but marked incomplete, and what ran
// after the restart is still recorded.
func TestTracerRestartMidStep(t *testing.T) {
	l := tracerLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The step outlasts the restart: loading and verifying the BPF programs
	// alone takes the daemon about 4 s here.
	b := newTracedBuild(t, l, "echo before > /before; sleep 15; echo after > /after")
	done := make(chan lab.Result, 1)
	go func() { done <- b.run(ctx, l) }()

	// Wait until the step's container runs, then kill the daemon.
	b.waitRunning(t)
	time.Sleep(500 * time.Millisecond)
	l.Kill(t, "buildtraced")
	time.Sleep(200 * time.Millisecond)
	l.Up(t)
	if res := <-done; res.Err != nil {
		t.Fatalf("%v\n%s", res.Err, res.Output)
	}
	bt := fetchSignedTrace(t, ctx, l, b.traceID)
	if len(bt.Steps) != 1 {
		t.Fatalf("want the interrupted step, got %d steps", len(bt.Steps))
	}
	s := bt.Steps[0]
	if s.Completeness.Complete || s.Completeness.FollowedFromStart {
		t.Errorf("an interrupted step must be incomplete and not followed from start: %+v", s.Completeness)
	}
	if len(s.Completeness.Reasons) == 0 {
		t.Error("incomplete step gives no reason")
	}
	if _, ok := findFileOp(&s, trace.OpCreate, "/after"); !ok {
		t.Errorf("the write after the restart is missing: %+v", s.Files)
	}
	// The processes running at the restart are adopted from /proc, and
	// their exits are seen.
	sleep, ok := findProcess(&s, func(p trace.Process) bool { return p.Adopted && strings.Join(p.Argv, " ") == "sleep 15" })
	if !ok {
		t.Fatalf("the running sleep was not adopted: %+v", s.Processes)
	}
	if sleep.ExitCode == nil || *sleep.ExitCode != 0 || sleep.Start.IsZero() || sleep.End == nil || !sleep.End.After(sleep.Start) {
		t.Errorf("adopted sleep = %+v, want a start, an end after it and exit 0", sleep)
	}
}

// TestTracerShortStepUnderLoad runs a short RUN while another build's RUN
// floods the tracer with file events (the 50,000-file untar of the
// benchmark). The short step's container is gone long before the tracer
// has read the backlog; its file-system diff must still be there, because
// the tracer finds a container's root when the kernel reports its cgroup,
// not when the event queue gets to it.
func TestTracerShortStepUnderLoad(t *testing.T) {
	l := tracerLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	heavy := tracedBuild{
		traceID: randHex(16),
		stepID:  steptag.NewID([]byte(t.Name() + randHex(8))),
		dir: lab.WriteContext(t, map[string]string{
			"Dockerfile": fmt.Sprintf("FROM %s\nCOPY files.tar /files.tar\nRUN --mount=type=tmpfs,target=/x %s\n", l.BaseImage, untarRunTmpfs),
			"files.tar":  string(smallFilesTar(t)),
		}),
	}
	quick := newTracedBuild(t, l, "echo quick > /quick-"+randHex(4))
	heavyDone := make(chan lab.Result, 1)
	go func() { heavyDone <- heavy.run(ctx, l) }()

	// Start the short step once the heavy one is busy.
	heavy.waitRunning(t)
	time.Sleep(300 * time.Millisecond)
	if res := quick.run(ctx, l); res.Err != nil {
		t.Fatalf("%v\n%s", res.Err, res.Output)
	}
	if res := <-heavyDone; res.Err != nil {
		t.Fatalf("%v\n%s", res.Err, res.Output)
	}
	bt := fetchSignedTrace(t, ctx, l, quick.traceID)
	if len(bt.Steps) != 1 {
		t.Fatalf("want the short step, got %d steps", len(bt.Steps))
	}
	s := bt.Steps[0]
	if s.Diff.Digest == "" || s.Diff.Error != "" {
		t.Fatalf("the short step lost its diff under load: %+v (completeness %+v)", s.Diff, s.Completeness)
	}
	var found bool
	for _, c := range s.Diff.Changes {
		found = found || strings.HasPrefix(c.Path, "/quick-") && c.Change == trace.ChangeCreated
	}
	if !found || !s.Completeness.Complete {
		t.Errorf("diff %+v, completeness %+v: want /quick-* created and a complete step", s.Diff.Changes, s.Completeness)
	}
	hb := fetchSignedTrace(t, ctx, l, heavy.traceID)
	if len(hb.Steps) != 1 || !hb.Steps[0].Completeness.Complete {
		t.Errorf("the heavy step should be traced completely too: %+v", hb.Steps)
	}
}
