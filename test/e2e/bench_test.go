package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/sign"
	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
	"github.com/buildtrace/buildtrace/test/lab"
)

const (
	untarFiles = 50_000
	untarDirs  = 250
)

// untarRun times itself with /proc/uptime (busybox date has no %N), so
// the measurement covers only the file work, not BuildKit's or runc's.
const untarRun = `s=$(cut -d' ' -f1 /proc/uptime); mkdir /x && tar xf /files.tar -C /x && rm -rf /x; ` +
	`e=$(cut -d' ' -f1 /proc/uptime); echo "ELAPSED $s $e"`

// untarRunTmpfs does the same on a tmpfs. On the container's overlay the
// untar's time is dominated and made erratic by ext4's inode allocator,
// which after a mass deletion scans for inodes not recently deleted
// (ext4_create → recently_deleted, 2 to 30 s for the same tar, seen with
// perf); on tmpfs the calls the tracer hooks are the same and the time is
// steady, so the ratio shows the tracer's cost.
const untarRunTmpfs = `s=$(cut -d' ' -f1 /proc/uptime); tar xf /files.tar -C /x && rm -rf /x/*; ` +
	`e=$(cut -d' ' -f1 /proc/uptime); echo "ELAPSED $s $e"`

var untarElapsedRE = regexp.MustCompile(`ELAPSED ([0-9.]+) ([0-9.]+)`)

// BenchmarkUntarDelete50k measures what tracing costs a file-heavy RUN:
// it untars 50,000 small files and deletes them, once untraced (no cgroup
// parent: buildtraced runs but does not follow the container) and once
// traced (cgroup parent buildtrace/<step>, TRACEPARENT), interleaved, for
// BUILDTRACE_BENCH_ROUNDS rounds (default 5; b.N is not used: one round
// is two full builds). It reports the median in-container times, their
// ratio and, from the signed traces, the events emitted and lost.
// Sub-benchmark rootfs untars into the container's root as a RUN usually
// does; tmpfs into a RUN --mount=type=tmpfs (see untarRunTmpfs).
func BenchmarkUntarDelete50k(b *testing.B) {
	l := lab.Require(b)
	if _, err := (&tracerapi.Client{Addr: l.TracerAddr}).Health(context.Background()); err != nil {
		b.Fatalf("buildtraced is not running in the lab (make build && make lab): %v", err)
	}
	rounds := 5
	if s := os.Getenv("BUILDTRACE_BENCH_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("BUILDTRACE_BENCH_ROUNDS=%q: want a positive integer", s)
		}
		rounds = n
	}
	tarball := smallFilesTar(b)
	for _, v := range []struct{ name, run string }{
		{"rootfs", "RUN " + untarRun},
		{"tmpfs", "RUN --mount=type=tmpfs,target=/x " + untarRunTmpfs},
	} {
		b.Run(v.name, func(b *testing.B) {
			dir := b.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "files.tar"), tarball, 0o644); err != nil {
				b.Fatal(err)
			}
			df := fmt.Sprintf("FROM %s\nCOPY files.tar /\n%s\n", l.BaseImage, v.run)
			if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
				b.Fatal(err)
			}
			benchUntar(b, l, dir, rounds)
		})
	}
}

