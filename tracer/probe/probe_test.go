//go:build linux

package probe

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/buildtrace/buildtrace/pkg/steptag"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"github.com/buildtrace/buildtrace/bpf"
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root: loads eBPF programs and creates cgroups")
		}
		t.Skip("SKIP (needs root: loads eBPF programs and creates cgroups)")
	}
}

const busybox = "/bin/busybox"

func randHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// mkCgroup creates <root>/buildtrace/<step>/buildkit/<id> and removes it (and
// the parents it made) at the end of the test.
func mkCgroup(t testing.TB, step, id string) string {
	t.Helper()
	base := filepath.Join(DefaultCgroupRoot, trackedPrefix)
	dirs := []string{base, filepath.Join(base, step), filepath.Join(base, step, "buildkit"), filepath.Join(base, step, "buildkit", id)}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for i := len(dirs) - 1; i > 0; i-- { // leave the shared buildtrace dir
			os.Remove(dirs[i])
		}
	})
	return dirs[3]
}

func inode(t testing.TB, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// selfMover returns this process's cgroup2 directory and a function that
// moves the process (all its threads) into a cgroup directory.
func selfMover(t testing.TB) (home string, move func(to string)) {
	t.Helper()
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(self), "\n") {
		if rest, ok := strings.CutPrefix(l, "0::"); ok {
			home = filepath.Join(DefaultCgroupRoot, rest)
		}
	}
	if home == "" {
		t.Fatal("no cgroup2 line in /proc/self/cgroup")
	}
	return home, func(to string) {
		if err := os.WriteFile(filepath.Join(to, "cgroup.procs"), []byte(fmt.Sprint(os.Getpid())), 0o644); err != nil {
			t.Fatalf("moving into %s: %v", to, err)
		}
	}
}

// inCgroup runs script with busybox sh inside cgroup dir cg.
func inCgroup(cg, dir string, env []string, script string) *exec.Cmd {
	cmd := exec.Command(busybox, "sh", "-c", `echo $$ > "$0"/cgroup.procs && exec /bin/busybox sh -c "$1"`, cg, script)
	cmd.Dir = dir
	cmd.Env = env
	return cmd
}

type collector struct {
	mu     sync.Mutex
	events []Event
}

func (c *collector) add(ev Event) {
	c.mu.Lock()
	c.events = append(c.events, ev)
	c.mu.Unlock()
}

func (c *collector) all() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.events...)
}

func startProbe(t *testing.T) (*Probe, *collector) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p, err := Load(ctx, Options{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	c := &collector{}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, c.add) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p, c
}

func syncProbe(t testing.TB, p *Probe) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

// dnsServer answers A queries on 127.0.0.1:53/udp with one A record per
// address in addrs.
func dnsServer(t *testing.T, addrs ...[4]byte) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:53")
	if err != nil {
		t.Fatalf("DNS responder: %v", err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var m dnsmessage.Message
			if err := m.Unpack(buf[:n]); err != nil || len(m.Questions) == 0 {
				continue
			}
			m.Header.Response, m.Header.Authoritative = true, true
			q := m.Questions[0]
			if q.Type == dnsmessage.TypeA {
				for _, a := range addrs {
					m.Answers = append(m.Answers, dnsmessage.Resource{
						Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
						Body:   &dnsmessage.AResource{A: a},
					})
				}
			}
			out, err := m.Pack()
			if err != nil {
				continue
			}
			pc.WriteTo(out, from)
		}
	}()
}

// tcpServer reads one line and answers "bye".
func tcpServer(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 64)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Read(buf)
			io.WriteString(c, "bye\n")
			c.Close()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

