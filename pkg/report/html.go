package report

import (
	"fmt"
	"html/template"
	"io"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/policy"
	"github.com/buildtrace/buildtrace/pkg/termsafe"
	"github.com/buildtrace/buildtrace/pkg/trace"
)

// HTML writes one self-contained page (inline CSS, no scripts or external
// assets): the steps, a timeline of steps and their busiest processes,
// and per step its summary with the process tree and every file change
// in collapsed sections.
func HTML(w io.Writer, traces []Trace) error { return HTMLWith(w, traces, Options{}) }

// HTMLWith writes the page with opts (Full is implied: the details are
// collapsed).
func HTMLWith(w io.Writer, traces []Trace, opts Options) error {
	page := htmlPage{DurationDefinition: DurationDefinition, TimelineProcs: TimelineProcs, PolicyName: opts.PolicyName, Policy: opts.Policy != nil}
	for i := range traces {
		page.Platforms = append(page.Platforms, buildPlatform(&traces[i], i, opts))
	}
	return pageTmpl.Execute(w, page)
}

type htmlPage struct {
	Platforms          []htmlPlatform
	DurationDefinition string
	TimelineProcs      int
	Policy             bool
	PolicyName         string
}

type htmlPlatform struct {
	T          *Trace
	Violations []stepViolation // every step's, in step order
	Span       string
	Axis       []tick // the build's scale, for the step rows
	Rows       []timelineRow
	Steps      []htmlStep
	Reasons    string
	Complete   bool
	Ran        bool // some step ran in this build
}

// stepViolation is a policy violation with the step it is in.
type stepViolation struct {
	ID, Location string
	V            policy.Violation
}

// tick is a label on a timeline's scale.
type tick struct {
	Left  float64 // percent
	Label string
	End   bool // the last one, drawn left of its place
}

type timelineRow struct {
	Label, Title, Class, Duration string
	Left, Width                   float64 // percent
	Indent                        int
	NoBar                         bool
	Axis                          []tick // a scale row: its labels
}

type htmlStep struct {
	Step
	ID         string // anchor
	Label      string
	Short      string // the instruction, cut to instructionWidth
	Duration   string
	Totals     trace.Resources
	Runs       []htmlRun
	Violations []policy.Violation
	Checked    bool // a policy was applied
	Changes    int  // file changes of all runs
}

type htmlRun struct {
	Run     trace.Step
	Many    bool // the step has more than one run
	Sum     Summary
	Tree    []htmlNode
	TreeCut int // processes left out of the tree (htmlTreeNodes)
	Files   string
	FilesN  int        // changes in Files
	Changes int        // all changes
	Dirs    []DirGroup // first TopDirs
	More    *DirGroup  // the rest, summed
	MoreN   int
}

type htmlNode struct {
	Label, Exit string
	Failed      bool
	Open        bool
	Group       bool // Label names several processes of one binary
	Processes   int  // below this one
	Children    []htmlNode
}

// Caps of the page, so a build with thousands of processes and files
// stays a page a browser opens at once (show --full prints everything).
const (
	treeArg       = 40  // runes of one argument in the process tree
	treeArgv      = 160 // runes of a command line in the process tree
	htmlTreeNodes = 500 // processes in one run's tree
	htmlFiles     = 300 // file changes listed per run
	groupChildren = 8   // more children of one binary than this are grouped
	pageMaterials = 50  // downloaded files listed per run
)

// treeCommand is a process's command line for the tree: as Command, each
// long argument cut in its middle; in a group named for its binary,
// argv[0] by its base name.
func treeCommand(p trace.Process, grouped bool) string {
	q := p
	if len(q.Argv) > 0 {
		q.Argv = make([]string, len(p.Argv))
		for i, a := range p.Argv {
			if i == 0 && grouped && strings.Contains(a, "/") && !strings.HasSuffix(a, "/") {
				a = path.Base(a)
			}
			q.Argv[i] = elideArg(a, treeArg)
		}
	}
	return truncateRunes(Command(q), treeArgv)
}

// countNodes is the number of processes in ns and below.
func countNodes(ns []*ProcessNode) int {
	n := len(ns)
	for _, c := range ns {
		n += countNodes(c.Children)
	}
	return n
}

