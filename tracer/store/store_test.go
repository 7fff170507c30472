package store

import (
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/trace"
)

func TestPutStepsExpire(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	const a, b = "4bf92f3577b34da6a3ce929d0e0e4736", "4bf92f3577b34da6a3ce929d0e0e4737"
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Put(a, trace.Step{StepID: "s1", ContainerID: "c1"}, now.Add(-8*24*time.Hour)))
	must(s.Put(a, trace.Step{StepID: "s2", ContainerID: "c1"}, now.Add(-8*24*time.Hour)))
	must(s.Put(b, trace.Step{StepID: "s1", ContainerID: "c2", Cgroup: "/x"}, now))
	must(s.Close())

	// Reopen: what was put survives.
	s, err = Open(dir)
	must(err)
	defer s.Close()
	got, err := s.Steps(a)
	must(err)
	if len(got) != 2 || got[0].StepID != "s1" || got[1].StepID != "s2" {
		t.Fatalf("steps of a = %+v", got)
	}
	n, err := s.Expire(now.Add(-DefaultRetention))
	must(err)
	if n != 1 {
		t.Errorf("expired %d builds, want 1", n)
	}
	if got, _ := s.Steps(a); len(got) != 0 {
		t.Errorf("expired build still has %d steps", len(got))
	}
	if got, _ := s.Steps(b); len(got) != 1 || got[0].Cgroup != "/x" {
		t.Errorf("kept build = %+v", got)
	}
	if got, _ := s.Steps("ffffffffffffffffffffffffffffffff"); len(got) != 0 {
		t.Errorf("unknown build has steps %+v", got)
	}
}
