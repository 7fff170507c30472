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

// Markdown writes the summary as GitHub-flavoured Markdown, for a CI job
// summary. Every string from the attestation is escaped with termsafe and
// then for Markdown (MD), so it can neither format nor break a table.
func Markdown(w io.Writer, traces []Trace, opts Options) error {
	mw := &mdWriter{w: w}
	mw.printf("# buildtrace\n")
	for i := range traces {
		t := &traces[i]
		mw.printf("\n## %s — %s\n\n", t.Image, t.Platform)
		mw.printf("| | |\n|---|---|\n")
		mw.printf("| manifest | %s |\n", t.Manifest)
		if p := t.Predicate; p != nil {
			mw.printf("| build trace | %s |\n", p.Buildtrace.BuildTraceID)
			if p.Monitor.Name != "" {
				mw.printf("| monitor | %s %s (kernel %s) |\n", p.Monitor.Name, p.Monitor.Version, p.Monitor.Kernel)
			}
			switch {
			case !p.Buildtrace.Monitored:
				mw.printf("| monitored | **no**: %s |\n", p.Buildtrace.UnmonitoredReason)
			case !p.Buildtrace.Complete:
				mw.printf("| complete | **no**: %s |\n", strings.Join(p.Buildtrace.Reasons, "; "))
			default:
				mw.printf("| complete | yes |\n")
			}
		}
		if t.Verified {
			mw.printf("| signature | %s |\n", t.Signature)
		} else {
			mw.printf("| signature | **%s** |\n", t.Signature)
		}
		if t.Err != "" {
			mw.printf("| error | **%s** |\n", t.Err)
		}
		if opts.Policy != nil {
			mw.printf("| policy | %s |\n", cmp.Or(opts.PolicyName, "given"))
		}
		if t.Predicate == nil {
			continue
		}
		steps := t.Steps()
		if len(steps) > 0 {
			head, rule := "| step | status | duration | CPU | processes | file changes |", "|---|---|---:|---:|---:|---:|"
			if opts.Policy != nil {
				head, rule = head+" policy |", rule+"---:|"
			}
			mw.printf("\n%s\n%s\n", mdRaw(head), mdRaw(rule))
			for _, s := range steps {
				mw.printf("| %s %s | %s |", s.Location(), truncateRunes(s.Info.Instruction, 60), s.Info.Status)
				if len(s.Runs) > 0 {
					tot, files := s.Totals(), 0
					for _, r := range s.Runs {
						cs, _ := changes(r)
						files += len(cs)
					}
					mw.printf(" %s | %s | %d | %d |", Duration(s.Duration()), Duration(int64(tot.CPUUserNanos+tot.CPUSystemNanos)), tot.Processes, files)
				} else {
					mw.printf(" | | | |")
				}
				if opts.Policy != nil {
					mw.printf(" %d |", len(Violations(opts.Policy, s)))
				}
				mw.printf("\n")
			}
		}
		mw.printf("\n%s\n", mdRaw(DurationDefinition))
		for _, s := range steps {
			markdownStep(mw, s, opts)
		}
	}
	return mw.err
}

func markdownStep(mw *mdWriter, s Step, opts Options) {
	instr := s.Info.Instruction
	if !opts.Full {
		instr = truncateRunes(instr, instructionWidth)
	}
	mw.printf("\n### %s %s — %s", s.Location(), instr, s.Info.Status)
	if s.Info.Reason != "" {
		mw.printf(" (%s)", s.Info.Reason)
	}
	mw.printf("\n\n")
	if s.Info.Status == attest.StatusCached {
		if len(s.Info.Evidence) == 0 {
			mw.printf("Cached, **unproven**: no signed record of the run that made its layer was found.\n\n")
		}
		for _, e := range s.Info.Evidence {
			mw.printf("Cached, with evidence: ran in build %s, container %s, %s (diff %s).\n\n", e.BuildTraceID, e.ContainerID, e.Start.Format(time.RFC3339), e.DiffDigest)
		}
	}
	var vs []policy.Violation
	if opts.Policy != nil {
		vs = Violations(opts.Policy, s)
	}
	if len(s.Runs) > 0 {
		tot := s.Totals()
		mw.printf("Duration %s · CPU %s (user %s, system %s) · peak memory %s · %s\n",
			Duration(s.Duration()), Duration(int64(tot.CPUUserNanos+tot.CPUSystemNanos)),
			Duration(int64(tot.CPUUserNanos)), Duration(int64(tot.CPUSystemNanos)), Bytes(tot.PeakRSSBytes), plural(tot.Processes, "process"))
	}
	for _, run := range s.Runs {
		if len(s.Runs) > 1 {
			mw.printf("\n#### Run in container %s, %s\n", run.ContainerID, Duration(RunDuration(run)))
		}
		markdownSummary(mw, run, Summarize(run), opts.Full)
	}
	if vs != nil && len(vs) == 0 {
		mw.printf("\n**Policy**: no violations\n")
	} else if vs != nil {
		mw.printf("\n**Policy: %s**\n\n", plural(len(vs), "violation"))
		for i, v := range vs {
			if i == TopViolations && !opts.Full {
				mw.printf("- … and %d more\n", len(vs)-i)
				break
			}
			mw.printf("- %s\n", ViolationText(v))
		}
	}
}

