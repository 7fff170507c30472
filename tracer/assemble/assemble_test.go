package assemble

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/tracer/probe"
)

const (
	traceA = "4bf92f3577b34da6a3ce929d0e0e4736"
	traceB = "00f067aa0ba902b7aaaaaaaaaaaaaaaa"
)

var t0 = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// feed is a synthetic event stream for one container cgroup.
type feed struct {
	a     *Assembler
	cg    uint64
	path  string
	execd bool // an exec was sent: the next is not first in the cgroup
}

func newFeed(a *Assembler, cg uint64, step, container string) *feed {
	return &feed{a: a, cg: cg, path: "/" + steptag.CgroupParent(step) + "/buildkit/" + container}
}

func (f *feed) send(ev probe.Event) Update {
	if ev.CgroupID == 0 {
		ev.CgroupID = f.cg
	}
	return f.a.Handle(ev)
}

func (f *feed) mkdir(ms int) Update {
	return f.send(probe.Event{Kind: probe.KindCgroupMkdir, Time: at(ms), Cgroup: &probe.CgroupInfo{Path: f.path}})
}

func (f *feed) rmdir(ms int) Update {
	return f.send(probe.Event{Kind: probe.KindCgroupRmdir, Time: at(ms), Cgroup: &probe.CgroupInfo{Path: f.path}})
}

// exec sends an exec by a task in the container's mount namespace. A
// traceID is what the daemon read from the bundle (Attribute), given first.
func (f *feed) exec(ms int, pid, ppid uint32, traceID string, argv ...string) Update {
	if traceID != "" {
		f.attribute(traceID)
	}
	return f.execNS(ms, pid, ppid, false, argv...)
}

// execNS sends an exec; host says the task was in the tracer's mount
// namespace. As the probe does, only the cgroup's first exec is flagged.
func (f *feed) execNS(ms int, pid, ppid uint32, host bool, argv ...string) Update {
	first := !f.execd
	f.execd = true
	return f.send(probe.Event{Kind: probe.KindExec, Time: at(ms), PID: pid, TID: pid, PPID: ppid,
		Exec: &probe.ExecInfo{Binary: argv[0], Argv: argv, Cwd: "/", FirstInCgroup: first, RuntimeMountNS: host}})
}

func (f *feed) attribute(traceID string) {
	for _, s := range f.a.Open() {
		if s.CgroupID == f.cg {
			f.a.Attribute(s, traceID, "")
		}
	}
}

func (f *feed) fork(ms int, pid, ppid uint32) {
	f.send(probe.Event{Kind: probe.KindFork, Time: at(ms), PID: pid, TID: pid, PPID: ppid})
}

func (f *feed) exit(ms int, pid uint32, code, sig int, rss uint64) {
	f.send(probe.Event{Kind: probe.KindExit, Time: at(ms), PID: pid, TID: pid,
		Exit: &probe.ExitInfo{Code: code, Signal: sig, CPUUserNanos: 10, CPUSystemNanos: 5, MaxRSSBytes: rss, ReadBytes: 100, WriteBytes: 7}})
}

func (f *feed) file(ms int, pid uint32, op, path string) {
	f.send(probe.Event{Kind: probe.KindFile, Time: at(ms), PID: pid, File: &probe.FileInfo{Op: op, Path: path}})
}

var goodDiff = trace.Diff{Digest: "sha256:" + strings.Repeat("0", 64)}

