// Package report renders what a build's steps did, from a runtime-trace
// predicate and its trace: as text for a terminal and as one
// self-contained HTML page.
package report

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/trace"
)

// Trace is one platform's trace of an image.
type Trace struct {
	Image     string
	Platform  string
	Manifest  string
	Signature string // what was established about the signature, for people
	Verified  bool
	Predicate *attest.Predicate // nil when there is no readable attestation
	Build     *trace.Build      // nil when unmonitored or undecodable
	Err       string
}

// Step is one step with its runs, in Dockerfile order.
type Step struct {
	Info attest.Step
	Runs []trace.Step
}

// Location is the step's first Dockerfile location, "Dockerfile:3-4".
func (s Step) Location() string {
	if len(s.Info.Locations) == 0 {
		return ""
	}
	l := s.Info.Locations[0]
	if l.EndLine > l.StartLine {
		return fmt.Sprintf("%s:%d-%d", l.File, l.StartLine, l.EndLine)
	}
	return fmt.Sprintf("%s:%d", l.File, l.StartLine)
}

// Steps pairs the predicate's steps with the trace's runs, ordered by
// stage and Dockerfile line.
func (t *Trace) Steps() []Step {
	if t.Predicate == nil {
		return nil
	}
	runs := map[string][]trace.Step{}
	if t.Build != nil {
		for _, s := range t.Build.Steps {
			runs[s.StepID] = append(runs[s.StepID], s)
		}
	}
	var out []Step
	for _, s := range t.Predicate.Buildtrace.Steps {
		rs := runs[s.StepID]
		slices.SortFunc(rs, func(a, b trace.Step) int { return a.Start.Compare(b.Start) })
		out = append(out, Step{Info: s, Runs: rs})
	}
	line := func(s Step) int {
		if len(s.Info.Locations) == 0 {
			return 1 << 30
		}
		return s.Info.Locations[0].StartLine
	}
	slices.SortStableFunc(out, func(a, b Step) int {
		return cmp.Or(cmp.Compare(line(a), line(b)), strings.Compare(a.Info.StepID, b.Info.StepID))
	})
	return out
}

// RunDuration is how long a run took, the one definition the terminal,
// Markdown and HTML views all use: from the step container's start to its
// end as the tracer saw them (container setup included), the interval the
// timeline draws. Resources.WallNanos (first exec to last exit) is only
// the fallback for a run without an end.
func RunDuration(run trace.Step) int64 {
	if !run.Start.IsZero() && run.End.After(run.Start) {
		return run.End.Sub(run.Start).Nanoseconds()
	}
	return run.Resources.WallNanos
}

// DurationDefinition states RunDuration for people.
const DurationDefinition = "Duration is from the step container's start to its end as the tracer saw them (container setup included)."

// Duration is the sum of the step's run durations (RunDuration).
func (s Step) Duration() int64 {
	var d int64
	for _, run := range s.Runs {
		d += RunDuration(run)
	}
	return d
}

// Totals sums a step's runs.
func (s Step) Totals() trace.Resources {
	var r trace.Resources
	for _, run := range s.Runs {
		r.WallNanos += run.Resources.WallNanos
		r.CPUUserNanos += run.Resources.CPUUserNanos
		r.CPUSystemNanos += run.Resources.CPUSystemNanos
		r.PeakRSSBytes = max(r.PeakRSSBytes, run.Resources.PeakRSSBytes)
		r.ReadBytes += run.Resources.ReadBytes
		r.WriteBytes += run.Resources.WriteBytes
		r.Processes += run.Resources.Processes
	}
	return r
}

// Hostnames returns the names DNS answers gave for ip in a run, the
// destination's own hostname first.
func Hostnames(run trace.Step, d trace.Destination) []string {
	var out []string
	if d.Hostname != "" {
		out = append(out, d.Hostname)
	}
	for _, q := range run.DNS {
		if slices.Contains(q.Answers, d.IP) && !slices.Contains(out, q.Name) {
			out = append(out, q.Name)
		}
	}
	return out
}

// ProcessNode is a process with its children.
type ProcessNode struct {
	trace.Process
	Children []*ProcessNode
}

// Tree arranges a run's processes by parent.
func Tree(run trace.Step) []*ProcessNode {
	nodes := map[uint32]*ProcessNode{}
	var order []*ProcessNode
	for _, p := range run.Processes {
		n := &ProcessNode{Process: p}
		nodes[p.PID] = n
		order = append(order, n)
	}
	slices.SortStableFunc(order, func(a, b *ProcessNode) int {
		return cmp.Or(a.Start.Compare(b.Start), cmp.Compare(a.PID, b.PID))
	})
	var roots []*ProcessNode
	for _, n := range order {
		if p, ok := nodes[n.PPID]; ok && p != n {
			p.Children = append(p.Children, n)
		} else {
			roots = append(roots, n)
		}
	}
	return roots
}

// Command is a process's command line for display.
func Command(p trace.Process) string {
	s := strings.Join(p.Argv, " ")
	if s == "" {
		s = p.Binary
	}
	if p.ArgvTruncated {
		s += " …"
	}
	if !p.Exec {
		s += " (fork)"
	}
	if n := len(p.Execs); n > 0 {
		// The name the earlier image was run by (/bin/sh) says more than
		// the file it resolved to (/bin/busybox).
		prev := p.Execs[n-1].Filename
		if prev == "" {
			prev = p.Execs[n-1].Binary
		}
		s += " (exec'd from " + prev + ")"
	}
	if p.Adopted {
		s += " (running when the tracer restarted)"
	}
	return s
}

// FileChanges lists a run's net file changes: the diff when there is one,
// otherwise the file-changing system calls.
func FileChanges(run trace.Step) (created, modified, deleted []string) {
	cs, _ := changes(run)
	for _, c := range cs {
		switch c.Change {
		case trace.ChangeCreated:
			created = append(created, c.Path)
		case trace.ChangeDeleted:
			deleted = append(deleted, c.Path)
		default:
			modified = append(modified, c.Path)
		}
	}
	return
}

// Duration formats nanoseconds briefly.
func Duration(ns int64) string {
	d := time.Duration(ns)
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

// Bytes formats a byte count in binary units.
func Bytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