func markdownSummary(mw *mdWriter, run trace.Step, sum Summary, full bool) {
	if len(sum.Binaries) > 0 {
		mw.printf("\n**Processes by binary** (%s, %s)\n\n| processes | binary | run as |\n|---:|---|---|\n", plural(sum.Processes, "process"), plural(len(sum.Binaries), "binary"))
		for i, b := range sum.Binaries {
			if i == TopBinaries && !full {
				rest := 0
				for _, r := range sum.Binaries[i:] {
					rest += r.Count
				}
				mw.printf("| %d | … and %s | |\n", rest, plural(len(sum.Binaries)-i, "more binary"))
				break
			}
			mw.printf("| %d | %s | %s |\n", b.Count, b.Binary, strings.TrimPrefix(b.NamesLine(), "as "))
		}
	}
	if len(sum.Longest) > 0 {
		mw.printf("\n**Longest-running**\n\n| time | pid | command |\n|---:|---:|---|\n")
		for _, p := range sum.Longest {
			mw.printf("| %s | %d | %s |\n", Duration(p.Nanos), p.PID, ShortCommand(p.Process))
		}
	}
	if n := len(sum.Failed); n > 0 {
		mw.printf("\n**%s failed** (non-zero exit or signal)\n\n| pid | binary | command | exit |\n|---:|---|---|---|\n", plural(n, "process"))
		for i, p := range sum.Failed {
			if i == TopFailures && !full {
				mw.printf("| | … and %d more | | |\n", n-i)
				break
			}
			mw.printf("| %d | %s | %s | %s |\n", p.PID, p.Binary, ShortCommand(p), ExitText(p))
		}
	}
	if n := len(sum.Egress); n > 0 {
		mw.printf("\n**Egress** (%s)\n\n| destination | hostnames | traffic | by |\n|---|---|---|---|\n", plural(n, "destination"))
		for i, d := range sum.Egress {
			if i == TopDestinations && !full {
				mw.printf("| … and %s | | | |\n", plural(n-i, "more destination"))
				break
			}
			mw.printf("| %s | %s | %s | %s |\n", d.EndpointText(), d.HostText(), d.Traffic(), strings.Join(d.Binaries, ", "))
		}
	} else {
		mw.printf("\n**Egress**: none\n")
	}
	if len(sum.DNSNames) > 0 {
		names := sum.DNSNames
		more := ""
		if len(names) > TopDNSNames && !full {
			more = fmt.Sprintf(" … and %d more", len(names)-TopDNSNames)
			names = names[:TopDNSNames]
		}
		mw.printf("\n**DNS**: %s for %s%s\n", plural(sum.DNSCount, "question"), strings.Join(names, ", "), more)
	}
	if n := len(sum.Materials); n > 0 {
		mw.printf("\n**Downloaded** (%s)\n\n| file | sha256 | size | from | by | URL (from the command line) |\n|---|---|---:|---|---|---|\n", sum.MaterialsHeading())
		for i, m := range sum.Materials {
			if i == TopMaterials && !full {
				mw.printf("| … and %d more | | | | | |\n", n-i)
				break
			}
			mw.printf("| %s | %s | %s | %s | %s | %s |\n", m.Path, ShortDigest(m.SHA256), Bytes(uint64(max(m.Size, 0))), MaterialFrom(m), MaterialBy(m), MaterialURLText(m))
		}
	}
	fs := sum.Files
	switch {
	case fs.Total() == 0:
		mw.printf("\n**Files**: no changes\n")
	case fs.Changes != nil || full:
		cs := fs.Changes
		if full {
			cs, _ = changes(run)
		}
		mw.printf("\n**Files**: %s\n\n| change | path |\n|---|---|\n", changeCounts(fs.Created, fs.Modified, fs.Deleted))
		for _, c := range cs {
			mw.printf("| %s | %s%s |\n", c.Change, c.Path, fileNote(c))
		}
	default:
		mw.printf("\n**Files**: %s, in %s\n\n| directory | created | modified | deleted |\n|---|---:|---:|---:|\n", changeCounts(fs.Created, fs.Modified, fs.Deleted), plural(len(fs.Groups), "directory"))
		for i, g := range fs.Groups {
			if i == TopDirs {
				var c, m, d int
				for _, r := range fs.Groups[i:] {
					c, m, d = c+r.Created, m+r.Modified, d+r.Deleted
				}
				mw.printf("| … and %s | %d | %d | %d |\n", plural(len(fs.Groups)-i, "more directory"), c, m, d)
				break
			}
			mw.printf("| %s | %d | %d | %d |\n", g.Label(), g.Created, g.Modified, g.Deleted)
		}
		mw.printf("\n")
		for _, n := range []struct {
			label string
			cs    []trace.FileChange
			total int
		}{{"setuid/setgid", fs.Setuid, fs.SetuidCount}, {"new executables", fs.Executables, fs.ExecutableCount}, {"largest new", fs.Largest, len(fs.Largest)}} {
			if len(n.cs) == 0 {
				continue
			}
			var parts []string
			for _, c := range n.cs {
				p := c.Path
				if n.label == "largest new" { // as in the terminal view
					p = elideMiddle(p, notablePath)
				}
				parts = append(parts, p+fileNote(c))
			}
			more := ""
			if n.total > len(n.cs) {
				more = fmt.Sprintf(" … and %d more", n.total-len(n.cs))
			}
			mw.printf("- %s: %s%s\n", mdRaw(n.label), strings.Join(parts, ", "), more)
		}
	}
	if len(sum.Lost) == 0 {
		mw.printf("\n**Lost**: nothing (followed from its start, no events dropped or cut)\n")
	} else {
		mw.printf("\n**Lost**:\n\n")
		for _, l := range sum.Lost {
			mw.printf("- %s\n", l)
		}
	}
}

