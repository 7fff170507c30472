//go:build linux

package probe

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
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
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		b.Fatal(err)
	}
	var home string
	for _, l := range strings.Split(string(self), "\n") {
		if rest, ok := strings.CutPrefix(l, "0::"); ok {
			home = filepath.Join(DefaultCgroupRoot, rest)
		}
	}
	cg := mkCgroup(b, randHex(b, 16), "cost")
	move := func(to string) {
		if err := os.WriteFile(filepath.Join(to, "cgroup.procs"), []byte(fmt.Sprint(os.Getpid())), 0o644); err != nil {
			b.Fatalf("moving into %s: %v", to, err)
		}
	}
	zero, err := syscall.Open("/dev/zero", syscall.O_RDONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer syscall.Close(zero)
	buf := make([]byte, 1)
	abs := filepath.Join(deep, "f")
	shallow, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(shallow)
	shallowFile := filepath.Join(dir, "h")
	for _, w := range []struct {
		name string
		call func() error
	}{
		{"read", func() error { _, err := syscall.Read(zero, buf); return err }},
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
// would. Each round runs it four ways, in an order that rotates:
//
//	off        no syscall hook attached (the probe loaded on demand, no
//	           tracked cgroup: the daemon between builds)
//	empty      an empty tp_btf/sys_exit program attached instead of the
//	           probe's: what the kernel's slow system-call path costs
//	           alone, the floor of any syscall hook
//	untracked  the probe's hook attached, the process in no tracked cgroup
//	           (another build runs on the host)
//	tracked    the process in a tracked cgroup: every file event recorded
//
// It reports the median seconds of each, their ratios to off, and the
// events per round. With BUILDTRACE_BPF_STATS=1 it also reports the
// probe's sys_exit run time per event of the tracked rounds (the kernel's
// run-time statistics, which add a little to every run, empty included).
func BenchmarkUntarTracked(b *testing.B) {
	requireRoot(b)
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
	step := randHex(b, 16)
	detached := func() {
		p.ReleaseSyscalls("bench")
		for deadline := time.Now().Add(10 * time.Second); p.SyscallHook().Attached; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatal("the syscall hook stays attached (another tracked cgroup on this host?)")
			}
		}
	}
	var bpfTime time.Duration // sys_exit's run time in the tracked rounds
	var tracked uint64        // events of the tracked rounds
	// A round's wall time and the CPU time of the workload (user and
	// system, its children included): on a shared machine the CPU time
	// varies less.
	type took struct{ wall, cpu time.Duration }
	run := func(way string, i int) took {
		var cmd *exec.Cmd
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
			cmd = exec.Command(busybox, "sh", "-c", `echo $$ > "$0"/cgroup.procs && exec /bin/busybox sh -c "$1" sh "$2" "$3"`, cg, script, tarball, x)
		} else {
			cmd = exec.Command(busybox, "sh", "-c", script, "sh", tarball, x)
		}
		if way == "empty" {
			l, err := link.AttachTracing(link.TracingOptions{Program: empty, AttachType: ebpf.AttachTraceRawTp})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
		}
		var before time.Duration
		if st, err := p.objs.SysExit.Stats(); err == nil {
			before = st.Runtime
		}
		evBefore := events.Load()
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("untar: %v\n%s", err, out)
		}
		d := took{wall: time.Since(start), cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
		if way != "tracked" {
			return d
		}
		if st, err := p.objs.SysExit.Stats(); err == nil {
			bpfTime += st.Runtime - before
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
		b.ReportMetric(float64(bpfTime.Nanoseconds())/float64(tracked), "bpf-ns/event")
	}
	b.Logf("seconds: %v", times)
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