func TestProbe(t *testing.T) {
	requireRoot(t)
	if err := Check(""); err != nil {
		t.Fatalf("Check: %v", err)
	}
	step := randHex(t, 16)
	pre := mkCgroup(t, step, "pre")
	preID := inode(t, pre)

	start := time.Now()
	p, c := startProbe(t)
	t.Logf("Load took %v", time.Since(start))
	dnsServer(t, [4]byte{127, 0, 0, 2})
	srv := tcpServer(t)
	// A loopback port nothing listens on: connect is refused.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	cg := mkCgroup(t, step, "run")
	cgID := inode(t, cg)
	// The same path in a cgroup v1 hierarchy must not be tracked.
	v1 := filepath.Join("/sys/fs/cgroup/pids", trackedPrefix, step+"-v1")
	if err := os.MkdirAll(v1, 0o755); err != nil {
		t.Fatalf("v1 cgroup: %v", err)
	}
	t.Cleanup(func() { os.Remove(v1); os.Remove(filepath.Dir(v1)) })

	dir := t.TempDir()
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	secret := "s3cr3t-" + randHex(t, 12)
	env := []string{
		"PATH=/bin:/usr/bin",
		"SECRET_TOKEN=" + secret,
		"TRACEPARENT=00-" + traceID + "-b7ad6b7169203331-01",
		"OTHER_SECRET=" + secret,
	}
	script := fmt.Sprintf(`
echo hi > created.txt
mkdir sub
chmod 600 created.txt
mv created.txt sub/moved.txt
cd sub
echo rel > rel.txt
ln -s target-as-given link
rm rel.txt
cd ..
echo abs > %[1]s/abs.txt
read line < /etc/hostname
/bin/busybox true one two
/bin/busybox cat /etc/hostname > /dev/null
(exit 3)
/bin/busybox sh -c 'kill -9 $$'
echo hello | /bin/busybox nc 127.0.0.1 %[2]d
/bin/busybox nslookup buildtrace.test 127.0.0.1
/bin/busybox nc 127.0.0.1 %[3]d < /dev/null || true
exit 0
`, dir, srv.Port(), closed)
	cmd := inCgroup(cg, dir, env, script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tracked script: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "127.0.0.2") {
		t.Errorf("nslookup did not resolve through the test responder:\n%s", out)
	}
	shellPID := uint32(cmd.Process.Pid)
	t.Logf("tracked script took %v", time.Since(start))

	// A process in the cgroup tracked by the start-up scan.
	if out, err := inCgroup(pre, dir, env, "/bin/busybox true pre").CombinedOutput(); err != nil {
		t.Fatalf("pre cgroup: %v\n%s", err, out)
	}

	// An untracked process must not show up at all.
	untracked := exec.Command(busybox, "sh", "-c", "echo x > untracked.txt; /bin/busybox true untracked")
	untracked.Dir = dir
	untracked.Env = env
	if out, err := untracked.CombinedOutput(); err != nil {
		t.Fatalf("untracked: %v\n%s", err, out)
	}
	syncProbe(t, p)
	if err := os.Remove(cg); err != nil {
		t.Fatal(err)
	}
	syncProbe(t, p)
	evs := c.all()

	find := func(what string, match func(Event) bool) Event {
		t.Helper()
		for _, ev := range evs {
			if match(ev) {
				return ev
			}
		}
		t.Errorf("no event: %s", what)
		return Event{}
	}

	// Cgroups: scanned one, created one (ID is the directory's inode), removed one.
	find("scanned cgroup", func(ev Event) bool {
		return ev.Kind == KindCgroupMkdir && ev.CgroupID == preID && ev.Cgroup.Path == "/buildtrace/"+step+"/buildkit/pre"
	})
	find("cgroup mkdir", func(ev Event) bool {
		return ev.Kind == KindCgroupMkdir && ev.CgroupID == cgID && ev.Cgroup.Path == "/buildtrace/"+step+"/buildkit/run"
	})
	for _, ev := range evs {
		if ev.Kind == KindCgroupMkdir && strings.HasSuffix(ev.Cgroup.Path, step+"-v1") {
			t.Errorf("cgroup v1 mkdir tracked: %+v", ev)
		}
	}
	find("cgroup rmdir", func(ev Event) bool {
		return ev.Kind == KindCgroupRmdir && ev.CgroupID == cgID
	})

	// Exec: the first one in the cgroup is flagged, whatever its
	// environment; this test's processes share the tracer's mount
	// namespace, as runc's re-exec of itself does.
	first := find("first exec", func(ev Event) bool { return ev.Kind == KindExec && ev.CgroupID == cgID && ev.Exec.FirstInCgroup })
	if x := first.Exec; x != nil {
		if x.TraceID != "" || !x.RuntimeMountNS {
			t.Errorf("first exec: trace ID %q (the probe reads no environment), host mount ns %v", x.TraceID, x.RuntimeMountNS)
		}
		// Binary is the file executed (symlinks resolved); Filename what execve was given.
		real, err := filepath.EvalSymlinks(busybox)
		if err != nil {
			t.Fatal(err)
		}
		if x.Binary != real || x.Filename != busybox || len(x.Argv) != 4 || x.Argv[0] != busybox || x.Argv[1] != "sh" || x.Argv[3] != script {
			t.Errorf("first exec = %q %q", x.Binary, x.Argv)
		}
		if x.Cwd != dir || x.UID != 0 || first.PID != shellPID {
			t.Errorf("first exec cwd %q uid %d pid %d, want %q 0 %d", x.Cwd, x.UID, first.PID, dir, shellPID)
		}
	}
	trueEv := find("exec true one two", func(ev Event) bool {
		return ev.Kind == KindExec && ev.CgroupID == cgID && strings.Join(ev.Exec.Argv, " ") == "/bin/busybox true one two"
	})
	if trueEv.Exec != nil && (trueEv.Exec.FirstInCgroup || trueEv.PPID != shellPID) {
		t.Errorf("second exec: first=%v trace=%q ppid=%d", trueEv.Exec.FirstInCgroup, trueEv.Exec.TraceID, trueEv.PPID)
	}
	find("exec in scanned cgroup", func(ev Event) bool {
		return ev.Kind == KindExec && ev.CgroupID == preID && strings.Join(ev.Exec.Argv, " ") == "/bin/busybox true pre"
	})
	find("fork", func(ev Event) bool { return ev.Kind == KindFork && ev.CgroupID == cgID && ev.PPID == shellPID })
	find("exit 3", func(ev Event) bool {
		return ev.Kind == KindExit && ev.CgroupID == cgID && ev.Exit.Code == 3 && ev.Exit.Signal == 0
	})
	find("kill -9", func(ev Event) bool { return ev.Kind == KindExit && ev.CgroupID == cgID && ev.Exit.Signal == 9 })
	shellExit := find("shell exit", func(ev Event) bool { return ev.Kind == KindExit && ev.PID == shellPID })
	if x := shellExit.Exit; x != nil && (x.CPUUserNanos+x.CPUSystemNanos == 0 || x.MaxRSSBytes == 0 || x.ReadBytes == 0 || x.WriteBytes == 0) {
		t.Errorf("shell exit usage not counted: %+v", *x)
	}

	// Files, absolute as the process sees them.
	file := func(op, path, target string) *FileInfo {
		t.Helper()
		ev := find(op+" "+path, func(ev Event) bool {
			return ev.Kind == KindFile && ev.CgroupID == cgID && ev.File.Op == op && ev.File.Path == path && ev.File.Target == target
		})
		return ev.File
	}
	if f := file("create", dir+"/created.txt", ""); f != nil && (f.Mode == nil || *f.Mode != 0o666) {
		t.Errorf("create mode = %v", f.Mode)
	}
	if f := file("mkdir", dir+"/sub", ""); f != nil && f.Mode == nil {
		t.Error("mkdir without mode")
	}
	if f := file("chmod", dir+"/created.txt", ""); f != nil && (f.Mode == nil || *f.Mode != 0o600) {
		t.Errorf("chmod mode = %v", f.Mode)
	}
	file("rename", dir+"/created.txt", dir+"/sub/moved.txt")
	file("create", dir+"/sub/rel.txt", "")
	file("symlink", dir+"/sub/link", "target-as-given")
	file("unlink", dir+"/sub/rel.txt", "")
	file("create", dir+"/abs.txt", "")
	file("read", "/etc/hostname", "")

	// Network.
	find("tcp connect", func(ev Event) bool {
		return ev.Kind == KindNet && ev.CgroupID == cgID && ev.Net.Op == "connect" && ev.Net.Protocol == "tcp" && ev.Net.Addr == srv
	})
	refused := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(closed))
	find("refused tcp connect", func(ev Event) bool {
		return ev.Kind == KindNet && ev.CgroupID == cgID && ev.Net.Op == "connect" && ev.Net.Addr == refused && ev.Net.Errno == uint32(syscall.ECONNREFUSED)
	})
	dns53 := netip.MustParseAddrPort("127.0.0.1:53")
	find("udp connect to :53", func(ev Event) bool {
		return ev.Kind == KindNet && ev.CgroupID == cgID && ev.Net.Protocol == "udp" && ev.Net.Addr == dns53
	})
	for _, outgoing := range []bool{true, false} {
		ev := find(fmt.Sprintf("dns outgoing=%v", outgoing), func(ev Event) bool {
			return ev.Kind == KindDNS && ev.CgroupID == cgID && ev.DNS.Outgoing == outgoing && ev.DNS.Peer == dns53
		})
		if ev.DNS != nil {
			var m dnsmessage.Message
			if err := m.Unpack(ev.DNS.Payload); err != nil || len(m.Questions) != 1 || m.Questions[0].Name.String() != "buildtrace.test." || m.Header.Response == outgoing {
				t.Errorf("dns payload (outgoing=%v) = %v %+v", outgoing, err, m)
			}
		}
	}
	var tcpBytes *Traffic
	for _, tr := range p.Traffic(cgID) {
		if tr.Protocol == "tcp" && tr.Addr == srv {
			tcpBytes = &tr
		}
	}
	if tcpBytes == nil || tcpBytes.BytesSent == 0 || tcpBytes.BytesReceived == 0 {
		t.Errorf("tcp traffic to %s = %+v (all: %+v)", srv, tcpBytes, p.Traffic(cgID))
	}

	st := p.Stats(cgID)
	if st.Emitted == 0 || st.Dropped != 0 {
		t.Errorf("stats = %+v", st)
	}

	// Builds running on this host meanwhile are tracked too; their events
	// are not leaks.
	others := map[uint64]bool{}
	for _, ev := range evs {
		if ev.Cgroup != nil && ev.CgroupID != cgID && ev.CgroupID != preID && strings.HasPrefix(ev.Cgroup.Path, "/"+trackedPrefix+"/") {
			others[ev.CgroupID] = true
		}
	}
	// Nothing from the untracked process, and no environment leaks.
	for _, ev := range evs {
		if ev.Kind == KindFile && strings.HasSuffix(ev.File.Path, "untracked.txt") ||
			ev.Kind == KindExec && strings.Contains(strings.Join(ev.Exec.Argv, " "), "untracked") {
			t.Errorf("event from untracked process: %+v", ev)
		}
		scanned := ev.Kind == KindCgroupMkdir && ev.PID == 0 // other cgroups found by the start-up scan
		if ev.CgroupID != cgID && ev.CgroupID != preID && !scanned && !others[ev.CgroupID] {
			t.Errorf("event from another cgroup %d: %+v", ev.CgroupID, ev)
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(secret)) || bytes.Contains(b, []byte("SECRET_TOKEN")) {
			t.Errorf("environment leaked into event: %s", b)
		}
	}

	p.Forget(cgID)
	if st := p.Stats(cgID); st != (CgroupStats{}) {
		t.Errorf("stats after Forget = %+v", st)
	}
	if tr := p.Traffic(cgID); len(tr) != 0 {
		t.Errorf("traffic after Forget = %+v", tr)
	}
}