func TestProcessTree(t *testing.T) {
	a := New(Options{})
	step := steptag.NewID([]byte("s1"))
	f := newFeed(a, 100, step, "c1")
	if u := f.mkdir(0); u.Opened == nil || !u.Opened.FollowedFromStart {
		t.Fatalf("mkdir did not open a followed step: %+v", u)
	}
	// runc's setup: a fork, a mount-ish file op, a child that exits, all before the first exec.
	f.fork(1, 10, 9)
	f.fork(1, 11, 10)
	f.file(2, 10, trace.OpMkdir, "/proc")
	f.exit(3, 11, 0, 0, 1<<30)
	// runc init re-executing its sealed copy inside the cgroup, still in
	// the host's mount namespace: setup, not the step's command.
	if u := f.execNS(4, 10, 9, true, "runc", "init"); u.FirstExec != nil {
		t.Fatalf("runc's re-exec was taken for the step's first exec: %+v", u)
	}
	f.file(5, 10, trace.OpCreate, "/etc/hosts")
	u := f.exec(10, 10, 9, traceA, "/bin/sh", "-c", "make")
	if u.FirstExec == nil || u.FirstExec.FirstPID != 10 || u.FirstExec.TraceID != traceA {
		t.Fatalf("first exec update = %+v", u)
	}
	f.fork(20, 12, 10)
	f.exec(21, 12, 10, "", "/usr/bin/make")
	f.exec(25, 12, 10, "", "/usr/bin/cc", "-c", "x.c") // re-exec
	f.fork(30, 13, 12)                                 // never execs
	f.exit(40, 13, 0, 9, 4096)                         // killed
	f.exit(50, 12, 2, 0, 8192)
	f.file(55, 10, trace.OpCreate, "/out")
	f.exit(60, 10, 3, 0, 2048)
	u = f.rmdir(70)
	if u.Ended == nil {
		t.Fatal("rmdir did not end the step")
	}
	if len(a.Open()) != 0 {
		t.Fatal("step still open after rmdir")
	}
	s := u.Ended.Seal(SealInput{Diff: goodDiff})
	// A lower layer the tracer could not hash ("") leaves the run bound to
	// nothing: the step says so (redteam12).
	if c := u.Ended.Seal(SealInput{Diff: goodDiff, Lowers: []string{"sha256:aa", ""}}).Completeness; c.Complete || len(c.Reasons) != 1 {
		t.Errorf("sealed with an unhashed lower: %+v, want incomplete with one reason", c)
	}

	if len(s.Processes) != 3 {
		t.Fatalf("got %d processes, want 3 (runc's setup process must be absent): %+v", len(s.Processes), s.Processes)
	}
	sh, mk, child := s.Processes[0], s.Processes[1], s.Processes[2]
	if sh.PID != 10 || !sh.Exec || sh.Binary != "/bin/sh" || sh.ExitCode == nil || *sh.ExitCode != 3 || !sh.Start.Equal(at(10)) {
		t.Errorf("sh = %+v", sh)
	}
	if mk.PPID != 10 || mk.Binary != "/usr/bin/cc" || len(mk.Execs) != 1 || mk.Execs[0].Binary != "/usr/bin/make" || !mk.Execs[0].Time.Equal(at(21)) {
		t.Errorf("re-exec'd process = %+v", mk)
	}
	if *mk.ExitCode != 2 {
		t.Errorf("make exit code = %d, want 2", *mk.ExitCode)
	}
	if child.Exec || child.Binary != "/usr/bin/cc" || child.PPID != 12 || child.Signal != 9 || child.ExitCode != nil {
		t.Errorf("forked child = %+v", child)
	}
	r := s.Resources
	if r.Processes != 3 || r.WallNanos != int64(50*time.Millisecond) || r.PeakRSSBytes != 8192 || r.CPUUserNanos != 30 || r.ReadBytes != 300 {
		t.Errorf("resources = %+v", r)
	}
	if len(s.Files) != 1 || s.Files[0].Path != "/out" || s.Files[0].PID != 10 {
		t.Errorf("files = %+v (the pre-exec mkdir must be absent)", s.Files)
	}
	if !s.Completeness.Complete || len(s.Completeness.Reasons) != 0 {
		t.Errorf("completeness = %+v, want complete", s.Completeness)
	}
	if s.StepID != step || s.ContainerID != "c1" || !s.Start.Equal(at(0)) || !s.End.Equal(at(70)) {
		t.Errorf("step identity/times = %s %s %v %v", s.StepID, s.ContainerID, s.Start, s.End)
	}
}

func TestTraceIDSeparation(t *testing.T) {
	a := New(Options{})
	step := steptag.NewID([]byte("same"))
	f1 := newFeed(a, 1, step, "c1")
	f2 := newFeed(a, 2, step, "c2")
	f1.mkdir(0)
	f2.mkdir(0)
	f1.exec(1, 10, 1, traceA, "/bin/true")
	f2.exec(1, 20, 1, traceB, "/bin/false")
	f1.exit(2, 10, 0, 0, 0)
	f2.exit(2, 20, 1, 0, 0)
	e1, e2 := f1.rmdir(3).Ended, f2.rmdir(3).Ended
	if e1.Key() == e2.Key() {
		t.Fatalf("two builds share a key: %+v", e1.Key())
	}
	if e1.Key().TraceID != traceA || e2.Key().TraceID != traceB || e1.Key().StepID != e2.Key().StepID {
		t.Fatalf("keys = %+v %+v", e1.Key(), e2.Key())
	}
	s1 := e1.Seal(SealInput{Diff: goodDiff})
	if len(s1.Processes) != 1 || s1.Processes[0].Binary != "/bin/true" {
		t.Errorf("build A's step holds %+v", s1.Processes)
	}
}

func TestIgnoresForeignCgroups(t *testing.T) {
	a := New(Options{})
	step := steptag.NewID([]byte("s"))
	for _, p := range []string{"/buildtrace/" + step, "/buildtrace/" + step + "/buildkit", "/system.slice/x"} {
		if u := a.Handle(probe.Event{Kind: probe.KindCgroupMkdir, CgroupID: 5, Cgroup: &probe.CgroupInfo{Path: p}}); u.Opened != nil {
			t.Errorf("opened a step for %s", p)
		}
	}
	// Events of an untracked cgroup are dropped.
	a.Handle(probe.Event{Kind: probe.KindExec, CgroupID: 6, PID: 1, Exec: &probe.ExecInfo{Binary: "/x"}})
	if len(a.Open()) != 0 {
		t.Fatal("untracked cgroup produced a step")
	}
}

func dnsPayload(t *testing.T, id uint16, response bool, name string, answers ...dnsmessage.Resource) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, Response: response})
	b.EnableCompression()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(b.StartQuestions())
	must(b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}))
	must(b.StartAnswers())
	for _, r := range answers {
		switch body := r.Body.(type) {
		case *dnsmessage.CNAMEResource:
			must(b.CNAMEResource(r.Header, *body))
		case *dnsmessage.AResource:
			must(b.AResource(r.Header, *body))
		}
	}
	msg, err := b.Finish()
	must(err)
	return msg
}

