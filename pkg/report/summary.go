package report

import (
	"cmp"
	"fmt"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/buildtrace/buildtrace/pkg/policy"
	"github.com/buildtrace/buildtrace/pkg/trace"
)

// Limits of a run's summary: what one screen can hold for a step with
// hundreds of processes and thousands of files.
const (
	TopBinaries     = 10 // binaries, by number of processes
	TopFailures     = 3  // processes that exited non-zero or were killed
	TopDestinations = 5  // egress destinations, by bytes
	TopDNSNames     = 5  // DNS question names
	TopDirs         = 8  // directories of file changes, by number of changes
	TopNotable      = 3  // per kind of notable new file
	TopViolations   = 5  // policy violations per run
	TopMaterials    = 5  // downloaded files per run
	ListFilesUpTo   = 8  // a run changing this many paths or fewer lists them
	TimelineProcs   = 5  // processes per run on the HTML timeline
	TopLongest      = 3  // longest-running processes in a run's summary
	shortArgv       = 90 // runes of a command line in the summary
)

// Options choose what the views show.
type Options struct {
	// Full adds the whole process tree, every destination and DNS
	// question and every file change to each step's summary.
	Full bool
	// Policy, when set, is applied to every step (as verify applies it)
	// and its violations are listed per step.
	Policy *policy.Checker
	// PolicyName names the policy (its file) in the output.
	PolicyName string
}

// Summary is what one run did, grouped so it fits on a screen.
type Summary struct {
	Processes int // processes the run recorded
	Binaries  []BinaryCount
	Failed    []trace.Process // killed by a signal, then exit code non-zero; by start
	Egress    []Dest          // by bytes sent and received
	DNSNames  []string        // distinct question names, in order asked
	DNSCount  int
	Files     FileSummary
	Lost      []string // what the trace does not hold, for people
	Complete  bool     // nothing in Lost says the trace is incomplete
	// Longest are the processes that exec'd a program and ran longest
	// (up to TopLongest), longest first; the HTML timeline draws them
	// too.
	Longest []Timed
	// ArgvTruncated counts processes whose command line was cut.
	ArgvTruncated int
	// Materials are the files the run downloaded (trace.Step.Materials),
	// in the trace's order (by path); MaterialsTruncated says the tracer
	// capped the list.
	Materials          []trace.Material
	MaterialsTruncated bool
}

// BinaryCount is how many processes ran one binary.
type BinaryCount struct {
	Binary string
	Count  int
	// Names are the names it was run as (argv[0] or the exec'd path,
	// as with busybox applets) when not its own, most used first; a
	// process that forked without exec counts as "fork".
	Names []NameCount
}

// NameCount is a name and how often it was used.
type NameCount struct {
	Name  string
	Count int
}

// Dest is a destination with what reached it.
type Dest struct {
	trace.Destination
	Hostnames []string // DNS answers that named its address (confirmed)
	Binaries  []string // the binaries of the processes that reached it
}

// FileSummary groups a run's net file changes.
type FileSummary struct {
	Created, Modified, Deleted int
	// Changes is every change when there are ListFilesUpTo or fewer.
	Changes []trace.FileChange
	// Groups are directories with their changes, most changes first.
	Groups []DirGroup
	// Notable new or modified files: setuid/setgid, new executables,
	// the largest new files (each capped at TopNotable, Counts hold all).
	Setuid, Executables, Largest []trace.FileChange
	SetuidCount, ExecutableCount int
	Source                       string // "diff" or "syscalls"
	Truncated                    bool   // the diff's change list was capped
}

// Total is the number of changes.
func (f FileSummary) Total() int { return f.Created + f.Modified + f.Deleted }

// DirGroup counts the changes under a directory.
type DirGroup struct {
	Dir string // ends with "/"
	// Direct: only the entries directly in Dir (its subdirectories are
	// groups of their own).
	Direct                     bool
	Created, Modified, Deleted int
}

// Total is the number of changes in the group.
func (g DirGroup) Total() int { return g.Created + g.Modified + g.Deleted }

