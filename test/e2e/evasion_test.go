package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/test/lab"
)

// These tests are steps that try to do something their trace does not
// show (issue 9). Each builds through the lab like tracer_test.go's
// tracedBuild and checks the signed trace.

// evasionBuild is a traced build of a whole Dockerfile body (after FROM the
// lab's base) with extra context files.
func evasionBuild(t *testing.T, l *lab.Lab, body string, files map[string]string) tracedBuild {
	t.Helper()
	if files == nil {
		files = map[string]string{}
	}
	files["Dockerfile"] = fmt.Sprintf("FROM %s\n%s", l.BaseImage, body)
	return tracedBuild{
		traceID: randHex(16),
		stepID:  steptag.NewID([]byte(t.Name() + randHex(8))),
		dir:     lab.WriteContext(t, files),
	}
}

// staticC compiles testdata/evasion/<name>.c with gcc -static (x86_64,
// not position-independent: static data below 4 GiB) and returns the
// binary, for a build context.
func staticC(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	c := filepath.Join("testdata", "evasion", name+".c")
	if out, err := exec.Command("gcc", "-static", "-no-pie", "-O1", "-Wall", "-o", bin, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// cStep builds a step that runs the static C program name with args
// (COPY'd to /usr/local/bin; the RUN is exec form, so the program is the
// step's first process) and returns it.
func cStep(t *testing.T, ctx context.Context, l *lab.Lab, name string, args ...string) *trace.Step {
	t.Helper()
	q := []string{`"/usr/local/bin/` + name + `"`}
	for _, a := range args {
		q = append(q, fmt.Sprintf("%q", a))
	}
	b := evasionBuild(t, l, fmt.Sprintf("COPY --chmod=0755 %s /usr/local/bin/%s\nRUN [%s]\n", name, name, strings.Join(q, ", ")),
		map[string]string{name: staticC(t, name)})
	return runTraced(t, ctx, l, b)
}

// runTraced builds b and returns its one step from the signed trace.
func runTraced(t *testing.T, ctx context.Context, l *lab.Lab, b tracedBuild) *trace.Step {
	t.Helper()
	if res := b.run(ctx, l); res.Err != nil {
		t.Fatalf("%v\n%s", res.Err, res.Output)
	}
	bt := fetchSignedTrace(t, ctx, l, b.traceID)
	if len(bt.Steps) != 1 {
		t.Fatalf("want 1 step in build %s, got %d: %+v", b.traceID, len(bt.Steps), bt.Steps)
	}
	s := &bt.Steps[0]
	if s.StepID != b.stepID {
		t.Fatalf("step %s, want %s", s.StepID, b.stepID)
	}
	return s
}

func destination(s *trace.Step, proto, ip string, port uint16) *trace.Destination {
	for i, d := range s.Network {
		if d.Protocol == proto && d.IP == ip && d.Port == port {
			return &s.Network[i]
		}
	}
	return nil
}

// TestEvasionTraceparentOutOfWindow: ENV lines push BuildKit's TRACEPARENT
// far down the environment, wget runs, then the shell execs /bin/true with
// only TRACEPARENT. The step must start at its first exec and belong to
// the build named in its OCI bundle, with wget and its connect in it.
func TestEvasionTraceparentOutOfWindow(t *testing.T) {
	l := tracerLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var env strings.Builder
	for i := range 70 {
		fmt.Fprintf(&env, "ENV PAD_%02d=%s\n", i, strings.Repeat("x", 40))
	}
	b := evasionBuild(t, l, env.String()+
		`RUN wget -q -O /dev/null http://`+l.Registry+`/v2/; exec env -i TRACEPARENT=$TRACEPARENT /bin/true`+"\n", nil)
	s := runTraced(t, ctx, l, b)
	if s.Attribution != trace.AttributionBundle {
		t.Errorf("attribution %q, want %q", s.Attribution, trace.AttributionBundle)
	}
	wget, ok := findProcess(s, func(p trace.Process) bool { return len(p.Argv) > 0 && p.Argv[0] == "wget" })
	if !ok {
		t.Fatalf("wget is not in the step: %+v", s.Processes)
	}
	d := destination(s, "tcp", "127.0.0.1", 5000)
	if d == nil || !slices.Contains(d.PIDs, wget.PID) || d.Op != "connect" {
		t.Fatalf("wget's connect to the registry is not in the step: %+v", s.Network)
	}
	// The step's first process is the RUN's shell (which later exec'd
	// env and /bin/true in place, so its own argv is in Execs).
	hasWget := func(argv []string) bool {
		return slices.ContainsFunc(argv, func(a string) bool { return strings.Contains(a, "wget -q") })
	}
	if len(s.Processes) == 0 || !slices.ContainsFunc(s.Processes[0].Execs, func(e trace.Exec) bool { return hasWget(e.Argv) }) && !hasWget(s.Processes[0].Argv) {
		t.Errorf("the step's first process is not the RUN's shell: %+v", s.Processes)
	}
}

// requireInt80 skips the test when this kernel does not run i386 system
// calls from 64-bit tasks (no IA32 emulation, or a paravirtualized guest
// that faults on int $0x80: seen on some machines of the lab's kind): there
// the attack cannot be made, in a step or anywhere else.
func requireInt80(t *testing.T) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "int80")
	if err := os.WriteFile(bin, []byte(staticC(t, "int80")), 0o755); err != nil {
		t.Fatal(err)
	}
	err := exec.Command(bin).Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signaled() {
		t.Skipf("SKIP (kernel): this kernel kills a 64-bit task's int $0x80 (%v), so no step can make i386 system calls here; "+
			"the i386 tables are still checked by bpf/syscalls_test.go", err)
	}
	if err != nil {
		t.Fatalf("int $0x80 probe: %v", err)
	}
}

