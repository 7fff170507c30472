package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
	"github.com/buildtrace/buildtrace/test/lab"
)

// Helpers of the performance benchmarks (make bench). Knobs, all optional:
//
//	BUILDTRACE_BENCH_ROUNDS   interleaved traced/untraced rounds (default per benchmark)
//	BUILDTRACE_STRESS_*       see BenchmarkStress
//	BUILDTRACE_LONGRUN_*      see BenchmarkLongRunRSS

// benchEnvInt reads a positive integer knob.
func benchEnvInt(b *testing.B, name string, def int) int {
	b.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		b.Fatalf("%s=%q: want a non-negative integer", name, s)
	}
	return n
}

func benchRounds(b *testing.B, def int) int {
	b.Helper()
	n := benchEnvInt(b, "BUILDTRACE_BENCH_ROUNDS", def)
	if n < 1 {
		b.Fatal("BUILDTRACE_BENCH_ROUNDS must be at least 1")
	}
	return n
}

var (
	hostloadOnce sync.Once
	hostloadPath string
	hostloadErr  error
)

// hostloadBinary builds hack/hostload (static) once per test binary.
func hostloadBinary(b *testing.B, l *lab.Lab) string {
	b.Helper()
	hostloadOnce.Do(func() {
		dir := filepath.Join(l.Dir, "bench")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			hostloadErr = err
			return
		}
		hostloadPath = filepath.Join(dir, "hostload")
		cmd := exec.Command("go", "build", "-trimpath", "-o", hostloadPath, "./hack/hostload")
		cmd.Dir = l.Repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			hostloadErr = fmt.Errorf("building hack/hostload: %v\n%s", err, out)
		}
	})
	if hostloadErr != nil {
		b.Fatal(hostloadErr)
	}
	return hostloadPath
}

