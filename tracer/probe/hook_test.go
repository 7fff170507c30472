//go:build linux

package probe

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/bpf"
)

// sysExitLinks counts the links on the sys_exit tracepoint that process
// pid holds, as the kernel lists them in /proc/<pid>/fdinfo: what is
// attached, not what the probe thinks.
func sysExitLinks(t testing.TB, pid int) int {
	return countLinks(t, pid, "link_type:\traw_tracepoint", "tp_name:\tsys_exit")
}

// cgroupLinks counts the cgroup (cgroup_skb) links process pid holds.
func cgroupLinks(t testing.TB, pid int) int {
	return countLinks(t, pid, "link_type:\tcgroup")
}

func countLinks(t testing.TB, pid int, want ...string) int {
	t.Helper()
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fdinfo")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		s := string(b)
		all := true
		for _, w := range want {
			all = all && strings.Contains(s, w)
		}
		if all {
			n++
		}
	}
	return n
}

// detachAlone forgets every tracked cgroup but keep (other builds on this
// host: this probe's maps are its own, and the daemon would forget them
// once they end) and lets the hook detach.
func detachAlone(t *testing.T, p *Probe, keep ...uint64) {
	t.Helper()
	var (
		k    uint64
		v    bpf.BuildtraceCgStats
		keys []uint64
	)
	for it := p.objs.Tracked.Iterate(); it.Next(&k, &v); {
		if !slices.Contains(keep, k) {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		p.Forget(k)
	}
	p.hook.mu.Lock()
	p.hook.lastNeeded = time.Now().Add(-hookGrace)
	p.hook.mu.Unlock()
	p.hook.check()
}

// TestSyscallHookOnDemand: with SyscallsOnDemand the raw_tp/sys_exit link
// exists only while a container cgroup is tracked; an exec in a tracked
// cgroup while it is not attached is counted (Unhooked), never silent;
// once attached, a container's file changes are seen; once nothing is
// tracked, it is detached again.
func TestSyscallHookOnDemand(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := Load(ctx, Options{SyscallsOnDemand: true})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer p.Close()
	// Drive the checks from here, not the ticker, so the test decides
	// when the hook may attach.
	close(p.hook.stop)
	<-p.hook.done
	p.hook.stop = nil
	detachAlone(t, p)
	if n, c := sysExitLinks(t, os.Getpid()), cgroupLinks(t, os.Getpid()); n != 0 || c != 0 {
		t.Fatalf("%d sys_exit and %d cgroup links in the kernel with no container tracked", n, c)
	}

	// A container whose processes exec before the hook is attached.
	step := randHex(t, 16)
	early := mkCgroup(t, step, "early")
	earlyID := inode(t, early)
	dir := t.TempDir()
	env := []string{"PATH=/bin:/usr/bin"}
	// inCgroup's first exec is in the host's mount namespace, like runc's
	// re-exec: not counted. The script's exec of true is.
	if out, err := inCgroup(early, dir, env, "/bin/busybox true; echo x > early.txt").CombinedOutput(); err != nil {
		t.Fatalf("early script: %v\n%s", err, out)
	}
	if st := p.Stats(earlyID); st.Unhooked == 0 {
		t.Errorf("an exec while the hook was detached was not counted: %+v", st)
	}

	start := time.Now()
	p.hook.check() // what the ticker, Cgroups or Run would do
	t.Logf("attach took %v", time.Since(start))
	c := &collector{}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, c.add) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()
	syncProbe(t, p) // the marker needs no hook
	if !p.SyscallHook().Attached || sysExitLinks(t, os.Getpid()) != 1 || cgroupLinks(t, os.Getpid()) != 2 {
		t.Fatalf("hook not attached with a container tracked: %+v, %d sys_exit links, %d cgroup links", p.SyscallHook(), sysExitLinks(t, os.Getpid()), cgroupLinks(t, os.Getpid()))
	}
	late := mkCgroup(t, step, "late")
	lateID := inode(t, late)
	if out, err := inCgroup(late, dir, env, "/bin/busybox true; echo y > late.txt").CombinedOutput(); err != nil {
		t.Fatalf("late script: %v\n%s", err, out)
	}
	syncProbe(t, p)
	if st := p.Stats(lateID); st.Unhooked != 0 {
		t.Errorf("execs counted as unhooked while the hook was attached: %+v", st)
	}
	var sawLate bool
	for _, ev := range c.all() {
		if ev.CgroupID == lateID && ev.Kind == KindFile && ev.File != nil && strings.HasSuffix(ev.File.Path, "/late.txt") {
			sawLate = true
		}
	}
	if !sawLate {
		t.Errorf("late.txt's creation was not seen with the hook attached")
	}

	// Nothing tracked (the daemon forgets ended containers and the step
	// directories): detached once the grace period is over.
	for _, d := range []string{late, early, filepath.Dir(late), filepath.Dir(filepath.Dir(late))} {
		if err := os.Remove(d); err != nil {
			t.Fatal(err)
		}
	}
	var (
		k    uint64
		v    bpf.BuildtraceCgStats
		keys []uint64
	)
	for it := p.objs.Tracked.Iterate(); it.Next(&k, &v); {
		keys = append(keys, k) // the step directories
	}
	for _, k := range keys {
		p.Forget(k)
	}
	p.hook.check()
	if !p.SyscallHook().Attached {
		t.Errorf("detached before the grace period")
	}
	p.hook.mu.Lock()
	p.hook.lastNeeded = time.Now().Add(-hookGrace)
	p.hook.mu.Unlock()
	p.hook.check()
	if p.SyscallHook().Attached || sysExitLinks(t, os.Getpid()) != 0 || cgroupLinks(t, os.Getpid()) != 0 {
		t.Errorf("hook still attached with nothing tracked: %+v, %d sys_exit links, %d cgroup links", p.SyscallHook(), sysExitLinks(t, os.Getpid()), cgroupLinks(t, os.Getpid()))
	}
	syncProbe(t, p)

	// A build's plan holds it while its frontend lives.
	var alive atomic.Bool
	alive.Store(true)
	if err := p.HoldSyscalls("plan/x", time.Hour, alive.Load); err != nil {
		t.Fatal(err)
	}
	if !p.SyscallHook().Attached || sysExitLinks(t, os.Getpid()) != 1 {
		t.Fatalf("a hold did not attach the hook: %+v", p.SyscallHook())
	}
	p.hook.mu.Lock()
	p.hook.lastNeeded = time.Now().Add(-hookGrace)
	p.hook.mu.Unlock()
	p.hook.check()
	if !p.SyscallHook().Attached {
		t.Fatalf("detached while held")
	}
	alive.Store(false) // the frontend exited without asking for its trace
	p.hook.check()     // drops the hold; the grace period starts
	p.hook.mu.Lock()
	p.hook.lastNeeded = time.Now().Add(-hookGrace)
	p.hook.mu.Unlock()
	p.hook.check()
	if st := p.SyscallHook(); st.Attached || st.Holds != 0 {
		t.Errorf("still attached or held after the holder died: %+v", st)
	}
}

