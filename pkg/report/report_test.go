package report

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

func testTrace(t *testing.T) []Trace {
	t.Helper()
	start := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	exit := 0
	end := start.Add(1500 * time.Millisecond)
	b := &trace.Build{Version: trace.Version, BuildTraceID: "0af7651916cd43dd8448eb211c80319c",
		Tracer: trace.Tracer{Name: "buildtraced", Version: "1", Since: start.Add(-time.Hour)},
		Steps: []trace.Step{{StepID: "s1", ContainerID: "c1", Start: start, End: start.Add(2 * time.Second),
			Processes: []trace.Process{
				{PID: 10, Exec: true, Binary: "/bin/sh", Argv: []string{"/bin/sh", "-c", "wget <x>"}, ExitCode: &exit, Start: start},
				{PID: 11, PPID: 10, Exec: true, Binary: "/bin/wget", Argv: []string{"wget", "http://127.0.0.1:5000/v2/"}, Start: start.Add(100 * time.Millisecond), End: &end},
			},
			Network:      []trace.Destination{{Protocol: "tcp", IP: "127.0.0.1", Port: 5000, Op: "connect", PIDs: []uint32{11}, Count: 2, BytesSent: 100, BytesReceived: 2048}},
			DNS:          []trace.DNSQuery{{PID: 11, Server: "127.0.0.53:53", Name: "registry.test", Type: "A", Answers: []string{"127.0.0.1"}}},
			Diff:         trace.Diff{Digest: "sha256:ab", Changes: []trace.FileChange{{Change: "created", Path: "/app/registry.json"}, {Change: "modified", Path: "/etc/motd"}, {Change: "deleted", Path: "/greeting.txt"}}},
			Resources:    trace.Resources{WallNanos: 2e9, CPUUserNanos: 3e8, CPUSystemNanos: 1e8, PeakRSSBytes: 5 << 20, Processes: 2},
			Completeness: trace.Completeness{Complete: true, FollowedFromStart: true}}},
	}
	payload, _ := json.Marshal(b)
	env := &dsse.Envelope{PayloadType: trace.PayloadType, Payload: base64.StdEncoding.EncodeToString(payload)}
	p, err := attest.Derive(attest.Input{Envelope: env, Build: b, BuildStart: start.Add(-time.Second), Platform: "linux/amd64", Monitored: true,
		Steps: []attest.StepInfo{
			{StepID: "s1", Instruction: "RUN wget <x>", Locations: []attest.Location{{File: "Dockerfile", StartLine: 4, EndLine: 5}}},
			{StepID: "s0", Instruction: "RUN echo cached", Locations: []attest.Location{{File: "Dockerfile", StartLine: 3, EndLine: 3}}},
		}})
	if err != nil {
		t.Fatal(err)
	}
	return []Trace{{Image: "127.0.0.1:5000/x:y", Platform: "linux/amd64", Manifest: "sha256:00", Signature: "not checked (no --key)", Predicate: p, Build: b}}
}

func TestText(t *testing.T) {
	var buf bytes.Buffer
	if err := Text(&buf, testTrace(t)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"signature: not checked (no --key)",
		"Dockerfile:3 RUN echo cached  [cached]",
		"Dockerfile:4-5 RUN wget <x>  [executed]",
		"duration 2s, CPU 400ms", "peak memory 5.0 MiB",
		"    1× /bin/sh\n    1× /bin/wget\n",
		"tcp 127.0.0.1:5000 (registry.test) connect ×2, sent 100 B, received 2.0 KiB — by /bin/wget",
		"    created  /app/registry.json\n    modified /etc/motd\n    deleted  /greeting.txt\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	buf.Reset()
	if err := TextWith(&buf, testTrace(t), Options{Full: true}); err != nil {
		t.Fatal(err)
	}
	if want := "    10 /bin/sh -c wget <x> → exit 0\n      11 wget http://127.0.0.1:5000/v2/"; !strings.Contains(buf.String(), want) {
		t.Errorf("--full lacks the process tree %q:\n%s", want, buf.String())
	}
	// Dockerfile order: line 3 before line 4.
	if strings.Index(out, "Dockerfile:3") > strings.Index(out, "Dockerfile:4-5") {
		t.Errorf("steps not in Dockerfile order:\n%s", out)
	}
}

func TestHTML(t *testing.T) {
	var buf bytes.Buffer
	if err := HTML(&buf, testTrace(t)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"<style>", "RUN wget &lt;x&gt;", "127.0.0.1:5000", "registry.test", "/app/registry.json", `class="bar"`, "Egress", "Files: 1 created, 1 modified, 1 deleted", "11 wget http://127.0.0.1:5000/v2/"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q", want)
		}
	}
	for _, bad := range []string{"<script", " src=", "@import", "url(", "RUN wget <x>"} {
		if strings.Contains(out, bad) {
			t.Errorf("page contains %q (must be self-contained and escaped)", bad)
		}
	}
	if m := regexp.MustCompile(`href="[^#]`).FindString(out); m != "" {
		t.Errorf("page links out of itself: %q", m)
	}
}