func benchUntar(b *testing.B, l *lab.Lab, dir string, rounds int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rounds)*10*time.Minute)
	defer cancel()
	var (
		untraced, traced, paired []float64
		emitted, lost            uint64
		fileOps                  int
		steps, complete          int
		incompleteReasons        []string
	)
	for r := range rounds {
		// Untraced: the same build without a cgroup parent. The order
		// alternates, so neither kind always runs right after the
		// other's mass deletion (see untarRunTmpfs).
		untracedRun := func() float64 {
			res := l.Buildx(ctx, lab.Build{Context: dir, Args: []string{"--no-cache"}})
			if res.Err != nil {
				b.Fatalf("untraced build: %v\n%s", res.Err, res.Output)
			}
			return untarElapsed(b, res.Output)
		}
		var u float64
		if r%2 == 0 {
			u = untracedRun()
		}
		tb := tracedBuild{traceID: randHex(16), stepID: steptag.NewID([]byte(b.Name() + randHex(8))), dir: dir}
		res := tb.run(ctx, l)
		if res.Err != nil {
			b.Fatalf("traced build: %v\n%s", res.Err, res.Output)
		}
		t := untarElapsed(b, res.Output)
		if r%2 == 1 {
			u = untracedRun()
		}
		untraced = append(untraced, u)
		traced = append(traced, t)
		paired = append(paired, t/u)

		bt := fetchSignedTrace(b, ctx, l, tb.traceID)
		if len(bt.Steps) != 1 {
			b.Fatalf("traced build %s: want 1 step, got %d (pending %v)", tb.traceID, len(bt.Steps), bt.Pending)
		}
		var ops int
		for _, s := range bt.Steps {
			c := s.Completeness
			emitted += c.EventsEmitted
			lost += c.EventsDropped + c.EventsTruncated
			ops += len(s.Files)
			steps++
			if c.Complete {
				complete++
			} else {
				incompleteReasons = append(incompleteReasons, c.Reasons...)
			}
		}
		fileOps += ops
		b.Logf("round %d: untraced %.2fs traced %.2fs (file ops %d)", r+1, u, t, ops)
	}

	mu, mt := medianSeconds(untraced), medianSeconds(traced)
	ratio := mt / mu
	b.ReportMetric(mu, "untraced-s")
	b.ReportMetric(mt, "traced-s")
	b.ReportMetric(ratio, "ratio")
	b.ReportMetric(medianSeconds(paired), "paired-ratio")
	b.ReportMetric(float64(emitted)/float64(rounds), "events/build")
	b.ReportMetric(float64(lost), "events-lost")
	b.ReportMetric(float64(fileOps)/float64(rounds), "fileops/build")
	b.ReportMetric(float64(complete)/float64(steps), "complete-frac")
	b.Logf("untraced %.2f median %.3fs; traced %.2f median %.3fs; ratio of medians %.3f, median of round ratios %.3f",
		untraced, mu, traced, mt, ratio, medianSeconds(paired))
	b.Logf("events emitted %d (%d per build), dropped+truncated %d, file ops per build %d, complete steps %d/%d",
		emitted, emitted/uint64(rounds), lost, fileOps/rounds, complete, steps)
	if len(incompleteReasons) > 0 {
		b.Errorf("incomplete traced steps: %v", incompleteReasons)
	}
	// Every create and unlink of the 50,000 files is a promised file change.
	if fileOps/rounds < 2*untarFiles {
		b.Errorf("traces hold %d file operations per build, want at least %d (create + unlink per file)",
			fileOps/rounds, 2*untarFiles)
	}
}

// smallFilesTar returns a deterministic tar of untarFiles files of about
// 100 bytes in untarDirs directories.
func smallFilesTar(tb testing.TB) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1_700_000_000, 0)
	for d := range untarDirs {
		name := fmt.Sprintf("d%03d/", d)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: mtime, Format: tar.FormatUSTAR}); err != nil {
			tb.Fatal(err)
		}
		for f := range untarFiles / untarDirs {
			body := bytes.Repeat([]byte(fmt.Sprintf("file %d/%d ", d, f)), 12)[:100]
			h := &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("%sf%05d.txt", name, f), Mode: 0o644,
				Size: int64(len(body)), ModTime: mtime, Format: tar.FormatUSTAR}
			if err := tw.WriteHeader(h); err != nil {
				tb.Fatal(err)
			}
			if _, err := tw.Write(body); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// untarElapsed returns the seconds the RUN measured for itself.
func untarElapsed(tb testing.TB, out string) float64 {
	tb.Helper()
	m := untarElapsedRE.FindAllStringSubmatch(out, -1)
	if len(m) != 1 {
		tb.Fatalf("want one ELAPSED line in the build output, got %d:\n%s", len(m), out)
	}
	s, err1 := strconv.ParseFloat(m[0][1], 64)
	e, err2 := strconv.ParseFloat(m[0][2], 64)
	if err1 != nil || err2 != nil || e < s {
		tb.Fatalf("bad ELAPSED line %q", m[0][0])
	}
	return e - s
}

func medianSeconds(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// fetchSignedTrace is fetchTrace for benchmarks.
func fetchSignedTrace(tb testing.TB, ctx context.Context, l *lab.Lab, traceID string) *trace.Build {
	tb.Helper()
	env, err := tracerapi.AdminClient(l.TracerAdmin).Trace(ctx, traceID, 2*time.Minute)
	if err != nil {
		tb.Fatalf("fetching trace %s: %v", traceID, err)
	}
	v, err := sign.LoadVerifier(ctx, l.TracerPub)
	if err != nil {
		tb.Fatal(err)
	}
	payload, err := sign.Verify(ctx, v, env, trace.PayloadType)
	if err != nil {
		tb.Fatalf("trace %s does not verify with %s: %v", traceID, l.TracerPub, err)
	}
	var bt trace.Build
	if err := json.Unmarshal(payload, &bt); err != nil {
		tb.Fatal(err)
	}
	if bt.BuildTraceID != traceID {
		tb.Fatalf("signed trace is for build %s, asked for %s", bt.BuildTraceID, traceID)
	}
	return &bt
}