// TestSyscallHookDormant: a container cgroup found empty at load (left by
// a runtime that died) does not keep the hook attached, until a process
// runs in it.
func TestSyscallHookDormant(t *testing.T) {
	requireRoot(t)
	left := mkCgroup(t, randHex(t, 16), "left")
	p, err := Load(context.Background(), Options{SyscallsOnDemand: true})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer p.Close()
	close(p.hook.stop)
	<-p.hook.done
	p.hook.stop = nil
	detachAlone(t, p, inode(t, left))
	if st := p.SyscallHook(); st.Attached {
		t.Fatalf("attached with only an empty cgroup found at load: %+v", st)
	}
	cmd := inCgroup(left, t.TempDir(), []string{"PATH=/bin"}, "/bin/busybox sleep 1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !populated(left); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the process never joined the cgroup")
		}
	}
	p.hook.check()
	if !p.SyscallHook().Attached {
		t.Errorf("not attached while a process runs in a cgroup found empty at load")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); populated(left); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the cgroup stayed populated")
		}
	}
	detachAlone(t, p, inode(t, left))
	if p.SyscallHook().Attached {
		var k uint64
		var v bpf.BuildtraceCgStats
		var ids []uint64
		for it := p.objs.Tracked.Iterate(); it.Next(&k, &v); {
			ids = append(ids, k)
		}
		t.Errorf("still attached once the cgroup found empty at load (%d) is empty again; tracked: %v", inode(t, left), ids)
	}
}
