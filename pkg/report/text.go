package report

import (
	"cmp"
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/policy"
	"github.com/buildtrace/buildtrace/pkg/termsafe"
	"github.com/buildtrace/buildtrace/pkg/trace"
)

// Text writes the terminal view: per step a one-screen summary.
func Text(w io.Writer, traces []Trace) error { return TextWith(w, traces, Options{}) }

// TextWith writes the terminal view with opts.
func TextWith(w io.Writer, traces []Trace, opts Options) error {
	ew := &errWriter{w: w}
	for i := range traces {
		t := &traces[i]
		if i > 0 {
			ew.printf("\n")
		}
		ew.printf("Image %s  platform %s\n  manifest %s\n", t.Image, t.Platform, t.Manifest)
		if t.Predicate == nil {
			ew.printf("  %s\n", t.Err)
			continue
		}
		p := t.Predicate
		ew.printf("  build trace %s", p.Buildtrace.BuildTraceID)
		if p.Monitor.Name != "" {
			ew.printf(", monitored by %s %s (kernel %s)", p.Monitor.Name, p.Monitor.Version, p.Monitor.Kernel)
		}
		ew.printf("\n  signature: %s\n", t.Signature)
		if !p.Buildtrace.Monitored {
			ew.printf("  NOT MONITORED: %s\n", p.Buildtrace.UnmonitoredReason)
		} else if !p.Buildtrace.Complete {
			ew.printf("  trace INCOMPLETE: %s\n", strings.Join(p.Buildtrace.Reasons, "; "))
		}
		if t.Err != "" {
			ew.printf("  error: %s\n", t.Err)
		}
		if opts.Policy != nil {
			ew.printf("  policy: %s\n", cmp.Or(opts.PolicyName, "given"))
		}
		for _, s := range t.Steps() {
			writeStep(ew, s, opts)
		}
	}
	return ew.err
}

// instructionWidth caps the instruction in a summary's header (runes).
const instructionWidth = 160

func writeStep(ew *errWriter, s Step, opts Options) {
	instr := s.Info.Instruction
	if !opts.Full {
		instr = truncateRunes(instr, instructionWidth)
	}
	ew.printf("\n%s %s  [%s]", s.Location(), instr, s.Info.Status)
	if s.Info.Reason != "" {
		ew.printf(" (%s)", s.Info.Reason)
	}
	ew.printf("\n")
	if s.Info.Status == attest.StatusCached {
		if len(s.Info.Evidence) == 0 {
			ew.printf("  cached, unproven: no signed record of the run that made its layer was found\n")
		}
		for _, e := range s.Info.Evidence {
			ew.printf("  cached, with evidence: ran in build %s, container %s, %s (diff %s)\n", e.BuildTraceID, e.ContainerID, e.Start.Format(time.RFC3339), e.DiffDigest)
		}
	}
	var vs []policy.Violation
	if opts.Policy != nil {
		vs = Violations(opts.Policy, s)
	}
	if len(s.Runs) == 0 {
		writeViolations(ew, vs, opts.Full)
		return
	}
	tot := s.Totals()
	ew.printf("  duration %s, CPU %s (user %s, system %s), peak memory %s, %s\n",
		Duration(s.Duration()), Duration(int64(tot.CPUUserNanos+tot.CPUSystemNanos)),
		Duration(int64(tot.CPUUserNanos)), Duration(int64(tot.CPUSystemNanos)), Bytes(tot.PeakRSSBytes), plural(tot.Processes, "process"))
	for _, run := range s.Runs {
		if len(s.Runs) > 1 {
			ew.printf("  run in container %s, %s\n", run.ContainerID, Duration(RunDuration(run)))
		}
		writeSummary(ew, Summarize(run), opts.Full)
		if opts.Full {
			writeFull(ew, run)
		}
	}
	writeViolations(ew, vs, opts.Full)
}

