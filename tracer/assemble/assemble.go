// Package assemble turns the probe's event stream into trace steps: one
// step per container cgroup under /buildtrace/<step>/buildkit/, opened when
// the cgroup is created and sealed when it is removed. It does no I/O; the
// daemon feeds it events and supplies what only the system knows (kernel
// counters, traffic, the file-system diff) at seal time.
package assemble

import (
	"fmt"
	"hash/maphash"
	"net/netip"
	"path"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/tracer/probe"
)

// Default limits per step.
const (
	DefaultMaxFileOps = 500_000
	DefaultMaxReads   = 10_000
	// maxDistinctReads bounds the set used to count distinct read paths;
	// past it Distinct is a lower bound.
	maxDistinctReads = 2_000_000
)

// Options are the per-step limits. Zero values take the defaults.
type Options struct {
	MaxFileOps int
	MaxReads   int
}

// Key names a step in the store and the API.
type Key struct {
	TraceID, StepID, ContainerID string
}

// Assembler holds the open steps, by cgroup ID. It is not safe for
// concurrent use; the daemon calls it from the probe's event loop.
type Assembler struct {
	opts  Options
	steps map[uint64]*Step
	seed  maphash.Seed
}

// New returns an Assembler with no open step.
func New(opts Options) *Assembler {
	if opts.MaxFileOps <= 0 {
		opts.MaxFileOps = DefaultMaxFileOps
	}
	if opts.MaxReads <= 0 {
		opts.MaxReads = DefaultMaxReads
	}
	return &Assembler{opts: opts, steps: make(map[uint64]*Step), seed: maphash.MakeSeed()}
}

// Step is one open (or ended, not yet sealed) container of a step. Its
// exported fields are for the daemon to read; only the Assembler changes
// them, and an ended step no longer changes.
type Step struct {
	CgroupID  uint64
	Cgroup    string
	Container steptag.Container
	// TraceID is the build, from the container's OCI bundle (Attribute);
	// empty when it could not be decided: the step is then sealed as
	// unattributed.
	TraceID           string
	FollowedFromStart bool
	Start, End        time.Time
	// FirstPID is the process of the first exec, whose mountinfo holds the
	// container's root mount.
	FirstPID uint32

	opts    Options
	seed    maphash.Seed
	started bool // an exec was seen: runc's setup is over
	// attrErr says why TraceID is empty; attributed is true once a
	// bundle named the build.
	attrErr    string
	attributed bool
	// The kernel could not follow the cgroup (tracked map full), count
	// its losses (stats map full), or its creation record was lost.
	untracked, lostOpen bool

	procs     []trace.Process
	live      map[uint32]int // PID → index in procs while it runs
	execTime  map[int]time.Time
	firstExec time.Time
	lastExit  time.Time
	res       trace.Resources
	rssResets int // opens of /proc/<pid>/clear_refs for writing (clearRefs)

	files        fileLog
	filesDropped int
	reads        []string
	readSet      map[string]struct{}
	readHashes   map[uint64]struct{}
	readsCapped  bool

	dests map[destKey]*trace.Destination
	dns   dnsLog
	// foreign counts the probe's foreign-socket records: bytes moved
	// through sockets made in another cgroup, which the packet counters
	// charge there (probe.NetInfo.Foreign).
	foreign int
}

type destKey struct {
	proto string
	addr  netip.AddrPort
}

// Key returns the step's key. TraceID may be empty.
func (s *Step) Key() Key {
	return Key{TraceID: s.TraceID, StepID: s.Container.StepID, ContainerID: s.Container.ContainerID}
}

// Update says what an event did that the caller has to act on.
type Update struct {
	Opened    *Step // a container cgroup was created
	FirstExec *Step // the step's first exec was seen (FirstPID set)
	Ended     *Step // the container cgroup was removed: call Seal
}

// Track opens a step for a container cgroup that existed before the tracer
// followed it. Its earlier activity is lost, so it is never complete.
// traceID may be empty; a later exec can still supply it.
func (a *Assembler) Track(cgroupID uint64, path string, traceID string, now time.Time) (*Step, bool) {
	c, ok := steptag.ParseCgroup(path)
	if !ok {
		return nil, false
	}
	if s, ok := a.steps[cgroupID]; ok {
		return s, true
	}
	s := a.newStep(cgroupID, path, c, now)
	s.TraceID = traceID
	s.started = true // we cannot tell whether runc is done; record everything
	a.steps[cgroupID] = s
	return s, true
}