// buildTree turns ns into the page's tree, with at most *budget nodes.
// The children of one process that ran the same binary more than
// groupChildren times (a compiler's hundreds of runs) go into one
// collapsed node named for the binary.
func buildTree(ns []*ProcessNode, depth int, budget *int) []htmlNode {
	byBin := map[string]int{}
	for _, n := range ns {
		if n.Exec {
			byBin[n.Binary]++
		}
	}
	var out []htmlNode
	groups := map[string]int{} // binary: index in out
	for _, n := range ns {
		if *budget <= 0 {
			break
		}
		*budget--
		grouped := n.Exec && byBin[n.Binary] > groupChildren
		label := fmt.Sprintf("%d %s", n.PID, treeCommand(n.Process, grouped))
		if !n.Exec {
			// A fork has its parent's command line: name only the binary.
			label = fmt.Sprintf("%d (fork) %s", n.PID, n.Binary)
		}
		h := htmlNode{Label: label, Open: depth == 0, Processes: countNodes(n.Children), Children: buildTree(n.Children, depth+1, budget)}
		// Only a failure is worth the room: most processes exit 0.
		if n.Signal != 0 || n.ExitCode != nil && *n.ExitCode != 0 {
			h.Exit, h.Failed = ExitText(n.Process), true
		}
		if c := byBin[n.Binary]; grouped {
			i, ok := groups[n.Binary]
			if !ok {
				i = len(out)
				groups[n.Binary] = i
				out = append(out, htmlNode{Group: true, Label: fmt.Sprintf("%d× %s", c, n.Binary)})
			}
			out[i].Children = append(out[i].Children, h)
			if h.Failed {
				out[i].Failed = true
			}
			continue
		}
		out = append(out, h)
	}
	return out
}

// fileLines lists up to limit of a run's changes, by path, one a line.
func fileLines(cs []trace.FileChange, limit int) (string, int) {
	cs = slices.Clone(cs)
	slices.SortStableFunc(cs, func(a, b trace.FileChange) int { return strings.Compare(a.Path, b.Path) })
	cs = cs[:min(len(cs), limit)]
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "%-8s %s%s\n", c.Change, termsafe.String(c.Path), termsafe.String(fileNote(c)))
	}
	return b.String(), len(cs)
}

// ticks labels a scale of span in quarters, each to three digits.
func ticks(span time.Duration) []tick {
	var out []tick
	for i := range 5 {
		out = append(out, tick{Left: float64(25 * i), Label: roughDuration(span * time.Duration(i) / 4), End: i == 4})
	}
	out[0].Label = "0"
	return out
}

// roughDuration is d to three significant digits: 30.9ms, 8.51s.
func roughDuration(d time.Duration) string {
	unit := time.Duration(1)
	for x := d; x >= 1000; x /= 10 {
		unit *= 10
	}
	return d.Round(unit).String()
}