// Label names the group for people.
func (g DirGroup) Label() string {
	if g.Direct {
		return g.Dir + " (directly)"
	}
	return g.Dir
}

// Counts is "3 created, 1 deleted".
func (g DirGroup) Counts() string { return changeCounts(g.Created, g.Modified, g.Deleted) }

func changeCounts(c, m, d int) string {
	var parts []string
	for _, x := range []struct {
		n    int
		what string
	}{{c, "created"}, {m, "modified"}, {d, "deleted"}} {
		if x.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", x.n, x.what))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// Summarize groups what a run did.
func Summarize(run trace.Step) Summary {
	s := Summary{Processes: len(run.Processes), Complete: run.Completeness.Complete}
	s.Binaries = binaries(run.Processes)
	s.Longest = longest(run, TopLongest)
	for _, p := range run.Processes {
		if p.ExitCode != nil && *p.ExitCode != 0 || p.Signal != 0 {
			s.Failed = append(s.Failed, p)
		}
		if p.ArgvTruncated {
			s.ArgvTruncated++
		}
	}
	// Killed by a signal (a crash, a timeout) first, then by start.
	killed := func(p trace.Process) int {
		if p.Signal != 0 {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(s.Failed, func(a, b trace.Process) int {
		return cmp.Or(cmp.Compare(killed(a), killed(b)), a.Start.Compare(b.Start), cmp.Compare(a.PID, b.PID))
	})
	bins, names := map[uint32]string{}, map[uint32]string{}
	for _, p := range run.Processes {
		bins[p.PID], names[p.PID] = p.Binary, runName(p)
	}
	for _, d := range run.Network {
		e := Dest{Destination: d, Hostnames: Hostnames(run, d)}
		for _, pid := range d.PIDs {
			b := bins[pid]
			if b == "" {
				b = fmt.Sprintf("pid %d", pid)
			} else if n := names[pid]; n != "" && n != "fork" {
				b += " (" + n + ")"
			}
			if !slices.Contains(e.Binaries, b) {
				e.Binaries = append(e.Binaries, b)
			}
		}
		slices.Sort(e.Binaries)
		s.Egress = append(s.Egress, e)
	}
	slices.SortStableFunc(s.Egress, func(a, b Dest) int {
		return cmp.Or(cmp.Compare(b.BytesSent+b.BytesReceived, a.BytesSent+a.BytesReceived), cmp.Compare(b.Count, a.Count))
	})
	s.DNSCount = len(run.DNS)
	for _, q := range run.DNS {
		if !slices.Contains(s.DNSNames, q.Name) {
			s.DNSNames = append(s.DNSNames, q.Name)
		}
	}
	s.Files = summarizeFiles(run)
	s.Materials, s.MaterialsTruncated = run.Materials, run.MaterialsTruncated
	s.Lost = lost(run, s)
	return s
}

// MaterialFiles is how many distinct files the materials name.
func (s Summary) MaterialFiles() int {
	paths := map[string]bool{}
	for _, m := range s.Materials {
		paths[m.Path] = true
	}
	return len(paths)
}

// ShortDigest is the first 12 hex digits of a "sha256:<hex>" or bare hex
// digest.
func ShortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	return d[:min(len(d), 12)]
}

// MaterialFrom is "127.0.0.1:5000", "10.0.0.2:443 (example.test)", with
// " udp" for a UDP endpoint.
func MaterialFrom(m trace.Material) string {
	e := m.Endpoint
	s := hostPort(e.IP, e.Port)
	if e.Protocol != "tcp" {
		s += " " + e.Protocol
	}
	if e.Hostname != "" {
		s += " (" + e.Hostname + ")"
	}
	return s
}

// MaterialBy is "/bin/busybox (wget) pid 12": the writing process.
func MaterialBy(m trace.Material) string {
	b := m.Binary
	if b == "" {
		b = "(unknown binary)"
	}
	if n := runName(trace.Process{Exec: true, Binary: m.Binary, Argv: m.Argv}); n != "" {
		b += " (" + n + ")"
	}
	return fmt.Sprintf("%s pid %d", b, m.PID)
}

// MaterialURLText is "GET http://host:port/path", the URL alone when the
// method is not known, "" when the writer's argv named no URL for the
// endpoint.
func MaterialURLText(m trace.Material) string {
	if m.URL == nil {
		return ""
	}
	if m.URL.Method != "" {
		return m.URL.Method + " " + m.URL.String()
	}
	return m.URL.String()
}

// MaterialText is one line for a material: path, digest, size, where
// from, by which process, the URL.
func MaterialText(m trace.Material) string {
	s := fmt.Sprintf("%s (sha256 %s, %s) from %s by %s", m.Path, ShortDigest(m.SHA256), Bytes(uint64(max(m.Size, 0))), MaterialFrom(m), MaterialBy(m))
	if u := MaterialURLText(m); u != "" {
		s += " — " + u
	}
	return s
}

// MaterialsHeading is "1 file" or "3 files, list capped by the tracer".
func (s Summary) MaterialsHeading() string {
	h := plural(s.MaterialFiles(), "file")
	if n := len(s.Materials); n != s.MaterialFiles() {
		h += fmt.Sprintf(" (%d sources)", n)
	}
	if s.MaterialsTruncated {
		h += ", list capped by the tracer"
	}
	return h
}

// binaries counts processes by the binary they ran last.
func binaries(procs []trace.Process) []BinaryCount {
	by := map[string]*BinaryCount{}
	names := map[string]map[string]int{}
	for _, p := range procs {
		b := p.Binary
		if b == "" {
			b = "(unknown binary)"
		}
		bc := by[b]
		if bc == nil {
			bc = &BinaryCount{Binary: b}
			by[b] = bc
			names[b] = map[string]int{}
		}
		bc.Count++
		if n := runName(p); n != "" {
			names[b][n]++
		}
	}
	out := make([]BinaryCount, 0, len(by))
	for _, bc := range by {
		for n, c := range names[bc.Binary] {
			bc.Names = append(bc.Names, NameCount{n, c})
		}
		slices.SortFunc(bc.Names, func(a, b NameCount) int {
			return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Name, b.Name))
		})
		out = append(out, *bc)
	}
	slices.SortFunc(out, func(a, b BinaryCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Binary, b.Binary))
	})
	return out
}

