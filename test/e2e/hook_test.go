package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
	"github.com/buildtrace/buildtrace/test/lab"
)

// tracerLinks counts the links on the sys_exit tracepoint and the cgroup
// (cgroup_skb) links that the lab's buildtraced holds, as the kernel lists
// its file descriptors (/proc/<pid>/fdinfo): what is attached, whatever
// the daemon says.
func tracerLinks(t *testing.T, l *lab.Lab) (sysExit, cgroup int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.Dir, "buildtraced.pid"))
	if err != nil {
		t.Fatalf("buildtraced's pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("buildtraced's pid %q: %v", b, err)
	}
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fdinfo")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("buildtraced's descriptors: %v", err)
	}
	for _, e := range ents {
		info, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		s := string(info)
		if strings.Contains(s, "link_type:\traw_tracepoint") && strings.Contains(s, "tp_name:\tsys_exit") {
			sysExit++
		}
		if strings.Contains(s, "link_type:\tcgroup") {
			cgroup++
		}
	}
	return sysExit, cgroup
}

func tracerHealth(t *testing.T, ctx context.Context, l *lab.Lab) *tracerapi.Health {
	t.Helper()
	h, err := (&tracerapi.Client{Addr: l.TracerAddr}).Health(ctx)
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	if h.SyscallHook == nil || h.Ringbuf == nil {
		t.Fatalf("health has no syscallHook or ringbuf: %+v", h)
	}
	return h
}

// waitDetached waits until buildtraced holds no sys_exit or cgroup_skb
// link (the kernel says so) and its health agrees.
func waitDetached(t *testing.T, ctx context.Context, l *lab.Lab, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n, c := tracerLinks(t, l)
		h := tracerHealth(t, ctx, l)
		if n == 0 && c == 0 && !h.SyscallHook.Attached {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("with no build running, buildtraced still holds %d sys_exit and %d cgroup links after %v (health: %+v)", n, c, within, h.SyscallHook)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestTracerSyscallHookOnDemand (issue 12): every syscall on the host is
// slower while any syscall tracepoint is attached (and every packet while
// a cgroup_skb program is), so buildtraced attaches its sys_exit and
// packet programs only while traced containers can run. (a) With no build
// running it holds no such link, as the kernel lists them.
// (b) An unplanned traced container started while it is detached is
// either fully traced or its step says it was not (never silently short).
// (c) Afterwards the link is gone again.
func TestTracerSyscallHookOnDemand(t *testing.T) {
	l := tracerLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	waitDetached(t, ctx, l, 30*time.Second)
	before := tracerHealth(t, ctx, l)

	b := newTracedBuild(t, l, "echo a > /hook-a && mkdir /hook-d && mv /hook-a /hook-d/b && rm /hook-d/b && wget -q -O /dev/null http://"+l.Registry+"/v2/")
	s := runTraced(t, ctx, l, b)
	after := tracerHealth(t, ctx, l)
	if after.SyscallHook.Attaches <= before.SyscallHook.Attaches {
		t.Errorf("the hook was not attached for the build: before %+v, after %+v", before.SyscallHook, after.SyscallHook)
	}
	unhooked := s.Completeness.Unobserved["syscalls_unhooked"]
	if unhooked > 0 {
		// Lost the race with runc: said, and the step is incomplete.
		if s.Completeness.Complete || !strings.Contains(strings.Join(s.Completeness.Reasons, "\n"), "system call hook was not attached") {
			t.Errorf("a step with %d unhooked execs is not marked incomplete with the reason: %+v", unhooked, s.Completeness)
		}
		t.Logf("the container's first exec ran before the hook attached (counted: %d)", unhooked)
	} else {
		if !s.Completeness.Complete {
			t.Errorf("step incomplete: %+v", s.Completeness)
		}
		for _, w := range []struct{ op, path string }{{trace.OpCreate, "/hook-a"}, {trace.OpMkdir, "/hook-d"}, {trace.OpRename, "/hook-a"}, {trace.OpUnlink, "/hook-d/b"}} {
			if _, ok := findFileOp(s, w.op, w.path); !ok {
				t.Errorf("a complete step lacks %s %s: %+v", w.op, w.path, s.Files)
			}
		}
		// The packet counters are attached with the syscall hook.
		if d := destination(s, "tcp", "127.0.0.1", 5000); d == nil || d.BytesSent == 0 || d.BytesReceived == 0 {
			t.Errorf("wget's traffic to the registry is not counted: %+v", s.Network)
		}
	}
	if after.Ringbuf.Size == 0 || after.Ringbuf.HighWater == 0 {
		t.Errorf("ring buffer health after a build: %+v", after.Ringbuf)
	}
	waitDetached(t, ctx, l, 30*time.Second)
}