// Attribute sets the build of an open step from its container's OCI
// bundle (traceID), or records why it could not be decided (why). It is
// called once the daemon has read the bundle, normally before the first
// exec; a later call does not override a bundle's answer.
func (a *Assembler) Attribute(s *Step, traceID, why string) {
	if s.attributed {
		return
	}
	if traceID != "" {
		s.TraceID, s.attributed, s.attrErr = traceID, true, ""
		return
	}
	s.attrErr = why
}

// Lost opens and ends at once a step for a container cgroup whose creation
// record never arrived (the ring buffer was full) but whose removal did:
// everything it did was lost, and its record must say so rather than the
// step being absent.
func (a *Assembler) Lost(cgroupID uint64, path string, end time.Time) (*Step, bool) {
	c, ok := steptag.ParseCgroup(path)
	if !ok {
		return nil, false
	}
	if _, ok := a.steps[cgroupID]; ok {
		return nil, false
	}
	s := a.newStep(cgroupID, path, c, end)
	s.lostOpen = true
	s.End = end
	return s, true
}

// Adopt adds a process that was already running in a tracked step when
// the tracer started (see Track), so that its exit, its children and what
// it does from now on are attributed to it.
func (s *Step) Adopt(p trace.Process) {
	if _, ok := s.live[p.PID]; ok {
		return
	}
	p.Adopted = true
	s.procs = append(s.procs, p)
	s.live[p.PID] = len(s.procs) - 1
	if s.firstExec.IsZero() || p.Start.Before(s.firstExec) {
		s.firstExec = p.Start
	}
}

func (a *Assembler) newStep(id uint64, path string, c steptag.Container, now time.Time) *Step {
	return &Step{
		CgroupID:  id,
		Cgroup:    path,
		Container: c,
		Start:     now,
		opts:      a.opts,
		seed:      a.seed,
		live:      make(map[uint32]int),
		execTime:  make(map[int]time.Time),
		readSet:   make(map[string]struct{}),
		dests:     make(map[destKey]*trace.Destination),
	}
}

// Open returns the open steps.
func (a *Assembler) Open() []*Step {
	out := make([]*Step, 0, len(a.steps))
	for _, s := range a.steps {
		out = append(out, s)
	}
	return out
}

// Handle applies one event.
func (a *Assembler) Handle(ev probe.Event) Update {
	switch ev.Kind {
	case probe.KindCgroupMkdir:
		if ev.Cgroup == nil {
			return Update{}
		}
		c, ok := steptag.ParseCgroup(ev.Cgroup.Path)
		if !ok {
			return Update{}
		}
		if _, ok := a.steps[ev.CgroupID]; ok {
			// The probe replays cgroups that existed when it loaded as
			// mkdir events; the start-up scan already tracked them as
			// not followed from the start.
			return Update{}
		}
		s := a.newStep(ev.CgroupID, ev.Cgroup.Path, c, ev.Time)
		s.FollowedFromStart = true
		s.untracked = ev.Cgroup.Untracked
		a.steps[ev.CgroupID] = s
		return Update{Opened: s}
	case probe.KindCgroupRmdir:
		s := a.steps[ev.CgroupID]
		if s == nil && ev.Cgroup != nil {
			s = a.byPath(ev.Cgroup.Path)
		}
		if s == nil {
			return Update{}
		}
		delete(a.steps, s.CgroupID)
		s.End = ev.Time
		return Update{Ended: s}
	}
	s := a.steps[ev.CgroupID]
	if s == nil {
		return Update{}
	}
	if ev.Kind == probe.KindExec && ev.Exec != nil {
		if !s.started && runcReexec(ev.Exec) {
			// runc init re-executing itself, moved into the cgroup before
			// it entered the container's namespaces; the step starts at
			// the next exec.
			return Update{}
		}
		first := !s.started
		s.exec(ev)
		if first {
			return Update{FirstExec: s}
		}
		return Update{}
	}
	if !s.started {
		return Update{} // runc's own setup inside the container
	}
	switch ev.Kind {
	case probe.KindFork:
		s.fork(ev)
	case probe.KindExit:
		if ev.Exit != nil {
			s.exit(ev)
		}
	case probe.KindFile:
		if ev.File != nil {
			s.file(ev)
		}
	case probe.KindNet:
		if ev.Net != nil {
			s.net(ev)
		}
	case probe.KindDNS:
		if ev.DNS != nil {
			s.dns.add(ev.PID, ev.DNS)
		}
	case probe.KindCred:
		if ev.Cred != nil {
			s.cred(ev)
		}
	}
	return Update{}
}