func buildPlatform(t *Trace, index int, opts Options) htmlPlatform {
	hp := htmlPlatform{T: t}
	steps := t.Steps()
	if t.Predicate != nil {
		hp.Reasons = strings.Join(t.Predicate.Buildtrace.Reasons, "; ")
		hp.Complete = t.Predicate.Buildtrace.Complete
	}
	// The timeline and the step table use the same interval per run:
	// Start to Start+RunDuration.
	end := func(r trace.Step) time.Time { return r.Start.Add(time.Duration(RunDuration(r))) }
	var lo, hi time.Time
	for _, s := range steps {
		for _, r := range s.Runs {
			if lo.IsZero() || r.Start.Before(lo) {
				lo = r.Start
			}
			if e := end(r); e.After(hi) {
				hi = e
			}
		}
	}
	hp.Ran = !hi.IsZero()
	span := hi.Sub(lo)
	if span <= 0 {
		span = time.Millisecond
	}
	hp.Span = Duration(int64(span))
	hp.Axis = ticks(span)
	// pos places a..b on the scale from from to from+span, in percent.
	pos := func(from time.Time, span time.Duration, a, b time.Time) (float64, float64) {
		if b.Before(a) {
			b = a
		}
		left := min(max(100*float64(a.Sub(from))/float64(span), 0), 100)
		width := max(100*float64(b.Sub(a))/float64(span), 0.3)
		return left, max(min(width, 100-left), 0)
	}
	for i, s := range steps {
		label := strings.TrimSpace(s.Location() + " " + s.Info.Instruction)
		hs := htmlStep{Step: s, ID: fmt.Sprintf("p%d-s%d", index, i), Label: label, Short: truncateRunes(s.Info.Instruction, instructionWidth), Totals: s.Totals(), Checked: opts.Policy != nil}
		if len(s.Runs) > 0 {
			hs.Duration = Duration(s.Duration())
		}
		if opts.Policy != nil {
			hs.Violations = Violations(opts.Policy, s)
			for _, v := range hs.Violations {
				hp.Violations = append(hp.Violations, stepViolation{ID: hs.ID, Location: s.Location(), V: v})
			}
		}
		tlLabel := truncateRunes(label, 120)
		if len(s.Runs) == 0 {
			hp.Rows = append(hp.Rows, timelineRow{Label: tlLabel, Title: s.Info.Status, Duration: s.Info.Status, Class: "step " + s.Info.Status, NoBar: true})
		}
		for _, r := range s.Runs {
			rd := time.Duration(RunDuration(r))
			d := Duration(int64(rd))
			l, wd := pos(lo, span, r.Start, end(r))
			hp.Rows = append(hp.Rows, timelineRow{Label: tlLabel, Title: fmt.Sprintf("%s, %s", s.Info.Status, d), Duration: d, Class: "step executed", Left: l, Width: wd})
			// A step's processes are drawn on the step's own scale: on
			// the build's, a 100 ms step beside a 30 s one is a dot.
			procs := busiest(r, TimelineProcs)
			if len(procs) > 0 {
				if rd <= 0 {
					rd = time.Millisecond
				}
				hp.Rows = append(hp.Rows, timelineRow{Label: "its processes, on the step's own scale:", Class: "scale", Indent: 1, NoBar: true, Axis: ticks(rd)})
			}
			for _, p := range procs {
				pend := end(r)
				if p.End != nil {
					pend = *p.End
				}
				l, wd := pos(r.Start, rd, p.Start, pend)
				pd := Duration(p.Nanos)
				hp.Rows = append(hp.Rows, timelineRow{Label: fmt.Sprintf("%d %s", p.PID, ShortCommand(p.Process)), Title: pd, Duration: pd, Class: "proc", Left: l, Width: wd, Indent: 1})
			}
			if n := len(r.Processes) - len(procs); n > 0 && len(procs) > 0 {
				hp.Rows = append(hp.Rows, timelineRow{Label: fmt.Sprintf("… and %s (see the step's process tree)", plural(n, "more process")), Class: "more", Indent: 1, NoBar: true})
			}
			budget := htmlTreeNodes
			hr := htmlRun{Run: r, Many: len(s.Runs) > 1, Sum: Summarize(r), Tree: buildTree(Tree(r), 0, &budget)}
			hr.TreeCut = max(len(r.Processes)-htmlTreeNodes, 0)
			cs, _ := changes(r)
			hr.Changes = len(cs)
			hr.Files, hr.FilesN = fileLines(cs, htmlFiles)
			hr.Dirs = hr.Sum.Files.Groups
			if len(hr.Dirs) > TopDirs {
				more := DirGroup{}
				for _, g := range hr.Dirs[TopDirs:] {
					more.Created += g.Created
					more.Modified += g.Modified
					more.Deleted += g.Deleted
				}
				hr.More, hr.MoreN = &more, len(hr.Dirs)-TopDirs
				hr.Dirs = hr.Dirs[:TopDirs]
			}
			hs.Changes += hr.Sum.Files.Total()
			hs.Runs = append(hs.Runs, hr)
		}
		hp.Steps = append(hp.Steps, hs)
	}
	return hp
}

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"pct":    func(f float64) string { return fmt.Sprintf("%.3f%%", f) },
	"indent": func(n int) string { return fmt.Sprintf("%.1fem", 0.3+float64(n)*1.2) },
	"dur":    Duration,
	"bytes":  Bytes,
	"cpu":    func(u, s uint64) string { return Duration(int64(u + s)) },
	"plural": plural,
	"rfc":    func(t time.Time) string { return t.Format(time.RFC3339) },
	"join":   strings.Join,
	"note":   fileNote,
	"elide":  func(p string) string { return elideMiddle(p, notablePath) },
	"vtext":  ViolationText,
	"cached": func(s string) bool { return s == attest.StatusCached },
	"gt":     func(a, b int) bool { return a > b },
	"counts": changeCounts,
	"sum": func(b []BinaryCount) int {
		n := 0
		for _, x := range b {
			n += x.Count
		}
		return n
	},
	"top": func(n int, v any) any {
		switch x := v.(type) {
		case []BinaryCount:
			return x[:min(n, len(x))]
		case []trace.Process:
			return x[:min(n, len(x))]
		case []Dest:
			return x[:min(n, len(x))]
		case []string:
			return x[:min(n, len(x))]
		case []policy.Violation:
			return x[:min(n, len(x))]
		}
		return v
	},
	"rest":            func(n int, b []BinaryCount) []BinaryCount { return b[min(n, len(b)):] },
	"topBinaries":     func() int { return TopBinaries },
	"topFailures":     func() int { return TopFailures },
	"topDestinations": func() int { return TopDestinations },
	"topDNS":          func() int { return TopDNSNames },
	"topViolations":   func() int { return TopViolations },
	"shortcmd":        ShortCommand,
	"rundur":          func(r trace.Step) string { return Duration(RunDuration(r)) },
	"exit":            ExitText,
	"short":           ShortDigest,
	// A step can download hundreds of files (npm ci): the page lists the
	// first pageMaterials, show --full prints all.
	"firstMaterials": func(m []trace.Material) []trace.Material { return m[:min(len(m), pageMaterials)] },
	"moreMaterials":  func(m []trace.Material) int { return max(0, len(m)-pageMaterials) },
	"size":           func(m trace.Material) uint64 { return uint64(max(m.Size, 0)) },
	"mfrom":          MaterialFrom,
	"mby":            MaterialBy,
	"murl":           MaterialURLText,
	// html/template stops markup; ts makes control characters visible.
	"ts": termsafe.String,
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>buildtrace report</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1300px;padding:0 1em;color:#222}
h1{font-size:1.4em}h2{font-size:1.25em;margin-top:1.5em;border-bottom:2px solid #ddd;padding-bottom:.2em}
h3{font-size:1.05em;margin:1.4em 0 .3em}h4{font-size:.95em;margin:.9em 0 .3em;color:#444}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
table{border-collapse:collapse;margin:.4em 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3;font-weight:600}
td.n,th.n{text-align:right;white-space:nowrap}
.wide{width:100%}
.meta td:first-child{width:10em;color:#555}
.bad{color:#b00;font-weight:bold}.ok{color:#070}.muted{color:#777}
.note{color:#555;font-size:.9em;margin:.2em 0 .6em}
.instr{overflow-wrap:anywhere}
table.materials{table-layout:fixed}.materials td{overflow-wrap:anywhere}
.materials th:nth-child(1){width:30%}.materials th:nth-child(2){width:8%}.materials th:nth-child(3){width:6%}
.materials th:nth-child(4){width:13%}.materials th:nth-child(5){width:15%}
.steps td.instr{max-width:42em;min-width:16em}
.tl{width:100%;table-layout:fixed;border:none;margin-top:.2em}.tl td{border:none;padding:1px 4px}
.tl td.label{width:40%;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.tl td.d{width:5.5em;text-align:right;color:#555;white-space:nowrap;font-size:12px}
.tl tr.step td{border-top:1px solid #e6e6e6;padding-top:4px}
.tl tr.step td.label{font-weight:600}
.tl tr.more td.label{color:#888;font-style:italic}
.tl tr.proc td.label{white-space:normal;overflow-wrap:anywhere;font-size:11.5px;line-height:1.25}
.tl tr.scale td.label{color:#777;font-size:12px;font-style:italic}
.tl tr.cached td.d,.tl tr.unknown td.d{color:#999}
.track{position:relative;height:14px;background:#f6f6f6 linear-gradient(to right,#ddd 1px,transparent 1px) 0 0/25% 100%}
.proc .track{background-color:#f4f8fb}
.bar{position:absolute;top:2px;height:10px;border-radius:2px;min-width:2px}
.step .bar{background:#2b6cb0;top:0;height:14px}.proc .bar{background:#63a4dc}
.axis{position:relative;height:14px;font-size:11px;color:#666}
.axis span{position:absolute;top:0;white-space:nowrap}.axis span.end{transform:translateX(-100%)}
tr.cached .label,tr.unknown .label{color:#888}
.status-executed{color:#2b6cb0}.status-cached{color:#777}.status-unknown{color:#b00}
section.step{border:1px solid #ddd;border-radius:6px;padding:.2em 1em .8em;margin:1em 0;background:#fcfcfc}
section.step h3{margin-top:.6em}
.cols{display:flex;flex-wrap:wrap;gap:0 2em}.cols>div{flex:1 1 30em;min-width:0}
.cols table{width:100%}
details{margin:.4em 0}details>summary{cursor:pointer;color:#2b6cb0}
ul.tree{list-style:none;padding-left:1.2em;margin:.1em 0}ul.tree.top{padding-left:.2em}
ul.tree li{margin:0}ul.tree details{margin:0}
.exit{color:#777}.exit.fail{color:#b00;font-weight:bold}
.lost li{color:#8a5a00}
td.zero{color:#bbb}
.violations{border-left:4px solid #b00;background:#fff5f5;padding:.1em .8em;margin:.5em 0}
.violations ul{margin:.3em 0}
pre.instr{white-space:pre-wrap;background:#f6f6f6;padding:.5em;margin:.2em 0}
pre.files{background:#f6f6f6;padding:.5em;margin:.2em 0;max-height:40em;overflow:auto}
.tree .mono{overflow-wrap:anywhere}
summary.group{color:#2b6cb0}
td.dest,td.nowrap{white-space:nowrap}
</style></head><body>
<h1>buildtrace report</h1>
{{range .Platforms}}{{$p := .}}
<h2>{{ts .T.Image}} — {{ts .T.Platform}}</h2>
<table class="meta">
<tr><td>manifest</td><td class="mono">{{ts .T.Manifest}}</td></tr>
{{with .T.Predicate}}<tr><td>build trace</td><td class="mono">{{ts .Buildtrace.BuildTraceID}}</td></tr>
<tr><td>monitor</td><td>{{ts .Monitor.Name}} {{ts .Monitor.Version}} {{with .Monitor.Kernel}}(kernel {{ts .}}){{end}}</td></tr>
<tr><td>monitored</td><td>{{if .Buildtrace.Monitored}}<span class="ok">yes</span>{{else}}<span class="bad">no: {{ts .Buildtrace.UnmonitoredReason}}</span>{{end}}</td></tr>{{end}}
<tr><td>complete</td><td>{{if .Complete}}<span class="ok">yes</span>{{else}}<span class="bad">no</span> {{ts .Reasons}}{{end}}</td></tr>
<tr><td>signature</td><td>{{if .T.Verified}}<span class="ok">{{ts .T.Signature}}</span>{{else}}<span class="bad">{{ts .T.Signature}}</span>{{end}}</td></tr>
{{if $.Policy}}<tr><td>policy</td><td class="mono">{{ts $.PolicyName}}</td></tr>{{end}}
{{with .T.Err}}<tr><td>error</td><td class="bad">{{ts .}}</td></tr>{{end}}
</table>
{{if and $.Policy .T.Predicate}}{{with .Violations}}<div class="violations"><h4 class="bad">Policy {{ts $.PolicyName}}: {{plural (len .) "violation"}}</h4><ul>{{range $i, $v := .}}{{if lt $i 20}}<li><a href="#{{$v.ID}}">{{ts $v.Location}}</a> <span class="bad">{{ts (vtext $v.V)}}</span></li>{{end}}{{end}}{{if gt (len .) 20}}<li class="muted">… and {{len (slice . 20)}} more (in their steps below)</li>{{end}}</ul></div>{{else}}<p class="ok">Policy {{ts $.PolicyName}}: no violations.</p>{{end}}{{end}}
{{if .Steps}}
<h3>Steps</h3>
<p class="note">{{$.DurationDefinition}} The timeline draws the same interval.</p>
<table class="steps wide"><tr><th>location</th><th>instruction</th><th>status</th><th class="n">duration</th><th class="n">CPU</th><th class="n">peak memory</th><th class="n">processes</th><th class="n">file changes</th>{{if $.Policy}}<th class="n">policy</th>{{end}}</tr>
{{range .Steps}}<tr><td class="mono"><a href="#{{.ID}}">{{ts .Location}}</a></td><td class="mono instr">{{ts .Short}}</td><td class="status-{{ts .Info.Status}}">{{ts .Info.Status}}{{with .Info.Reason}} ({{ts .}}){{end}}</td>
<td class="n step-duration">{{.Duration}}</td><td class="n">{{if .Runs}}{{cpu .Totals.CPUUserNanos .Totals.CPUSystemNanos}}{{end}}</td><td class="n">{{if .Runs}}{{bytes .Totals.PeakRSSBytes}}{{end}}</td><td class="n">{{if .Runs}}{{.Totals.Processes}}{{end}}</td><td class="n">{{if .Runs}}{{.Changes}}{{end}}</td>{{if $.Policy}}<td class="n">{{if .Violations}}<span class="bad">{{len .Violations}}</span>{{else}}<span class="ok">0</span>{{end}}</td>{{end}}</tr>
{{end}}</table>
<h3>Timeline{{if .Ran}} ({{.Span}}){{end}}</h3>
{{if not .Ran}}<p class="muted">No step ran in this build{{if .Steps}}: a cached step did not run (each says below which earlier run made its layer, if one is known){{end}}.</p>{{else}}<p class="note">Each step on the build's scale; under it, its {{$.TimelineProcs}} longest-running processes (those that exec'd a program before bare forks, the RUN's own shell left out) on the step's own scale. Every process is in the step's process tree below.</p>
<table class="tl"><tr class="axis-row"><td class="label"></td><td class="d"></td><td>{{template "axis" .Axis}}</td></tr>
{{range .Rows}}<tr class="{{ts .Class}}"><td class="label mono" style="padding-left:{{indent .Indent}}" title="{{ts .Label}}">{{ts .Label}}</td><td class="d">{{ts .Duration}}</td><td>{{if .Axis}}{{template "axis" .Axis}}{{else}}<div class="track">{{if not .NoBar}}<div class="bar" style="left:{{pct .Left}};width:{{pct .Width}}" title="{{ts .Title}}"></div>{{end}}</div>{{end}}</td></tr>
{{end}}</table>{{end}}
{{range .Steps}}{{$s := .}}
<section class="step" id="{{.ID}}">
<h3><span class="mono">{{ts .Location}}</span> <span class="mono instr">{{ts .Short}}</span> <span class="status-{{ts .Info.Status}}">[{{ts .Info.Status}}]</span>{{with .Info.Reason}} <span class="muted">({{ts .}})</span>{{end}}</h3>
{{if ne .Short .Info.Instruction}}<details><summary>Whole instruction</summary><pre class="mono instr">{{ts .Info.Instruction}}</pre></details>{{end}}
{{if cached .Info.Status}}{{if not .Info.Evidence}}<p class="bad">Cached, unproven: no signed record of the run that made its layer was found.</p>{{end}}
{{range .Info.Evidence}}<p>Cached, with evidence: ran in build <span class="mono">{{ts .BuildTraceID}}</span>, container <span class="mono">{{ts .ContainerID}}</span>, {{rfc .Start}} (diff <span class="mono">{{ts .DiffDigest}}</span>).</p>{{end}}{{end}}
{{if .Runs}}<p>Duration <b>{{.Duration}}</b> · CPU {{cpu .Totals.CPUUserNanos .Totals.CPUSystemNanos}} (user {{cpu .Totals.CPUUserNanos 0}}, system {{cpu 0 .Totals.CPUSystemNanos}}) · peak memory {{bytes .Totals.PeakRSSBytes}} · {{plural .Totals.Processes "process"}}</p>{{end}}
{{if .Checked}}{{with .Violations}}<div class="violations"><h4 class="bad">Policy: {{plural (len .) "violation"}}</h4><ul>{{range .}}<li class="bad">{{ts (vtext .)}}</li>{{end}}</ul></div>{{else}}<p class="ok">Policy: no violations</p>{{end}}{{end}}
{{range .Runs}}{{$r := .}}
{{if .Many}}<h4>Run in container <span class="mono">{{ts .Run.ContainerID}}</span>, {{rundur .Run}}</h4>{{end}}
<div class="cols"><div>
{{with .Sum.Binaries}}<h4>Processes by binary</h4>
<table><tr><th class="n">processes</th><th>binary</th><th>run as</th></tr>
{{range top topBinaries .}}<tr><td class="n">{{.Count}}</td><td class="mono">{{ts .Binary}}</td><td class="mono">{{range $i, $n := .Names}}{{if lt $i 3}}{{if $i}}, {{end}}{{ts $n.Name}} ×{{$n.Count}}{{end}}{{end}}{{if gt (len .Names) 3}}, …{{end}}</td></tr>
{{end}}{{with rest topBinaries .}}<tr><td class="n">{{sum .}}</td><td colspan="2" class="muted">… and {{plural (len .) "more binary"}}</td></tr>{{end}}
</table>{{end}}
{{with .Sum.Failed}}<h4 class="bad">{{plural (len .) "process"}} failed (non-zero exit or signal)</h4>
<table><tr><th class="n">pid</th><th>binary</th><th>command</th><th>exit</th></tr>
{{range top topFailures .}}<tr><td class="n">{{.PID}}</td><td class="mono">{{ts .Binary}}</td><td class="mono">{{ts (shortcmd .)}}</td><td class="bad nowrap">{{exit .}}</td></tr>
{{end}}{{if gt (len .) topFailures}}<tr><td colspan="4" class="muted">… and {{plural (len (slice . topFailures)) "more process"}} (see the process tree)</td></tr>{{end}}
</table>{{end}}
<h4>Egress</h4>
{{with .Sum.Egress}}<table><tr><th>destination</th><th>hostnames</th><th>traffic</th><th>by</th></tr>
{{range .}}<tr><td class="mono dest">{{ts .EndpointText}}</td><td>{{ts .HostText}}</td><td>{{ts .Traffic}}</td><td class="mono">{{ts (join .Binaries ", ")}}</td></tr>
{{end}}</table>{{else}}<p class="muted">none</p>{{end}}
{{with .Sum.DNSNames}}<p>DNS: {{plural $r.Sum.DNSCount "question"}} for <span class="mono">{{ts (join . ", ")}}</span></p>{{end}}
</div><div>
<h4>Files: {{if .Sum.Files.Total}}{{counts .Sum.Files.Created .Sum.Files.Modified .Sum.Files.Deleted}}{{if not .Sum.Files.Changes}} in {{plural (len .Sum.Files.Groups) "directory"}}{{end}}{{else}}no changes{{end}}</h4>
{{if .Sum.Files.Changes}}<table><tr><th>change</th><th>path</th></tr>
{{range .Sum.Files.Changes}}<tr><td class="mono">{{ts .Change}}</td><td class="mono">{{ts .Path}}{{ts (note .)}}</td></tr>
{{end}}</table>
{{else if .Dirs}}<table><tr><th>directory</th><th class="n">created</th><th class="n">modified</th><th class="n">deleted</th></tr>
{{range .Dirs}}<tr><td class="mono">{{ts .Label}}</td>{{template "count" .Created}}{{template "count" .Modified}}{{template "count" .Deleted}}</tr>
{{end}}{{with .More}}<tr><td class="muted">… and {{plural $r.MoreN "more directory"}}</td>{{template "count" .Created}}{{template "count" .Modified}}{{template "count" .Deleted}}</tr>{{end}}
</table>
{{with .Sum.Files.Setuid}}<p class="bad">setuid/setgid: {{range $i, $c := .}}{{if $i}}, {{end}}<span class="mono">{{ts $c.Path}}</span>{{ts (note $c)}}{{end}}{{if gt $r.Sum.Files.SetuidCount (len .)}} … and more{{end}}</p>{{end}}
{{with .Sum.Files.Executables}}<p>new executables: {{range $i, $c := .}}{{if $i}}, {{end}}<span class="mono">{{ts $c.Path}}</span>{{ts (note $c)}}{{end}}{{if gt $r.Sum.Files.ExecutableCount (len .)}} … and more{{end}}</p>{{end}}
{{with .Sum.Files.Largest}}<p>largest new: {{range $i, $c := .}}{{if $i}}, {{end}}<span class="mono">{{ts (elide $c.Path)}}</span>{{ts (note $c)}}{{end}}</p>{{end}}
{{end}}
<h4>Lost</h4>
{{with .Sum.Lost}}<ul class="lost">{{range .}}<li>{{ts .}}</li>{{end}}</ul>{{else}}<p class="ok">nothing: followed from its start, no events dropped or cut</p>{{end}}
</div></div>
{{if .Sum.Materials}}<h4>Downloaded ({{ts .Sum.MaterialsHeading}})</h4>
<table class="materials wide"><tr><th>file</th><th>sha256</th><th class="n">size</th><th>from</th><th>by</th><th>URL (from the command line)</th></tr>
{{range firstMaterials .Sum.Materials}}<tr><td class="mono">{{ts .Path}}</td><td class="mono" title="{{ts .SHA256}}">{{ts (short .SHA256)}}</td><td class="n">{{bytes (size .)}}</td><td class="mono dest">{{ts (mfrom .)}}</td><td class="mono">{{ts (mby .)}}</td><td class="mono">{{ts (murl .)}}</td></tr>
{{end}}{{with moreMaterials .Sum.Materials}}<tr><td colspan="6" class="muted">… and {{plural . "more file"}} (<code>buildtrace show --full</code> lists all)</td></tr>{{end}}</table>{{end}}
<details><summary>Process tree ({{plural (len .Run.Processes) "process"}}; long command lines shortened, <code>buildtrace show --full</code> prints them whole)</summary>
<ul class="tree top">{{range .Tree}}{{template "node" .}}{{end}}{{if .TreeCut}}<li class="muted">… and {{plural .TreeCut "more process"}} (<code>buildtrace show --full</code>)</li>{{end}}</ul>
</details>
{{if and .Changes (not .Sum.Files.Changes)}}<details><summary>File changes ({{if lt .FilesN .Changes}}the first {{.FilesN}} of {{.Changes}} by path; <code>buildtrace show --full</code> lists all{{else}}{{.Changes}}{{end}})</summary>
<pre class="files mono">{{.Files}}</pre>
</details>{{end}}
{{end}}
</section>
{{end}}{{end}}
{{end}}
</body></html>
{{define "count"}}<td class="n{{if not .}} zero{{end}}">{{.}}</td>{{end}}
{{define "node"}}<li>{{if .Group}}<details><summary class="mono group">{{ts .Label}}{{if .Failed}} <span class="exit fail">(some failed)</span>{{end}}</summary>
<ul class="tree">{{range .Children}}{{template "node" .}}{{end}}</ul></details>{{else if .Children}}<details{{if .Open}} open{{end}}><summary class="mono">{{ts .Label}}{{with .Exit}} <span class="exit{{if $.Failed}} fail{{end}}">→ {{.}}</span>{{end}} <span class="muted">({{plural .Processes "process"}} below)</span></summary>
<ul class="tree">{{range .Children}}{{template "node" .}}{{end}}</ul></details>{{else}}<span class="mono">{{ts .Label}}</span>{{with .Exit}} <span class="exit{{if $.Failed}} fail{{end}}">→ {{.}}</span>{{end}}{{end}}</li>
{{end}}
{{define "axis"}}<div class="axis">{{range .}}<span{{if .End}} class="end"{{end}} style="left:{{pct .Left}}">{{.Label}}</span>{{end}}</div>{{end}}`))
