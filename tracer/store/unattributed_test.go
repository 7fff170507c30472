package store

import (
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/trace"
)

// TestUnattributedSteps: steps whose build could not be decided are read
// back by step ID, and expire per step ID.
func TestUnattributedSteps(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Put(Unattributed, trace.Step{StepID: "s1", ContainerID: "c1"}, now.Add(-8*24*time.Hour)))
	must(s.Put(Unattributed, trace.Step{StepID: "s2", ContainerID: "c1"}, now))
	must(s.Put(Unattributed, trace.Step{StepID: "s2", ContainerID: "c2"}, now))
	must(s.Put("4bf92f3577b34da6a3ce929d0e0e4736", trace.Step{StepID: "s2", ContainerID: "c3"}, now))
	got, err := s.UnattributedSteps([]string{"s2", "s9", "s2/../s1", ""})
	must(err)
	if len(got) != 2 || got[0].ContainerID != "c1" || got[1].ContainerID != "c2" {
		t.Fatalf("unattributed s2 = %+v", got)
	}
	n, err := s.Expire(now.Add(-DefaultRetention))
	must(err)
	if n != 1 {
		t.Errorf("expired %d, want 1 (unattributed/s1)", n)
	}
	if got, _ := s.UnattributedSteps([]string{"s1"}); len(got) != 0 {
		t.Errorf("expired unattributed step still there: %+v", got)
	}
	if got, _ := s.UnattributedSteps([]string{"s2"}); len(got) != 2 {
		t.Errorf("unexpired unattributed steps = %+v", got)
	}
}
