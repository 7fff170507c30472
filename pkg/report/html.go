package report

import (
	"fmt"
	"html/template"
	"io"
	"strings"
	"time"

	"github.com/buildtrace/buildtrace/pkg/termsafe"
)

// HTML writes one self-contained page (inline CSS, no scripts or external
// assets) with a timeline of steps and processes, an egress table and the
// file changes.
func HTML(w io.Writer, traces []Trace) error {
	var page htmlPage
	for i := range traces {
		page.Platforms = append(page.Platforms, buildPlatform(&traces[i]))
	}
	return pageTmpl.Execute(w, page)
}

type htmlPage struct{ Platforms []htmlPlatform }

type htmlPlatform struct {
	T        *Trace
	Span     string
	Rows     []timelineRow
	Egress   []egressRow
	Files    []fileRow
	Steps    []Step
	Reasons  string
	Complete bool
}

type timelineRow struct {
	Label, Title, Class string
	Left, Width         float64 // percent
	Indent              int
}

type egressRow struct {
	Step, Processes, Protocol, Endpoint, Hostnames, Op string
	Count                                              int
	Sent, Received                                     string
}

type fileRow struct{ Step, Change, Path string }

func buildPlatform(t *Trace) htmlPlatform {
	hp := htmlPlatform{T: t, Steps: t.Steps()}
	if t.Predicate != nil {
		hp.Reasons = strings.Join(t.Predicate.Buildtrace.Reasons, "; ")
		hp.Complete = t.Predicate.Buildtrace.Complete
	}
	var lo, hi time.Time
	for _, s := range hp.Steps {
		for _, r := range s.Runs {
			if lo.IsZero() || r.Start.Before(lo) {
				lo = r.Start
			}
			if r.End.After(hi) {
				hi = r.End
			}
		}
	}
	span := hi.Sub(lo)
	if span <= 0 {
		span = time.Millisecond
	}
	hp.Span = Duration(int64(span))
	pos := func(a, b time.Time) (float64, float64) {
		if b.Before(a) {
			b = a
		}
		left := 100 * float64(a.Sub(lo)) / float64(span)
		width := max(100*float64(b.Sub(a))/float64(span), 0.4)
		return left, min(width, 100-left)
	}
	for _, s := range hp.Steps {
		label := strings.TrimSpace(s.Location() + " " + s.Info.Instruction)
		if len(s.Runs) == 0 {
			hp.Rows = append(hp.Rows, timelineRow{Label: label, Title: s.Info.Status, Class: "step " + s.Info.Status})
			continue
		}
		for _, r := range s.Runs {
			l, wd := pos(r.Start, r.End)
			hp.Rows = append(hp.Rows, timelineRow{Label: label, Title: fmt.Sprintf("%s, %s", s.Info.Status, Duration(r.End.Sub(r.Start).Nanoseconds())), Class: "step executed", Left: l, Width: wd})
			var walk func(n *ProcessNode, depth int)
			walk = func(n *ProcessNode, depth int) {
				end := r.End
				if n.End != nil {
					end = *n.End
				}
				l, wd := pos(n.Start, end)
				hp.Rows = append(hp.Rows, timelineRow{Label: fmt.Sprintf("%d %s", n.PID, Command(n.Process)), Title: Duration(end.Sub(n.Start).Nanoseconds()), Class: "proc", Left: l, Width: wd, Indent: depth + 1})
				for _, c := range n.Children {
					walk(c, depth+1)
				}
			}
			for _, n := range Tree(r) {
				walk(n, 0)
			}
			bins := map[uint32]string{}
			for _, p := range r.Processes {
				bins[p.PID] = p.Binary
			}
			for _, d := range r.Network {
				var procs []string
				for _, pid := range d.PIDs {
					procs = append(procs, fmt.Sprintf("%d %s", pid, bins[pid]))
				}
				hp.Egress = append(hp.Egress, egressRow{
					Step: label, Processes: strings.Join(procs, ", "), Protocol: d.Protocol,
					Endpoint: fmt.Sprintf("%s:%d", d.IP, d.Port), Hostnames: strings.Join(Hostnames(r, d), ", "),
					Op: d.Op, Count: d.Count, Sent: Bytes(d.BytesSent), Received: Bytes(d.BytesReceived),
				})
			}
			created, modified, deleted := FileChanges(r)
			for _, c := range []struct {
				kind  string
				paths []string
			}{{"created", created}, {"modified", modified}, {"deleted", deleted}} {
				for _, p := range c.paths {
					hp.Files = append(hp.Files, fileRow{Step: label, Change: c.kind, Path: p})
				}
			}
		}
	}
	return hp
}

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"pct":    func(f float64) string { return fmt.Sprintf("%.3f%%", f) },
	"indent": func(n int) string { return fmt.Sprintf("%.1fem", float64(n)*1.2) },
	"dur":    Duration,
	"bytes":  Bytes,
	"cpu":    func(u, s uint64) string { return Duration(int64(u + s)) },
	// html/template stops markup; ts makes control characters visible.
	"ts": termsafe.String,
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>buildtrace report</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:1.5em}h3{font-size:1.05em}
code,.mono{font-family:ui-monospace,monospace;font-size:12px}
table{border-collapse:collapse;margin:.5em 0;width:100%}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3}
.meta td:first-child{width:12em;color:#555}
.bad{color:#b00;font-weight:bold}.ok{color:#070}
.tl{width:100%}.tl td{border:none;padding:1px 4px}
.tl .label{width:40%;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:30em}
.track{position:relative;height:14px;background:#f6f6f6}
.bar{position:absolute;top:2px;height:10px;border-radius:2px}
.step .bar{background:#2b6cb0;top:0;height:14px}.proc .bar{background:#90cdf4}
tr.cached .label,tr.unknown .label{color:#888}
.status-executed{color:#2b6cb0}.status-cached{color:#777}.status-unknown{color:#b00}
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
<tr><td>signature</td><td>{{if .T.Verified}}<span class="ok">{{ts .T.Signature}}</span>{{else}}{{ts .T.Signature}}{{end}}</td></tr>
{{with .T.Err}}<tr><td>error</td><td class="bad">{{ts .}}</td></tr>{{end}}
</table>
<h3>Steps</h3>
<table><tr><th>location</th><th>instruction</th><th>status</th><th>duration</th><th>CPU</th><th>peak memory</th><th>processes</th></tr>
{{range .Steps}}{{$t := .Totals}}<tr><td class="mono">{{ts .Location}}</td><td class="mono">{{ts .Info.Instruction}}</td><td class="status-{{.Info.Status}}">{{ts .Info.Status}}{{with .Info.Reason}} ({{ts .}}){{end}}</td>
<td>{{if .Runs}}{{dur $t.WallNanos}}{{end}}</td><td>{{if .Runs}}{{cpu $t.CPUUserNanos $t.CPUSystemNanos}}{{end}}</td><td>{{if .Runs}}{{bytes $t.PeakRSSBytes}}{{end}}</td><td>{{if .Runs}}{{$t.Processes}}{{end}}</td></tr>
{{end}}</table>
<h3>Timeline ({{.Span}})</h3>
<table class="tl">{{range .Rows}}<tr class="{{.Class}}"><td class="label mono" style="padding-left:{{indent .Indent}}" title="{{ts .Label}}">{{ts .Label}}</td><td><div class="track">{{if .Width}}<div class="bar" style="left:{{pct .Left}};width:{{pct .Width}}" title="{{ts .Title}}"></div>{{end}}</div></td></tr>
{{end}}</table>
<h3>Egress</h3>
{{if .Egress}}<table><tr><th>step</th><th>processes</th><th>protocol</th><th>destination</th><th>hostnames</th><th>op</th><th>count</th><th>sent</th><th>received</th></tr>
{{range .Egress}}<tr><td class="mono">{{ts .Step}}</td><td class="mono">{{ts .Processes}}</td><td>{{ts .Protocol}}</td><td class="mono">{{ts .Endpoint}}</td><td>{{ts .Hostnames}}</td><td>{{ts .Op}}</td><td>{{.Count}}</td><td>{{.Sent}}</td><td>{{.Received}}</td></tr>
{{end}}</table>{{else}}<p>No network destinations.</p>{{end}}
<h3>File changes</h3>
{{if .Files}}<table><tr><th>step</th><th>change</th><th>path</th></tr>
{{range .Files}}<tr><td class="mono">{{ts .Step}}</td><td>{{ts .Change}}</td><td class="mono">{{ts .Path}}</td></tr>
{{end}}</table>{{else}}<p>No file changes.</p>{{end}}
{{end}}
</body></html>
`))