// runcReexec reports whether x is runc's re-exec of itself before the
// container's first exec: the first exec in the cgroup, by a task still in
// runc's mount namespace (its parent's, or the tracer's), with argv "runc
// init". The container's first process is not in it, so a step cannot fake
// this to hide its start; anything else, whatever its environment, starts
// the step.
func runcReexec(x *probe.ExecInfo) bool {
	return x.FirstInCgroup && x.RuntimeMountNS && len(x.Argv) == 2 && x.Argv[1] == "init" &&
		strings.HasPrefix(path.Base(x.Argv[0]), "runc")
}

func (a *Assembler) byPath(path string) *Step {
	for _, s := range a.steps {
		if s.Cgroup == path {
			return s
		}
	}
	return nil
}

func (s *Step) exec(ev probe.Event) {
	x := ev.Exec
	if !s.started {
		s.started = true
		s.FirstPID = ev.PID
		s.firstExec = ev.Time
	}
	if !s.attributed && s.TraceID == "" && x.TraceID != "" {
		s.TraceID = x.TraceID // tests only: the probe never sets it
	}
	i, ok := s.live[ev.PID]
	if !ok {
		// Forked before the first exec (runc's init): the process starts
		// for us with its exec.
		s.procs = append(s.procs, trace.Process{PID: ev.PID, PPID: ev.PPID, Start: ev.Time})
		i = len(s.procs) - 1
		s.live[ev.PID] = i
	}
	p := &s.procs[i]
	if p.Exec {
		p.Execs = append(p.Execs, trace.Exec{Binary: p.Binary, Filename: p.Filename, Argv: p.Argv, ArgvTruncated: p.ArgvTruncated,
			Time: s.execTime[i], BinaryAnonymous: p.BinaryAnonymous})
	}
	p.Exec = true
	p.Binary = x.Binary
	p.BinaryAnonymous = x.BinaryAnonymous
	p.Filename = ""
	if x.Filename != x.Binary {
		p.Filename = x.Filename
	}
	p.Argv = x.Argv
	p.ArgvTruncated = x.ArgvTruncated
	// The effective IDs are who the image runs as: a setuid-root file run
	// by uid 1000 is root (redteam13). The real ones are kept when they
	// differ (a process whose real ID is root can take root back).
	p.UID, p.GID = x.EUID, x.EGID
	p.RealUID, p.RealGID = differs(x.UID, x.EUID), differs(x.GID, x.EGID)
	p.Cwd = x.Cwd
	s.execTime[i] = ev.Time
}

// cred applies a change of a process's IDs after its exec (setuid(2) and
// its kin). A process that made itself root, effective or for file access
// (fsuid), is recorded as uid 0 from then on, and its later forks too: a
// program of uid 1000 with the file capability CAP_SETUID calls setuid(0)
// and is root without an exec (redteam13). The same for gid 0. Other
// changes (root dropping to another user) are left to the next exec: the
// record then still says root, which the process was.
func (s *Step) cred(ev probe.Event) {
	i, ok := s.live[ev.PID]
	if !ok {
		return
	}
	p, c := &s.procs[i], ev.Cred
	if (c.EUID == 0 || c.FSUID == 0) && p.UID != 0 {
		p.UID, p.RealUID = 0, differs(c.UID, 0)
	}
	if c.EGID == 0 && p.GID != 0 {
		p.GID, p.RealGID = 0, differs(c.GID, 0)
	}
}