// TestEvasionI386Syscalls: a 64-bit static program makes i386 system calls
// with int $0x80: open(5) creating a file, mkdir, chmod, unlink, socketcall
// connect and sendto, and a pipe(42) whose spare registers look like an
// x86_64 connect(42). All but the pipe are in the trace with the program's
// process; the planted connect is not.
func TestEvasionI386Syscalls(t *testing.T) {
	requireInt80(t)
	l := tracerLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := cStep(t, ctx, l, "i386", "/i386-made", "5000", "9")
	prog, ok := findProcess(s, func(p trace.Process) bool { return p.Exec && strings.HasSuffix(p.Binary, "/i386") })
	if !ok {
		t.Fatalf("no process for the program: %+v", s.Processes)
	}
	if prog.ExitCode == nil || *prog.ExitCode != 0 {
		t.Fatalf("the program failed (exit %v); see the build output", prog.ExitCode)
	}
	if f, ok := findFileOp(s, trace.OpCreate, "/i386-made"); !ok || f.PID != prog.PID {
		t.Errorf("the i386 open creating /i386-made is not in the trace with pid %d: %+v", prog.PID, s.Files)
	}
	for _, w := range []struct{ op, path string }{{trace.OpMkdir, "/i386-dir"}, {trace.OpChmod, "/i386-made"}, {trace.OpUnlink, "/i386-dir/moved"}} {
		if f, ok := findFileOp(s, w.op, w.path); !ok || f.PID != prog.PID {
			t.Errorf("the i386 %s of %s is not in the trace: %+v", w.op, w.path, s.Files)
		}
	}
	if d := destination(s, "tcp", "127.0.0.1", 5000); d == nil || d.Op != "connect" || !slices.Contains(d.PIDs, prog.PID) {
		t.Errorf("the socketcall connect to 127.0.0.1:5000 is not in the trace: %+v", s.Network)
	}
	if d := destination(s, "udp", "127.0.0.1", 9); d == nil || d.Op != "sendto" || !slices.Contains(d.PIDs, prog.PID) {
		t.Errorf("the socketcall sendto to 127.0.0.1:9 is not in the trace: %+v", s.Network)
	}
	for _, d := range s.Network {
		if d.IP == "10.9.9.9" {
			t.Errorf("an i386 pipe was decoded as an x86_64 connect: %+v", d)
		}
	}
	if !s.Completeness.Complete {
		t.Errorf("step incomplete: %+v", s.Completeness)
	}
}