// writeSummary prints one run's summary: at most about 40 lines whatever
// the run did.
func writeSummary(ew *errWriter, sum Summary, full bool) {
	if len(sum.Binaries) > 0 {
		ew.printf("  processes by binary (%s, %s):\n", plural(sum.Processes, "process"), plural(len(sum.Binaries), "binary"))
		width := len(fmt.Sprint(sum.Binaries[0].Count))
		for i, b := range sum.Binaries {
			if i == TopBinaries && !full {
				rest := 0
				for _, r := range sum.Binaries[i:] {
					rest += r.Count
				}
				ew.printf("    … and %s (%s)\n", plural(len(sum.Binaries)-i, "more binary"), plural(rest, "process"))
				break
			}
			ew.printf("    %*d× %s", width, b.Count, b.Binary)
			if n := b.NamesLine(); n != "" {
				ew.printf(" (%s)", n)
			}
			ew.printf("\n")
		}
	}
	if len(sum.Longest) > 0 {
		ew.printf("  longest-running:\n")
		durs := make([]string, len(sum.Longest))
		width := 0
		for i, p := range sum.Longest {
			durs[i] = Duration(p.Nanos)
			width = max(width, len(durs[i]))
		}
		for i, p := range sum.Longest {
			ew.printf("    %*s  pid %d %s\n", width, durs[i], p.PID, ShortCommand(p.Process))
		}
	}
	if n := len(sum.Failed); n > 0 {
		ew.printf("  %s failed (non-zero exit or signal):\n", plural(n, "process"))
		for i, p := range sum.Failed {
			if i == TopFailures && !full {
				ew.printf("    … and %d more\n", n-i)
				break
			}
			ew.printf("    pid %d %s: %s → %s\n", p.PID, p.Binary, ShortCommand(p), ExitText(p))
		}
	}
	if n := len(sum.Egress); n > 0 {
		ew.printf("  egress (%s):\n", plural(n, "destination"))
		for i, d := range sum.Egress {
			if i == TopDestinations && !full {
				ew.printf("    … and %s\n", plural(n-i, "more destination"))
				break
			}
			host := ""
			if h := d.HostText(); h != "" {
				host = " (" + h + ")"
			}
			ew.printf("    %s%s %s — by %s\n", d.EndpointText(), host, d.Traffic(), strings.Join(d.Binaries, ", "))
		}
	} else {
		ew.printf("  egress: none\n")
	}
	if len(sum.DNSNames) > 0 {
		names := sum.DNSNames
		more := ""
		if len(names) > TopDNSNames && !full {
			more = fmt.Sprintf(" … and %d more", len(names)-TopDNSNames)
			names = names[:TopDNSNames]
		}
		ew.printf("  dns: %s for %s%s\n", plural(sum.DNSCount, "question"), strings.Join(names, ", "), more)
	}
	if n := len(sum.Materials); n > 0 {
		ew.printf("  downloaded (%s):\n", sum.MaterialsHeading())
		for i, m := range sum.Materials {
			if i == TopMaterials && !full {
				ew.printf("    … and %d more (--full lists all)\n", n-i)
				break
			}
			ew.printf("    %s\n", MaterialText(m))
		}
	}
	writeFiles(ew, sum.Files, full)
	if len(sum.Lost) == 0 {
		ew.printf("  lost: nothing (followed from its start, no events dropped or cut)\n")
	} else {
		ew.printf("  lost: %s\n", strings.Join(sum.Lost, "; "))
	}
}

func writeFiles(ew *errWriter, fs FileSummary, full bool) {
	if fs.Total() == 0 {
		ew.printf("  files: no changes\n")
		return
	}
	if fs.Changes != nil {
		ew.printf("  files: %s\n", changeCounts(fs.Created, fs.Modified, fs.Deleted))
		for _, c := range fs.Changes {
			ew.printf("    %-8s %s%s\n", c.Change, c.Path, fileNote(c))
		}
		return
	}
	ew.printf("  files: %s, in %s:\n", changeCounts(fs.Created, fs.Modified, fs.Deleted), plural(len(fs.Groups), "directory"))
	width := 0
	for i, g := range fs.Groups {
		if i == TopDirs && !full {
			break
		}
		width = max(width, len([]rune(termsafe.String(g.Label()))))
	}
	width = min(width, 48)
	for i, g := range fs.Groups {
		if i == TopDirs && !full {
			rest := 0
			for _, r := range fs.Groups[i:] {
				rest += r.Total()
			}
			ew.printf("    … and %s (%s)\n", plural(len(fs.Groups)-i, "more directory"), plural(rest, "change"))
			break
		}
		ew.printf("    %-*s %s\n", width, g.Label(), g.Counts())
	}
	notable := func(label string, cs []trace.FileChange, total int, elide bool) {
		if len(cs) == 0 {
			return
		}
		var parts []string
		for _, c := range cs {
			p := c.Path
			if elide {
				p = elideMiddle(p, notablePath)
			}
			parts = append(parts, p+fileNote(c))
		}
		more := ""
		if total > len(cs) {
			more = fmt.Sprintf(" … and %d more", total-len(cs))
		}
		ew.printf("    %s: %s%s\n", label, strings.Join(parts, ", "), more)
	}
	// Setuid files and executables are named whole: they are what a
	// reader checks. The largest files only say where the bulk went.
	notable("setuid/setgid", fs.Setuid, fs.SetuidCount, false)
	notable("new executables", fs.Executables, fs.ExecutableCount, false)
	notable("largest new", fs.Largest, len(fs.Largest), true)
}

