package store

import (
	"fmt"
	"testing"
	"time"
)

func TestEvidenceIndexAndEviction(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	env := func(i int) []byte { return []byte(fmt.Sprintf(`{"payload":"%0100d"}`, i)) }
	// Step s1 ran in three builds, twice with one diff: newest first, one per diff.
	for i, d := range []string{"sha256:a", "sha256:b", "sha256:a"} {
		if err := s.PutEvidence(fmt.Sprintf("build%d", i), env(i), []RunRef{{StepID: "s1", DiffDigest: d, ContainerID: fmt.Sprint("c", i)}}, t0.Add(time.Duration(i)*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	refs, envs, err := s.Evidence("s1", 4)
	if err != nil || len(refs) != 2 || refs[0].BuildTraceID != "build2" || refs[1].BuildTraceID != "build1" || string(envs[0]) != string(env(2)) {
		t.Fatalf("evidence = %+v %v", refs, err)
	}
	if refs, _, _ := s.Evidence("s2", 4); len(refs) != 0 {
		t.Fatalf("another step's evidence: %+v", refs)
	}
	// Older than the cutoff goes; then the disk bound takes the oldest.
	ev, err := s.ExpireEvidence(t0.Add(90*time.Minute), 1<<20)
	if err != nil || ev.Builds != 2 || ev.HeldBuilds != 1 {
		t.Fatalf("expire by age = %+v %v", ev, err)
	}
	if refs, _, _ := s.Evidence("s1", 4); len(refs) != 1 || refs[0].BuildTraceID != "build2" {
		t.Fatalf("after expiry: %+v", refs)
	}
	ev, err = s.ExpireEvidence(t0, 10)
	if err != nil || ev.Builds != 1 || ev.HeldBytes != 0 {
		t.Fatalf("expire by size = %+v %v", ev, err)
	}
	if refs, _, _ := s.Evidence("s1", 4); len(refs) != 0 {
		t.Fatalf("evicted evidence still served: %+v", refs)
	}
}