// runName is the name a process ran its binary by when that says more
// than the binary's own name: a busybox applet, a symlink, argv[0]; or
// "fork" for a process that never exec'd.
func runName(p trace.Process) string {
	if !p.Exec {
		return "fork"
	}
	if _, prog, ok := emulated(p.Argv); ok {
		return path.Base(prog[0])
	}
	base := path.Base(p.Binary)
	// argv[0] first: busybox runs its applets through /proc/self/exe.
	for _, n := range []string{first(p.Argv), p.Filename} {
		if n == "" {
			continue
		}
		if b := path.Base(n); b != base && b != "." && b != "/" {
			return b
		}
		return ""
	}
	return ""
}

// emulated splits the argv of a program run for another architecture by
// a binfmt_misc interpreter with the P (preserve argv[0]) flag, as
// Debian's qemu-user-static registers them
// (/usr/libexec/qemu-binfmt/aarch64-binfmt-P): the kernel passes the
// interpreter its own name, the program's file, then the program's argv.
// It returns the architecture and the program's argv.
func emulated(argv []string) (arch string, prog []string, ok bool) {
	if len(argv) < 3 || argv[2] == "" {
		return "", nil, false
	}
	arch, ok = strings.CutSuffix(path.Base(argv[0]), "-binfmt-P")
	if !ok || arch == "" {
		return "", nil, false
	}
	return arch, argv[2:], true
}

func first(ss []string) string {
	if len(ss) == 0 {
		return ""
	}
	return ss[0]
}

// NamesLine is "as cat ×150, fork ×20, … and 3 more names", "" when none.
func (b BinaryCount) NamesLine() string {
	if len(b.Names) == 0 {
		return ""
	}
	var parts []string
	for i, n := range b.Names {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("… and %d more", len(b.Names)-3))
			break
		}
		parts = append(parts, fmt.Sprintf("%s ×%d", n.Name, n.Count))
	}
	return "as " + strings.Join(parts, ", ")
}