// hostloadContext writes a build context holding the hostload binary and
// a Dockerfile.
func hostloadContext(b *testing.B, l *lab.Lab, dockerfile string) string {
	b.Helper()
	bin, err := os.ReadFile(hostloadBinary(b, l))
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hostload"), bin, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

var elapsedRE = regexp.MustCompile(`ELAPSED ([0-9.]+) ([0-9.]+)`)

// window returns the one ELAPSED line of out (boot-time seconds).
func window(b *testing.B, out string) (start, end float64) {
	b.Helper()
	m := elapsedRE.FindAllStringSubmatch(out, -1)
	if len(m) != 1 {
		b.Fatalf("want one ELAPSED line in the output, got %d:\n%s", len(m), out)
	}
	s, err1 := strconv.ParseFloat(m[0][1], 64)
	e, err2 := strconv.ParseFloat(m[0][2], 64)
	if err1 != nil || err2 != nil || e < s {
		b.Fatalf("bad ELAPSED line %q", m[0][0])
	}
	return s, e
}

// boottime is CLOCK_BOOTTIME in seconds, the clock hostload prints.
func boottime(b *testing.B) float64 {
	b.Helper()
	data, err := os.ReadFile("/proc/uptime")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(data))
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// stepArm is one way of running a step benchmark's build.
type stepArm int

const (
	armUntraced stepArm = iota // no cgroup parent: buildtraced runs but does not follow the step
	armFloor                   // untraced, beside an empty raw_tp/sys_exit program
	armTraced                  // cgroup parent buildtrace/<step> and TRACEPARENT
)

func (a stepArm) String() string {
	return [...]string{"untraced", "floor", "traced"}[a]
}

// stepRun is one build of a step benchmark.
type stepRun struct {
	seconds       float64 // what the step timed itself
	build         *trace.Build
	envelopeBytes int
}

// runStep builds dir once in the given arm, with --no-cache.
func runStep(b *testing.B, ctx context.Context, l *lab.Lab, dir string, arm stepArm) stepRun {
	b.Helper()
	if arm != armTraced {
		// The tracer keeps its syscall hook for a few seconds after the last
		// tracked step: an untraced step must not run under it.
		waitHookDetached(b, ctx, l)
		if arm == armFloor {
			defer attachEmptySysExit(b).Close()
		}
		res := l.Buildx(ctx, lab.Build{Context: dir, Args: []string{"--no-cache"}})
		if res.Err != nil {
			b.Fatalf("%s build: %v\n%s", arm, res.Err, res.Output)
		}
		s, e := window(b, res.Output)
		return stepRun{seconds: e - s}
	}
	tb := tracedBuild{traceID: randHex(16), stepID: steptag.NewID([]byte(b.Name() + randHex(8))), dir: dir}
	res := tb.run(ctx, l)
	if res.Err != nil {
		b.Fatalf("traced build: %v\n%s", res.Err, res.Output)
	}
	s, e := window(b, res.Output)
	bt, n := fetchSignedTraceSize(b, ctx, l, tb.traceID)
	return stepRun{seconds: e - s, build: bt, envelopeBytes: n}
}

// fetchSignedTraceSize is fetchSignedTrace that also returns the size of
// the signed envelope (JSON).
func fetchSignedTraceSize(b *testing.B, ctx context.Context, l *lab.Lab, traceID string) (*trace.Build, int) {
	b.Helper()
	bt := fetchSignedTrace(b, ctx, l, traceID)
	env, err := tracerapi.AdminClient(l.TracerAdmin).Trace(ctx, traceID, 2*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	data, err := json.Marshal(env)
	if err != nil {
		b.Fatal(err)
	}
	return bt, len(data)
}

// waitHookDetached waits until the lab's tracer has detached its syscall
// hook (a tracer that does not report it is taken as detached).
func waitHookDetached(b *testing.B, ctx context.Context, l *lab.Lab) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		h, err := tracerHealthExtra(ctx, l)
		if err != nil {
			b.Fatalf("tracer health: %v", err)
		}
		if h.SyscallHook == nil || !h.SyscallHook.Attached {
			return
		}
		if !h.SyscallHook.OnDemand {
			b.Fatal("the tracer's syscall hook is attached for good (--syscall-hook=always): untraced steps would pay it")
		}
		if time.Now().After(deadline) {
			b.Fatal("the tracer's syscall hook is still attached a minute after the last traced step")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// attachEmptySysExit attaches, from the benchmark process, a raw_tp/sys_exit
// program that only returns: what any system-call hook costs every task on
// this kernel (its slow system-call path and one program call per call),
// before a program does any work of its own.
func attachEmptySysExit(b *testing.B) io.Closer {
	b.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.RawTracepoint,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		License:      "GPL",
	})
	if err != nil {
		b.Fatalf("loading the empty sys_exit program: %v", err)
	}
	lk, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_exit", Program: prog})
	prog.Close() // the link holds it
	if err != nil {
		b.Fatalf("attaching the empty sys_exit program: %v", err)
	}
	return lk
}

// stepBench is one step benchmark: the build context (its Dockerfile's
// RUN prints one ELAPSED line, see window) and what it must show.
type stepBench struct {
	dir    string
	rounds int
	// floor adds a third arm: untraced, beside an empty sys_exit program.
	// It splits the traced cost into the kernel's share (floor-ratio,
	// floor/untraced) and the tracer's (over-floor-ratio, traced/floor).
	floor bool
	// minFileOps is the file operations each signed trace must hold.
	minFileOps int
}

// benchStep runs the arms in rounds whose order rotates, so that no arm
// always follows the same other, and reports the medians of the step's own
// times, the ratio of the medians (the verdict), the median of each round's
// traced/untraced ratio, and from the signed traces the events emitted and
// lost, the file operations and the envelope size. Every traced build must
// have one complete step.
func benchStep(b *testing.B, l *lab.Lab, sb stepBench) {
	arms := []stepArm{armUntraced, armTraced}
	if sb.floor {
		arms = []stepArm{armUntraced, armFloor, armTraced}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(sb.rounds*len(arms))*8*time.Minute)
	defer cancel()
	var (
		times         = map[stepArm][]float64{}
		paired        []float64
		emitted, lost uint64
		fileOps       int
		envBytes      int
		incomplete    []string
	)
	for r := range sb.rounds {
		got := map[stepArm]stepRun{}
		for i := range arms {
			arm := arms[(i+r)%len(arms)]
			got[arm] = runStep(b, ctx, l, sb.dir, arm)
			times[arm] = append(times[arm], got[arm].seconds)
		}
		t, u := got[armTraced], got[armUntraced].seconds
		if len(t.build.Steps) != 1 {
			b.Fatalf("traced build %s: want 1 step, got %d (pending %v)", t.build.BuildTraceID, len(t.build.Steps), t.build.Pending)
		}
		st := t.build.Steps[0]
		c := st.Completeness
		emitted += c.EventsEmitted
		lost += c.EventsDropped + c.EventsTruncated
		fileOps += len(st.Files)
		envBytes += t.envelopeBytes
		if !c.Complete {
			incomplete = append(incomplete, c.Reasons...)
		}
		if sb.minFileOps > 0 && len(st.Files) < sb.minFileOps {
			b.Errorf("round %d: the trace holds %d file operations, want at least %d", r+1, len(st.Files), sb.minFileOps)
		}
		paired = append(paired, t.seconds/u)
		floor := ""
		if sb.floor {
			floor = fmt.Sprintf(" floor %.3fs", got[armFloor].seconds)
		}
		b.Logf("round %d: untraced %.3fs%s traced %.3fs (events %d, file ops %d)", r+1, u, floor, t.seconds, c.EventsEmitted, len(st.Files))
	}
	mu, mt := medianSeconds(times[armUntraced]), medianSeconds(times[armTraced])
	b.ReportMetric(mu, "untraced-s")
	b.ReportMetric(mt, "traced-s")
	b.ReportMetric(mt/mu, "ratio")
	b.ReportMetric(medianSeconds(paired), "paired-ratio")
	if sb.floor {
		mf := medianSeconds(times[armFloor])
		b.ReportMetric(mf, "floor-s")
		b.ReportMetric(mf/mu, "floor-ratio")
		b.ReportMetric(mt/mf, "over-floor-ratio")
		b.Logf("floor (empty sys_exit program) %.3f median %.3fs: kernel share %.3f, tracer's share %.3f",
			times[armFloor], mf, mf/mu, mt/mf)
	}
	n := uint64(sb.rounds)
	b.ReportMetric(float64(emitted)/float64(n), "events/build")
	b.ReportMetric(float64(lost), "events-lost")
	b.ReportMetric(float64(fileOps)/float64(n), "fileops/build")
	b.ReportMetric(float64(envBytes)/float64(n)/1024, "envelope-KB")
	b.Logf("untraced %.3f median %.3fs; traced %.3f median %.3fs; ratio of medians %.3f, median of round ratios %.3f; events %d per build, lost %d",
		times[armUntraced], mu, times[armTraced], mt, mt/mu, medianSeconds(paired), emitted/n, lost)
	if len(incomplete) > 0 {
		b.Errorf("incomplete traced steps: %v", incomplete)
	}
}

// procStat is what /proc/<pid>/stat says of a process.
type procStat struct {
	cpuTicks uint64 // utime + stime, in clock ticks (USER_HZ, 100 on Linux)
	rssBytes uint64
}

const userHZ = 100

func readProcStat(pid int) (procStat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no command field", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 22 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// Fields after the command: state is field 3 of stat(5), so field n is f[n-3].
	ut, _ := strconv.ParseUint(f[14-3], 10, 64)
	st, _ := strconv.ParseUint(f[15-3], 10, 64)
	rss, _ := strconv.ParseUint(f[24-3], 10, 64)
	return procStat{cpuTicks: ut + st, rssBytes: rss * uint64(os.Getpagesize())}, nil
}

// rssAnonMB is RssAnon of /proc/<pid>/status in MiB.
func rssAnonMB(b *testing.B, pid int) float64 { return procStatusMB(b, pid, "RssAnon") }

// procStatusMB is a kB field of /proc/<pid>/status (RssAnon, RssFile) in MiB.
func procStatusMB(b *testing.B, pid int, field string) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatalf("buildtraced (pid %d): %v", pid, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err == nil {
				return kb / 1024
			}
		}
	}
	b.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}

