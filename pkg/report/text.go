package report

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/termsafe"
)

// maxListed caps file lists in the terminal view.
const maxListed = 20

// Text writes the terminal view.
func Text(w io.Writer, traces []Trace) error {
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
		for _, s := range t.Steps() {
			writeStep(ew, s)
		}
	}
	return ew.err
}

func writeStep(ew *errWriter, s Step) {
	ew.printf("\n%s %s  [%s]", s.Location(), s.Info.Instruction, s.Info.Status)
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
	if len(s.Runs) == 0 {
		return
	}
	tot := s.Totals()
	ew.printf("  duration %s, CPU %s (user %s, system %s), peak memory %s, %d processes\n",
		Duration(tot.WallNanos), Duration(int64(tot.CPUUserNanos+tot.CPUSystemNanos)),
		Duration(int64(tot.CPUUserNanos)), Duration(int64(tot.CPUSystemNanos)), Bytes(tot.PeakRSSBytes), tot.Processes)
	for _, run := range s.Runs {
		if len(s.Runs) > 1 {
			ew.printf("  run in container %s\n", run.ContainerID)
		}
		if !run.Completeness.Complete {
			ew.printf("  trace incomplete: %s\n", strings.Join(run.Completeness.Reasons, "; "))
		}
		ew.printf("  processes:\n")
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
		if len(run.Network) > 0 {
			ew.printf("  network:\n")
			for _, d := range run.Network {
				host := ""
				if hs := Hostnames(run, d); len(hs) > 0 {
					host = " (" + strings.Join(hs, ", ") + ")"
				}
				ew.printf("    %s %s:%d%s %s ×%d, sent %s, received %s\n", d.Protocol, d.IP, d.Port, host, d.Op, d.Count, Bytes(d.BytesSent), Bytes(d.BytesReceived))
			}
		}
		for _, q := range run.DNS {
			ew.printf("    dns %s %s via %s → %s\n", q.Type, q.Name, q.Server, strings.Join(q.Answers, ", "))
		}
		created, modified, deleted := FileChanges(run)
		list := func(label string, paths []string) {
			if len(paths) == 0 {
				return
			}
			more := ""
			if len(paths) > maxListed {
				more = fmt.Sprintf(" … and %d more", len(paths)-maxListed)
				paths = paths[:maxListed]
			}
			ew.printf("  files %s: %s%s\n", label, strings.Join(paths, " "), more)
		}
		list("created", created)
		list("modified", modified)
		list("deleted", deleted)
		if run.Diff.Error != "" {
			ew.printf("  no file system diff: %s\n", run.Diff.Error)
		}
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
