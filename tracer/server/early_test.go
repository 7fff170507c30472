package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/tracer/probe"
)

// TestEarlyLayoutOutlivesTheMount: the container's overlay is found when
// Early sees the cgroup created; by the time Handle gets the same mkdir
// (behind a backlog) BuildKit has unmounted it. The step's diff must still
// be computed from the upper directory found early, and its build is the
// one the bundle read early names.
func TestEarlyLayoutOutlivesTheMount(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir, time.Second)
	bundle := filepath.Join(dir, "executor", "c1")
	upper := filepath.Join(dir, "upper")
	for _, d := range []string{filepath.Join(bundle, "rootfs"), upper, filepath.Join(dir, "lower")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"process":{"env":["TRACEPARENT=00-`+buildA+`-00f067aa0ba902b7-01"]},"mounts":[{"destination":"/proc"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(upper, "made"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	mi := filepath.Join(dir, "mountinfo")
	line := "45 27 0:39 / " + filepath.Join(bundle, "rootfs") + " rw,relatime - overlay overlay rw,lowerdir=" +
		filepath.Join(dir, "lower") + ",upperdir=" + upper + ",workdir=" + filepath.Join(dir, "work") + "\n"
	if err := os.WriteFile(mi, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}

	path := "/" + steptag.CgroupParent(steptag.NewID([]byte("early"))) + "/buildkit/c1"
	f.srv.Early(88, path)
	// The step ends and BuildKit unmounts the root before Handle catches up.
	if err := os.WriteFile(mi, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, e := range []probe.Event{
		{Kind: probe.KindCgroupMkdir, Time: now, Cgroup: &probe.CgroupInfo{Path: path}},
		{Kind: probe.KindExec, Time: now, PID: 4190101, PPID: 4190100, Exec: &probe.ExecInfo{Binary: "/bin/sh", Argv: []string{"sh"}, FirstInCgroup: true}},
		{Kind: probe.KindExit, Time: now.Add(time.Millisecond), PID: 4190101, Exit: &probe.ExitInfo{}},
		{Kind: probe.KindCgroupRmdir, Time: now.Add(2 * time.Millisecond), Cgroup: &probe.CgroupInfo{Path: path}},
	} {
		e.CgroupID = 88
		f.srv.Handle(e)
	}
	b := f.get(buildA, time.Second)
	if len(b.Steps) != 1 {
		t.Fatalf("want 1 step, got %d", len(b.Steps))
	}
	if b.Steps[0].Attribution != trace.AttributionBundle {
		t.Errorf("attribution %q", b.Steps[0].Attribution)
	}
	d := b.Steps[0].Diff
	if d.Error != "" || d.Digest == "" {
		t.Fatalf("diff not computed from the early layout: %+v", d)
	}
	if len(d.Changes) != 1 || d.Changes[0].Path != "/made" || d.Changes[0].Change != trace.ChangeCreated {
		t.Errorf("changes = %+v, want /made created", d.Changes)
	}
}

// TestUnattributedStepIsStored: a container without a readable bundle is
// sealed and stored under its step ID, never dropped.
func TestUnattributedStepIsStored(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir, time.Second)
	step := steptag.NewID([]byte("unattributed"))
	path := "/" + steptag.CgroupParent(step) + "/buildkit/c2"
	now := time.Now()
	for _, e := range []probe.Event{
		{Kind: probe.KindCgroupMkdir, Time: now, Cgroup: &probe.CgroupInfo{Path: path}},
		{Kind: probe.KindExec, Time: now, PID: 4190201, PPID: 4190200, Exec: &probe.ExecInfo{Binary: "/bin/sh", Argv: []string{"sh"}, FirstInCgroup: true}},
		{Kind: probe.KindCgroupRmdir, Time: now.Add(time.Millisecond), Cgroup: &probe.CgroupInfo{Path: path}},
	} {
		e.CgroupID = 89
		f.srv.Handle(e)
	}
	f.srv.WaitSeals()
	steps, err := f.srv.cfg.Store.UnattributedSteps([]string{step, "other"})
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 1 || steps[0].StepID != step || steps[0].Attribution != trace.AttributionNone || steps[0].Completeness.Complete {
		t.Fatalf("unattributed steps = %+v", steps)
	}
}

// TestLostMkdirIsSealed: the main ring lost a container's mkdir record but
// the control ring reported it; at its rmdir the step is sealed as lost
// (incomplete), under the build its bundle names, rather than absent.
func TestLostMkdirIsSealed(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir, time.Second)
	bundle := filepath.Join(dir, "executor", "c3")
	upper := filepath.Join(dir, "upper")
	for _, d := range []string{filepath.Join(bundle, "rootfs"), upper, filepath.Join(dir, "lower")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"process":{"env":["TRACEPARENT=00-`+buildA+`-00f067aa0ba902b7-01"]}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	line := "45 27 0:39 / " + filepath.Join(bundle, "rootfs") + " rw,relatime - overlay overlay rw,lowerdir=" +
		filepath.Join(dir, "lower") + ",upperdir=" + upper + ",workdir=" + filepath.Join(dir, "work") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "mountinfo"), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	step := steptag.NewID([]byte("lost"))
	path := "/" + steptag.CgroupParent(step) + "/buildkit/c3"
	f.srv.Early(90, path)
	f.srv.Handle(probe.Event{Kind: probe.KindCgroupRmdir, CgroupID: 90, Time: time.Now(), Cgroup: &probe.CgroupInfo{Path: path}})
	b := f.get(buildA, time.Second)
	if len(b.Steps) != 1 {
		t.Fatalf("want the lost step, got %d steps", len(b.Steps))
	}
	c := b.Steps[0].Completeness
	if c.Complete || !strings.Contains(strings.Join(c.Reasons, "\n"), "creation record was lost") {
		t.Errorf("completeness %+v", c)
	}
}