func TestDNSHostnameOnDestination(t *testing.T) {
	a := New(Options{})
	f := newFeed(a, 7, steptag.NewID([]byte("net")), "c")
	f.mkdir(0)
	f.exec(1, 10, 1, traceA, "/usr/bin/wget", "http://example.test/")
	server := netip.MustParseAddrPort("127.0.0.53:53")
	hdr := func(name string, typ dnsmessage.Type) dnsmessage.ResourceHeader {
		return dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET, TTL: 60}
	}
	f.send(probe.Event{Kind: probe.KindDNS, Time: at(2), PID: 10, DNS: &probe.DNSInfo{Outgoing: true, Peer: server, Payload: dnsPayload(t, 42, false, "example.test.")}})
	answer := dnsPayload(t, 42, true, "example.test.",
		dnsmessage.Resource{Header: hdr("example.test.", dnsmessage.TypeCNAME), Body: &dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName("cdn.example.test.")}},
		dnsmessage.Resource{Header: hdr("cdn.example.test.", dnsmessage.TypeA), Body: &dnsmessage.AResource{A: [4]byte{127, 0, 0, 9}}},
	)
	f.send(probe.Event{Kind: probe.KindDNS, Time: at(3), PID: 10, DNS: &probe.DNSInfo{Peer: server, Payload: answer}})
	dst := netip.MustParseAddrPort("127.0.0.9:80")
	for i := range 3 {
		f.send(probe.Event{Kind: probe.KindNet, Time: at(4 + i), PID: 10, Net: &probe.NetInfo{Op: "connect", Protocol: "tcp", Addr: dst}})
	}
	f.send(probe.Event{Kind: probe.KindNet, Time: at(8), PID: 11, Net: &probe.NetInfo{Op: "sendto", Protocol: "tcp", Addr: dst}})
	f.exit(9, 10, 0, 0, 0)
	s := f.rmdir(10).Ended.Seal(SealInput{Diff: goodDiff, Traffic: []probe.Traffic{
		{Protocol: "tcp", Addr: dst, BytesSent: 100, BytesReceived: 2000},
		{Protocol: "udp", Addr: netip.MustParseAddrPort("127.0.0.7:9"), BytesSent: 5},
	}})
	if len(s.DNS) != 1 {
		t.Fatalf("dns = %+v", s.DNS)
	}
	q := s.DNS[0]
	if q.Name != "example.test" || q.Type != "A" || q.Server != "127.0.0.53:53" || q.PID != 10 || len(q.Answers) != 2 || q.Answers[1] != "127.0.0.9" {
		t.Errorf("dns query = %+v", q)
	}
	if len(s.Network) != 2 {
		t.Fatalf("network = %+v", s.Network)
	}
	d := s.Network[0]
	if d.Hostname != "example.test" || d.IP != "127.0.0.9" || d.Port != 80 || d.Op != "connect" || d.Count != 4 ||
		len(d.PIDs) != 2 || d.BytesSent != 100 || d.BytesReceived != 2000 || !d.First.Equal(at(4)) {
		t.Errorf("destination = %+v", d)
	}
	if o := s.Network[1]; o.Op != OpTrafficOnly || o.BytesSent != 5 || o.Hostname != "" {
		t.Errorf("traffic-only destination = %+v", o)
	}
}

// A step that sent on a raw or ICMP socket, opened an AF_PACKET socket,
// used io_uring, left its cgroup or sent UDP from port 53 can write its resolver's answer to its own question
// (redteam5): its matching answers prove nothing, so no destination gets a
// confirmed name from them.
func TestDNSUnconfirmedWhenStepCanForge(t *testing.T) {
	for _, proto := range []string{"raw", "icmp", "tcp", "af_packet", "io_uring", "cgroup_escape", "dns_source"} {
		t.Run(proto, func(t *testing.T) {
			var stats probe.CgroupStats
			sent := proto
			switch proto {
			case "af_packet":
				stats.AFPacket, sent = 1, "tcp"
			case "io_uring":
				stats.IOUring, sent = 1, "tcp"
			case "cgroup_escape":
				stats.Escaped, sent = 1, "tcp"
			case "dns_source":
				// UDP from local port 53: IP_PKTINFO gives it the
				// resolver's source address (redteam9).
				stats.DNSSource, sent = 1, "udp"
			}
			a := New(Options{})
			f := newFeed(a, 7, steptag.NewID([]byte("forge")), "c")
			f.mkdir(0)
			f.exec(1, 10, 1, traceA, "/x")
			server := netip.MustParseAddrPort("127.0.0.153:53")
			hdr := dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("deb.debian.org."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60}
			f.send(probe.Event{Kind: probe.KindDNS, Time: at(2), PID: 10, DNS: &probe.DNSInfo{Outgoing: true, Peer: server, Payload: dnsPayload(t, 7, false, "deb.debian.org.")}})
			f.send(probe.Event{Kind: probe.KindNet, Time: at(3), PID: 10, Net: &probe.NetInfo{Op: "sendto", Protocol: sent, Addr: netip.MustParseAddrPort("127.0.0.1:0")}})
			f.send(probe.Event{Kind: probe.KindDNS, Time: at(4), PID: 10, DNS: &probe.DNSInfo{Peer: server, Payload: dnsPayload(t, 7, true, "deb.debian.org.",
				dnsmessage.Resource{Header: hdr, Body: &dnsmessage.AResource{A: [4]byte{127, 0, 0, 1}}})}})
			dst := netip.MustParseAddrPort("127.0.0.1:5000")
			f.send(probe.Event{Kind: probe.KindNet, Time: at(5), PID: 10, Net: &probe.NetInfo{Op: "connect", Protocol: "tcp", Addr: dst}})
			f.exit(6, 10, 0, 0, 0)
			ended := f.rmdir(7).Ended
			s := ended.Seal(SealInput{Diff: goodDiff, Stats: stats})
			forger := proto != "tcp"
			for _, d := range s.Network {
				if d.Hostname != "" && forger {
					t.Errorf("destination %s:%d of a step with a %s socket has the confirmed name %q", d.IP, d.Port, proto, d.Hostname)
				}
				if d.Port == 5000 && forger && d.HostnameUnconfirmed != "deb.debian.org" {
					t.Errorf("destination %+v: want the name shown as unconfirmed", d)
				}
				if d.Port == 5000 && !forger && d.Hostname != "deb.debian.org" {
					t.Errorf("plain step: destination %+v lost its confirmed name", d)
				}
			}
			if len(s.DNS) != 1 {
				t.Fatalf("dns = %+v", s.DNS)
			}
			if q := s.DNS[0]; forger != (q.Unconfirmed && len(q.Answers) == 0 && len(q.UnconfirmedAnswers) == 1) {
				t.Errorf("dns query = %+v (forger %v)", q, forger)
			}
			// Seal does not change the Step: what it keeps still says what was answered.
			if kept := ended.dns.queries[0]; len(kept.Answers) != 1 || kept.Unconfirmed {
				t.Errorf("the step's own record changed: %+v", kept)
			}
		})
	}
}

