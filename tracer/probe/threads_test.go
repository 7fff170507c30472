//go:build linux

package probe

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadsEnv makes the test binary burn CPU on threads that end before
// the process does (see TestMain): its exit record must still count them.
const threadsEnv = "BUILDTRACE_PROBE_THREADS"

const (
	burnThreads = 8
	burnEach    = 50 * time.Millisecond
)

func burnOnThreads() int {
	var wg sync.WaitGroup
	for range burnThreads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Locked and never unlocked: the thread ends with the goroutine.
			runtime.LockOSThread()
			for threadCPU() < burnEach {
			}
		}()
	}
	wg.Wait()
	time.Sleep(100 * time.Millisecond) // the threads' exits are done
	fmt.Println("burnt")
	return 0
}

// threadCPU is the calling thread's CPU time.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		panic(err)
	}
	return time.Duration(ts.Nano())
}

// TestExitCountsEndedThreads: a process's CPU time includes its threads
// that exited before its last one (the exit hook keeps their accounts).
func TestExitCountsEndedThreads(t *testing.T) {
	requireRoot(t)
	p, c := startProbe(t)
	cg := mkCgroup(t, randHex(t, 16), "threads")
	cgID := inode(t, cg)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := inCgroup(cg, t.TempDir(), []string{threadsEnv + "=1"}, `exec "`+self+`"`).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	syncProbe(t, p)
	var exit *ExitInfo
	for _, ev := range c.all() {
		if ev.CgroupID == cgID && ev.Kind == KindExit {
			exit = ev.Exit
		}
	}
	if exit == nil {
		t.Fatal("no exit record for the process")
	}
	cpu := time.Duration(exit.CPUUserNanos + exit.CPUSystemNanos)
	if want := burnThreads * burnEach * 8 / 10; cpu < want {
		t.Fatalf("exit counts %v of CPU, want at least %v (%d threads of %v each)", cpu, want, burnThreads, burnEach)
	}
	t.Logf("CPU %v for %d threads of %v", cpu, burnThreads, burnEach)
}