// ShortCommand is a process's command line for one line of a summary:
// argv[0] by its base name, each argument longer than longArg runes cut
// in its middle ("…"), the whole cut at shortArgv runes. A compiler's
// package (-p net/http) then stays visible behind its long paths.
func ShortCommand(p trace.Process) string {
	return truncateRunes(compactCommand(p, longArg), shortArgv)
}

// longArg is the longest argument ShortCommand shows whole (runes).
const longArg = 24

// compactCommand is the command line with argv[0] by its base name and
// every argument over n runes cut in its middle.
func compactCommand(p trace.Process, n int) string {
	args, prefix := p.Argv, ""
	if len(args) == 0 {
		args = []string{p.Binary}
	}
	if arch, prog, ok := emulated(args); ok {
		// The program, not its emulator's plumbing: "[aarch64] wc -c f".
		args, prefix = prog, "["+arch+"] "
	}
	parts := make([]string, len(args))
	for i, a := range args {
		if i == 0 && strings.Contains(a, "/") && !strings.HasSuffix(a, "/") {
			a = path.Base(a)
		}
		parts[i] = elideArg(a, n)
	}
	s := prefix + strings.Join(parts, " ")
	if !p.Exec {
		s = "(fork) " + s
	}
	return s
}

// elideArg shortens one argument of a command line to about n runes: a
// script (an argument with blanks, as after sh -c) or a URL keeps its
// start, up to twice as long; a path or word keeps its start and end.
func elideArg(s string, n int) string {
	if strings.ContainsAny(s, " \t\n") || strings.Contains(s, "://") {
		return truncateRunes(s, 2*n)
	}
	return elideMiddle(s, n)
}

// elideMiddle keeps the start and the end of s (a path's directory and
// its file) when it is over n runes.
func elideMiddle(s string, n int) string {
	r := []rune(s)
	if len(r) <= n || n < 5 {
		return s
	}
	head := (n - 1) / 2
	tail := n - 1 - head
	return string(r[:head]) + "…" + string(r[len(r)-tail:])
}

