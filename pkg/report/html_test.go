package report

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/policy"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"golang.org/x/net/html"
)

// traceOf makes a one-platform trace of runs, one step per run, each at
// Dockerfile line 10+i with instruction instrs[i].
func traceOf(t *testing.T, runs []trace.Step, instrs []string) []Trace {
	t.Helper()
	start := runs[0].Start
	b := &trace.Build{Version: trace.Version, BuildTraceID: "0af7651916cd43dd8448eb211c80319c",
		Tracer: trace.Tracer{Name: "buildtraced", Version: "1", Since: start.Add(-time.Hour)}, Steps: runs}
	var infos []attest.StepInfo
	for i, r := range runs {
		infos = append(infos, attest.StepInfo{StepID: r.StepID, Instruction: instrs[i], Locations: []attest.Location{{File: "Dockerfile", StartLine: 10 + i, EndLine: 10 + i}}})
	}
	payload, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	env := &dsse.Envelope{PayloadType: trace.PayloadType, Payload: base64.StdEncoding.EncodeToString(payload)}
	p, err := attest.Derive(attest.Input{Envelope: env, Build: b, BuildStart: start.Add(-time.Second), Platform: "linux/amd64", Monitored: true, Steps: infos})
	if err != nil {
		t.Fatal(err)
	}
	return []Trace{{Image: "127.0.0.1:5000/x:y", Platform: "linux/amd64", Manifest: "sha256:00", Signature: "not checked", Predicate: p, Build: b}}
}

func at(t0 time.Time, ms int) *time.Time {
	x := t0.Add(time.Duration(ms) * time.Millisecond)
	return &x
}

