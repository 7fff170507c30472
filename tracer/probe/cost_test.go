//go:build linux

package probe

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

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
