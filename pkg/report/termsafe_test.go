package report

import (
	"bytes"
	"strings"
	"testing"
)

// hostileTrace is testTrace with control characters where an attestation
// carries free text: a file name that erases the line and returns the
// cursor, an argv element that sets the window title, and a hostname that
// reverses the text after it.
func hostileTrace(t *testing.T) []Trace {
	ts := testTrace(t)
	run := &ts[0].Build.Steps[0]
	run.Diff.Changes[0].Path = "a\x1b[2Kb\rc"
	run.Processes[1].Argv = append(run.Processes[1].Argv, "\x1b]0;title\x07")
	failed := 1 // so the summary shows its command line
	run.Processes[1].ExitCode = &failed
	run.Network[0].Hostname = "evil\u202etxt.exe"
	ts[0].Predicate.Buildtrace.Steps[0].Instruction += "\x1b[1A\u009b2J"
	ts[0].Err = "failed\x1b[2K\rPASS"
	return ts
}

func checkEscaped(t *testing.T, out string) {
	t.Helper()
	for _, bad := range []string{"\x1b", "\r", "\x07", "\u202e", "\u009b"} {
		if strings.Contains(out, bad) {
			t.Errorf("output contains %q:\n%s", bad, out)
		}
	}
	for _, want := range []string{`a\x1b[2Kb\rc`, `\x1b]0;title\x07`, `evil\u202etxt.exe`, `\x1b[1A\u009b2J`, `failed\x1b[2K\rPASS`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestTextEscapesControls(t *testing.T) {
	var buf bytes.Buffer
	if err := Text(&buf, hostileTrace(t)); err != nil {
		t.Fatal(err)
	}
	checkEscaped(t, buf.String())
}

func TestTextFullEscapesControls(t *testing.T) {
	var buf bytes.Buffer
	if err := TextWith(&buf, hostileTrace(t), Options{Full: true}); err != nil {
		t.Fatal(err)
	}
	checkEscaped(t, buf.String())
}

func TestHTMLEscapesControls(t *testing.T) {
	var buf bytes.Buffer
	if err := HTML(&buf, hostileTrace(t)); err != nil {
		t.Fatal(err)
	}
	checkEscaped(t, buf.String())
}