// closedPort returns a loopback TCP port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// TestEvasionFailedConnect: a connect refused by a closed loopback port is
// an attempt the trace records, with its process and error. (busybox nc:
// the static busybox's wget crashes with -T.)
func TestEvasionFailedConnect(t *testing.T) {
	l := tracerLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	port := closedPort(t)
	b := newTracedBuild(t, l, fmt.Sprintf("nc 127.0.0.1 %d < /dev/null || echo refused > /refused", port))
	s := runTraced(t, ctx, l, b)
	if _, ok := findFileOp(s, trace.OpCreate, "/refused"); !ok {
		t.Fatalf("nc did not fail: %+v", s.Files)
	}
	nc, ok := findProcess(s, func(p trace.Process) bool { return len(p.Argv) > 0 && p.Argv[0] == "nc" })
	if !ok {
		t.Fatalf("no nc process: %+v", s.Processes)
	}
	d := destination(s, "tcp", "127.0.0.1", uint16(port))
	if d == nil {
		t.Fatalf("the refused connect to 127.0.0.1:%d is not in the trace: %+v", port, s.Network)
	}
	if d.Op != "connect" || d.Failed < 1 || d.Error != "ECONNREFUSED" || !slices.Contains(d.PIDs, nc.PID) {
		t.Errorf("destination %+v: want a failed connect (ECONNREFUSED) by nc (pid %d)", d, nc.PID)
	}
}

// TestEvasionMisreportedOps: O_RDONLY|O_TRUNC is a truncate, a
// RENAME_EXCHANGE an exchange, raw sockets are named icmp and raw, and
// mknod and xattr changes are recorded.
func TestEvasionMisreportedOps(t *testing.T) {
	l := tracerLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := cStep(t, ctx, l, "misreport")
	if f, ok := findFileOp(s, trace.OpTruncate, "/trunc-me"); !ok {
		t.Errorf("open(O_RDONLY|O_TRUNC) of /trunc-me is not a truncate: %+v (reads %v)", s.Files, s.Reads.Paths)
	} else if slices.Contains(s.Reads.Paths, "/trunc-me") {
		t.Errorf("/trunc-me is listed as read too (%v): %+v", s.Reads.Paths, f)
	}
	if f, ok := findFileOp(s, trace.OpExchange, "/swap-a"); !ok || f.Target != "/swap-b" {
		t.Errorf("the RENAME_EXCHANGE of /swap-a and /swap-b is not an exchange: %+v", s.Files)
	}
	if _, ok := findFileOp(s, trace.OpRename, "/swap-a"); ok {
		t.Error("the exchange is also reported as a rename")
	}
	if f, ok := findFileOp(s, trace.OpMknod, "/fifo"); !ok || f.Mode == nil || *f.Mode != 0o600 {
		t.Errorf("mknod of /fifo not recorded: %+v", s.Files)
	}
	for _, op := range []string{trace.OpSetxattr, trace.OpRemovexattr} {
		// /swap-a is the name the xattr calls used after the exchange.
		if f, ok := findFileOp(s, op, "/swap-a"); !ok || f.Target != "user.evasion" {
			t.Errorf("%s of user.evasion on /swap-a not recorded: %+v", op, s.Files)
		}
	}
	if d := destination(s, "icmp", "127.0.0.1", 0); d == nil || d.Op != "sendto" {
		t.Errorf("no icmp destination 127.0.0.1 from the raw ICMP socket: %+v", s.Network)
	}
	if d := destination(s, "raw", "127.0.0.2", 0); d == nil || d.Op != "sendto" {
		t.Errorf("no raw destination 127.0.0.2 from the IPPROTO_RAW socket: %+v", s.Network)
	}
	for _, d := range s.Network {
		if strings.HasPrefix(d.Protocol, "proto") {
			t.Errorf("destination with a numbered protocol: %+v", d)
		}
	}
}

