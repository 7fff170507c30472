package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/trace"
)

// Step is one step as the policy sees it: what the frontend said of it
// and, when it ran, one run the tracer recorded.
type Step struct {
	Info attest.Step
	Run  *trace.Step // nil unless the step executed
}

// Violation is one broken rule.
type Violation struct {
	Rule   string   `json:"rule"`  // e.g. "egress.flagged", "cel:no-curl"
	Event  string   `json:"event"` // what happened, e.g. "tcp connect 127.0.0.1:5000"
	PID    uint32   `json:"pid,omitempty"`
	Binary string   `json:"binary,omitempty"`
	Argv   []string `json:"argv,omitempty"`
}

// writeOps are the file operations files.denyWrite forbids: every
// file-changing operation the tracer records. A change the rule forgot
// goes unseen where no diff shows it, in a cache mount (redteam13:
// exchange, mknod, setxattr, removexattr were missing).
var writeOps = map[string]bool{
	trace.OpCreate: true, trace.OpWrite: true, trace.OpTruncate: true, trace.OpUnlink: true,
	trace.OpRename: true, trace.OpChmod: true, trace.OpChown: true, trace.OpLink: true,
	trace.OpSymlink: true, trace.OpMkdir: true, trace.OpRmdir: true,
	trace.OpExchange: true, trace.OpMknod: true, trace.OpSetxattr: true, trace.OpRemovexattr: true,
}

// targetIsPath reports whether a file operation's Target names a file it
// changed (rename, link, exchange, an open through a symlink) rather than a
// symlink's contents or an attribute's name.
func targetIsPath(op string) bool {
	switch op {
	case trace.OpSymlink, trace.OpSetxattr, trace.OpRemovexattr:
		return false
	}
	return true
}