// differs returns real when it is not effective, else nil.
func differs(real, effective uint32) *uint32 {
	if real == effective {
		return nil
	}
	return &real
}

func (s *Step) fork(ev probe.Event) {
	p := trace.Process{PID: ev.PID, PPID: ev.PPID, Start: ev.Time}
	if pi, ok := s.live[ev.PPID]; ok {
		parent := s.procs[pi]
		p.Binary, p.Filename, p.Argv, p.ArgvTruncated = parent.Binary, parent.Filename, parent.Argv, parent.ArgvTruncated
		p.UID, p.GID, p.Cwd = parent.UID, parent.GID, parent.Cwd
		p.RealUID, p.RealGID = parent.RealUID, parent.RealGID
	}
	// A PID still in live belongs to a process whose exit we missed; the
	// new one replaces it.
	s.procs = append(s.procs, p)
	s.live[ev.PID] = len(s.procs) - 1
}

func (s *Step) exit(ev probe.Event) {
	i, ok := s.live[ev.PID]
	if !ok {
		return // started before the first exec and never exec'd
	}
	delete(s.live, ev.PID)
	p := &s.procs[i]
	end := ev.Time
	p.End = &end
	if ev.Exit.Signal != 0 {
		p.Signal = ev.Exit.Signal
	} else {
		code := ev.Exit.Code
		p.ExitCode = &code
	}
	x := ev.Exit
	s.res.CPUUserNanos += x.CPUUserNanos
	s.res.CPUSystemNanos += x.CPUSystemNanos
	s.res.ReadBytes += x.ReadBytes
	s.res.WriteBytes += x.WriteBytes
	s.res.PeakRSSBytes = max(s.res.PeakRSSBytes, x.MaxRSSBytes)
	if ev.Time.After(s.lastExit) {
		s.lastExit = ev.Time
	}
}

func (s *Step) file(ev probe.Event) {
	f := ev.File
	if f.Op == "read" {
		s.read(f.Path)
		return
	}
	if clearRefs(f.Path) || clearRefs(f.Target) {
		s.rssResets++
	}
	if s.files.n >= s.opts.MaxFileOps {
		s.filesDropped++
		return
	}
	s.files.add(trace.FileOp{Op: f.Op, Path: f.Path, Target: f.Target, Mode: f.Mode, UID: f.UID, GID: f.GID, PID: ev.PID, Time: ev.Time})
}

// clearRefs reports whether p names a /proc/<pid>/clear_refs file (or a
// thread's, /proc/<pid>/task/<tid>/clear_refs). Writing "5" there resets
// the process's peak RSS to its current RSS, and the exit record takes the
// peak from the kernel: a step could touch any amount of memory, free it,
// reset, and be recorded with what it held at exit (redteam13). The kernel
// side may not hook the write itself (no kprobes or BPF trampolines on
// some kernels), so the open for writing is what counts: the open record
// names both the path given and the file the kernel opened, and a step
// without CAP_SYS_ADMIN cannot mount procfs anywhere else. Every file
// under /proc is procfs's, so no other file matches.
func clearRefs(p string) bool {
	return strings.HasPrefix(p, "/proc/") && path.Base(p) == "clear_refs"
}

func (s *Step) read(path string) {
	if _, ok := s.readSet[path]; ok {
		return
	}
	if len(s.reads) < s.opts.MaxReads {
		s.readSet[path] = struct{}{}
		s.reads = append(s.reads, path)
		return
	}
	s.readsCapped = true
	// Over the cap, count distinct paths by hash only.
	if s.readHashes == nil {
		s.readHashes = make(map[uint64]struct{})
	}
	if len(s.readHashes) < maxDistinctReads {
		s.readHashes[maphash.String(s.seed, path)] = struct{}{}
	}
}