// daemonPID is the lab's buildtraced.
func daemonPID(b *testing.B, l *lab.Lab) int {
	b.Helper()
	data, err := os.ReadFile(filepath.Join(l.Dir, "buildtraced.pid"))
	if err != nil {
		b.Fatalf("buildtraced's pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		b.Fatalf("buildtraced.pid: %v", err)
	}
	return pid
}

// hostCPU is /proc/stat's aggregate: busy and total ticks.
func hostCPU(b *testing.B) (busy, total uint64) {
	b.Helper()
	f, err := os.Open("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	fields := strings.Fields(sc.Text())
	for i, s := range fields[1:min(len(fields), 9)] {
		v, _ := strconv.ParseUint(s, 10, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// progRun is one BPF program's run-time statistics.
type progRun struct {
	name    string
	ns, cnt uint64
}

// bpfRuntime reads run_time_ns and run_cnt of each BPF program pid holds
// (from /proc/<pid>/fdinfo; counted only while BPF stats are enabled), by
// program ID.
func bpfRuntime(pid int) (map[string]progRun, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, err
	}
	progs := map[string]progRun{}
	for _, fd := range fds {
		link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if link != "anon_inode:bpf-prog" {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd.Name()))
		if err != nil {
			continue
		}
		kv := map[string]string{}
		for _, line := range strings.Split(string(info), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok {
				kv[k] = strings.TrimSpace(v)
			}
		}
		id := kv["prog_id"]
		if _, ok := progs[id]; ok || id == "" {
			continue
		}
		var r progRun
		r.ns, _ = strconv.ParseUint(kv["run_time_ns"], 10, 64)
		r.cnt, _ = strconv.ParseUint(kv["run_cnt"], 10, 64)
		progs[id] = r
	}
	return progs, nil
}

// bpfNames names the programs of a bpfRuntime answer.
func bpfNames(progs map[string]progRun) {
	for id, r := range progs {
		n, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			continue
		}
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(n))
		if err != nil {
			continue
		}
		if info, err := p.Info(); err == nil {
			r.name = info.Name
			progs[id] = r
		}
		p.Close()
	}
}

func bpfTotal(progs map[string]progRun) (ns uint64) {
	for _, r := range progs {
		ns += r.ns
	}
	return ns
}

// ringbufHealth is the ring-buffer part of GET /v1/health, when the
// tracer reports it (nil otherwise).
type ringbufHealth struct {
	Size      int64 `json:"size"`
	HighWater int64 `json:"highWater"`
}

// healthExtra is what GET /v1/health may say of the tracer's cost; each
// part is nil when this tracer does not report it.
type healthExtra struct {
	Ringbuf     *ringbufHealth `json:"ringbuf"`
	SyscallHook *struct {
		Attached bool `json:"attached"`
		OnDemand bool `json:"onDemand"`
	} `json:"syscallHook"`
}

func tracerHealthExtra(ctx context.Context, l *lab.Lab) (*healthExtra, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+l.TracerAddr+tracerapi.HealthPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var h healthExtra
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", tracerapi.HealthPath, err)
	}
	return &h, nil
}