type mdWriter struct {
	w   io.Writer
	err error
}

// mdRaw marks text of ours that may hold Markdown punctuation and must be
// printed as it is.
type mdRaw string

// printf escapes every text argument (termsafe, then Markdown) but mdRaw:
// only the format and mdRaw may carry Markdown.
func (m *mdWriter) printf(format string, args ...any) {
	if m.err != nil {
		return
	}
	safe := make([]any, len(args))
	for i, a := range args {
		if r, ok := a.(mdRaw); ok {
			safe[i] = string(r)
			continue
		}
		safe[i] = mdArg(a)
	}
	_, m.err = fmt.Fprintf(m.w, format, safe...)
}

func mdArg(a any) any {
	switch v := a.(type) {
	case string:
		return MD(v)
	case []string:
		out := make([]string, len(v))
		for i, s := range v {
			out[i] = MD(s)
		}
		return out
	case error:
		return MD(v.Error())
	case fmt.Stringer:
		return MD(v.String())
	}
	if v := reflect.ValueOf(a); v.Kind() == reflect.String {
		return MD(v.String())
	}
	return a
}

// MD makes s safe in Markdown text and in a table cell: control
// characters become visible escapes (termsafe), then every character
// that could start formatting, a link, HTML, math or a cell boundary is
// backslash-escaped (`|`, backticks, `<`, `>`, `*`, `_`, `$`, ...), and
// so are the ":" of "://" and the "." of "www." so that GitHub's
// extended autolinks make no link of an attestation's URL. termsafe
// leaves no newline, so s stays on its line.
func MD(s string) string {
	rs := []rune(termsafe.String(s))
	var b strings.Builder
	b.Grow(len(rs) + 8)
	for i, r := range rs {
		scheme := r == ':' && i+2 < len(rs) && rs[i+1] == '/' && rs[i+2] == '/'
		www := r == '.' && i >= 3 && strings.EqualFold(string(rs[i-3:i]), "www")
		if strings.ContainsRune("\\`*_{}[]()<>#+!|~$&@", r) || scheme || www {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