// Check applies every rule but cached.allow and incomplete.allow (which
// are about the trace, not the step's behaviour) to one step.
func (c *Checker) Check(s Step) []Violation {
	var out []Violation
	r := s.Run
	if r != nil {
		procs := map[uint32]*trace.Process{}
		for i := range r.Processes {
			procs[r.Processes[i].PID] = &r.Processes[i]
		}
		with := func(v Violation, pid uint32) Violation {
			v.PID = pid
			if p := procs[pid]; p != nil {
				v.Binary, v.Argv = p.Binary, slices.Clone(p.Argv)
			}
			return v
		}
		firstPID := func(pids []uint32) uint32 {
			if len(pids) == 0 {
				return 0
			}
			return slices.Min(pids)
		}
		names := hostnamesByIP(r, nil)
		// A name allows a destination only when a resolver the allow-list
		// names by address gave it: a server the step chose can call any
		// address, itself included, by an allowed name, and so pass the
		// allow-list that was to keep it out (redteam9). Flagged entries
		// match every confirmed name.
		allowedNames := hostnamesByIP(r, c.allowedByAddress)
		for _, d := range r.Network {
			hosts := names[d.IP]
			if d.Hostname != "" && !slices.Contains(hosts, d.Hostname) {
				hosts = append([]string{d.Hostname}, hosts...)
			}
			ev := describeDest(d, hosts)
			for _, m := range c.flagged {
				if m.match(d.IP, d.Port, hosts) {
					out = append(out, with(Violation{Rule: "egress.flagged", Event: ev + " matches flagged " + m.entry}, firstPID(d.PIDs)))
					break
				}
			}
			if c.allowList && !slices.ContainsFunc(c.allowed, func(m destMatcher) bool { return m.match(d.IP, d.Port, allowedNames[d.IP]) }) {
				out = append(out, with(Violation{Rule: "egress.allowed", Event: ev + " is not in the allow-list"}, firstPID(d.PIDs)))
			}
		}
		for _, q := range r.DNS {
			for _, m := range c.flagged {
				if m.matchName(q.Name) {
					out = append(out, with(Violation{Rule: "egress.flagged", Event: fmt.Sprintf("DNS %s query for %s to %s matches flagged %s", q.Type, q.Name, q.Server, m.entry)}, q.PID))
					break
				}
			}
		}
		for i := range r.Processes {
			p := &r.Processes[i]
			type image struct {
				bin  string
				argv []string
			}
			imgs := []image{}
			if p.Exec {
				imgs = append(imgs, image{p.Binary, p.Argv})
			}
			for _, e := range p.Execs {
				imgs = append(imgs, image{e.Binary, e.Argv})
			}
			for _, im := range imgs {
				for _, d := range c.p.Binaries.Denied {
					if matchBinary(d, im.bin, im.argv) {
						out = append(out, Violation{Rule: "binaries.denied", Event: fmt.Sprintf("exec %s matches denied %s", im.bin, d), PID: p.PID, Binary: im.bin, Argv: slices.Clone(im.argv)})
						break
					}
				}
			}
		}
		for _, f := range r.Files {
			if !writeOps[f.Op] {
				continue
			}
			for _, g := range c.p.Files.DenyWrite {
				hit := MatchPath(g, f.Path) || f.Target != "" && targetIsPath(f.Op) && MatchPath(g, f.Target)
				if hit {
					ev := fmt.Sprintf("%s %s", f.Op, f.Path)
					if f.Target != "" {
						ev += " -> " + f.Target
					}
					out = append(out, with(Violation{Rule: "files.denyWrite", Event: ev + " matches " + g}, f.PID))
					break
				}
			}
		}
		// The diff catches what the syscall hooks cannot attribute, e.g.
		// writes through io_uring or a mapped file.
		for _, ch := range r.Diff.Changes {
			for _, g := range c.p.Files.DenyWrite {
				if MatchPath(g, ch.Path) {
					out = append(out, Violation{Rule: "files.denyWrite", Event: fmt.Sprintf("file system diff: %s %s matches %s", orModified(ch.Change), ch.Path, g)})
					break
				}
			}
		}
		lim := c.p.Resources
		res := r.Resources
		if lim.MaxWallSeconds > 0 && float64(res.WallNanos)/1e9 > lim.MaxWallSeconds {
			out = append(out, Violation{Rule: "resources.maxWallSeconds", Event: fmt.Sprintf("ran %.1fs, limit %gs", float64(res.WallNanos)/1e9, lim.MaxWallSeconds)})
		}
		if cpu := float64(res.CPUUserNanos+res.CPUSystemNanos) / 1e9; lim.MaxCPUSeconds > 0 && cpu > lim.MaxCPUSeconds {
			out = append(out, Violation{Rule: "resources.maxCPUSeconds", Event: fmt.Sprintf("used %.2fs CPU, limit %gs", cpu, lim.MaxCPUSeconds)})
		}
		if lim.MaxPeakMemoryBytes > 0 && res.PeakRSSBytes > lim.MaxPeakMemoryBytes {
			out = append(out, Violation{Rule: "resources.maxPeakMemoryBytes", Event: fmt.Sprintf("peak RSS %d bytes, limit %d", res.PeakRSSBytes, lim.MaxPeakMemoryBytes)})
		}
	}
	out = append(out, c.evalCEL(s)...)
	return out
}

func orModified(change string) string {
	if change == "" {
		return "present"
	}
	return change
}

// hostnamesByIP collects, per address, the names confirmed DNS answers gave
// for it; with server set, only answers from servers it accepts.
func hostnamesByIP(r *trace.Step, server func(string) bool) map[string][]string {
	m := map[string][]string{}
	for _, q := range r.DNS {
		if server != nil && !server(q.Server) {
			continue
		}
		for _, a := range q.Answers {
			if !slices.Contains(m[a], q.Name) {
				m[a] = append(m[a], q.Name)
			}
		}
	}
	return m
}

// allowedByAddress reports whether an allow-list entry that is an address or
// CIDR (not a host name) admits the DNS server ("ip:port").
func (c *Checker) allowedByAddress(server string) bool {
	ap, err := netip.ParseAddrPort(server)
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap().String()
	return slices.ContainsFunc(c.allowed, func(m destMatcher) bool { return m.cidr != nil && m.match(ip, ap.Port(), nil) })
}

func describeDest(d trace.Destination, hosts []string) string {
	s := fmt.Sprintf("%s %s %s:%d", d.Protocol, d.Op, d.IP, d.Port)
	if len(hosts) > 0 {
		s += " (" + strings.Join(hosts, ", ") + ")"
	}
	return s
}