// TestEvasionMemfdExec: a program re-executes itself from a memfd. The
// exec is recorded as the memfd, marked as having no path, and what the
// copy does is the process's.
func TestEvasionMemfdExec(t *testing.T) {
	l := tracerLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := cStep(t, ctx, l, "memfd")
	p, ok := findProcess(s, func(p trace.Process) bool { return len(p.Argv) == 2 && p.Argv[0] == "payload" && p.Argv[1] == "child" })
	if !ok {
		t.Fatalf("no exec of the memfd copy: %+v", s.Processes)
	}
	if !strings.HasPrefix(p.Binary, "memfd:payload") || !p.BinaryAnonymous {
		t.Errorf("memfd exec recorded as binary %q (anonymous %v), want memfd:payload marked anonymous", p.Binary, p.BinaryAnonymous)
	}
	if len(p.Execs) != 1 || !strings.HasSuffix(p.Execs[0].Binary, "/memfd") || p.Execs[0].BinaryAnonymous {
		t.Errorf("the earlier image should be the program on disk: %+v", p.Execs)
	}
	if f, ok := findFileOp(s, trace.OpCreate, "/from-memfd"); !ok || f.PID != p.PID {
		t.Errorf("the memfd copy's write is not its own: %+v", s.Files)
	}
}

// TestEvasionAFPacket: an AF_PACKET socket sends a frame on lo. The frame
// is seen by nothing, so the socket's creation makes the step incomplete.
func TestEvasionAFPacket(t *testing.T) {
	l := tracerLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := cStep(t, ctx, l, "afpacket")
	prog, ok := findProcess(s, func(p trace.Process) bool { return strings.HasSuffix(p.Binary, "/afpacket") })
	if !ok || prog.ExitCode == nil || *prog.ExitCode != 0 {
		t.Fatalf("the program did not run or failed: %+v", s.Processes)
	}
	c := s.Completeness
	if c.Complete || c.Unobserved["af_packet"] != 1 || !strings.Contains(strings.Join(c.Reasons, "\n"), "AF_PACKET") {
		t.Errorf("completeness %+v: want incomplete, unobserved af_packet 1 and a reason", c)
	}
}

// TestEvasionUnsolicitedDNSAnswer: the step sends itself a DNS answer from
// port 53 ("allowed.test" is 127.0.0.9) without asking, then connects to
// 127.0.0.9. The name is recorded as unconfirmed and is not the
// destination's hostname.
func TestEvasionUnsolicitedDNSAnswer(t *testing.T) {
	l := tracerLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	port := closedPort(t)
	s := cStep(t, ctx, l, "dnsforge", fmt.Sprint(port))
	d := destination(s, "tcp", "127.0.0.9", uint16(port))
	if d == nil {
		t.Fatalf("no destination 127.0.0.9:%d: %+v", port, s.Network)
	}
	if d.Hostname != "" || d.HostnameUnconfirmed != "allowed.test" {
		t.Errorf("destination %+v: the planted name must be only unconfirmed", d)
	}
	var seen bool
	for _, q := range s.DNS {
		if q.Name == "allowed.test" {
			seen = true
			if !q.Unconfirmed || len(q.Answers) != 0 || !slices.Contains(q.UnconfirmedAnswers, "127.0.0.9") {
				t.Errorf("planted answer recorded as %+v", q)
			}
		}
	}
	if !seen {
		t.Errorf("the planted answer is not in the trace: %+v", s.DNS)
	}
}