func (s *Step) net(ev probe.Event) {
	n := ev.Net
	if n.Foreign {
		// Its bytes went uncounted (charged to the socket's cgroup):
		// the step is incomplete (Seal). Its peer, when it has one, is
		// a destination like any other, so egress policy applies.
		s.foreign++
		if !n.Addr.IsValid() {
			return
		}
	}
	k := destKey{proto: n.Protocol, addr: n.Addr}
	d := s.dests[k]
	if d == nil {
		d = &trace.Destination{Protocol: n.Protocol, IP: n.Addr.Addr().Unmap().String(), Port: n.Addr.Port(), Op: n.Op, First: ev.Time}
		s.dests[k] = d
	}
	if n.Foreign {
		d.ForeignSocket = true
	}
	d.Count++
	if n.Errno != 0 {
		// A failed attempt still says where the step tried to go.
		d.Failed++
		d.Error = errnoName(n.Errno)
	}
	if !slices.Contains(d.PIDs, ev.PID) {
		d.PIDs = append(d.PIDs, ev.PID)
	}
}

func errnoName(e uint32) string {
	if n := unix.ErrnoName(syscall.Errno(e)); n != "" {
		return n
	}
	return fmt.Sprintf("errno %d", e)
}

// fileLog holds a step's file operations in fixed-size chunks: a step can
// make hundreds of thousands, and a growing slice would copy them over and
// over on the event loop.
type fileLog struct {
	chunks [][]trace.FileOp
	n      int
}

const fileChunk = 4096

func (l *fileLog) add(op trace.FileOp) {
	if l.n%fileChunk == 0 {
		l.chunks = append(l.chunks, make([]trace.FileOp, 0, fileChunk))
	}
	last := &l.chunks[len(l.chunks)-1]
	*last = append(*last, op)
	l.n++
}

// all returns a new slice of every operation in order, nil when none.
func (l *fileLog) all() []trace.FileOp {
	if l.n == 0 {
		return nil
	}
	out := make([]trace.FileOp, 0, l.n)
	for _, c := range l.chunks {
		out = append(out, c...)
	}
	return out
}

// SealInput is what the system knows of an ended step.
type SealInput struct {
	Stats   probe.CgroupStats
	Traffic []probe.Traffic
	Diff    trace.Diff
	Lowers  []string // diff digests of the lower layers, top first; "" for one that could not be hashed
}

// OpTrafficOnly is the Destination.Op of an endpoint seen only by the
// packet counters (no connect/sendto/sendmsg was observed for it, e.g.
// incoming connections or sendmmsg).
const OpTrafficOnly = "traffic"

