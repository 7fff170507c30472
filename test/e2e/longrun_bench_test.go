package e2e

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/test/lab"
)

// BenchmarkLongRunRSS runs many small builds through the buildtrace
// frontend (plan, one traced RUN, seal, attestation; a new NONCE build
// arg each time so the RUN runs: --no-cache through the buildtrace frontend
// was seen to serve the RUN from the cache) and samples buildtraced's RSS every 50 builds. It
// reports the RSS after the first sample interval (warmed up), after the last,
// the largest sample, the least-squares slope, and the growth from first
// to last (target ≤ 10 %).
//
//	BUILDTRACE_LONGRUN_BUILDS    builds (default 500)
//	BUILDTRACE_LONGRUN_PARALLEL  builds at a time (default 2)
//	BUILDTRACE_LONGRUN_EVERY     builds between RSS samples (default 50)
func BenchmarkLongRunRSS(b *testing.B) {
	l := lab.Require(b)
	l.RequireTracer(b)
	builds := max(1, benchEnvInt(b, "BUILDTRACE_LONGRUN_BUILDS", 500))
	par := max(1, benchEnvInt(b, "BUILDTRACE_LONGRUN_PARALLEL", 2))
	every := max(1, benchEnvInt(b, "BUILDTRACE_LONGRUN_EVERY", 50))
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(builds)*20*time.Second+5*time.Minute)
	defer cancel()
	dir := lab.WriteContext(b, map[string]string{
		"Dockerfile": fmt.Sprintf("# syntax=%s\nFROM %s\nARG NONCE\nRUN echo hello > /greeting\n", l.Frontend, l.BaseImage),
	})
	pid := daemonPID(b, l)
	// RSS (VmRSS: /proc/<pid>/stat's rss field), its anonymous part (the
	// Go heap and stacks) and its file-backed part (memory-mapped files:
	// the executable, and the store's bbolt index), and the store's size
	// on disk (index and blob files).
	var anon, file, store []float64
	state := filepath.Join(l.Dir, "tracer")
	rss := func() float64 {
		store = append(store, float64(storeBytes(state))/(1<<20))
		st, err := readProcStat(pid)
		if err != nil {
			b.Fatalf("buildtraced (pid %d) is gone: %v", pid, err)
		}
		anon = append(anon, rssAnonMB(b, pid))
		file = append(file, procStatusMB(b, pid, "RssFile"))
		return float64(st.rssBytes) / (1 << 20)
	}
	build := func(traceID string) error {
		cmd := exec.CommandContext(ctx, "docker", "buildx", "build", "--builder", l.Builder, "--progress", "quiet", "--build-arg", "NONCE="+traceID, dir)
		cmd.Env = append(os.Environ(), "TRACEPARENT=00-"+traceID+"-"+randHex(8)+"-01")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", traceID, err, out)
		}
		return nil
	}

	var (
		mu      sync.Mutex
		done    int
		xs, ys  []float64
		lastID  string
		failure error
	)
	start0 := rss()
	b.Logf("buildtraced RSS before: %.1f MB", start0)
	jobs := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				id := randHex(16)
				err := build(id)
				mu.Lock()
				if err != nil && failure == nil {
					failure = err
				}
				done++
				lastID = id
				if done%every == 0 {
					xs = append(xs, float64(done))
					ys = append(ys, rss())
				}
				mu.Unlock()
			}
		}()
	}
	for i := range builds {
		mu.Lock()
		f := failure
		mu.Unlock()
		if f != nil {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	took := time.Since(start)
	if failure != nil {
		b.Fatal(failure)
	}
	// The last build's trace is there, signed, with its RUN.
	if bt := fetchSignedTrace(b, ctx, l, lastID); len(bt.Steps) != 1 {
		b.Fatalf("build %s: want 1 traced step, got %d", lastID, len(bt.Steps))
	}
	if len(ys) == 0 {
		xs, ys = append(xs, float64(done)), append(ys, rss())
	}
	first, last, peak := ys[0], ys[len(ys)-1], 0.0
	for _, y := range ys {
		peak = max(peak, y)
	}
	sl := slope(xs, ys)
	var pts []string
	for i := range xs {
		pts = append(pts, fmt.Sprintf("%.0f:%.1f", xs[i], ys[i]))
	}
	b.ReportMetric(float64(done), "builds")
	b.ReportMetric(first, "rss-first-MB")
	b.ReportMetric(last, "rss-last-MB")
	b.ReportMetric(peak, "rss-max-MB")
	b.ReportMetric(sl*1024, "rss-slope-KB/build")
	b.ReportMetric(100*(last-first)/first, "rss-growth-%")
	b.ReportMetric(took.Seconds()/float64(done), "s/build")
	// anon[0] is the sample before the first build.
	if len(store) == len(ys)+1 {
		b.ReportMetric(store[1], "store-first-MB")
		b.ReportMetric(store[len(store)-1], "store-last-MB")
	}
	if len(anon) == len(ys)+1 {
		a1, an := anon[1], anon[len(anon)-1]
		b.ReportMetric(a1, "rss-anon-first-MB")
		b.ReportMetric(an, "rss-anon-last-MB")
		b.ReportMetric(100*(an-a1)/a1, "rss-anon-growth-%")
		b.ReportMetric(slope(xs, anon[1:])*1024, "rss-anon-slope-KB/build")
	}
	if len(file) == len(ys)+1 {
		b.ReportMetric(file[1], "rss-file-first-MB")
		b.ReportMetric(file[len(file)-1], "rss-file-last-MB")
	}
	b.Logf("%d builds (%d at a time) in %v (%.2fs each); RSS MB by build: before %.1f, %s; slope %.1f KB/build; anonymous RSS MB %.1f; file-backed RSS MB %.1f; store MB %.1f",
		done, par, took.Round(time.Second), took.Seconds()/float64(done), start0, strings.Join(pts, " "), sl*1024, anon, file, store)
}

// storeBytes is the size of the tracer's store under state: the bbolt
// file(s) and the blob files.
func storeBytes(state string) int64 {
	var n int64
	for _, f := range []string{"traces.db", "index.db"} {
		if fi, err := os.Stat(filepath.Join(state, f)); err == nil {
			n += fi.Size()
		}
	}
	filepath.WalkDir(filepath.Join(state, "blobs"), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