func TestSyncIdleIsFast(t *testing.T) {
	requireRoot(t)
	p, _ := startProbe(t)
	syncProbe(t, p) // warm up
	start := time.Now()
	const n = 100
	for range n {
		syncProbe(t, p)
	}
	if per := time.Since(start) / n; per > time.Millisecond {
		t.Errorf("Sync took %v per call when idle", per)
	}
}

// BenchmarkSyscallUntracked measures a syscall the probe inspects (openat)
// from this untracked process; compare with the probe not loaded (-probe=false).
func BenchmarkSyscallUntracked(b *testing.B) {
	requireRoot(b)
	for _, loaded := range []bool{false, true} {
		b.Run(fmt.Sprintf("loaded=%v", loaded), func(b *testing.B) {
			if loaded {
				p, err := Load(context.Background(), Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer p.Close()
			}
			for b.Loop() {
				fd, err := syscall.Open("/dev/null", syscall.O_RDONLY, 0)
				if err != nil {
					b.Fatal(err)
				}
				syscall.Close(fd)
			}
		})
	}
}

// BenchmarkSyscallTracked measures a file change the probe reports
// (chmod of a tmpfs file, by absolute and by relative path) from this
// process, moved into a tracked cgroup, against the same call untracked.
// The probe's reader runs and decodes every event meanwhile.
func BenchmarkSyscallTracked(b *testing.B) {
	requireRoot(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := Load(ctx, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	go p.Run(ctx, func(Event) {})

	dir, err := os.MkdirTemp("/dev/shm", "buildtrace-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	wd, _ := os.Getwd()
	if err := os.Chdir(dir); err != nil {
		b.Fatal(err)
	}
	defer os.Chdir(wd)

	home, move := selfMover(b)
	cg := mkCgroup(b, randHex(b, 16), "bench")
	for _, tracked := range []bool{false, true} {
		for _, name := range []string{file, "f"} {
			b.Run(fmt.Sprintf("tracked=%v/abs=%v", tracked, name == file), func(b *testing.B) {
				if tracked {
					move(cg)
					defer move(home)
				}
				for b.Loop() {
					if err := syscall.Chmod(name, 0o644); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestCgroupsAheadOfRun: a cgroup created under /buildtrace/ reaches
// Cgroups' callback with its ID (the directory's inode) and path, while Run
// is not even reading.
func TestCgroupsAheadOfRun(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := Load(ctx, Options{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer p.Close()
	type made struct {
		id   uint64
		path string
	}
	got := make(chan made, 16)
	done := make(chan error, 1)
	go func() { done <- p.Cgroups(ctx, func(id uint64, path string) { got <- made{id, path} }) }()

	step := steptag.NewID([]byte(t.Name() + time.Now().String()))
	rel := "/" + steptag.CgroupParent(step) + "/buildkit/early"
	dir := filepath.Join(DefaultCgroupRoot, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for d := dir; d != filepath.Join(DefaultCgroupRoot, steptag.Root); d = filepath.Dir(d) {
			os.Remove(d)
		}
	}()
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-got:
			if m.path == rel {
				if m.id != st.Ino {
					t.Fatalf("cgroup %s reported with ID %d, its inode is %d", rel, m.id, st.Ino)
				}
				cancel()
				if err := <-done; !errors.Is(err, context.Canceled) {
					t.Errorf("Cgroups: %v", err)
				}
				return
			}
		case <-deadline:
			t.Fatalf("Cgroups never reported %s", rel)
		}
	}
}

// TestScanTracksContainersOnly: at Load, container cgroups are tracked but
// the step directories above them are not (BuildKit never removes those,
// and a busy host would fill the kernel's map with them).
func TestScanTracksContainersOnly(t *testing.T) {
	requireRoot(t)
	step := steptag.NewID([]byte(t.Name() + time.Now().String()))
	stepDir := filepath.Join(DefaultCgroupRoot, steptag.CgroupParent(step))
	leaf := filepath.Join(stepDir, "buildkit", "scanned")
	if err := os.MkdirAll(leaf, 0o755); err != nil {
		t.Fatal(err)
	}
	// Below a buildkitd container's cgroup too.
	top := filepath.Join(DefaultCgroupRoot, "btscan-"+randHex(t, 4))
	nested := filepath.Join(top, "docker", "c1", steptag.CgroupParent(step), "buildkit", "nested")
	if err := os.MkdirAll(nested, 0o755); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, d := range []string{leaf, filepath.Dir(leaf), stepDir} {
			os.Remove(d)
		}
		for d := nested; d != DefaultCgroupRoot; d = filepath.Dir(d) {
			os.Remove(d)
		}
	}()
	ino := func(p string) uint64 {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	p, err := Load(context.Background(), Options{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer p.Close()
	var v bpf.BuildtraceCgStats
	for _, c := range []string{leaf, nested} {
		if err := p.objs.Tracked.Lookup(ino(c), &v); err != nil {
			t.Errorf("container cgroup %s not tracked: %v", c, err)
		}
	}
	for _, d := range []string{stepDir, filepath.Dir(leaf)} {
		if err := p.objs.Tracked.Lookup(ino(d), &v); err == nil {
			t.Errorf("step directory %s is tracked", d)
		}
	}
}

// TestTrafficMapFull: with a traffic map of 8 entries, a cgroup that tries
// 40 loopback TCP ports (nothing listens: a SYN out, a RST back) cannot have every destination counted; the
// kernel counts the packets it could not, rather than silently stopping.
func TestTrafficMapFull(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := Load(ctx, Options{TrafficEntries: 8})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer p.Close()
	go p.Run(ctx, func(Event) {})
	cg := mkCgroup(t, randHex(t, 16), "full")
	cgID := inode(t, cg)
	out, err := inCgroup(cg, t.TempDir(), []string{"PATH=/bin"},
		`for port in $(/bin/busybox seq 20000 20039); do /bin/busybox nc 127.0.0.1 $port < /dev/null; done; true`).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	st := p.Stats(cgID)
	if st.TrafficFull == 0 || len(p.Traffic(cgID)) > 8 {
		t.Fatalf("stats %+v with %d destinations counted: want packets counted as lost", st, len(p.Traffic(cgID)))
	}
	t.Logf("stats %+v", st)
}

// TestProbeLongArgv: an exec with ~40 KiB of arguments arrives whole (its
// continuation records joined), one with ~230 KiB is cut at 128 KiB and
// flagged, counted as truncated once.
func TestProbeLongArgv(t *testing.T) {
	requireRoot(t)
	p, c := startProbe(t)
	step := randHex(t, 16)
	cg := mkCgroup(t, step, "argv")
	cgID := inode(t, cg)
	dir := t.TempDir()
	env := []string{"PATH=/bin:/usr/bin"}
	script := `set -- $(/bin/busybox seq 1 8000); /bin/busybox true long "$@"; ` +
		`set -- $(/bin/busybox seq 1 40000); /bin/busybox true huge "$@"; ` +
		`/bin/busybox true short`
	if out, err := inCgroup(cg, dir, env, script).CombinedOutput(); err != nil {
		t.Fatalf("tracked script: %v\n%s", err, out)
	}
	syncProbe(t, p)
	var long, huge, short *ExecInfo
	for _, ev := range c.all() {
		if ev.Kind != KindExec || ev.CgroupID != cgID || len(ev.Exec.Argv) < 3 {
			continue
		}
		switch ev.Exec.Argv[2] {
		case "long":
			long = ev.Exec
		case "huge":
			huge = ev.Exec
		case "short":
			short = ev.Exec
		}
	}
	if long == nil || huge == nil || short == nil {
		t.Fatalf("execs missing: long %v huge %v short %v", long != nil, huge != nil, short != nil)
	}
	if long.ArgvTruncated || len(long.Argv) != 8003 || long.Argv[8002] != "8000" || long.Argv[1000] != "998" {
		t.Errorf("~40 KiB argv: truncated=%v, %d args (last %q), want 8003 whole", long.ArgvTruncated, len(long.Argv), long.Argv[len(long.Argv)-1])
	}
	n := 0
	for _, a := range huge.Argv {
		n += len(a) + 1
	}
	if !huge.ArgvTruncated || n < 128<<10 || n > 128<<10+1 {
		t.Errorf("~230 KiB argv: truncated=%v, %d bytes kept, want flagged and 128 KiB", huge.ArgvTruncated, n)
	}
	for i, a := range huge.Argv[3 : len(huge.Argv)-1] {
		if a != fmt.Sprint(i+1) {
			t.Fatalf("~230 KiB argv: arg %d is %q, want %d", i+3, a, i+1)
		}
	}
	if short.ArgvTruncated {
		t.Error("short argv flagged")
	}
	if st := p.Stats(cgID); st.Truncated != 1 || st.Dropped != 0 {
		t.Errorf("stats %+v: want exactly the huge exec truncated", st)
	}
}

// dnsClientEnv makes the test binary a DNS client (see TestMain): it asks
// 127.0.0.1:53 for big.buildtrace.test A and reads the answer with a 4 KiB
// buffer (busybox nslookup reads at most 512 bytes), printing its size.
const dnsClientEnv = "BUILDTRACE_PROBE_DNS_CLIENT"

func TestMain(m *testing.M) {
	if os.Getenv(dnsClientEnv) == "1" {
		os.Exit(dnsClient())
	}
	if cg := os.Getenv(cloneIntoEnv); cg != "" {
		os.Exit(cloneInto(cg))
	}
	if os.Getenv(rawSendEnv) == "1" {
		os.Exit(rawSend())
	}
	if os.Getenv(foreignEnv) != "" {
		os.Exit(foreignUse())
	}
	if os.Getenv(threadsEnv) == "1" {
		os.Exit(burnOnThreads())
	}
	if n := os.Getenv(execStormEnv); n != "" {
		os.Exit(execStorm(n))
	}
	os.Exit(m.Run())
}

// cloneIntoEnv makes the test binary start /bin/busybox true in the cgroup
// it names, with clone3(CLONE_INTO_CGROUP) (os/exec's UseCgroupFD).
const cloneIntoEnv = "BUILDTRACE_PROBE_CLONE_INTO"

func cloneInto(cg string) int {
	d, err := os.Open(cg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer d.Close()
	cmd := exec.Command(busybox, "true")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(d.Fd())}
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestCgroupEscapeCounted: a process of a tracked cgroup that moves itself
// to another cgroup, or is cloned into one, is no longer followed; the
// cgroup's counters say so (redteam7: a step given a descriptor of the
// host's cgroup2 root wrote its PID into the root's cgroup.procs).
func TestCgroupEscapeCounted(t *testing.T) {
	requireRoot(t)
	p, _ := startProbe(t)
	other := filepath.Join(DefaultCgroupRoot, "buildtrace-test-elsewhere-"+randHex(t, 8))
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(other) })
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, script string }{
		{"moved", `echo $$ > "` + other + `/cgroup.procs" && /bin/busybox true`},
		{"cloned into", `"` + self + `"`},
		{"stays", `/bin/busybox true`},
	} {
		t.Run(c.name, func(t *testing.T) {
			cg := mkCgroup(t, randHex(t, 16), "escape")
			env := []string{"PATH=/bin:/usr/bin", cloneIntoEnv + "=" + other}
			if out, err := inCgroup(cg, t.TempDir(), env, c.script).CombinedOutput(); err != nil {
				t.Fatalf("tracked script: %v\n%s", err, out)
			}
			syncProbe(t, p)
			want := uint64(1)
			if c.name == "stays" {
				want = 0
			}
			if st := p.Stats(inode(t, cg)); st.Escaped != want {
				t.Errorf("escaped = %d, want %d (%+v)", st.Escaped, want, st)
			}
		})
	}
}

func dnsClient() int {
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 0x1234, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("big.buildtrace.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	b, err := q.Pack()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c, err := net.Dial("udp4", "127.0.0.1:53")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(b); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(n)
	return 0
}

// TestProbeLargeDNS: an answer over 512 bytes (EDNS sizes) is captured
// whole and does not count as truncated.
func TestProbeLargeDNS(t *testing.T) {
	requireRoot(t)
	p, c := startProbe(t)
	var addrs [][4]byte
	for i := range 100 {
		addrs = append(addrs, [4]byte{127, 0, 1, byte(i + 1)})
	}
	dnsServer(t, addrs...)
	cg := mkCgroup(t, randHex(t, 16), "dns")
	cgID := inode(t, cg)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, err := inCgroup(cg, t.TempDir(), []string{"PATH=/bin", dnsClientEnv + "=1"}, "exec "+self).CombinedOutput()
	if err != nil {
		t.Fatalf("DNS client: %v\n%s", err, out)
	}
	syncProbe(t, p)
	var got int
	for _, ev := range c.all() {
		if ev.Kind == KindDNS && ev.CgroupID == cgID && !ev.DNS.Outgoing {
			var m dnsmessage.Message
			if err := m.Unpack(ev.DNS.Payload); err == nil && len(m.Answers) > got {
				got = len(m.Answers)
			}
			t.Logf("answer of %d bytes", len(ev.DNS.Payload))
		}
	}
	if got != 100 {
		t.Errorf("largest answer parsed has %d records, want 100 (the client read %s bytes)", got, strings.TrimSpace(string(out)))
	}
	if st := p.Stats(cgID); st.Truncated != 0 {
		t.Errorf("stats %+v: an answer of ~1.6 KiB counted as truncated", st)
	}
}

// TestCgroupsNestedAndOwned: a step's cgroups below another cgroup (a
// buildkitd in a container with a cgroup namespace of its own) are
// followed; one a user made (in a subtree delegated to them), or below a
// buildtrace directory a user owns, is not.
func TestCgroupsNestedAndOwned(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := Load(ctx, Options{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer p.Close()
	got := make(chan string, 64)
	go p.Cgroups(ctx, func(_ uint64, path string) { got <- path })

	top := "/btnest-" + randHex(t, 4)
	step := steptag.NewID([]byte(t.Name() + time.Now().String()))
	var made []string
	mk := func(rel string, uid int) {
		t.Helper()
		dir := filepath.Join(DefaultCgroupRoot, rel)
		if uid == 0 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		} else {
			// As a user with write access to the parent: the kernel records
			// the maker as the owner. fsuid is per thread.
			runtime.LockOSThread()
			unix.Setfsuid(uid)
			err := os.Mkdir(dir, 0o755)
			unix.Setfsuid(0)
			runtime.UnlockOSThread()
			if err != nil {
				t.Fatal(err)
			}
		}
		made = append(made, dir)
	}
	defer func() {
		for i := len(made) - 1; i >= 0; i-- {
			for d := made[i]; d != DefaultCgroupRoot; d = filepath.Dir(d) {
				os.Remove(d)
			}
		}
	}()
	nested := top + "/docker/c1/" + steptag.CgroupParent(step) + "/buildkit/n1"
	mk(nested, 0)
	// A delegated subtree: the user may write in "buildkit" and makes a
	// container cgroup there.
	deleg := top + "/user/" + steptag.CgroupParent(step) + "/buildkit"
	mk(deleg, 0)
	if err := os.Chown(filepath.Join(DefaultCgroupRoot, deleg), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	mk(deleg+"/u1", 65534)
	// A buildtrace directory a user owns: even root-made cgroups below it
	// are not a step's.
	owned := top + "/owned/" + steptag.Root
	mk(owned, 0)
	if err := os.Chown(filepath.Join(DefaultCgroupRoot, owned), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	mk(owned+"/"+step+"/buildkit/o1", 0)

	seen := map[string]bool{}
	deadline := time.After(3 * time.Second)
wait:
	for {
		select {
		case p := <-got:
			seen[p] = true
		case <-deadline:
			break wait
		}
	}
	if !seen[nested] {
		t.Errorf("nested container cgroup %s not reported; saw %v", nested, seen)
	}
	for p := range seen {
		if strings.HasSuffix(p, "/u1") || strings.Contains(p, "/owned/") {
			t.Errorf("reported %s, a cgroup a user made or owns", p)
		}
	}
}

// TestEventClock: event times are on the probe's clock (Now), which the
// tracer stamps plans with, so the two compare whatever the wall clock does.
func TestEventClock(t *testing.T) {
	requireRoot(t)
	p, c := startProbe(t)
	cg := mkCgroup(t, randHex(t, 16), "clock")
	cgID := inode(t, cg)
	before := p.Now()
	if out, err := inCgroup(cg, t.TempDir(), []string{"PATH=/bin:/usr/bin"}, "/bin/busybox true clock").CombinedOutput(); err != nil {
		t.Fatalf("tracked script: %v\n%s", err, out)
	}
	after := p.Now()
	syncProbe(t, p)
	n := 0
	for _, ev := range c.all() {
		if ev.CgroupID != cgID || ev.Kind != KindExec {
			continue
		}
		n++
		if ev.Time.Before(before) || ev.Time.After(after) {
			t.Errorf("exec at %v, outside [%v, %v] on the probe's clock", ev.Time, before, after)
		}
	}
	if n == 0 {
		t.Fatal("no exec seen in the cgroup")
	}
}
