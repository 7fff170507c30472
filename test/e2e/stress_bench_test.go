package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/test/lab"
)

// BenchmarkStress drives events into buildtraced from concurrent traced
// steps (separate builds) for a while and reports the rate, what was lost,
// and what the machine spent: the daemon's CPU and RSS, its BPF programs'
// run time, the steps' own CPU (from their signed traces), the host's busy
// CPUs, and the ring buffer's high-water mark (when GET /v1/health has it).
// Each step runs `hostload storm`: read-only opens of 64 tmpfs files (one
// file event each; the trace keeps distinct read paths), a chmod every
// 16th call up to 400,000 per step (file changes, each listed), and a
// fork+exec of /bin/true every 2,000 calls (fork, exec, exit events).
//
//	BUILDTRACE_STRESS_STEPS    concurrent steps (default 2)
//	BUILDTRACE_STRESS_SECONDS  how long each step runs (default 30)
//	BUILDTRACE_STRESS_RATE     calls per second for all steps together
//	                           (default 500000; 0: as fast as they can)
//
// The target is 500,000 events/s with none lost. When the rate falls
// short, the busy CPUs say what bounds it: the host saturated (then the
// split between daemon, BPF and steps), or the ring buffer full (losses).
func BenchmarkStress(b *testing.B) {
	l := lab.Require(b)
	l.RequireTracer(b)
	steps := max(1, benchEnvInt(b, "BUILDTRACE_STRESS_STEPS", 2))
	secs := max(1, benchEnvInt(b, "BUILDTRACE_STRESS_SECONDS", 30))
	rate := benchEnvInt(b, "BUILDTRACE_STRESS_RATE", 500_000)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second+10*time.Minute)
	defer cancel()

	dir := hostloadContext(b, l, fmt.Sprintf("FROM %s\nCOPY hostload /hostload\nRUN --mount=type=tmpfs,target=/x /hostload storm -duration %ds -rate %d -dir /x\n",
		l.BaseImage, secs, rate/steps))
	// Warm BuildKit's cache of the context and base with a RUN that does
	// nothing, so the steps start together.
	warm := filepath.Join(dir, "Dockerfile.warm")
	if err := os.WriteFile(warm, []byte(fmt.Sprintf("FROM %s\nCOPY hostload /hostload\nRUN true\n", l.BaseImage)), 0o644); err != nil {
		b.Fatal(err)
	}
	if res := l.Buildx(ctx, lab.Build{Context: dir, Dockerfile: warm}); res.Err != nil {
		b.Fatalf("warm-up build: %v\n%s", res.Err, res.Output)
	}

	// Count the BPF programs' run time while the steps run.
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Logf("BPF run-time stats unavailable: %v", err)
	} else {
		defer stats.Close()
	}
	pid := daemonPID(b, l)

	type sample struct {
		at        float64 // boot time
		daemon    procStat
		progs     map[string]progRun
		bpfNs     uint64
		busy, all uint64
		highWater int64
	}
	var (
		mu      sync.Mutex
		samples []sample
		haveRB  bool
		ringSz  int64
	)
	take := func() {
		st, err := readProcStat(pid)
		if err != nil {
			b.Errorf("buildtraced (pid %d): %v", pid, err)
			return
		}
		progs, _ := bpfRuntime(pid)
		busy, all := hostCPU(b)
		s := sample{at: boottime(b), daemon: st, progs: progs, bpfNs: bpfTotal(progs), busy: busy, all: all, highWater: -1}
		hctx, hcancel := context.WithTimeout(ctx, 2*time.Second)
		if h, err := tracerHealthExtra(hctx, l); err == nil && h.Ringbuf != nil {
			rb := h.Ringbuf
			s.highWater = rb.HighWater
			mu.Lock()
			haveRB, ringSz = true, rb.Size
			mu.Unlock()
		}
		hcancel()
		mu.Lock()
		samples = append(samples, s)
		mu.Unlock()
	}
	stop := make(chan struct{})
	sampled := make(chan struct{})
	take()
	go func() {
		defer close(sampled)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				take()
				return
			case <-t.C:
				take()
			}
		}
	}()

	type stepResult struct {
		tb  tracedBuild
		out string
		err error
	}
	results := make([]stepResult, steps)
	var wg sync.WaitGroup
	for i := range steps {
		results[i].tb = tracedBuild{traceID: randHex(16), stepID: steptag.NewID([]byte(b.Name() + randHex(8))), dir: dir}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := results[i].tb.run(ctx, l)
			results[i].out, results[i].err = res.Output, res.Err
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled

	var (
		winStart, winEnd     float64
		emitted, lost, cpuNs uint64
		incomplete           []string
	)
	for i, r := range results {
		if r.err != nil {
			b.Fatalf("stress step %d: %v\n%s", i, r.err, r.out)
		}
		s, e := window(b, r.out)
		if i == 0 || s < winStart {
			winStart = s
		}
		winEnd = max(winEnd, e)
		bt := fetchSignedTrace(b, ctx, l, r.tb.traceID)
		if len(bt.Steps) != 1 {
			b.Fatalf("stress build %s: want 1 step, got %d", r.tb.traceID, len(bt.Steps))
		}
		st := bt.Steps[0]
		c := st.Completeness
		emitted += c.EventsEmitted
		lost += c.EventsDropped + c.EventsTruncated
		cpuNs += st.Resources.CPUUserNanos + st.Resources.CPUSystemNanos
		if !c.Complete {
			incomplete = append(incomplete, c.Reasons...)
		}
		b.Logf("step %d: %.1fs, events %d, dropped %d, truncated %d, files %d, processes %d, cpu %.1fs",
			i, e-s, c.EventsEmitted, c.EventsDropped, c.EventsTruncated, len(st.Files), st.Resources.Processes,
			float64(st.Resources.CPUUserNanos+st.Resources.CPUSystemNanos)/1e9)
	}
	win := winEnd - winStart

	// The samples nearest the window's ends, outside it.
	first, last := samples[0], samples[len(samples)-1]
	var maxRSS uint64
	highWater := int64(-1)
	for _, s := range samples {
		if s.at <= winStart {
			first = s
		}
		maxRSS = max(maxRSS, s.daemon.rssBytes)
		highWater = max(highWater, s.highWater)
	}
	for i := len(samples) - 1; i >= 0; i-- {
		if samples[i].at >= winEnd {
			last = samples[i]
		}
	}
	span := last.at - first.at
	daemonCores := float64(last.daemon.cpuTicks-first.daemon.cpuTicks) / userHZ / span
	bpfCores := float64(last.bpfNs-first.bpfNs) / 1e9 / span
	hostCores := float64(runtime.NumCPU()) * float64(last.busy-first.busy) / float64(last.all-first.all)
	rateGot := float64(emitted) / win

	b.ReportMetric(rateGot, "events/s")
	b.ReportMetric(float64(lost), "events-lost")
	b.ReportMetric(win, "seconds")
	b.ReportMetric(float64(steps), "steps")
	b.ReportMetric(daemonCores, "daemon-cpu-cores")
	b.ReportMetric(bpfCores, "bpf-cpu-cores")
	b.ReportMetric(float64(cpuNs)/1e9/win, "steps-cpu-cores")
	b.ReportMetric(hostCores, "host-busy-cores")
	// What else ran meanwhile (the steps' CPU includes their BPF time):
	// BuildKit, runc, and on a shared machine anything else.
	b.ReportMetric(hostCores-daemonCores-float64(cpuNs)/1e9/win, "other-cpu-cores")
	b.ReportMetric(float64(maxRSS)/(1<<20), "daemon-rss-MB")
	if emitted > 0 {
		b.ReportMetric(float64(last.bpfNs-first.bpfNs)/float64(emitted), "bpf-ns/event")
		b.ReportMetric(float64(last.daemon.cpuTicks-first.daemon.cpuTicks)/userHZ*1e9/float64(emitted), "daemon-ns/event")
	}
	mu.Lock()
	rb := haveRB
	mu.Unlock()
	hw := "n/a (GET /v1/health has no ringbuf)"
	if rb {
		b.ReportMetric(float64(highWater)/1024, "ringbuf-highwater-KB")
		hw = fmt.Sprintf("%d of %d bytes", highWater, ringSz)
	}
	b.Logf("%d steps for %.1fs: %d events, %.0f/s (asked %d calls/s), lost %d; daemon %.2f cores, BPF %.2f cores, steps %.2f cores, host busy %.2f of %d cores; daemon RSS max %.1f MB; ring high water %s",
		steps, win, emitted, rateGot, rate, lost, daemonCores, bpfCores, float64(cpuNs)/1e9/win, hostCores, runtime.NumCPU(), float64(maxRSS)/(1<<20), hw)
	// Each program's cost per run over the window: what each hook costs
	// (a metric each, since a benchmark's log is cut at 10 lines).
	bpfNames(last.progs)
	for id, r := range last.progs {
		f := first.progs[id]
		if n := r.cnt - f.cnt; n > 0 && r.name != "" {
			b.ReportMetric(float64(r.ns-f.ns)/float64(n), "bpf-"+r.name+"-ns/run")
			b.ReportMetric(float64(n)/span, "bpf-"+r.name+"-runs/s")
		}
	}
	switch {
	case lost > 0:
		b.Logf("bound: events were lost: the daemon did not drain the ring buffer in time")
	case rate > 0 && rateGot < 0.95*float64(rate) && hostCores > 0.9*float64(runtime.NumCPU()):
		b.Logf("bound: the host's CPUs are saturated (daemon %.2f, BPF %.2f, steps %.2f cores)", daemonCores, bpfCores, float64(cpuNs)/1e9/win)
	case rate > 0 && rateGot < 0.95*float64(rate):
		b.Logf("bound: neither CPU nor ring: the steps could not make calls faster (generator bound)")
	}
	if len(incomplete) > 0 {
		b.Logf("incomplete steps: %v", incomplete)
	}
}
