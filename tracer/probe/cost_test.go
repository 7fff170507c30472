//go:build linux

package probe

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// BenchmarkProgramCost reports the kernel's own account of the time the
// syscall program spends (BPF run-time statistics, on while it runs) per
// system call of this process, moved into a tracked cgroup: what a traced
// step pays inside each call, apart from the reader's work. bpf-ns/op
// includes the program's runs for every other task's calls meanwhile
// (each a few tens of ns: they leave at the tracked-cgroup lookup).
func BenchmarkProgramCost(b *testing.B) {
	requireRoot(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := Load(ctx, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	go p.Run(ctx, func(Event) {})
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Skipf("SKIP (BPF run-time statistics: %v)", err)
	}
	defer stats.Close()

	dir, err := os.MkdirTemp("/dev/shm", "buildtrace-cost-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	deep := filepath.Join(dir, "a", "b", "c", "d")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		b.Fatal(err)
	}
	wd, _ := os.Getwd()
	if err := os.Chdir(deep); err != nil {
		b.Fatal(err)
	}
	defer os.Chdir(wd)
	if err := os.WriteFile("f", nil, 0o644); err != nil {
		b.Fatal(err)
	}
	home, move := selfMover(b)
	cg := mkCgroup(b, randHex(b, 16), "cost")
	zero, err := syscall.Open("/dev/zero", syscall.O_RDONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer syscall.Close(zero)
	buf := make([]byte, 1)
	iov := [][]byte{buf}
	null, err := unix.Open("/dev/null", unix.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(null)
	// A TCP socket of the tracked cgroup's own (made below, once the
	// process is in it), to a listener that discards what it reads.
	var sock int
	abs := filepath.Join(deep, "f")
	shallow, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(shallow)
	shallowFile := filepath.Join(dir, "h")
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	move(cg)
	sock, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err == nil {
		sa := &unix.SockaddrInet4{Port: ln.Addr().(*net.TCPAddr).Port, Addr: [4]byte{127, 0, 0, 1}}
		err = unix.Connect(sock, sa)
	}
	move(home)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(sock)
	for _, w := range []struct {
		name string
		call func() error
	}{
		// A call the program leaves at its first switch.
		{"getppid", func() error { syscall.Getppid(); return nil }},
		{"read", func() error { _, err := syscall.Read(zero, buf); return err }},
		// writev on a file, and write and writev on a TCP socket of the
		// caller's own cgroup: the foreign-socket check (foreign_sock)
		// is all the program does for them.
		{"writev", func() error { _, err := unix.Writev(null, iov); return err }},
		{"write-tcp", func() error { _, err := unix.Write(sock, buf); return err }},
		{"writev-tcp", func() error { _, err := unix.Writev(sock, iov); return err }},
		{"chmod-abs", func() error { return syscall.Chmod(abs, 0o644) }},
		{"chmod-rel", func() error { return syscall.Chmod("f", 0o644) }},
		// A file of the tmpfs untar (BenchmarkUntarTracked): created,
		// chowned and chmodded by its name relative to a directory
		// (here by dirfd, walked like a cwd), closed, unlinked by its
		// absolute path: four events.
		{"untar-file", func() error {
			fd, err := unix.Openat(shallow, "h", unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			if err := unix.Fchownat(shallow, "h", 0, 0, 0); err != nil {
				return err
			}
			if err := unix.Fchmodat(shallow, "h", 0o644, 0); err != nil {
				return err
			}
			unix.Close(fd)
			return unix.Unlink(shallowFile)
		}},
		{"create-unlink-rel", func() error {
			fd, err := syscall.Open("g", syscall.O_CREAT|syscall.O_WRONLY|syscall.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
			syscall.Close(fd)
			return syscall.Unlink("g")
		}},
	} {
		for _, tracked := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/tracked=%v", w.name, tracked), func(b *testing.B) {
				if tracked {
					move(cg)
					defer move(home)
				}
				before, err := p.objs.SysExit.Stats()
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for b.Loop() {
					if err := w.call(); err != nil {
						b.Fatal(err)
					}
					n++
				}
				after, err := p.objs.SysExit.Stats()
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64((after.Runtime-before.Runtime).Nanoseconds())/float64(n), "bpf-ns/op")
				b.ReportMetric(float64((after.Runtime-before.Runtime).Nanoseconds())/float64(max(after.RunCount-before.RunCount, 1)), "ns/run")
			})
		}
	}
}

// BenchmarkUntarTracked is the file storm of test/e2e's
// BenchmarkUntarDelete50k/tmpfs without BuildKit: busybox tar extracts
// 50,000 files of 100 bytes in 250 directories on /dev/shm and deletes
// them, with Run decoding every event in this process, as the daemon
// would. See benchWays for what it reports.
func BenchmarkUntarTracked(b *testing.B) {
	requireRoot(b)
	dir, err := os.MkdirTemp("/dev/shm", "buildtrace-untar-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	tarball := filepath.Join(dir, "files.tar")
	if err := writeSmallFilesTar(tarball); err != nil {
		b.Fatal(err)
	}
	x := filepath.Join(dir, "x")
	if err := os.Mkdir(x, 0o755); err != nil {
		b.Fatal(err)
	}
	script := `/bin/busybox tar xf "$1" -C "$2" && /bin/busybox rm -rf "$2"/*`
	benchWays(b, 1, func(cg string) *exec.Cmd {
		if cg == "" {
			return exec.Command(busybox, "sh", "-c", script, "sh", tarball, x)
		}
		return exec.Command(busybox, "sh", "-c", `echo $$ > "$0"/cgroup.procs && exec /bin/busybox sh -c "$1" sh "$2" "$3"`, cg, script, tarball, x)
	})
}

// execStormEnv makes the test binary the exec storm of test/e2e's
// BenchmarkExecStorm (hack/hostload exec): fork, exec and wait for
// busybox true as many times as it says.
const execStormEnv = "BUILDTRACE_PROBE_EXEC_STORM"

func execStorm(n string) int {
	var count int
	if _, err := fmt.Sscan(n, &count); err != nil {
		fmt.Fprintf(os.Stderr, "%s=%q: %v\n", execStormEnv, n, err)
		return 2
	}
	for range count {
		if err := forkExecTrue(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

// forkExecTrue is one cycle of the exec storm, as hostload makes it: fork,
// exec busybox true (no descriptors, no environment) and wait for it.
func forkExecTrue() error {
	pid, err := syscall.ForkExec(busybox, []string{"true"}, &syscall.ProcAttr{Env: []string{}})
	if err != nil {
		return err
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
		return fmt.Errorf("busybox true: %v (status %v)", err, ws)
	}
	return nil
}

// BenchmarkExecTracked is the exec storm of test/e2e's BenchmarkExecStorm
// without BuildKit: 2,000 fork+exec+wait of busybox true from a Go
// process, as hostload does. See benchWays for what it reports; per
// cycle, the programs' run time is sys_exit's on the cycle's system calls
// and the three sched hooks'.
func BenchmarkExecTracked(b *testing.B) {
	requireRoot(b)
	const cycles = 2000
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	env := append(os.Environ(), fmt.Sprintf("%s=%d", execStormEnv, cycles))
	benchWays(b, cycles, func(cg string) *exec.Cmd {
		var cmd *exec.Cmd
		if cg == "" {
			cmd = exec.Command(self)
		} else {
			cmd = exec.Command(busybox, "sh", "-c", `echo $$ > "$0"/cgroup.procs && exec "$1"`, cg, self)
		}
		cmd.Env = env
		return cmd
	})
}

// benchWays times the workload cmd starts (in cgroup cg, or in none for
// cg == "") four ways, in an order that rotates each round:
//
//	off        no syscall hook attached (the probe loaded on demand, no
//	           tracked cgroup: the daemon between builds)
//	empty      an empty tp_btf/sys_exit program attached instead of the
//	           probe's: what the kernel's slow system-call path costs
//	           alone, the floor of any syscall hook
//	untracked  the probe's hook attached, the process in no tracked cgroup
//	           (another build runs on the host)
//	tracked    the process in a tracked cgroup: every event recorded
//
// It reports the median seconds of each, their ratios to off, and the
// events per round. With BUILDTRACE_BPF_STATS=1 it also reports each
// program's run time per event and per unit (units per round, such as
// cycles of an exec storm) of the tracked rounds: the kernel's run-time
// statistics, which add a little to every run, empty included.
func benchWays(b *testing.B, units int, cmd func(cg string) *exec.Cmd) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := Load(ctx, Options{SyscallsOnDemand: true})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	var events atomic.Uint64
	go p.Run(ctx, func(Event) { events.Add(1) })
	bpfStats := os.Getenv("BUILDTRACE_BPF_STATS") == "1"
	if bpfStats {
		stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
		if err != nil {
			b.Fatalf("BPF run-time statistics: %v", err)
		}
		defer stats.Close()
	}
	empty, err := emptyTPBTF("sys_exit")
	if err != nil {
		b.Fatalf("loading an empty tp_btf/sys_exit: %v", err)
	}
	defer empty.Close()
	progs := hookPrograms(p)
	runtimes := func() []time.Duration { return runtimesOf(b, progs) }

	step := randHex(b, 16)
	detached := func() {
		p.ReleaseSyscalls("bench")
		for deadline := time.Now().Add(10 * time.Second); p.SyscallHook().Attached; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatal("the syscall hook stays attached (another tracked cgroup on this host?)")
			}
		}
	}
	bpfTime := make([]time.Duration, len(progs)) // each program's run time in the tracked rounds
	var tracked uint64                           // events of the tracked rounds
	// A round's wall time and the CPU time of the workload (user and
	// system, its children included): on a shared machine the CPU time
	// varies less.
	type took struct{ wall, cpu time.Duration }
	run := func(way string, i int) took {
		switch way {
		case "off", "empty":
			detached()
		case "untracked", "tracked":
			if err := p.HoldSyscalls("bench", time.Hour, nil); err != nil {
				b.Fatal(err)
			}
		}
		var cg string
		if way == "tracked" {
			cg = mkCgroup(b, step, fmt.Sprintf("r%d", i))
		}
		c := cmd(cg)
		if way == "empty" {
			l, err := link.AttachTracing(link.TracingOptions{Program: empty, AttachType: ebpf.AttachTraceRawTp})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
		}
		before := runtimes()
		evBefore := events.Load()
		start := time.Now()
		if out, err := c.CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", c, err, out)
		}
		d := took{wall: time.Since(start), cpu: c.ProcessState.UserTime() + c.ProcessState.SystemTime()}
		if way != "tracked" {
			return d
		}
		for i, t := range runtimes() {
			bpfTime[i] += t - before[i]
		}
		syncProbe(b, p)
		tracked += events.Load() - evBefore
		// As the daemon does once the step is sealed.
		for _, dir := range []string{cg, filepath.Dir(cg), filepath.Dir(filepath.Dir(cg))} {
			id := inode(b, dir)
			os.Remove(dir)
			p.Forget(id)
		}
		return d
	}
	rounds := 3
	if s := os.Getenv("BUILDTRACE_BENCH_ROUNDS"); s != "" {
		fmt.Sscan(s, &rounds)
	}
	// Hook-off ways together and hook-on ways together, so that a round
	// waits for one detach; which pair goes first, and the order inside
	// each, alternate.
	orders := [][]string{
		{"off", "empty", "untracked", "tracked"},
		{"tracked", "untracked", "empty", "off"},
		{"empty", "off", "tracked", "untracked"},
		{"untracked", "tracked", "off", "empty"},
	}
	times := map[string][]took{}
	for i := range rounds {
		for _, way := range orders[i%len(orders)] {
			times[way] = append(times[way], run(way, i))
		}
	}
	p.ReleaseSyscalls("bench")
	median := func(way string, cpu bool) float64 {
		var t []time.Duration
		for _, x := range times[way] {
			t = append(t, x.wall)
			if cpu {
				t[len(t)-1] = x.cpu
			}
		}
		slices.Sort(t)
		return t[len(t)/2].Seconds()
	}
	off, offCPU := median("off", false), median("off", true)
	b.ReportMetric(off, "off-s")
	b.ReportMetric(offCPU, "off-cpu-s")
	for _, way := range []string{"empty", "untracked", "tracked"} {
		b.ReportMetric(median(way, false), way+"-s")
		b.ReportMetric(median(way, false)/off, way+"-ratio")
		b.ReportMetric(median(way, true)/offCPU, way+"-cpu-ratio")
	}
	b.ReportMetric(float64(tracked)/float64(rounds), "events/round")
	if bpfStats && tracked > 0 {
		var all time.Duration
		for i, pr := range progs {
			all += bpfTime[i]
			if units > 1 && bpfTime[i] > 0 {
				b.ReportMetric(float64(bpfTime[i].Nanoseconds())/float64(rounds*units), pr.name+"-ns/unit")
			}
		}
		b.ReportMetric(float64(bpfTime[0].Nanoseconds())/float64(tracked), "bpf-ns/event")
		if units > 1 {
			b.ReportMetric(float64(all.Nanoseconds())/float64(rounds*units), "bpf-ns/unit")
			b.ReportMetric(off/float64(units)*1e9, "off-ns/unit")
		}
	}
	b.Logf("seconds: %v", times)
}

// namedProg is one of the probe's programs, by its section's name.
type namedProg struct {
	name string
	prog *ebpf.Program
}

// hookPrograms are the programs a traced process's system calls and
// fork, exec and exit run.
func hookPrograms(p *Probe) []namedProg {
	return []namedProg{
		{"sys_exit", p.objs.SysExit},
		{"sched_fork", p.objs.SchedFork},
		{"sched_exec", p.objs.SchedExec},
		{"sched_exit", p.objs.SchedExit},
	}
}

// runtimesOf is each program's BPF run time so far (run-time statistics
// must be on).
func runtimesOf(t testing.TB, progs []namedProg) []time.Duration {
	t.Helper()
	d := make([]time.Duration, 0, len(progs))
	for _, pr := range progs {
		st, err := pr.prog.Stats()
		if err != nil {
			t.Fatalf("%s: %v", pr.name, err)
		}
		d = append(d, st.Runtime)
	}
	return d
}

func writeSmallFilesTar(name string) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	mtime := time.Unix(1_700_000_000, 0)
	for d := range 250 {
		dn := fmt.Sprintf("d%03d/", d)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dn, Mode: 0o755, ModTime: mtime, Format: tar.FormatUSTAR}); err != nil {
			return err
		}
		for i := range 200 {
			body := bytes.Repeat([]byte(fmt.Sprintf("file %d/%d ", d, i)), 12)[:100]
			h := &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("%sf%05d.txt", dn, i), Mode: 0o644, Size: 100, ModTime: mtime, Format: tar.FormatUSTAR}
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if _, err := tw.Write(body); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// BenchmarkExecCycle splits what a traced step pays per fork+exec+wait of
// busybox true (the exec storm's cycle, as hack/hostload makes it) into
// two ratios, each the median over many short batches of one way against
// the other, alternated, so that the machine's drift (whole runs here
// vary by ±10 %) cancels out of each pair:
//
//	floor-ratio   an empty tp_btf/sys_exit program attached / none: the
//	              kernel's slow system-call path, any syscall hook's floor
//	tracer-ratio  this process in a tracked cgroup / in an untracked one,
//	              the probe attached in both: the programs' work per cycle
//
// Their product is what the exec storm's traced/untraced ratio would be
// without BuildKit and the daemon. It also reports each program's run
// time per cycle (BPF run-time statistics, in a separate pass: they add
// to every run).
func BenchmarkExecCycle(b *testing.B) {
	requireRoot(b)
	const batch = 100
	batches := 40
	if s := os.Getenv("BUILDTRACE_BENCH_ROUNDS"); s != "" {
		fmt.Sscan(s, &batches)
	}
	cycles := func(n int) time.Duration {
		start := time.Now()
		for range n {
			if err := forkExecTrue(); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	// pairs runs batches of a (then b, or b then a: alternated) and
	// returns the median of b/a and each way's median µs per cycle.
	pairs := func(a, bb func() func()) (ratio, usA, usB float64) {
		var ratios, ta, tb []float64
		for i := range batches {
			var da, db time.Duration
			way := func(set func() func(), d *time.Duration) {
				undo := set()
				*d = cycles(batch)
				undo()
			}
			if i%2 == 0 {
				way(a, &da)
				way(bb, &db)
			} else {
				way(bb, &db)
				way(a, &da)
			}
			ratios = append(ratios, db.Seconds()/da.Seconds())
			ta = append(ta, da.Seconds()*1e6/batch)
			tb = append(tb, db.Seconds()*1e6/batch)
		}
		med := func(x []float64) float64 { slices.Sort(x); return x[len(x)/2] }
		return med(ratios), med(ta), med(tb)
	}
	none := func() func() { return func() {} }

	empty, err := emptyTPBTF("sys_exit")
	if err != nil {
		b.Fatalf("loading an empty tp_btf/sys_exit: %v", err)
	}
	defer empty.Close()
	cycles(batch) // warm up
	floor, offUS, emptyUS := pairs(none, func() func() {
		l, err := link.AttachTracing(link.TracingOptions{Program: empty, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			b.Fatal(err)
		}
		return func() { l.Close() }
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := Load(ctx, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	var events atomic.Uint64
	go p.Run(ctx, func(Event) { events.Add(1) })
	home, move := selfMover(b)
	cg := mkCgroup(b, randHex(b, 16), "cycle")
	tracked := func() func() { move(cg); return func() { move(home) } }
	tracer, untrackedUS, trackedUS := pairs(none, tracked)
	syncProbe(b, p)
	evs := events.Load()

	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Fatalf("BPF run-time statistics: %v", err)
	}
	defer stats.Close()
	progs := hookPrograms(p)
	before := runtimesOf(b, progs)
	const statCycles = 2000
	undo := tracked()
	cycles(statCycles)
	undo()
	after := runtimesOf(b, progs)
	var all float64
	for i, pr := range progs {
		ns := float64((after[i] - before[i]).Nanoseconds()) / statCycles
		all += ns
		b.ReportMetric(ns, pr.name+"-ns/cycle")
	}
	b.ReportMetric(all, "bpf-ns/cycle")
	b.ReportMetric(floor, "floor-ratio")
	b.ReportMetric(tracer, "tracer-ratio")
	b.ReportMetric(floor*tracer, "product")
	b.ReportMetric(offUS, "off-us/cycle")
	b.ReportMetric(emptyUS, "empty-us/cycle")
	b.ReportMetric(untrackedUS, "untracked-us/cycle")
	b.ReportMetric(trackedUS, "tracked-us/cycle")
	b.ReportMetric(float64(evs)/float64(batches*batch), "events/cycle")
}
