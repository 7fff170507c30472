package server

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/tracer/probe"
)

// TestEarlyLayoutOutlivesTheMount: the container's overlay is found when
// Early sees the cgroup created; by the time Handle gets the same mkdir
// (behind a backlog) BuildKit has unmounted it. The step's diff must still
// be computed from the upper directory found early.
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
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"mounts":[{"destination":"/proc"}]}`), 0o644); err != nil {
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
		{Kind: probe.KindExec, Time: now, PID: 4190101, PPID: 4190100, Exec: &probe.ExecInfo{Binary: "/bin/sh", Argv: []string{"sh"}, TraceID: buildA, FirstInCgroup: true}},
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
	d := b.Steps[0].Diff
	if d.Error != "" || d.Digest == "" {
		t.Fatalf("diff not computed from the early layout: %+v", d)
	}
	if len(d.Changes) != 1 || d.Changes[0].Path != "/made" || d.Changes[0].Change != trace.ChangeCreated {
		t.Errorf("changes = %+v, want /made created", d.Changes)
	}
}