func TestCapsAndCompleteness(t *testing.T) {
	a := New(Options{MaxFileOps: 3, MaxReads: 2})
	f := newFeed(a, 9, steptag.NewID([]byte("caps")), "c")
	f.mkdir(0)
	f.exec(1, 10, 1, traceA, "/bin/sh")
	for i := range 5 {
		f.file(2, 10, trace.OpWrite, "/w"+string(rune('a'+i)))
	}
	for _, p := range []string{"/r3", "/r1", "/r1", "/r2", "/r4"} {
		f.file(3, 10, "read", p)
	}
	s := f.rmdir(4).Ended.Seal(SealInput{
		Stats: probe.CgroupStats{Emitted: 20, Dropped: 2, Truncated: 1, IOUring: 4},
		Diff:  trace.Diff{Error: "no overlay mount found"},
	})
	if len(s.Files) != 3 {
		t.Errorf("files = %d, want cap 3", len(s.Files))
	}
	if got := strings.Join(s.Reads.Paths, ","); got != "/r1,/r3" || s.Reads.Distinct != 4 || !s.Reads.Truncated {
		t.Errorf("reads = %+v", s.Reads)
	}
	c := s.Completeness
	if c.Complete || c.EventsDropped != 2 || c.EventsTruncated != 1 || c.Unobserved["io_uring"] != 4 || c.EventsEmitted != 20 {
		t.Errorf("completeness = %+v", c)
	}
	reasons := strings.Join(c.Reasons, "\n")
	for _, want := range []string{"2 events were dropped", "1 events had a path", "4 io_uring", "cap of 3: 2 not recorded", "read paths over the cap of 2", "no file-system diff: no overlay mount found"} {
		if !strings.Contains(reasons, want) {
			t.Errorf("reasons lack %q:\n%s", want, reasons)
		}
	}
}

func TestTrackedLateIsIncomplete(t *testing.T) {
	a := New(Options{})
	step := steptag.NewID([]byte("late"))
	path := "/" + steptag.CgroupParent(step) + "/buildkit/c"
	s, ok := a.Track(3, path, "", t0)
	if !ok || s.FollowedFromStart {
		t.Fatalf("Track = %+v, %v", s, ok)
	}
	// An exec after the scan supplies the trace ID; a file op is recorded
	// at once because the scan cannot tell whether runc is done.
	f := &feed{a: a, cg: 3, path: path}
	if u := f.mkdir(0); u.Opened != nil {
		t.Error("a replayed mkdir reopened a tracked step as followed from the start")
	}
	f.file(1, 10, trace.OpCreate, "/a")
	f.exec(2, 11, 10, traceB, "/bin/ls")
	e := f.rmdir(3).Ended
	if e.TraceID != traceB {
		t.Errorf("trace ID = %q", e.TraceID)
	}
	sealed := e.Seal(SealInput{Diff: goodDiff})
	if sealed.Completeness.Complete || len(sealed.Files) != 1 || !strings.Contains(sealed.Completeness.Reasons[0], "after it had started") {
		t.Errorf("late step = %+v", sealed)
	}
}

// TestFirstExecStartsTheStep: the step starts at the first exec in its
// cgroup whatever that exec's environment or argv; only runc's re-exec of
// itself from the host's mount namespace, before anything else, is setup.
func TestFirstExecStartsTheStep(t *testing.T) {
	for _, c := range []struct {
		name  string
		host  bool
		argv  []string
		first bool // the exec starts the step
	}{
		{"runc's re-exec", true, []string{"runc", "init"}, false},
		{"a container binary named runc", false, []string{"runc", "init"}, true},
		{"another host exec", true, []string{"/bin/sh", "-c", "x"}, true},
		{"the step's shell", false, []string{"/bin/sh", "-c", "wget x"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := New(Options{})
			f := newFeed(a, 1, steptag.NewID([]byte(c.name)), "c")
			f.mkdir(0)
			f.attribute(traceA)
			u := f.execNS(1, 10, 9, c.host, c.argv...)
			if (u.FirstExec != nil) != c.first {
				t.Fatalf("first exec update %+v, want started=%v", u, c.first)
			}
			// A second "runc init" is never skipped.
			f.execNS(2, 10, 9, true, "runc", "init")
			f.file(3, 10, trace.OpCreate, "/x")
			s := f.rmdir(4).Ended.Seal(SealInput{Diff: goodDiff})
			if len(s.Files) != 1 || s.Attribution != trace.AttributionBundle {
				t.Errorf("files %+v attribution %q", s.Files, s.Attribution)
			}
		})
	}
}