func TestShortCommand(t *testing.T) {
	for _, c := range []struct {
		p    trace.Process
		want string
	}{
		{trace.Process{Exec: true, Argv: []string{"/usr/bin/wget", "-q", "-O", "/app/registry.json", "http://127.0.0.1:5000/v2/_catalog"}},
			"wget -q -O /app/registry.json http://127.0.0.1:5000/v2/_catalog"},
		// A compiler's package stays visible behind its long paths.
		{trace.Process{Exec: true, Argv: []string{"/usr/local/go/pkg/tool/linux_amd64/compile", "-o", "/tmp/go-build1193336025/b010/_pkg_.a",
			"-trimpath", "/usr/local/go/src/runtime=>runtime;/tmp/go-build1193336025/b010=>", "-p", "runtime", "-lang=go1.26", "-std", "-buildid", "w55bAev-Tss2_GSM8Z7E/w55bAev-Tss2_GSM8Z7E"}},
			"compile -o /tmp/go-bui…b010/_pkg_.a -trimpath /usr/local/…36025/b010=> -p runtime -lang=g…"},
		// A script keeps its start.
		{trace.Process{Exec: true, Argv: []string{"/bin/sh", "-c", "apt-get update && apt-get install -y build-essential python3 nodejs npm"}},
			"sh -c apt-get update && apt-get install -y build-esse…"},
		{trace.Process{Exec: false, Binary: "/bin/busybox", Argv: []string{"/bin/sh", "-c", "x"}}, "(fork) sh -c x"},
		{trace.Process{Exec: true, Binary: "/bin/true"}, "true"},
		// A program of another architecture, run by qemu through binfmt_misc.
		{trace.Process{Exec: true, Binary: "/usr/bin/qemu-aarch64-static", Argv: []string{"/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "/bin/sh", "wc", "-c", "/greeting.txt"}},
			"[aarch64] wc -c /greeting.txt"},
		{trace.Process{Exec: true, Binary: "/usr/bin/qemu-aarch64-static", Argv: []string{"/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "/bin/sh"}},
			"aarch64-binfmt-P /bin/sh"},
	} {
		if got := ShortCommand(c.p); got != c.want {
			t.Errorf("ShortCommand(%q) =\n %q, want\n %q", c.p.Argv, got, c.want)
		}
	}
}

func TestRunNameEmulated(t *testing.T) {
	ps := []trace.Process{
		{PID: 1, Exec: true, Binary: "/usr/bin/qemu-aarch64-static", Filename: "/bin/sh", Argv: []string{"/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "/bin/sh", "wget", "-q", "x"}},
		{PID: 2, Exec: true, Binary: "/usr/bin/qemu-aarch64-static", Filename: "/bin/sh", Argv: []string{"/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "/bin/busybox", "/bin/sh", "-c", "x"}},
		{PID: 3, Exec: false, Binary: "/usr/bin/qemu-aarch64-static", Argv: []string{"/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "/bin/sh", "/bin/sh", "-c", "x"}},
	}
	bs := binaries(ps)
	if len(bs) != 1 || bs[0].NamesLine() != "as fork ×1, sh ×1, wget ×1" {
		t.Errorf("binaries = %+v, want qemu as fork, sh and wget", bs)
	}
}

// TestBusiest: the RUN's own shell is left out (it is the step), unless it
// exec'd into another program; exec'd processes come before bare forks;
// at most n; the summary's list has no forks and is longest first.
func TestBusiest(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	run := trace.Step{StepID: "s", Start: t0, End: t0.Add(10 * time.Second), Processes: []trace.Process{
		{PID: 1, Exec: true, Binary: "/bin/sh", Argv: []string{"/bin/sh", "-c", "make"}, Start: t0, End: at(t0, 9000)},
		{PID: 2, PPID: 1, Exec: true, Binary: "/usr/bin/make", Argv: []string{"make"}, Start: t0.Add(time.Millisecond), End: at(t0, 8000)},
		{PID: 3, PPID: 2, Exec: true, Binary: "/usr/bin/cc", Argv: []string{"cc", "a.c"}, Start: t0.Add(2 * time.Millisecond), End: at(t0, 100)},
		{PID: 4, PPID: 2, Exec: true, Binary: "/usr/bin/cc", Argv: []string{"cc", "b.c"}, Start: t0.Add(3 * time.Millisecond), End: at(t0, 3000)},
		{PID: 5, PPID: 2, Exec: false, Binary: "/usr/bin/make", Start: t0.Add(4 * time.Millisecond), End: at(t0, 7000)},
		{PID: 6, PPID: 2, Exec: true, Binary: "/usr/bin/ld", Argv: []string{"ld"}, Start: t0.Add(5 * time.Millisecond)}, // runs to the end
	}}
	pids := func(ps []Timed) []uint32 {
		var out []uint32
		for _, p := range ps {
			out = append(out, p.PID)
		}
		return out
	}
	// In start order; the fork (5) only after every exec'd one.
	if got := pids(busiest(run, 3)); !slices.Equal(got, []uint32{2, 4, 6}) {
		t.Errorf("busiest 3 = %v, want [2 4 6]", got)
	}
	if got := pids(busiest(run, 5)); !slices.Equal(got, []uint32{2, 3, 4, 5, 6}) {
		t.Errorf("busiest 5 = %v, want [2 3 4 5 6] (no pid 1, the RUN's shell)", got)
	}
	if got := busiest(run, 1); len(got) != 1 || got[0].PID != 6 || got[0].Nanos != int64(10*time.Second-5*time.Millisecond) {
		t.Errorf("busiest 1 = %+v, want pid 6 running to the run's end", got)
	}
	if got := pids(longest(run, 5)); !slices.Equal(got, []uint32{6, 2, 4, 3}) {
		t.Errorf("longest = %v, want [6 2 4 3]: longest first, no fork", got)
	}
	// A shell that exec'd its last command is that command: it stays.
	run.Processes[0].Execs = []trace.Exec{{Binary: "/bin/sh"}}
	if got := pids(busiest(run, 1)); !slices.Equal(got, []uint32{6}) {
		t.Errorf("busiest 1 = %v", got)
	}
	run.Processes[0].End = at(t0, 9999)
	if got := pids(busiest(run, 1)); !slices.Equal(got, []uint32{1}) {
		t.Errorf("busiest 1 = %v, want the shell that exec'd again", got)
	}
}

// TestHTMLTimelineScales: a 100 ms step after a 10 s one is a sliver on
// the build's scale, but its processes are drawn on the step's own: a
// process that ran the whole step spans the whole track. Each scale has
// its labels, and every step duration agrees with the step table.
func TestHTMLTimelineScales(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	long := trace.Step{StepID: "a", Start: t0, End: t0.Add(10 * time.Second), Resources: trace.Resources{WallNanos: 1e6},
		Processes: []trace.Process{{PID: 1, Exec: true, Binary: "/bin/sleep", Argv: []string{"sleep", "10"}, Start: t0, End: at(t0, 10000)}}}
	t1 := t0.Add(10 * time.Second)
	short := trace.Step{StepID: "b", Start: t1, End: t1.Add(100 * time.Millisecond),
		Processes: []trace.Process{
			{PID: 2, Exec: true, Binary: "/bin/sh", Argv: []string{"/bin/sh", "-c", "x"}, Start: t1, End: at(t1, 100)},
			{PID: 3, PPID: 2, Exec: true, Binary: "/bin/wget", Argv: []string{"wget", "x"}, Start: t1, End: at(t1, 100)},
			{PID: 4, PPID: 2, Exec: true, Binary: "/bin/tar", Argv: []string{"tar", "x"}, Start: t1.Add(50 * time.Millisecond), End: at(t1, 75)},
		}}
	var buf bytes.Buffer
	if err := HTML(&buf, traceOf(t, []trace.Step{long, short}, []string{"RUN sleep 10", "RUN x"})); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	tl := out[strings.Index(out, `<table class="tl">`):]
	tl = tl[:strings.Index(tl, "</table>")]
	for _, want := range []string{
		// The build's scale: 10.1 s.
		`<span style="left:0.000%">0</span><span style="left:25.000%">2.53s</span>`, `<span class="end" style="left:100.000%">10.1s</span>`,
		// The short step on it: from 99% of the way.
		`<div class="bar" style="left:99.010%;width:0.990%" title="executed, 100ms">`,
		// Its own scale and its processes on it.
		`<span style="left:50.000%">50ms</span>`,
		`<td class="label mono" style="padding-left:1.5em" title="3 wget x">3 wget x</td><td class="d">100ms</td><td><div class="track"><div class="bar" style="left:0.000%;width:100.000%" title="100ms">`,
		`title="4 tar x">4 tar x</td><td class="d">25ms</td><td><div class="track"><div class="bar" style="left:50.000%;width:25.000%"`,
	} {
		if !strings.Contains(tl, want) {
			t.Errorf("timeline lacks %q:\n%s", want, tl)
		}
	}
	if strings.Contains(tl, `title="2 sh -c x"`) {
		t.Errorf("timeline shows the RUN's own shell:\n%s", tl)
	}
	// Durations: the table's, the timeline's and the step header's agree
	// (the container's start to end, not WallNanos).
	table := regexp.MustCompile(`<td class="n step-duration">([^<]*)</td>`).FindAllStringSubmatch(out, -1)
	rows := regexp.MustCompile(`<tr class="step executed"><td[^>]*>[^<]*</td><td class="d">([^<]*)</td>`).FindAllStringSubmatch(tl, -1)
	heads := regexp.MustCompile(`<p>Duration <b>([^<]*)</b>`).FindAllStringSubmatch(out, -1)
	if len(table) != 2 || len(rows) != 2 || len(heads) != 2 {
		t.Fatalf("durations: table %q timeline %q headers %q", table, rows, heads)
	}
	for i, want := range []string{"10s", "100ms"} {
		if table[i][1] != want || rows[i][1] != want || heads[i][1] != want {
			t.Errorf("step %d: table %q, timeline %q, header %q; want %s", i, table[i][1], rows[i][1], heads[i][1], want)
		}
	}
}

// allowedTags and allowedAttrs are the only elements and attributes the
// page is made of: any other came from an attestation string that was
// not escaped.
var (
	allowedTags  = []string{"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "h4", "section", "table", "tr", "td", "th", "a", "span", "p", "div", "details", "summary", "ul", "li", "pre", "code", "b"}
	allowedAttrs = []string{"lang", "charset", "http-equiv", "content", "name", "class", "style", "title", "href", "id", "open", "colspan"}
)

// checkMarkup parses page and fails on any element or attribute it does
// not make, and on a link out of the page.
func checkMarkup(t *testing.T, page string) {
	t.Helper()
	z := html.NewTokenizer(strings.NewReader(page))
	for {
		switch z.Next() {
		case html.ErrorToken:
			if z.Err() != io.EOF {
				t.Fatal(z.Err())
			}
			return
		case html.StartTagToken, html.SelfClosingTagToken, html.EndTagToken:
			tok := z.Token()
			if !slices.Contains(allowedTags, tok.Data) {
				t.Errorf("page has an element <%s> it does not make", tok.Data)
			}
			for _, a := range tok.Attr {
				if !slices.Contains(allowedAttrs, a.Key) {
					t.Errorf("page has an attribute %s=%q on <%s>", a.Key, a.Val, tok.Data)
				}
				if a.Key == "href" && !strings.HasPrefix(a.Val, "#") {
					t.Errorf("page links out: href=%q", a.Val)
				}
				if a.Key == "style" && strings.ContainsAny(a.Val, "()\\<>\"'") {
					t.Errorf("page has a style attribute with more than numbers: %q", a.Val)
				}
			}
		}
	}
}

// TestHTMLHostileStrings: every string of an attestation is the
// attacker's. Markup in an instruction, argv, path, hostname, DNS name,
// URL or policy name stays text: the page has only its own elements,
// no event handler attribute, no script, and a Content-Security-Policy
// that would stop a script anyway.
func TestHTMLHostileStrings(t *testing.T) {
	ts := bigTrace(t)
	const x = `"'><script>alert(1)</script><img src=x onerror=alert(2)><svg/onload=alert(3)>`
	run := &ts[0].Build.Steps[0]
	run.Processes[0].Argv = append(run.Processes[0].Argv, x)
	run.Processes[5].Argv[0] = x                 // a compiler's argv[0], in a group
	run.Processes[5].Binary = "/usr/bin/gcc" + x // and its binary
	run.Diff.Changes[0].Path = "/app/" + x       // a created file
	run.Diff.Changes[8].Path = "/app/setuid" + x // a setuid one
	run.Network[0].Hostname = x                  // a destination's name
	run.DNS[0].Name = x                          // a DNS question
	run.Network[1].Error = x                     // an error
	run.Completeness.Reasons = []string{x}       // a reason
	run.Materials = []trace.Material{{Path: "/m" + x, SHA256: "sha256:" + x, Binary: x, Argv: []string{x}, PID: 1000,
		Endpoint: trace.MaterialEndpoint{Protocol: "tcp", IP: x, Port: 80, Hostname: x},
		URL:      &trace.MaterialURL{Scheme: "http", Host: x, Port: 80, Path: "/" + x, Method: x}}}
	ts[0].Predicate.Buildtrace.Steps[0].Instruction = "RUN " + x
	ts[0].Predicate.Buildtrace.Steps[1].Reason = x
	ts[0].Image, ts[0].Platform, ts[0].Err = x, x, x
	p, err := policy.Parse([]byte("binaries:\n  denied: [gcc*]\n"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := policy.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := HTMLWith(&buf, ts, Options{Policy: c, PolicyName: x}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	checkMarkup(t, out)
	const csp = `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'">`
	if !strings.Contains(out, csp) {
		t.Errorf("page lacks its Content-Security-Policy %s", csp)
	}
	// The strings are there, as text.
	if n := strings.Count(out, "&lt;script&gt;alert(1)&lt;/script&gt;"); n < 10 {
		t.Errorf("the hostile string is shown escaped %d times, want it in every place (10 or more)", n)
	}
}

// TestHTMLSizeBounded: a run with 2,000 processes of 8 KiB command lines
// and 20,000 file changes makes a page of a few hundred KiB, not tens of
// MiB: the tree is capped and groups a binary's many runs, long arguments
// are cut, and the file list names the first htmlFiles by path.
func TestHTMLSizeBounded(t *testing.T) {
	ts := bigTrace(t)
	run := &ts[0].Build.Steps[0]
	big := strings.Repeat("x", 8<<10)
	run.Processes = run.Processes[:1]
	for i := range 2000 {
		end := run.Start.Add(time.Second)
		run.Processes = append(run.Processes, trace.Process{PID: uint32(5000 + i), PPID: 10, Exec: true, Binary: "/usr/bin/cc",
			Argv: []string{"/usr/bin/cc", "-c", big, fmt.Sprintf("/src/f%d.c", i)}, Start: run.Start, End: &end})
	}
	run.Diff.Changes = nil
	for i := range 20000 {
		run.Diff.Changes = append(run.Diff.Changes, trace.FileChange{Change: trace.ChangeCreated, Path: fmt.Sprintf("/out/obj/%05d.o", i), Type: "file", Mode: 0o644, Size: 10})
	}
	var buf bytes.Buffer
	if err := HTML(&buf, ts); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if n := buf.Len(); n > 400<<10 {
		t.Errorf("page is %d KiB, want at most 400", n>>10)
	}
	for _, want := range []string{
		"2000× /usr/bin/cc", // the group
		fmt.Sprintf("… and %s", plural(2001-htmlTreeNodes, "more process")),
		"the first 300 of 20000 by path",
		"/out/obj/00299.o", // the 300th
	} {
		if !strings.Contains(out, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(out, "/out/obj/00300.o") {
		t.Error("page lists more than 300 file changes")
	}
	if strings.Contains(out, big[:treeArg+1]) {
		t.Error("page has an argument longer than treeArg runes")
	}
}
