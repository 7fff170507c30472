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
	for _, w := range []struct {
		name string
		call func() error
	}{
		{"read", func() error { _, err := syscall.Read(zero, buf); return err }},
		{"chmod-abs", func() error { return syscall.Chmod(abs, 0o644) }},
		{"chmod-rel", func() error { return syscall.Chmod("f", 0o644) }},
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
// them, alternately in a tracked cgroup and in an untracked one, with the
// probe loaded on demand (the hook detached during untracked rounds) and
// Run decoding every event in this process, as the daemon would. It
// reports the median seconds of each and their ratio.
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
	if stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME); err == nil {
		defer stats.Close()
	}
	var bpfTime time.Duration // sys_exit's run time in the tracked rounds
	attachedUntracked := 0    // untracked rounds run with the hook attached (another build's container)
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
	run := func(tracked bool, i int) time.Duration {
		var cmd *exec.Cmd
		var cg string
		if tracked {
			cg = mkCgroup(b, step, fmt.Sprintf("r%d", i))
			cmd = exec.Command(busybox, "sh", "-c", `echo $$ > "$0"/cgroup.procs && exec /bin/busybox sh -c "$1" sh "$2" "$3"`, cg, script, tarball, x)
		} else {
			cmd = exec.Command(busybox, "sh", "-c", script, "sh", tarball, x)
		}
		var before time.Duration
		if st, err := p.objs.SysExit.Stats(); err == nil {
			before = st.Runtime
		}
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("untar: %v\n%s", err, out)
		}
		d := time.Since(start)
		if !tracked {
			if p.SyscallHook().Attached {
				attachedUntracked++ // another build runs on this host
			}
			return d
		}
		if st, err := p.objs.SysExit.Stats(); err == nil {
			bpfTime += st.Runtime - before
		}
		// As the daemon does once the step is sealed: forget the
		// container and its step directories, and wait for the detach.
		for _, dir := range []string{cg, filepath.Dir(cg), filepath.Dir(filepath.Dir(cg))} {
			id := inode(b, dir)
			os.Remove(dir)
			p.Forget(id)
		}
		for deadline := time.Now().Add(6 * time.Second); p.SyscallHook().Attached && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
		}
		return d
	}
	rounds := 3
	if s := os.Getenv("BUILDTRACE_BENCH_ROUNDS"); s != "" {
		fmt.Sscan(s, &rounds)
	}
	var u, t []time.Duration
	for i := range rounds {
		// Alternate the order so neither always follows the other.
		if i%2 == 0 {
			u = append(u, run(false, i))
			t = append(t, run(true, i))
		} else {
			t = append(t, run(true, i))
			u = append(u, run(false, i))
		}
	}
	slices.Sort(u)
	slices.Sort(t)
	mu, mt := u[len(u)/2], t[len(t)/2]
	syncProbe(b, p)
	b.ReportMetric(mu.Seconds(), "untracked-s")
	b.ReportMetric(mt.Seconds(), "tracked-s")
	b.ReportMetric(mt.Seconds()/mu.Seconds(), "ratio")
	b.ReportMetric(float64(events.Load())/float64(rounds), "events/round")
	b.ReportMetric(bpfTime.Seconds()/float64(rounds), "bpf-s/round")
	b.ReportMetric(float64(attachedUntracked), "untracked-rounds-attached")
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