// TestUnattributedIsSealed: a step whose bundle named no build is still
// sealed, flagged and incomplete with the reason.
func TestUnattributedIsSealed(t *testing.T) {
	a := New(Options{})
	f := newFeed(a, 1, steptag.NewID([]byte("unattributed")), "c")
	f.mkdir(0)
	for _, s := range a.Open() {
		a.Attribute(s, "", "the OCI bundle's process.env has no TRACEPARENT")
	}
	f.exec(1, 10, 9, "", "/bin/sh")
	e := f.rmdir(2).Ended
	s := e.Seal(SealInput{Diff: goodDiff})
	if e.TraceID != "" || s.Attribution != trace.AttributionNone || s.Completeness.Complete ||
		!strings.Contains(strings.Join(s.Completeness.Reasons, "\n"), "has no TRACEPARENT") || len(s.Processes) != 1 {
		t.Errorf("unattributed step %+v", s)
	}
}

// TestKernelLossesMakeIncomplete: what the kernel could not follow or
// count (AF_PACKET sockets, a full traffic or per-cgroup map, a full
// tracked map, a lost creation record) is named in the step's reasons;
// failed connects are attempts on their destination.
func TestKernelLossesMakeIncomplete(t *testing.T) {
	a := New(Options{})
	step := steptag.NewID([]byte("losses"))
	f := newFeed(a, 1, step, "c")
	f.send(probe.Event{Kind: probe.KindCgroupMkdir, Time: at(0), Cgroup: &probe.CgroupInfo{Path: f.path, Untracked: true}})
	f.exec(1, 10, 9, traceA, "/bin/sh")
	dst := netip.MustParseAddrPort("127.0.0.1:1")
	f.send(probe.Event{Kind: probe.KindNet, Time: at(2), PID: 10, Net: &probe.NetInfo{Op: "connect", Protocol: "tcp", Addr: dst, Errno: 111}})
	f.send(probe.Event{Kind: probe.KindNet, Time: at(3), PID: 10, Net: &probe.NetInfo{Op: "connect", Protocol: "tcp", Addr: dst}})
	s := f.rmdir(4).Ended.Seal(SealInput{Diff: goodDiff, Stats: probe.CgroupStats{AFPacket: 2, TrafficFull: 5, MapFull: 1}})
	c := s.Completeness
	if c.Complete || c.Unobserved["af_packet"] != 2 || c.Unobserved["traffic_map_full"] != 5 {
		t.Errorf("completeness %+v", c)
	}
	reasons := strings.Join(c.Reasons, "\n")
	for _, want := range []string{"2 AF_PACKET sockets", "traffic map was full: 5 packets", "1 inserts into a per-container kernel map", "tracked cgroups was full"} {
		if !strings.Contains(reasons, want) {
			t.Errorf("reasons lack %q:\n%s", want, reasons)
		}
	}
	if len(s.Network) != 1 || s.Network[0].Count != 2 || s.Network[0].Failed != 1 || s.Network[0].Error != "ECONNREFUSED" || s.Network[0].Op != "connect" {
		t.Errorf("network %+v", s.Network)
	}

	// A removal without its creation record: sealed as lost.
	lost, ok := a.Lost(2, "/"+steptag.CgroupParent(step)+"/buildkit/gone", at(9))
	if !ok {
		t.Fatal("Lost refused a container cgroup")
	}
	ls := lost.Seal(SealInput{Diff: goodDiff})
	if ls.Completeness.Complete || !strings.Contains(strings.Join(ls.Completeness.Reasons, "\n"), "creation record was lost") || ls.ContainerID != "gone" {
		t.Errorf("lost step %+v", ls)
	}
}

