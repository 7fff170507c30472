package e2e

import (
	"context"
	"fmt"
	"math"
	"os/exec"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/test/lab"
)

// BenchmarkHostCost measures what buildtraced costs a process that is not
// in any build: hostload's 3 M one-byte reads of /dev/zero and 300 k
// open+close, run on the host, with the lab's buildtraced running and
// stopped (killed with SIGTERM and started again with hack/lab.sh up, so
// its BPF programs are detached), in BUILDTRACE_BENCH_ROUNDS rounds
// (default 5) whose order alternates. Each state runs the workload
// BUILDTRACE_HOSTCOST_REPS times (default 2) on an idle host, then once
// beside a build step that keeps creating files and running processes:
// traced with buildtraced running, untraced with it stopped. That second
// pair is what a busy build host pays: the hooks the traced step turns on
// and the daemon's own CPU. Reported: the medians and their ratios
// (idle-ratio, target ≤ 1.02; busy-ratio, no target).
func BenchmarkHostCost(b *testing.B) {
	l := lab.Require(b)
	l.RequireTracer(b)
	rounds := benchRounds(b, 5)
	reps := max(1, benchEnvInt(b, "BUILDTRACE_HOSTCOST_REPS", 2))
	hl := hostloadBinary(b, l)
	// Whatever happens, leave the lab's tracer running.
	b.Cleanup(func() {
		if !tracerHealthy(l) {
			startTracer(b, l)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rounds)*10*time.Minute)
	defer cancel()

	workload := func() (secs, end float64) {
		out, err := exec.CommandContext(ctx, hl, "syscalls").CombinedOutput()
		if err != nil {
			b.Fatalf("hostload syscalls: %v\n%s", err, out)
		}
		s, e := window(b, string(out))
		return e - s, e
	}
	warm, _ := workload()
	// The step must outlast the workload, slowed down as it may be.
	stepSecs := int(math.Ceil(max(8, 4*warm+2)))
	dir := hostloadContext(b, l, fmt.Sprintf("FROM %s\nCOPY hostload /hostload\nRUN --mount=type=tmpfs,target=/x /hostload busy -duration %ds -dir /x\n",
		l.BaseImage, stepSecs))

	busy := func(traced bool) float64 {
		type built struct {
			out string
			err error
		}
		done := make(chan struct{})
		ch := make(chan built, 1)
		tb := tracedBuild{traceID: randHex(16), stepID: steptag.NewID([]byte(b.Name() + randHex(8))), dir: dir}
		go func() {
			defer close(done)
			if traced {
				res := tb.run(ctx, l)
				ch <- built{res.Output, res.Err}
				return
			}
			res := l.Buildx(ctx, lab.Build{Context: dir, Args: []string{"--no-cache"}})
			ch <- built{res.Output, res.Err}
		}()
		started := waitProcess(b, []string{"/hostload", "busy"}, done)
		var secs, end float64
		if started {
			secs, end = workload()
		}
		<-done
		res := <-ch
		if res.err != nil {
			b.Fatalf("busy step (traced=%v): %v\n%s", traced, res.err, res.out)
		}
		if !started {
			b.Fatalf("busy step (traced=%v) ended before it was seen running:\n%s", traced, res.out)
		}
		if _, stepEnd := window(b, res.out); stepEnd < end {
			b.Fatalf("the busy step ended %.1fs before the host workload did; make it longer", end-stepEnd)
		}
		if traced {
			bt := fetchSignedTrace(b, ctx, l, tb.traceID)
			if len(bt.Steps) != 1 || !bt.Steps[0].Completeness.Complete {
				b.Fatalf("busy traced build %s: want one complete step, got %+v", tb.traceID, bt.Steps)
			}
		}
		return secs
	}

	var idleOn, idleOff, busyOn, busyOff []float64
	running := true
	for r := range rounds {
		order := []bool{false, true}
		if r%2 == 1 {
			order = []bool{true, false}
		}
		for _, on := range order {
			if on != running {
				if on {
					startTracer(b, l)
					time.Sleep(time.Second) // let its start-up scan settle
				} else {
					stopTracer(b, l)
				}
				running = on
			}
			if on {
				// Idle is between builds: the hook a traced step
				// attached is let go a few seconds after it, and the
				// daemon has finished with the build before (sealing,
				// signing and storing the busy arm's trace, or its
				// start-up scan), which is that build's cost, not an
				// idle host's.
				waitHookDetached(b, ctx, l)
				waitDaemonQuiet(b, l)
			}
			if on && r == 0 {
				b.Logf("buildtraced running, idle host: syscall hook %s", hookState(l))
			}
			for range reps {
				s, _ := workload()
				if on {
					idleOn = append(idleOn, s)
				} else {
					idleOff = append(idleOff, s)
				}
			}
			s := busy(on)
			if on {
				busyOn = append(busyOn, s)
			} else {
				busyOff = append(busyOff, s)
			}
		}
	}
	if !running {
		startTracer(b, l)
	}
	io, ix := medianSeconds(idleOn), medianSeconds(idleOff)
	bo, bx := medianSeconds(busyOn), medianSeconds(busyOff)
	b.ReportMetric(ix, "idle-stopped-s")
	b.ReportMetric(io, "idle-running-s")
	b.ReportMetric(io/ix, "idle-ratio")
	b.ReportMetric(bx, "busy-stopped-s")
	b.ReportMetric(bo, "busy-running-s")
	b.ReportMetric(bo/bx, "busy-ratio")
	// In round order (a benchmark's log is cut at 10 lines).
	b.Logf("idle: stopped %.3f, running %.3f → ratio of medians %.3f (target ≤ 1.02)", idleOff, idleOn, io/ix)
	b.Logf("beside a build step: untraced+stopped %.3f, traced+running %.3f → ratio of medians %.3f", busyOff, busyOn, bo/bx)
}

// waitDaemonQuiet waits (up to a minute) until buildtraced uses less than
// 2 % of a CPU over half a second.
func waitDaemonQuiet(b *testing.B, l *lab.Lab) {
	b.Helper()
	pid := daemonPID(b, l)
	prev, err := readProcStat(pid)
	if err != nil {
		b.Fatalf("buildtraced: %v", err)
	}
	start := time.Now()
	for time.Since(start) < time.Minute {
		time.Sleep(500 * time.Millisecond)
		cur, err := readProcStat(pid)
		if err != nil {
			b.Fatalf("buildtraced: %v", err)
		}
		// 1 tick in half a second is 2 % of a CPU.
		if cur.cpuTicks-prev.cpuTicks <= 1 {
			return
		}
		prev = cur
	}
	b.Logf("buildtraced still busy after a minute: measuring anyway")
}