func truncateRunes(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// ExitText is "exit 2" or "signal 9".
func ExitText(p trace.Process) string {
	switch {
	case p.Signal != 0:
		return fmt.Sprintf("signal %d", p.Signal)
	case p.ExitCode != nil:
		return fmt.Sprintf("exit %d", *p.ExitCode)
	}
	return "running"
}

// EndpointText is "tcp 10.0.0.1:443".
func (d Dest) EndpointText() string {
	return fmt.Sprintf("%s %s", d.Protocol, hostPort(d.IP, d.Port))
}

func hostPort(ip string, port uint16) string {
	if strings.Contains(ip, ":") {
		return fmt.Sprintf("[%s]:%d", ip, port)
	}
	return fmt.Sprintf("%s:%d", ip, port)
}

// Traffic is "connect ×2, sent 100 B, received 2.0 KiB, 1 failed (ECONNREFUSED)",
// and says when a socket made outside the container reached it.
func (d Dest) Traffic() string {
	s := fmt.Sprintf("%s ×%d, sent %s, received %s", d.Op, d.Count, Bytes(d.BytesSent), Bytes(d.BytesReceived))
	if d.Failed > 0 {
		s += fmt.Sprintf(", %d failed", d.Failed)
		if d.Error != "" {
			s += " (" + d.Error + ")"
		}
	}
	if d.ForeignSocket {
		s += ", through a socket made outside the container (its bytes not counted)"
	}
	return s
}

// HostText is the names of the destination: confirmed ones, then an
// unconfirmed one marked as such.
func (d Dest) HostText() string {
	s := strings.Join(d.Hostnames, ", ")
	if d.HostnameUnconfirmed != "" {
		if s != "" {
			s += ", "
		}
		s += d.HostnameUnconfirmed + " (unconfirmed DNS answer)"
	}
	return s
}

// changes lists a run's net file changes: the diff when there is one,
// otherwise the file-changing system calls (with the mode a chmod or
// create set).
func changes(run trace.Step) ([]trace.FileChange, string) {
	if run.Diff.Digest != "" || len(run.Diff.Changes) > 0 {
		out := make([]trace.FileChange, 0, len(run.Diff.Changes))
		for _, c := range run.Diff.Changes {
			if c.Change != trace.ChangeCreated && c.Change != trace.ChangeDeleted {
				c.Change = trace.ChangeModified
			}
			out = append(out, c)
		}
		return out, "diff"
	}
	idx := map[string]int{}
	var out []trace.FileChange
	for _, f := range run.Files {
		var ch string
		switch f.Op {
		case trace.OpCreate, trace.OpMkdir, trace.OpSymlink, trace.OpLink:
			ch = trace.ChangeCreated
		case trace.OpUnlink, trace.OpRmdir:
			ch = trace.ChangeDeleted
		default:
			ch = trace.ChangeModified
		}
		key := ch + "\x00" + f.Path
		i, ok := idx[key]
		if !ok {
			i = len(out)
			idx[key] = i
			out = append(out, trace.FileChange{Change: ch, Path: f.Path})
		}
		if f.Mode != nil {
			out[i].Mode = *f.Mode & 0o7777
			if f.Op == trace.OpMkdir {
				out[i].Type = "dir"
			}
		}
	}
	return out, "syscalls"
}

func summarizeFiles(run trace.Step) FileSummary {
	cs, src := changes(run)
	fs := FileSummary{Source: src, Truncated: run.Diff.Truncated}
	for _, c := range cs {
		switch c.Change {
		case trace.ChangeCreated:
			fs.Created++
		case trace.ChangeDeleted:
			fs.Deleted++
		default:
			fs.Modified++
		}
		if c.Change == trace.ChangeDeleted || c.Type != "" && c.Type != "file" {
			continue
		}
		if c.Mode&0o6000 != 0 {
			fs.SetuidCount++
			fs.Setuid = append(fs.Setuid, c)
		}
		if c.Change == trace.ChangeCreated && c.Mode&0o111 != 0 && c.Type == "file" {
			fs.ExecutableCount++
			fs.Executables = append(fs.Executables, c)
		}
		if c.Change == trace.ChangeCreated && c.Size > 0 {
			fs.Largest = append(fs.Largest, c)
		}
	}
	bySize := func(a, b trace.FileChange) int {
		return cmp.Or(cmp.Compare(b.Size, a.Size), strings.Compare(a.Path, b.Path))
	}
	slices.SortStableFunc(fs.Setuid, bySize)
	slices.SortStableFunc(fs.Executables, bySize)
	slices.SortStableFunc(fs.Largest, bySize)
	fs.Setuid = fs.Setuid[:min(len(fs.Setuid), TopNotable)]
	fs.Executables = fs.Executables[:min(len(fs.Executables), TopNotable)]
	fs.Largest = fs.Largest[:min(len(fs.Largest), TopNotable)]
	if len(cs) <= ListFilesUpTo {
		fs.Changes = slices.Clone(cs)
		slices.SortStableFunc(fs.Changes, func(a, b trace.FileChange) int { return strings.Compare(a.Path, b.Path) })
	}
	fs.Groups = groupDirs(cs)
	return fs
}

// dirNode is a directory (or file) in the tree of changed paths.
type dirNode struct {
	path     string
	children map[string]*dirNode
	self     [3]int // the change at this path: created, modified, deleted
	total    [3]int // this path and everything under it
}

func changeIndex(c string) int {
	switch c {
	case trace.ChangeCreated:
		return 0
	case trace.ChangeDeleted:
		return 2
	}
	return 1
}

// groupDirs groups changed paths by directory. It starts from the top-level
// directories and splits the directory with the most changes into its
// subdirectories while that keeps the groups at TopDirs or fewer (a
// directory holding only one subdirectory always gives way to it), so a
// group is as deep as the changes allow: /usr/local/go/pkg/, not /usr/.
func groupDirs(cs []trace.FileChange) []DirGroup {
	root := &dirNode{path: "/", children: map[string]*dirNode{}}
	for _, c := range cs {
		i := changeIndex(c.Change)
		p := path.Clean("/" + c.Path)
		n := root
		n.total[i]++
		if p == "/" {
			n.self[i]++
			continue
		}
		for _, part := range strings.Split(p[1:], "/") {
			child := n.children[part]
			if child == nil {
				child = &dirNode{path: path.Join(n.path, part), children: map[string]*dirNode{}}
				n.children[part] = child
			}
			n = child
			n.total[i]++
		}
		n.self[i]++
	}
	type group struct {
		n      *dirNode
		direct bool
		c      [3]int
		final  bool
	}
	sum := func(c [3]int) int { return c[0] + c[1] + c[2] }
	// split returns n's subdirectories as groups, plus n's own entries
	// and the files directly in it as one direct group.
	split := func(n *dirNode) []group {
		var out []group
		direct := n.self
		for _, name := range slices.Sorted(maps.Keys(n.children)) {
			ch := n.children[name]
			if len(ch.children) == 0 {
				for i := range 3 {
					direct[i] += ch.total[i]
				}
				continue
			}
			out = append(out, group{n: ch, c: ch.total})
		}
		if sum(direct) > 0 {
			out = append(out, group{n: n, direct: true, c: direct, final: true})
		}
		return out
	}
	groups := split(root)
	if len(cs) == 0 {
		return nil
	}
	for {
		best := -1
		for i, g := range groups {
			if g.final {
				continue
			}
			if best < 0 || sum(g.c) > sum(groups[best].c) || sum(g.c) == sum(groups[best].c) && g.n.path < groups[best].n.path {
				best = i
			}
		}
		if best < 0 {
			break
		}
		parts := split(groups[best].n)
		hasDir := slices.ContainsFunc(parts, func(g group) bool { return !g.direct })
		if !hasDir || len(groups)-1+len(parts) > TopDirs && len(parts) > 1 {
			groups[best].final = true
			continue
		}
		groups = slices.Concat(groups[:best], parts, groups[best+1:])
	}
	out := make([]DirGroup, 0, len(groups))
	for _, g := range groups {
		dir := g.n.path
		if dir != "/" {
			dir += "/"
		}
		out = append(out, DirGroup{Dir: dir, Direct: g.direct && len(g.n.children) > 0 && !allLeaves(g.n), Created: g.c[0], Modified: g.c[1], Deleted: g.c[2]})
	}
	sort.SliceStable(out, func(i, j int) bool {
		if a, b := out[i].Total(), out[j].Total(); a != b {
			return a > b
		}
		return out[i].Dir < out[j].Dir
	})
	return out
}

// allLeaves reports whether n has no subdirectory with changes under it,
// so its direct group is all of it.
func allLeaves(n *dirNode) bool {
	for _, c := range n.children {
		if len(c.children) > 0 {
			return false
		}
	}
	return true
}

// lost says what the run's trace does not hold.
func lost(run trace.Step, s Summary) []string {
	c := run.Completeness
	var out []string
	if !c.Complete {
		why := "trace incomplete"
		if len(c.Reasons) > 0 {
			why += ": " + strings.Join(c.Reasons, "; ")
		}
		out = append(out, why)
	}
	if !c.FollowedFromStart {
		out = append(out, "not followed from its start")
	}
	if c.EventsDropped > 0 {
		out = append(out, fmt.Sprintf("%d of %d events dropped (ring buffer full)", c.EventsDropped, c.EventsDropped+c.EventsEmitted))
	}
	if c.EventsTruncated > 0 {
		out = append(out, fmt.Sprintf("%d events truncated (a path or command line was cut)", c.EventsTruncated))
	}
	for _, k := range slices.Sorted(maps.Keys(c.Unobserved)) {
		out = append(out, fmt.Sprintf("%d %s unobserved (counted, not seen)", c.Unobserved[k], k))
	}
	if run.Redactions > 0 {
		out = append(out, fmt.Sprintf("%d secret values replaced with %s", run.Redactions, trace.RedactedSecret))
	}
	if s.ArgvTruncated > 0 {
		out = append(out, fmt.Sprintf("%d command lines cut", s.ArgvTruncated))
	}
	if run.Diff.Error != "" {
		out = append(out, "no file system diff ("+run.Diff.Error+"): file changes are from system calls")
	} else if s.Files.Source == "syscalls" {
		out = append(out, "no file system diff: file changes are from system calls")
	}
	if run.Diff.Truncated {
		out = append(out, "file change list capped (the diff digest covers all)")
	}
	if run.Reads.Truncated {
		out = append(out, fmt.Sprintf("read list capped: %d of %d paths", len(run.Reads.Paths), run.Reads.Distinct))
	}
	if run.Attribution == trace.AttributionNone {
		out = append(out, "the tracer could not tell which build this container belonged to")
	}
	return out
}

// Violations applies c to each of the step's runs (to the step alone when
// it did not run), as verify does; nil when c is nil, else not nil.
func Violations(c *policy.Checker, s Step) []policy.Violation {
	if c == nil {
		return nil
	}
	out := []policy.Violation{} // checked: not nil
	if len(s.Runs) == 0 {
		return append(out, c.Check(policy.Step{Info: s.Info})...)
	}
	for i := range s.Runs {
		run := s.Runs[i]
		out = append(out, c.Check(policy.Step{Info: s.Info, Run: &run})...)
	}
	return out
}

// ViolationText is "[egress.flagged] tcp connect … (pid 11 /bin/wget)".
func ViolationText(v policy.Violation) string {
	s := "[" + v.Rule + "] " + v.Event
	if v.PID != 0 {
		s += fmt.Sprintf(" (pid %d %s)", v.PID, v.Binary)
	} else if v.Binary != "" {
		s += " (" + v.Binary + ")"
	}
	return s
}

// Timed is a process with how long it ran (to the run's end when it
// did not exit).
type Timed struct {
	trace.Process
	Nanos int64
}

// longest is busiest without forks that did not exec (in a summary a
// subshell's line says nothing the step's does not), longest first.
func longest(run trace.Step, n int) []Timed {
	var out []Timed
	for _, p := range busiest(run, n) {
		if p.Exec {
			out = append(out, p)
		}
	}
	slices.SortStableFunc(out, func(a, b Timed) int { return cmp.Compare(b.Nanos, a.Nanos) })
	return out
}

// busiest returns up to n of a run's processes that ran longest, in start
// order. The run's first process (the RUN instruction itself, which the
// step already stands for) is left out when it started others. Processes
// that exec'd come before forks that did not (a shell's subshells), which
// only fill the places left.
func busiest(run trace.Step, n int) []Timed {
	var ps []Timed
	roots := map[uint32]bool{}
	for _, r := range Tree(run) {
		// A root that exec'd again (sh -c exec'ing its last command)
		// is that command, not the instruction.
		if len(r.Children) > 0 && len(r.Execs) == 0 {
			roots[r.PID] = true
		}
	}
	for _, p := range run.Processes {
		if roots[p.PID] {
			continue
		}
		end := run.End
		if p.End != nil {
			end = *p.End
		}
		ps = append(ps, Timed{Process: p, Nanos: max(end.Sub(p.Start).Nanoseconds(), 0)})
	}
	exec := func(p Timed) int {
		if p.Exec {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(ps, func(a, b Timed) int {
		return cmp.Or(cmp.Compare(exec(a), exec(b)), cmp.Compare(b.Nanos, a.Nanos), a.Start.Compare(b.Start), cmp.Compare(a.PID, b.PID))
	})
	ps = ps[:min(len(ps), n)]
	slices.SortStableFunc(ps, func(a, b Timed) int { return cmp.Or(a.Start.Compare(b.Start), cmp.Compare(a.PID, b.PID)) })
	return ps
}

// plural is "1 process", "2 processes", "3 binaries".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	switch {
	case strings.HasSuffix(word, "child"):
		word += "ren"
	case strings.HasSuffix(word, "ss"):
		word += "es"
	case strings.HasSuffix(word, "ry"):
		word = word[:len(word)-1] + "ies"
	default:
		word += "s"
	}
	return fmt.Sprintf("%d %s", n, word)
}