// Seal builds the step's record. Call it once, after Handle returned the
// step as Ended; it does not change the Step and may run on any goroutine.
func (s *Step) Seal(in SealInput) trace.Step {
	out := trace.Step{
		StepID:      s.Container.StepID,
		ContainerID: s.Container.ContainerID,
		Cgroup:      s.Cgroup,
		Start:       s.Start,
		End:         s.End,
		Processes:   slices.Clone(s.procs),
		Files:       s.files.all(),
		DNS:         slices.Clone(s.dns.queries),
		Diff:        in.Diff,
		Lowers:      in.Lowers,
	}
	if out.Processes == nil {
		out.Processes = []trace.Process{}
	}
	out.Reads.Paths = slices.Clone(s.reads)
	sort.Strings(out.Reads.Paths)
	out.Reads.Distinct = len(s.reads) + len(s.readHashes)
	out.Reads.Truncated = s.readsCapped

	res := s.res
	res.Processes = len(s.procs)
	if !s.firstExec.IsZero() && !s.lastExit.IsZero() && s.lastExit.After(s.firstExec) {
		res.WallNanos = s.lastExit.Sub(s.firstExec).Nanoseconds()
	}
	out.Resources = res

	dests := make(map[destKey]*trace.Destination, len(s.dests))
	for k, d := range s.dests {
		c := *d
		c.PIDs = slices.Clone(d.PIDs)
		dests[k] = &c
	}
	for _, t := range in.Traffic {
		k := destKey{proto: t.Protocol, addr: t.Addr}
		d := dests[k]
		if d == nil {
			d = &trace.Destination{Protocol: t.Protocol, IP: t.Addr.Addr().Unmap().String(), Port: t.Addr.Port(), Op: OpTrafficOnly, PIDs: []uint32{}}
			dests[k] = d
		}
		d.BytesSent += t.BytesSent
		d.BytesReceived += t.BytesReceived
	}
	// A step that could forge packets could have answered its own
	// questions in its resolver's name: then no answer is confirmed.
	forger := s.canForgePackets(in.Stats)
	if forger {
		out.DNS = unconfirmAll(out.DNS)
	}
	for k, d := range dests {
		if h, ok := s.dns.hosts[k.addr.Addr().Unmap()]; ok && !forger {
			d.Hostname = h
		} else if ok {
			d.HostnameUnconfirmed = h
		} else if h, ok := s.dns.strayHosts[k.addr.Addr().Unmap()]; ok {
			d.HostnameUnconfirmed = h
		}
		out.Network = append(out.Network, *d)
	}
	sort.Slice(out.Network, func(i, j int) bool {
		a, b := out.Network[i], out.Network[j]
		if !a.First.Equal(b.First) {
			// Traffic-only endpoints have no time; they sort last.
			if a.First.IsZero() != b.First.IsZero() {
				return b.First.IsZero()
			}
			return a.First.Before(b.First)
		}
		if a.IP != b.IP {
			return a.IP < b.IP
		}
		if a.Port != b.Port {
			return a.Port < b.Port
		}
		return a.Protocol < b.Protocol
	})

	out.Materials, out.MaterialsTruncated = materials(&out, s.execTime)

	c := trace.Completeness{
		FollowedFromStart: s.FollowedFromStart,
		EventsEmitted:     in.Stats.Emitted,
		EventsDropped:     in.Stats.Dropped,
		EventsTruncated:   in.Stats.Truncated,
	}
	for k, v := range map[string]uint64{"io_uring": in.Stats.IOUring, "af_packet": in.Stats.AFPacket, "traffic_map_full": in.Stats.TrafficFull,
		"syscalls_unhooked": in.Stats.Unhooked, "cgroup_escape": in.Stats.Escaped, "rss_reset": uint64(s.rssResets),
		"foreign_socket": uint64(s.foreign)} {
		if v > 0 {
			if c.Unobserved == nil {
				c.Unobserved = map[string]uint64{}
			}
			c.Unobserved[k] = v
		}
	}
	var reasons []string
	if s.lostOpen {
		reasons = append(reasons, "the container's creation record was lost (ring buffer full): nothing it did was followed")
	}
	if s.untracked {
		reasons = append(reasons, "the kernel's map of tracked cgroups was full: nothing the container did was followed")
	}
	if !s.FollowedFromStart && !s.lostOpen {
		reasons = append(reasons, "the tracer started following this container after it had started")
	}
	if !s.started {
		reasons = append(reasons, "no exec was seen in the container")
	}
	if s.TraceID == "" {
		out.Attribution = trace.AttributionNone
		why := s.attrErr
		if why == "" {
			why = "no OCI bundle was read"
		}
		reasons = append(reasons, "the container's build could not be decided: "+why)
	} else if s.attributed {
		out.Attribution = trace.AttributionBundle
	}
	if in.Stats.Dropped > 0 {
		reasons = append(reasons, fmt.Sprintf("%d events were dropped because the ring buffer was full", in.Stats.Dropped))
	}
	if in.Stats.Truncated > 0 {
		reasons = append(reasons, fmt.Sprintf("%d events had a path or argv cut at the probe's limit", in.Stats.Truncated))
	}
	if in.Stats.IOUring > 0 {
		reasons = append(reasons, fmt.Sprintf("%d io_uring submissions were made; their operations are not observed", in.Stats.IOUring))
	}
	if in.Stats.AFPacket > 0 {
		reasons = append(reasons, fmt.Sprintf("%d AF_PACKET sockets were opened; frames sent on them are not observed", in.Stats.AFPacket))
	}
	if in.Stats.Escaped > 0 {
		reasons = append(reasons, fmt.Sprintf("%d processes left the container's cgroup (moved, or cloned into another): what they did there is not observed", in.Stats.Escaped))
	}
	if s.foreign > 0 {
		reasons = append(reasons, fmt.Sprintf("sockets made outside the container (passed to it by another process, or inherited) were used (records: %d): their traffic is charged to whoever made them and not counted here; destinations reached through them are marked foreignSocket", s.foreign))
	}
	if s.rssResets > 0 {
		reasons = append(reasons, fmt.Sprintf("%d opens of /proc/<pid>/clear_refs for writing, which can reset a process's peak RSS: the peak memory recorded is not vouched for", s.rssResets))
	}
	if in.Stats.TrafficFull > 0 {
		reasons = append(reasons, fmt.Sprintf("the kernel's traffic map was full: %d packets were not counted", in.Stats.TrafficFull))
	}
	if in.Stats.Unhooked > 0 {
		reasons = append(reasons, fmt.Sprintf("%d execs or forks ran while the tracer's system call hook was not attached: their system calls until it attached were not seen", in.Stats.Unhooked))
	}
	if in.Stats.MapFull > 0 {
		reasons = append(reasons, fmt.Sprintf("%d inserts into a per-container kernel map failed (map full)", in.Stats.MapFull))
	}
	if s.filesDropped > 0 {
		reasons = append(reasons, fmt.Sprintf("file operations over the cap of %d: %d not recorded", s.opts.MaxFileOps, s.filesDropped))
	}
	if s.readsCapped {
		reasons = append(reasons, fmt.Sprintf("read paths over the cap of %d: %d not listed", s.opts.MaxReads, len(s.readHashes)))
	}
	if len(s.readHashes) >= maxDistinctReads {
		reasons = append(reasons, fmt.Sprintf("more than %d distinct paths were read; the distinct count is a lower bound", maxDistinctReads))
	}
	if s.dns.dropped > 0 {
		reasons = append(reasons, fmt.Sprintf("DNS questions over the cap of %d: %d not recorded", maxDNSQueries, s.dns.dropped))
	}
	if in.Diff.Error != "" {
		reasons = append(reasons, trace.ReasonNoDiff+in.Diff.Error)
	} else if in.Diff.Digest == "" {
		reasons = append(reasons, "no file-system diff was computed")
	}
	if slices.Contains(in.Lowers, "") {
		// Its lower digests bind the layers below it (COPY layers above
		// all): without one, verify binds the run nowhere (redteam12).
		reasons = append(reasons, "the layers it ran on could not all be hashed (the tracer's log says why), so its layer is bound to nothing")
	}
	c.Reasons = reasons
	c.Complete = len(reasons) == 0
	out.Completeness = c
	return out
}