// hookState says whether the tracer's syscall hook is attached, or n/a.
func hookState(l *lab.Lab) string {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	h, err := tracerHealthExtra(ctx, l)
	if err != nil || h.SyscallHook == nil {
		return "n/a"
	}
	return fmt.Sprintf("attached=%v", h.SyscallHook.Attached)
}

func tracerHealthy(l *lab.Lab) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := (&tracerapi.Client{Addr: l.TracerAddr}).Health(ctx)
	return err == nil
}

// stopTracer stops the lab's buildtraced (SIGTERM, as hack/lab.sh down
// does) and waits until the process is gone, so its BPF programs are
// detached.
func stopTracer(b *testing.B, l *lab.Lab) {
	b.Helper()
	pid := daemonPID(b, l)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		b.Fatalf("stopping buildtraced (pid %d): %v", pid, err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		if err == nil {
			if i := bytes.LastIndexByte(data, ')'); i > 0 && len(data) > i+2 && data[i+2] == 'Z' {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("buildtraced (pid %d) did not exit within 20s of SIGTERM", pid)
		}
	}
}

// startTracer starts the lab's buildtraced again (hack/lab.sh up) and waits
// until it answers.
func startTracer(b *testing.B, l *lab.Lab) {
	b.Helper()
	l.Up(b)
	l.RequireTracer(b)
}

// waitProcess waits until a process whose argv starts with argv runs
// (any namespace: /proc of the host), or done closes.
func waitProcess(b *testing.B, argv []string, done <-chan struct{}) bool {
	b.Helper()
	want := []byte(strings.Join(argv, "\x00") + "\x00")
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			if e.Name()[0] < '0' || e.Name()[0] > '9' {
				continue
			}
			cl, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err == nil && bytes.HasPrefix(cl, want) {
				return true
			}
		}
		select {
		case <-done:
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	b.Fatalf("no process %q appeared within 3 minutes", argv)
	return false
}

// slope is the least-squares slope of ys over xs.
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}
