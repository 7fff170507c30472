package report

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/policy"
	"github.com/buildtrace/buildtrace/pkg/trace"
)

var bigBinaries = []string{"/usr/local/go/pkg/tool/linux_amd64/compile", "/usr/local/go/pkg/tool/linux_amd64/asm", "/usr/bin/gcc"}

var bigDirs = []string{"/root/.cache/go-build/", "/usr/local/go/pkg/linux_amd64/", "/tmp/go-build123/", "/app/bin/", "/var/lib/apt/"}

// bigTrace is a go build: 300 processes of 3 binaries (10 failing), 2,000
// file changes in 5 directories, 2 destinations. Its container ran 3s but
// its processes only 1.5s of it (Resources.WallNanos), so a view that
// mixes the two definitions of a step's duration shows.
func bigTrace(t *testing.T) []Trace {
	t.Helper()
	ts := testTrace(t)
	b := ts[0].Build
	run := &b.Steps[0]
	start := run.Start
	run.End = start.Add(3 * time.Second)
	run.Resources.WallNanos = 1500 * int64(time.Millisecond)
	run.Resources.Processes = 301
	run.Processes = run.Processes[:1] // /bin/sh, pid 10
	for i := range 300 {
		bin := bigBinaries[i%3]
		end := start.Add(time.Duration(100+i) * time.Millisecond)
		code := 0
		if i%3 == 2 && i < 30 {
			code = 2
		}
		p := trace.Process{PID: uint32(1000 + i), PPID: 10, Exec: true, Binary: bin,
			Argv: []string{bin, "-o", fmt.Sprintf("/tmp/go-build123/b%03d/_pkg_.a", i), "-p", "net/http"}, Start: start.Add(50 * time.Millisecond), End: &end, ExitCode: &code}
		if i == 200 { // killed: listed before the earlier failures
			p.ExitCode, p.Signal = nil, 9
		}
		if i == 299 { // the longest-running
			long := start.Add(2900 * time.Millisecond)
			p.End = &long
		}
		run.Processes = append(run.Processes, p)
	}
	run.Network = []trace.Destination{
		{Protocol: "tcp", IP: "142.250.1.1", Port: 443, Op: "connect", PIDs: []uint32{1000}, Count: 3, BytesSent: 4096, BytesReceived: 8 << 20},
		{Protocol: "tcp", IP: "127.0.0.1", Port: 5000, Op: "connect", PIDs: []uint32{1001}, Count: 1, BytesSent: 100, BytesReceived: 2048},
	}
	run.DNS = append(run.DNS, trace.DNSQuery{PID: 1000, Server: "127.0.0.53:53", Name: "proxy.golang.org", Type: "A", Answers: []string{"142.250.1.1"}})
	var changes []trace.FileChange
	for i := range 2000 {
		dir := bigDirs[i%5]
		c := trace.FileChange{Change: trace.ChangeCreated, Path: fmt.Sprintf("%s%02x/obj%d", dir, i%7, i), Type: "file", Mode: 0o644, Size: int64(i)}
		if i%7 == 4 {
			c.Change = trace.ChangeModified
		}
		if i%50 == 1 {
			c.Change = trace.ChangeDeleted
		}
		changes = append(changes, c)
	}
	changes[3].Mode = 0o755                        // /app/bin/03/obj3: a new executable
	changes[8].Mode, changes[8].Size = 0o4755, 1e6 // /app/bin/01/obj8: a setuid one
	run.Diff.Changes = changes
	run.Completeness.EventsDropped = 7
	run.Completeness.EventsEmitted = 993
	run.Redactions = 2
	ts[0].Build.Steps[0] = *run
	return ts
}

// stepBlocks splits the text view into its steps' lines.
func stepBlocks(out string) map[string][]string {
	blocks := map[string][]string{}
	for _, b := range strings.Split(out, "\n\n") {
		if strings.HasPrefix(b, "Dockerfile:") {
			lines := strings.Split(strings.TrimRight(b, "\n"), "\n")
			blocks[strings.Fields(lines[0])[0]] = lines
		}
	}
	return blocks
}