// TestForeignSocketMakesIncomplete: a foreign-socket record (bytes moved
// through a socket made in another cgroup, whose packets are charged
// there) puts its peer in the step's destinations, marked foreignSocket,
// so egress policy sees it, and makes the step incomplete, its DNS answers
// unconfirmed; one without a peer (an unconnected socket, AF_PACKET) only
// makes it incomplete (redteam9, TestRedTeam9PassedSocket).
func TestForeignSocketMakesIncomplete(t *testing.T) {
	a := New(Options{})
	f := newFeed(a, 1, steptag.NewID([]byte("foreign")), "c")
	f.mkdir(0)
	f.exec(1, 10, 9, traceA, "/x")
	dst := netip.MustParseAddrPort("127.0.0.164:8082")
	own := netip.MustParseAddrPort("127.0.0.1:5000")
	f.send(probe.Event{Kind: probe.KindNet, Time: at(2), PID: 10, Net: &probe.NetInfo{Op: "connect", Protocol: "tcp", Addr: own}})
	f.send(probe.Event{Kind: probe.KindNet, Time: at(3), PID: 10, Net: &probe.NetInfo{Op: "foreign", Protocol: "tcp", Addr: dst, Foreign: true, SocketCgroupID: 77}})
	f.send(probe.Event{Kind: probe.KindNet, Time: at(4), PID: 11, Net: &probe.NetInfo{Op: "foreign", Protocol: "packet", Foreign: true, SocketCgroupID: 77}})
	s := f.rmdir(5).Ended.Seal(SealInput{Diff: goodDiff})
	c := s.Completeness
	if c.Complete || c.Unobserved["foreign_socket"] != 2 || !strings.Contains(strings.Join(c.Reasons, "\n"), "sockets made outside the container (passed to it by another process, or inherited) were used (records: 2)") {
		t.Errorf("completeness %+v", c)
	}
	if len(s.Network) != 2 {
		t.Fatalf("network %+v, want the step's own destination and the foreign socket's peer", s.Network)
	}
	for _, d := range s.Network {
		foreign := d.IP == "127.0.0.164" && d.Port == 8082 && d.Protocol == "tcp" && d.Op == "foreign"
		if d.ForeignSocket != foreign || !foreign && d.Op != "connect" {
			t.Errorf("destination %+v", d)
		}
	}

	// Without foreign sockets, the same step is complete.
	f2 := newFeed(a, 2, steptag.NewID([]byte("own")), "d")
	f2.mkdir(0)
	f2.exec(1, 20, 19, traceA, "/x")
	f2.send(probe.Event{Kind: probe.KindNet, Time: at(2), PID: 20, Net: &probe.NetInfo{Op: "connect", Protocol: "tcp", Addr: own}})
	if s := f2.rmdir(5).Ended.Seal(SealInput{Diff: goodDiff}); !s.Completeness.Complete || s.Network[0].ForeignSocket {
		t.Errorf("a step with its own socket only: %+v %+v", s.Completeness, s.Network)
	}
}

// TestPeakRSSResetMakesIncomplete: writing to /proc/<pid>/clear_refs can
// reset a process's peak RSS, which the exit record reports: a step that
// opens one for writing, by whatever path, is incomplete, whatever peak was
// recorded (redteam13).
func TestPeakRSSResetMakesIncomplete(t *testing.T) {
	for _, c := range []struct {
		name, path, target string
		reset              bool
	}{
		{"self", "/proc/7/clear_refs", "/proc/self/clear_refs", true},
		{"through a descriptor", "/proc/7/clear_refs", "/proc/self/fd/3", true},
		{"a thread's", "/proc/7/task/8/clear_refs", "/proc/thread-self/clear_refs", true},
		{"string only", "/tmp/x", "/proc/self/clear_refs", true},
		{"a file of that name elsewhere", "/src/clear_refs", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := New(Options{})
			f := newFeed(a, 1, steptag.NewID([]byte("rss")), "c")
			f.mkdir(0)
			f.exec(1, 10, 9, traceA, "/x")
			f.send(probe.Event{Kind: probe.KindFile, Time: at(2), PID: 10, File: &probe.FileInfo{Op: "write", Path: c.path, Target: c.target}})
			f.send(probe.Event{Kind: probe.KindExit, Time: at(3), PID: 10, Exit: &probe.ExitInfo{MaxRSSBytes: 1 << 20}})
			s := f.rmdir(4).Ended.Seal(SealInput{Diff: goodDiff})
			cp := s.Completeness
			if !c.reset {
				if !cp.Complete {
					t.Errorf("completeness %+v: want complete", cp)
				}
				return
			}
			if cp.Complete || cp.Unobserved["rss_reset"] != 1 || !strings.Contains(strings.Join(cp.Reasons, "\n"), "clear_refs") {
				t.Errorf("completeness %+v: want incomplete, unobserved rss_reset 1 and a reason", cp)
			}
			if s.Resources.PeakRSSBytes != 1<<20 {
				t.Errorf("peak RSS %d, want the kernel's 1 MiB kept", s.Resources.PeakRSSBytes)
			}
		})
	}
}

// TestSetuidExecRecordsEffectiveIDs: a process runs as its effective IDs;
// a setuid-root file run by uid 1000 is recorded as uid 0 with real uid
// 1000, and its forks inherit both (redteam13).
func TestSetuidExecRecordsEffectiveIDs(t *testing.T) {
	a := New(Options{})
	f := newFeed(a, 1, steptag.NewID([]byte("setuid")), "c")
	f.mkdir(0)
	f.exec(1, 10, 9, traceA, "/bin/sh")
	f.send(probe.Event{Kind: probe.KindExec, Time: at(2), PID: 10, PPID: 9,
		Exec: &probe.ExecInfo{Binary: "/usr/bin/su", Argv: []string{"su"}, UID: 1000, GID: 1000, EUID: 0, EGID: 1000}})
	f.send(probe.Event{Kind: probe.KindFork, Time: at(3), PID: 11, PPID: 10})
	s := f.rmdir(4).Ended.Seal(SealInput{Diff: goodDiff})
	for _, p := range s.Processes {
		if p.UID != 0 || p.RealUID == nil || *p.RealUID != 1000 || p.GID != 1000 || p.RealGID != nil {
			t.Errorf("process %d: uid %d real %v gid %d real %v, want uid 0, real uid 1000, gid 1000", p.PID, p.UID, p.RealUID, p.GID, p.RealGID)
		}
	}
}

