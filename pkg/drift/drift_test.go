package drift

import (
	"bytes"
	"strings"
	"testing"

	"github.com/buildtrace/buildtrace/pkg/attest"
)

func step(id, instr string, dests, bins, files []string, wall float64) Step {
	set := func(xs []string) map[string]bool {
		m := map[string]bool{}
		for _, x := range xs {
			m[x] = true
		}
		return m
	}
	return Step{StepID: id, Instruction: instr, Status: attest.StatusExecuted, Destinations: set(dests), Binaries: set(bins), Files: set(files), WallSeconds: wall}
}

func TestCompare(t *testing.T) {
	old := []Step{
		step("a", "RUN make", []string{"tcp 127.0.0.1:5000"}, []string{"/bin/sh", "/usr/bin/make"}, []string{"/out"}, 10),
		step("b", "RUN wget x", []string{"tcp deb.example:80"}, []string{"/bin/wget"}, nil, 2),
		step("c", "RUN gone", nil, nil, nil, 0.1),
	}
	cur := []Step{
		step("a", "RUN make", []string{"tcp 127.0.0.1:5000", "tcp 127.0.0.1:7777"}, []string{"/bin/sh", "/usr/bin/make", "/usr/bin/curl"}, []string{"/out"}, 10.5),
		// Same instruction, new step ID (e.g. a changed base): matched by text.
		step("b2", "RUN wget x", []string{"tcp deb.example:80"}, []string{"/bin/wget"}, nil, 5),
		step("d", "RUN new", []string{"udp 127.0.0.53:53"}, []string{"/bin/true"}, nil, 0),
	}
	r := Compare(old, cur, 0.5)
	if !r.New() {
		t.Fatal("New() = false")
	}
	var buf bytes.Buffer
	r.Text(&buf)
	out := buf.String()
	for _, want := range []string{
		"RUN make  [step ID]", "+ destination tcp 127.0.0.1:7777", "+ binary /usr/bin/curl",
		"RUN wget x  [instruction]", "~ wallSeconds 2 → 5",
		"RUN new  [new step]", "RUN gone  [gone step]",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "~ wallSeconds 10") {
		t.Errorf("5%% change reported beyond a 50%% threshold:\n%s", out)
	}
}

func TestCompareSame(t *testing.T) {
	s := []Step{step("a", "RUN make", []string{"tcp 127.0.0.1:5000"}, []string{"/bin/sh"}, []string{"/out"}, 0.01)}
	s2 := []Step{step("a", "RUN make", []string{"tcp 127.0.0.1:5000"}, []string{"/bin/sh"}, []string{"/out"}, 0.05)}
	r := Compare(s, s2, 0.5)
	if r.New() || len(r.Changes) != 0 {
		t.Fatalf("identical builds differ (below noise floor): %+v", r.Changes)
	}
}

func TestRemovedOnlyIsNotNew(t *testing.T) {
	old := []Step{step("a", "RUN x", []string{"tcp 127.0.0.1:1"}, nil, nil, 0)}
	cur := []Step{step("a", "RUN x", nil, nil, nil, 0)}
	r := Compare(old, cur, 0.5)
	if r.New() || len(r.Changes) != 1 || len(r.Changes[0].Removed.Destinations) != 1 {
		t.Fatalf("got %+v", r.Changes)
	}
}