func TestTextSummaryFitsOneScreen(t *testing.T) {
	var buf bytes.Buffer
	if err := Text(&buf, bigTrace(t)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	blocks := stepBlocks(out)
	step := blocks["Dockerfile:4-5"]
	if len(step) == 0 {
		t.Fatalf("no step Dockerfile:4-5 in:\n%s", out)
	}
	if len(step) >= 40 {
		t.Errorf("step summary has %d lines, want < 40:\n%s", len(step), strings.Join(step, "\n"))
	}
	for _, want := range []string{
		"duration 3s,", // the container's start to end, not WallNanos
		"processes by binary (301 processes, 4 binaries):",
		"100× /usr/local/go/pkg/tool/linux_amd64/compile",
		"100× /usr/local/go/pkg/tool/linux_amd64/asm",
		"100× /usr/bin/gcc",
		"  1× /bin/sh",
		// The longest first; the RUN's own shell (pid 10) is the step.
		"  longest-running:\n" +
			"    2.85s  pid 1299 gcc -o /tmp/go-bui…b299/_pkg_.a -p net/http\n" +
			"    348ms  pid 1298 asm -o /tmp/go-bui…b298/_pkg_.a -p net/http\n" +
			"    347ms  pid 1297 compile -o /tmp/go-bui…b297/_pkg_.a -p net/http\n",
		"11 processes failed (non-zero exit or signal):\n" +
			"    pid 1200 /usr/bin/gcc: gcc -o /tmp/go-bui…b200/_pkg_.a -p net/http → signal 9\n" +
			"    pid 1002 /usr/bin/gcc: gcc -o /tmp/go-bui…b002/_pkg_.a -p net/http → exit 2\n" +
			"    pid 1005 /usr/bin/gcc: gcc -o /tmp/go-bui…b005/_pkg_.a -p net/http → exit 2\n" +
			"    … and 8 more\n",
		"egress (2 destinations):",
		"tcp 142.250.1.1:443 (proxy.golang.org) connect ×3, sent 4.0 KiB, received 8.0 MiB — by /usr/local/go/pkg/tool/linux_amd64/compile",
		"tcp 127.0.0.1:5000 (registry.test) connect ×1",
		"files: 1680 created, 280 modified, 40 deleted, in 5 directories:",
		"    /usr/local/go/pkg/linux_amd64/ 309 created, 51 modified, 40 deleted\n",
		"/root/.cache/go-build/", "/usr/local/go/pkg/linux_amd64/", "/tmp/go-build123/", "/app/bin/", "/var/lib/apt/",
		"setuid/setgid: /app/bin/01/obj8 (setuid, 4755, 976.6 KiB)",
		"new executables: /app/bin/01/obj8 (setuid, 4755, 976.6 KiB), /app/bin/03/obj3 (0755, 3 B)",
		"lost: 7 of 1000 events dropped (ring buffer full); 2 secret values replaced with [REDACTED-SECRET]",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	// The summary lists no compiler invocation but the 3 longest-running
	// and the 3 first failing ones.
	if n := strings.Count(out, "/_pkg_.a"); n != 6 {
		t.Errorf("summary shows %d command lines, want 6:\n%s", n, out)
	}
}

func TestTextFullHasEveryProcess(t *testing.T) {
	ts := bigTrace(t)
	var buf bytes.Buffer
	if err := TextWith(&buf, ts, Options{Full: true}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, p := range ts[0].Build.Steps[0].Processes {
		if !strings.Contains(out, fmt.Sprintf("\n      %d %s", p.PID, Command(p))) && !strings.Contains(out, fmt.Sprintf("\n    %d %s", p.PID, Command(p))) {
			t.Fatalf("full output lacks process %d:\n%s", p.PID, out)
		}
	}
	for _, c := range ts[0].Build.Steps[0].Diff.Changes {
		if !strings.Contains(out, " "+c.Path) {
			t.Fatalf("full output lacks %s", c.Path)
		}
	}
	if strings.Contains(out, "… and") {
		t.Errorf("full output cuts a list:\n%s", out)
	}
}

func TestGroupDirs(t *testing.T) {
	var cs []trace.FileChange
	add := func(n int, format string) {
		for i := range n {
			cs = append(cs, trace.FileChange{Change: trace.ChangeCreated, Path: fmt.Sprintf(format, i)})
		}
	}
	add(400, "/usr/local/lib/x/lib%d.so")
	add(300, "/var/cache/y/c%d")
	add(256, "/root/.cache/go-build/%02x/obj")                                        // 256 subdirectories: not split
	add(1, "/built-on%d.txt")                                                         // directly in /
	add(2, "/out/f%d")                                                                // directly in /out
	add(3, "/out/a/g%d")                                                              // and in a subdirectory of it
	cs = append(cs, trace.FileChange{Change: trace.ChangeDeleted, Path: "/etc/motd"}) //
	var got []string
	for _, g := range groupDirs(cs) {
		got = append(got, g.Label()+" "+g.Counts())
	}
	want := []string{
		"/usr/local/lib/x/ 400 created",
		"/var/cache/y/ 300 created",
		"/root/.cache/go-build/ 256 created",
		"/out/a/ 3 created",
		"/out/ (directly) 2 created",
		"/ (directly) 1 created",
		"/etc/ 1 deleted",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("groups:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestMarkdown(t *testing.T) {
	ts := bigTrace(t)
	run := &ts[0].Build.Steps[0]
	run.Diff.Changes = run.Diff.Changes[:3]
	run.Diff.Changes[0].Path = "/app/a|b`c<d>*e*"
	var buf bytes.Buffer
	if err := Markdown(&buf, ts, Options{}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"### Dockerfile:4-5 RUN wget \\<x\\> — executed",
		"| 100 | /usr/local/go/pkg/tool/linux\\_amd64/compile |",
		"| created | /app/a\\|b\\`c\\<d\\>\\*e\\* |",
		"| tcp 142.250.1.1:443 | proxy.golang.org |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
	// Every table row has as many cells as its header.
	cells := 0
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "|") {
			cells = 0
			continue
		}
		n := len(regexp.MustCompile(`(^|[^\\])\|`).FindAllString(line, -1)) - 1
		if cells == 0 {
			cells = n
		} else if n != cells {
			t.Errorf("row %q has %d cells, header %d", line, n, cells)
		}
	}
}

// TestMDNoAutolink: GitHub makes links of bare URLs, www. names and
// e-mail addresses; MD leaves none of them for it to find.
func TestMDNoAutolink(t *testing.T) {
	for in, want := range map[string]string{
		"GET https://evil.test/x":  `GET https\://evil.test/x`,
		"see WWW.evil.test":        `see WWW\.evil.test`,
		"mail a@evil.test":         `mail a\@evil.test`,
		"Dockerfile:4 10.0.0.1:53": "Dockerfile:4 10.0.0.1:53", // no other ":" escaped
		"awww.x":                   `awww\.x`,
	} {
		if got := MD(in); got != want {
			t.Errorf("MD(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMarkdownEscapesControls(t *testing.T) {
	var buf bytes.Buffer
	if err := Markdown(&buf, hostileTrace(t), Options{Full: true}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, bad := range []string{"\x1b", "\r", "\x07", "\u202e", "\u009b"} {
		if strings.Contains(out, bad) {
			t.Errorf("markdown contains %q:\n%s", bad, out)
		}
	}
	// termsafe's backslash is itself escaped for Markdown.
	for _, want := range []string{`a\\x1b\[2Kb\\rc`, `evil\\u202etxt.exe`} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
}

func TestHTMLSummaryTimelineAndTree(t *testing.T) {
	ts := bigTrace(t)
	var buf bytes.Buffer
	if err := HTML(&buf, ts); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"<details", "Process tree (301 processes;", "/root/.cache/go-build/", "proxy.golang.org", "compile", "container setup included). The timeline draws the same interval."} {
		if !strings.Contains(out, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(out, "<script") {
		t.Error("page has a script")
	}
	// The timeline: per executed step at most TimelineProcs process rows.
	tl := out[strings.Index(out, `<table class="tl">`):]
	tl = tl[:strings.Index(tl, "</table>")]
	rows := regexp.MustCompile(`<tr class="([^"]*)">`).FindAllStringSubmatch(tl, -1)
	procs, steps := 0, 0
	for _, r := range rows {
		switch r[1] {
		case "step executed":
			steps++
			procs = 0
		case "proc":
			if procs++; procs > TimelineProcs {
				t.Errorf("timeline has more than %d processes for a step", TimelineProcs)
			}
		}
	}
	if steps != 1 {
		t.Errorf("timeline has %d executed steps, want 1", steps)
	}
	// The longest-running process is among them; a short one is not.
	if !strings.Contains(tl, "1299 gcc -o") || strings.Contains(tl, "1005 ") {
		t.Errorf("timeline does not show the busiest processes:\n%s", tl)
	}
	// The step table's duration is the timeline's.
	tableDur := regexp.MustCompile(`<td class="n step-duration">([^<]*)</td>`).FindAllStringSubmatch(out, -1)
	tlDur := regexp.MustCompile(`<tr class="step executed"><td[^>]*>[^<]*</td><td class="d">([^<]*)</td>`).FindAllStringSubmatch(tl, -1)
	if len(tlDur) != 1 {
		t.Fatalf("timeline step durations: %q", tlDur)
	}
	var executed []string
	for _, d := range tableDur {
		if d[1] != "" {
			executed = append(executed, d[1])
		}
	}
	if len(executed) != 1 || executed[0] != tlDur[0][1] || executed[0] != "3s" {
		t.Errorf("table durations %q, timeline %q: want both 3s", executed, tlDur[0][1])
	}
	// The bar spans the whole timeline (the step is the build's only run).
	if !strings.Contains(tl, `class="bar" style="left:0.000%;width:100.000%" title="executed, 3s"`) {
		t.Errorf("step bar does not span the step's duration:\n%s", tl)
	}
}

func TestPolicyViolations(t *testing.T) {
	p, err := policy.Parse([]byte("egress:\n  flagged: [142.250.0.0/16]\n"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := policy.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Policy: c, PolicyName: "p.yaml"}
	ts := bigTrace(t)
	var text, md, page bytes.Buffer
	if err := TextWith(&text, ts, opts); err != nil {
		t.Fatal(err)
	}
	if err := Markdown(&md, ts, opts); err != nil {
		t.Fatal(err)
	}
	if err := HTMLWith(&page, ts, opts); err != nil {
		t.Fatal(err)
	}
	const ev = "[egress.flagged] tcp connect 142.250.1.1:443"
	if !strings.Contains(text.String(), "  policy: 1 violation\n    "+ev) {
		t.Errorf("text lacks the violation:\n%s", text.String())
	}
	if !strings.Contains(md.String(), `\[egress.flagged\] tcp connect 142.250.1.1:443`) {
		t.Errorf("markdown lacks the violation:\n%s", md.String())
	}
	if !strings.Contains(page.String(), ev) || !strings.Contains(page.String(), "p.yaml") {
		t.Errorf("page lacks the violation")
	}
	// The cached step has no violation.
	if !strings.Contains(text.String(), "[cached]\n  cached, unproven: no signed record of the run that made its layer was found\n  policy: no violations\n") {
		t.Errorf("cached step not checked:\n%s", text.String())
	}
	_ = attest.StatusCached
}

// TestSummaryCaps: a run with more binaries, destinations and directories
// than a screen holds names the top ones and counts the rest.
func TestSummaryCaps(t *testing.T) {
	ts := testTrace(t)
	run := &ts[0].Build.Steps[0]
	run.Processes = run.Processes[:1]
	run.Network = nil
	run.Diff.Changes = nil
	for i := range 15 {
		bin := fmt.Sprintf("/opt/b%02d/tool", i)
		for j := range 20 - i {
			run.Processes = append(run.Processes, trace.Process{PID: uint32(100 + 100*i + j), PPID: 10, Exec: true, Binary: bin, Argv: []string{bin}, Start: run.Start})
		}
		run.Network = append(run.Network, trace.Destination{Protocol: "tcp", IP: fmt.Sprintf("10.0.0.%d", i), Port: 443, Op: "connect", PIDs: []uint32{uint32(100 + 100*i)}, Count: 1, BytesSent: uint64(1000 * (i + 1))})
		for j := range 3 {
			run.Diff.Changes = append(run.Diff.Changes, trace.FileChange{Change: trace.ChangeCreated, Path: fmt.Sprintf("/d%02d/f%d", i, j)})
		}
	}
	var buf bytes.Buffer
	if err := Text(&buf, ts); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	step := stepBlocks(out)["Dockerfile:4-5"]
	if len(step) >= 40 {
		t.Errorf("step summary has %d lines:\n%s", len(step), out)
	}
	for _, want := range []string{
		"20× /opt/b00/tool", "11× /opt/b09/tool", "… and 6 more binaries (41 processes)", // b10..b14 and /bin/sh
		"egress (15 destinations):", "tcp 10.0.0.14:443", "… and 10 more destinations",
		"files: 45 created, in 15 directories:", "… and 7 more directories (21 changes)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	for _, bad := range []string{"× /opt/b10/tool", "tcp 10.0.0.0:443", "/d14/"} {
		if strings.Contains(out, bad) {
			t.Errorf("summary shows %q, beyond its caps:\n%s", bad, out)
		}
	}
	buf.Reset()
	if err := TextWith(&buf, ts, Options{Full: true}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/opt/b14/tool", "tcp 10.0.0.0:443", "/d14/f2"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("--full lacks %q", want)
		}
	}
}

// TestTrafficNamesForeignSocket: a destination reached through a socket
// made outside the container says so, and that its bytes are not counted.
func TestTrafficNamesForeignSocket(t *testing.T) {
	d := Dest{Destination: trace.Destination{Op: "foreign", Count: 1, ForeignSocket: true}}
	if got := d.Traffic(); !strings.Contains(got, "socket made outside the container") {
		t.Errorf("Traffic() = %q", got)
	}
	d.ForeignSocket = false
	if got := d.Traffic(); strings.Contains(got, "outside") {
		t.Errorf("Traffic() = %q for the step's own socket", got)
	}
}