// TestSetuidWithoutExecRecordsRoot: a process of uid 1000 that makes itself
// root without an exec (setuid(0) with a file capability, or setfsuid(0))
// is recorded as uid 0, and so are its later forks (redteam13).
func TestSetuidWithoutExecRecordsRoot(t *testing.T) {
	for _, c := range []struct {
		name string
		cred probe.CredInfo
		uid  uint32
	}{
		{"setuid", probe.CredInfo{UID: 0, EUID: 0, FSUID: 0, GID: 1000, EGID: 1000}, 0},
		{"seteuid", probe.CredInfo{UID: 1000, EUID: 0, FSUID: 0, GID: 1000, EGID: 1000}, 0},
		{"setfsuid", probe.CredInfo{UID: 1000, EUID: 1000, FSUID: 0, GID: 1000, EGID: 1000}, 0},
		{"to another user", probe.CredInfo{UID: 2000, EUID: 2000, FSUID: 2000, GID: 1000, EGID: 1000}, 1000},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := New(Options{})
			f := newFeed(a, 1, steptag.NewID([]byte("cred")), "c")
			f.mkdir(0)
			f.send(probe.Event{Kind: probe.KindExec, Time: at(1), PID: 10, PPID: 9,
				Exec: &probe.ExecInfo{Binary: "/x", Argv: []string{"/x"}, UID: 1000, GID: 1000, EUID: 1000, EGID: 1000, FirstInCgroup: true}})
			f.attribute(traceA)
			cred := c.cred
			f.send(probe.Event{Kind: probe.KindCred, Time: at(2), PID: 10, Cred: &cred})
			f.send(probe.Event{Kind: probe.KindFork, Time: at(3), PID: 11, PPID: 10})
			s := f.rmdir(4).Ended.Seal(SealInput{Diff: goodDiff})
			if len(s.Processes) != 2 {
				t.Fatalf("processes %+v", s.Processes)
			}
			for _, p := range s.Processes {
				if p.UID != c.uid {
					t.Errorf("process %d: uid %d, want %d", p.PID, p.UID, c.uid)
				}
			}
		})
	}
}

// TestDNSAnswersMustMatchAQuestion: an answer counts only when it matches
// a question the step sent (ID, question, server). Others are recorded as
// unconfirmed and never name a destination.
func TestDNSAnswersMustMatchAQuestion(t *testing.T) {
	server := netip.MustParseAddrPort("127.0.0.53:53")
	other := netip.MustParseAddrPort("127.0.0.54:53")
	a4 := func(name string, ip [4]byte) dnsmessage.Resource {
		return dnsmessage.Resource{Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
			Body: &dnsmessage.AResource{A: ip}}
	}
	for _, c := range []struct {
		name     string
		askID    uint16
		askTo    netip.AddrPort
		askName  string
		ansFrom  netip.AddrPort
		ansID    uint16
		confirms bool
	}{
		{"matching", 7, server, "good.test.", server, 7, true},
		{"no question", 0, netip.AddrPort{}, "", server, 7, false},
		{"another server", 7, server, "good.test.", other, 7, false},
		{"another ID", 7, server, "good.test.", server, 8, false},
		{"another name", 7, server, "other.test.", server, 7, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := New(Options{})
			f := newFeed(a, 7, steptag.NewID([]byte(c.name)), "c")
			f.mkdir(0)
			f.exec(1, 10, 1, traceA, "/bin/sh")
			if c.askTo.IsValid() {
				f.send(probe.Event{Kind: probe.KindDNS, Time: at(2), PID: 10, DNS: &probe.DNSInfo{Outgoing: true, Peer: c.askTo, Payload: dnsPayload(t, c.askID, false, c.askName)}})
			}
			// The step answering a question itself (a server it runs) and a
			// question it receives are neither questions nor answers.
			f.send(probe.Event{Kind: probe.KindDNS, Time: at(2), PID: 11, DNS: &probe.DNSInfo{Outgoing: true, Peer: server, Payload: dnsPayload(t, 9, true, "served.test.", a4("served.test.", [4]byte{127, 0, 0, 8}))}})
			f.send(probe.Event{Kind: probe.KindDNS, Time: at(2), PID: 11, DNS: &probe.DNSInfo{Peer: server, Payload: dnsPayload(t, 9, false, "asked-of-us.test.")}})
			f.send(probe.Event{Kind: probe.KindDNS, Time: at(3), PID: 10, DNS: &probe.DNSInfo{Peer: c.ansFrom, Payload: dnsPayload(t, c.ansID, true, "good.test.", a4("good.test.", [4]byte{127, 0, 0, 9}))}})
			f.send(probe.Event{Kind: probe.KindNet, Time: at(4), PID: 10, Net: &probe.NetInfo{Op: "connect", Protocol: "tcp", Addr: netip.MustParseAddrPort("127.0.0.9:443")}})
			s := f.rmdir(5).Ended.Seal(SealInput{Diff: goodDiff})
			if len(s.Network) != 1 {
				t.Fatalf("network %+v", s.Network)
			}
			d := s.Network[0]
			var good *trace.DNSQuery
			for i, q := range s.DNS {
				if q.Name == "served.test" || q.Name == "asked-of-us.test" {
					t.Errorf("recorded %+v", q)
				}
				if q.Name == "good.test" && (q.Unconfirmed || len(q.Answers) > 0) {
					good = &s.DNS[i]
				}
			}
			if c.confirms {
				if d.Hostname != "good.test" || d.HostnameUnconfirmed != "" || good == nil || good.Unconfirmed || len(good.Answers) != 1 {
					t.Errorf("destination %+v, dns %+v: want a confirmed name", d, s.DNS)
				}
				return
			}
			if d.Hostname != "" || d.HostnameUnconfirmed != "good.test" || good == nil || !good.Unconfirmed || len(good.Answers) != 0 ||
				len(good.UnconfirmedAnswers) != 1 || good.UnconfirmedAnswers[0] != "127.0.0.9" {
				t.Errorf("destination %+v, dns %+v: want the name only as unconfirmed", d, s.DNS)
			}
		})
	}
}

