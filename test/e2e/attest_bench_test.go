package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/test/lab"
)

// BenchmarkAttestation builds and pushes, through the buildtrace frontend,
// an image whose one RUN creates no file and one whose RUN creates 10,000
// (a new NONCE build arg each time, so the RUN runs), and reports the size
// of each runtime-trace attestation (the in-toto
// statement layer), the growth per 10,000 file operations, and how long
// `buildtrace verify` takes on each (median of BUILDTRACE_BENCH_ROUNDS,
// default 5; a CLI process reading the registry on loopback).
func BenchmarkAttestation(b *testing.B) {
	l := lab.Require(b)
	l.RequireTracer(b)
	rounds := benchRounds(b, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cli := filepath.Join(l.Repo, "bin", "buildtrace")
	type point struct {
		files  int
		bytes  int64
		verify float64
	}
	var pts []point
	for _, n := range []int{0, 10_000} {
		run := "RUN mkdir /out"
		if n > 0 {
			run = fmt.Sprintf(`RUN mkdir /out && cd /out && i=0 && while [ $i -lt %d ]; do : > f$i; i=$((i+1)); done`, n)
		}
		dir := lab.WriteContext(b, map[string]string{
			"Dockerfile": fmt.Sprintf("# syntax=%s\nFROM %s\nARG NONCE\n%s\n", l.Frontend, l.BaseImage, run),
		})
		ref := l.Ref("bench-attest")
		l.MustBuild(b, ctx, lab.Build{Context: dir, Tag: ref, Push: true, Args: []string{"--build-arg", "NONCE=" + randHex(8)}})
		img := l.Image(b, ctx, ref)
		var size int64
		for _, a := range img.Attestations {
			if st, ok := a.Statement(attest.PredicateType); ok {
				size += int64(len(st.Data))
			}
		}
		if size == 0 {
			b.Fatalf("%s has no %s statement", ref, attest.PredicateType)
		}
		var times []float64
		for range rounds {
			start := time.Now()
			out, err := exec.CommandContext(ctx, cli, "verify", ref, "--key", l.TracerPub).CombinedOutput()
			if err != nil {
				b.Fatalf("buildtrace verify %s: %v\n%s", ref, err, out)
			}
			times = append(times, time.Since(start).Seconds())
		}
		pts = append(pts, point{files: n, bytes: size, verify: medianSeconds(times)})
		b.Logf("%d files: attestation %d bytes, verify %.3fs (runs %.3f)", n, size, medianSeconds(times), times)
	}
	b.ReportMetric(float64(pts[0].bytes)/1024, "attest-KB-0files")
	b.ReportMetric(float64(pts[1].bytes)/1024, "attest-KB-10kfiles")
	b.ReportMetric(float64(pts[1].bytes-pts[0].bytes)/1024, "attest-KB/10k-fileops")
	b.ReportMetric(pts[0].verify*1000, "verify-ms-0files")
	b.ReportMetric(pts[1].verify*1000, "verify-ms-10kfiles")
}