// notablePath caps a path among the largest new files (runes).
const notablePath = 48

// fileNote is " (setuid, 0755, 1.0 MiB)" for a file worth a second look.
func fileNote(c trace.FileChange) string {
	var parts []string
	if c.Mode&0o4000 != 0 {
		parts = append(parts, "setuid")
	}
	if c.Mode&0o2000 != 0 {
		parts = append(parts, "setgid")
	}
	if c.Mode != 0 && (len(parts) > 0 || c.Mode&0o111 != 0 && c.Type == "file") {
		parts = append(parts, fmt.Sprintf("%04o", c.Mode&0o7777))
	}
	if c.Size > 0 && c.Change != trace.ChangeDeleted {
		parts = append(parts, Bytes(uint64(c.Size)))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func writeViolations(ew *errWriter, vs []policy.Violation, full bool) {
	if vs == nil {
		return
	}
	if len(vs) == 0 {
		ew.printf("  policy: no violations\n")
		return
	}
	ew.printf("  policy: %s\n", plural(len(vs), "violation"))
	for i, v := range vs {
		if i == TopViolations && !full {
			ew.printf("    … and %d more\n", len(vs)-i)
			break
		}
		ew.printf("    %s\n", ViolationText(v))
	}
}

// writeFull prints the run in detail: the process tree, every DNS
// question, every file change.
func writeFull(ew *errWriter, run trace.Step) {
	ew.printf("  process tree:\n")
	var walk func(n *ProcessNode, depth int)
	walk = func(n *ProcessNode, depth int) {
		exit := ""
		if n.ExitCode != nil {
			exit = fmt.Sprintf(" → exit %d", *n.ExitCode)
		} else if n.Signal != 0 {
			exit = fmt.Sprintf(" → signal %d", n.Signal)
		}
		ew.printf("    %s%d %s%s\n", strings.Repeat("  ", depth), n.PID, Command(n.Process), exit)
		for _, c := range n.Children {
			walk(c, depth+1)
		}
	}
	for _, r := range Tree(run) {
		walk(r, 0)
	}
	// Every destination is in the summary already (--full lifts its cap).
	if len(run.DNS) > 0 {
		ew.printf("  dns questions:\n")
	}
	for _, q := range run.DNS {
		ew.printf("    %s %s via %s → %s\n", q.Type, q.Name, q.Server, strings.Join(q.Answers, ", "))
	}
	cs, _ := changes(run)
	if len(cs) > 0 {
		ew.printf("  file changes:\n")
		for _, c := range cs {
			ew.printf("    %-8s %s%s\n", c.Change, c.Path, fileNote(c))
		}
	}
	if run.Diff.Error != "" {
		ew.printf("  no file system diff: %s\n", run.Diff.Error)
	}
}

type errWriter struct {
	w   io.Writer
	err error
}

// printf escapes every text argument with termsafe: nearly all of them
// come from the attestation, and escaping here cannot be forgotten at a
// call site. Only the format may print control characters.
func (e *errWriter) printf(format string, args ...any) {
	if e.err != nil {
		return
	}
	safe := make([]any, len(args))
	for i, a := range args {
		safe[i] = termsafeArg(a)
	}
	_, e.err = fmt.Fprintf(e.w, format, safe...)
}

func termsafeArg(a any) any {
	switch v := a.(type) {
	case string:
		return termsafe.String(v)
	case []string:
		return termsafe.Strings(v)
	case error:
		return termsafe.String(v.Error())
	case fmt.Stringer:
		return termsafe.String(v.String())
	}
	if v := reflect.ValueOf(a); v.Kind() == reflect.String { // named string types
		return termsafe.String(v.String())
	}
	return a
}