// TestLongArgv: an exec's argv as the probe joined it (any length) is the
// process's; a cut one stays marked through a re-exec (Execs) and a fork,
// and the kernel's truncation count makes the step incomplete with a
// reason naming argv. A step whose long argv was whole is complete.
func TestLongArgv(t *testing.T) {
	long := []string{"/usr/bin/cc"}
	for i := range 8000 {
		long = append(long, "-Ifoo/"+strings.Repeat("x", i%50))
	}
	for _, cut := range []bool{false, true} {
		a := New(Options{})
		f := newFeed(a, 7, steptag.NewID([]byte("argv")), "c")
		f.mkdir(0)
		f.exec(1, 10, 9, traceA, "/bin/sh", "-c", "cc ...")
		f.send(probe.Event{Kind: probe.KindExec, Time: at(2), PID: 10, TID: 10, PPID: 9,
			Exec: &probe.ExecInfo{Binary: long[0], Argv: long, ArgvTruncated: cut, Cwd: "/"}})
		f.fork(3, 11, 10)
		f.exec(4, 10, 9, "", "/usr/bin/ld", "-o", "a.out")
		f.exit(5, 11, 0, 0, 0)
		f.exit(6, 10, 0, 0, 0)
		var st probe.CgroupStats
		if cut {
			st.Truncated = 1
		}
		s := f.rmdir(7).Ended.Seal(SealInput{Diff: goodDiff, Stats: st})
		var sh, child *trace.Process
		for i := range s.Processes {
			switch s.Processes[i].PID {
			case 10:
				sh = &s.Processes[i]
			case 11:
				child = &s.Processes[i]
			}
		}
		if sh == nil || child == nil || len(sh.Execs) != 2 {
			t.Fatalf("cut=%v: processes %+v", cut, s.Processes)
		}
		cc := sh.Execs[1]
		if len(cc.Argv) != len(long) || cc.Argv[8000] != long[8000] || cc.ArgvTruncated != cut {
			t.Errorf("cut=%v: cc exec has %d args, truncated=%v", cut, len(cc.Argv), cc.ArgvTruncated)
		}
		if sh.ArgvTruncated || sh.Argv[0] != "/usr/bin/ld" {
			t.Errorf("cut=%v: the later exec inherited the mark: %+v", cut, sh.Argv)
		}
		if len(child.Argv) != len(long) || child.ArgvTruncated != cut {
			t.Errorf("cut=%v: forked child has %d args, truncated=%v", cut, len(child.Argv), child.ArgvTruncated)
		}
		c := s.Completeness
		if cut != !c.Complete || cut != strings.Contains(strings.Join(c.Reasons, "\n"), "argv") {
			t.Errorf("cut=%v: completeness %+v", cut, c)
		}
	}
}

// TestDNSAnswerBeforeItsQuestion: answers are read from packets (the
// cgroup_skb hook, no PID), which can be recorded before the system call
// that sent the question returns. A question that arrives after its answer
// confirms it; one to another server does not.
func TestDNSAnswerBeforeItsQuestion(t *testing.T) {
	server := netip.MustParseAddrPort("127.0.0.53:53")
	for _, askTo := range []netip.AddrPort{server, netip.MustParseAddrPort("127.0.0.54:53")} {
		t.Run(askTo.String(), func(t *testing.T) {
			a := New(Options{})
			f := newFeed(a, 7, steptag.NewID([]byte("late question "+askTo.String())), "c")
			f.mkdir(0)
			f.exec(1, 10, 1, traceA, "/bin/sh")
			hdr := dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("good.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60}
			f.send(probe.Event{Kind: probe.KindDNS, Time: at(2), DNS: &probe.DNSInfo{Peer: server, Payload: dnsPayload(t, 7, true, "good.test.",
				dnsmessage.Resource{Header: hdr, Body: &dnsmessage.AResource{A: [4]byte{127, 0, 0, 9}}})}})
			f.send(probe.Event{Kind: probe.KindDNS, Time: at(3), PID: 10, DNS: &probe.DNSInfo{Outgoing: true, Peer: askTo, Payload: dnsPayload(t, 7, false, "good.test.")}})
			f.send(probe.Event{Kind: probe.KindNet, Time: at(4), PID: 10, Net: &probe.NetInfo{Op: "connect", Protocol: "tcp", Addr: netip.MustParseAddrPort("127.0.0.9:443")}})
			s := f.rmdir(5).Ended.Seal(SealInput{Diff: goodDiff})
			d := s.Network[0]
			if askTo == server {
				if d.Hostname != "good.test" || len(s.DNS) != 1 || s.DNS[0].Unconfirmed || s.DNS[0].PID != 10 || len(s.DNS[0].Answers) != 1 {
					t.Errorf("destination %+v, dns %+v: want the late question to confirm its answer", d, s.DNS)
				}
				return
			}
			if d.Hostname != "" || d.HostnameUnconfirmed != "good.test" {
				t.Errorf("destination %+v, dns %+v: an answer from a server not asked must stay unconfirmed", d, s.DNS)
			}
		})
	}
}