// canForgePackets reports whether the step sent on a socket that writes
// its own IP headers or may (a raw socket, which the probe names "raw",
// or by its protocol when it is ICMP: IP_HDRINCL makes either write any
// packet), opened an AF_PACKET socket, used io_uring, or had a process
// leave its cgroup, or used a socket made outside it (whose packets are
// charged elsewhere), whose sends no hook sees (all four also make the step
// incomplete; this keeps its names unconfirmed under incomplete.allow too),
// or sent UDP from local port 53 (IP_PKTINFO names any local source
// address, IP_TRANSPARENT any address: redteam9). Such a step can send itself a
// DNS answer from its resolver's address, with the question's ID, so
// matching an answer to a question proves nothing for it. A ping (ICMP datagram) socket cannot be told
// from a raw ICMP one here, so it counts too: its names are then shown
// as unconfirmed, never trusted wrongly.
func (s *Step) canForgePackets(st probe.CgroupStats) bool {
	if st.AFPacket > 0 || st.IOUring > 0 || st.Escaped > 0 || st.DNSSource > 0 || s.foreign > 0 {
		return true
	}
	for k := range s.dests {
		switch k.proto {
		case "tcp", "udp", "udplite", "sctp":
		default:
			return true
		}
	}
	return false
}

// unconfirmAll marks every answer of qs unconfirmed.
func unconfirmAll(qs []trace.DNSQuery) []trace.DNSQuery {
	for i := range qs {
		q := &qs[i]
		if len(q.Answers) == 0 {
			continue
		}
		q.Unconfirmed = true
		// The clone's slices share arrays with the Step's: copy first.
		q.UnconfirmedAnswers = slices.Clone(q.UnconfirmedAnswers)
		for _, a := range q.Answers {
			if !contains(q.UnconfirmedAnswers, a) {
				q.UnconfirmedAnswers = append(q.UnconfirmedAnswers, a)
			}
		}
		q.Answers = nil
	}
	return qs
}
