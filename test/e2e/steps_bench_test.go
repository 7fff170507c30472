package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/test/lab"
)

// BenchmarkStepsPerBuild measures what each traced RUN adds to a build:
// a Dockerfile of 1 and of 10 chained trivial RUNs (a new NONCE build arg
// each time, so every RUN runs), through
// BuildKit's own Dockerfile frontend image and through the buildtrace
// frontend, interleaved, BUILDTRACE_BENCH_ROUNDS rounds (default 3). It
// reports the medians of whole build times, the time per extra step of
// each frontend ((t10 - t1) / 9) and their difference: the tracer's and
// frontend's cost per step (tagging, plan, following the container,
// sealing the step with its diff, signing).
func BenchmarkStepsPerBuild(b *testing.B) {
	l := lab.Require(b)
	l.RequireTracer(b)
	rounds := benchRounds(b, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	stock := stockFrontendImage(b, ctx, l)
	dockerfile := func(frontend string, n int) string {
		var sb strings.Builder
		fmt.Fprintf(&sb, "# syntax=%s\nFROM %s\nARG NONCE\n", frontend, l.BaseImage)
		for i := range n {
			fmt.Fprintf(&sb, "RUN echo %d > /f%d\n", i, i)
		}
		return sb.String()
	}
	type variant struct {
		name  string
		steps int
		dir   string
		times []float64
	}
	var vs []*variant
	for _, fe := range []struct{ name, image string }{{"stock", stock}, {"buildtrace", l.Frontend}} {
		for _, n := range []int{1, 10} {
			vs = append(vs, &variant{name: fe.name, steps: n, dir: lab.WriteContext(b, map[string]string{"Dockerfile": dockerfile(fe.image, n)})})
		}
	}
	// Pull both frontends and the base once.
	for _, v := range vs {
		l.MustBuild(b, ctx, lab.Build{Context: v.dir})
	}
	for r := range rounds {
		for i := range vs {
			v := vs[(i+r)%len(vs)]
			res := l.MustBuild(b, ctx, lab.Build{Context: v.dir, Args: []string{"--build-arg", "NONCE=" + randHex(8)}})
			v.times = append(v.times, res.Duration.Seconds())
		}
	}
	med := func(name string, steps int) float64 {
		for _, v := range vs {
			if v.name == name && v.steps == steps {
				return medianSeconds(v.times)
			}
		}
		panic(name)
	}
	s1, s10, t1, t10 := med("stock", 1), med("stock", 10), med("buildtrace", 1), med("buildtrace", 10)
	perStock, perTraced := (s10-s1)/9, (t10-t1)/9
	b.ReportMetric(s1, "stock-1step-s")
	b.ReportMetric(s10, "stock-10steps-s")
	b.ReportMetric(t1, "buildtrace-1step-s")
	b.ReportMetric(t10, "buildtrace-10steps-s")
	b.ReportMetric(perStock*1000, "stock-ms/step")
	b.ReportMetric(perTraced*1000, "buildtrace-ms/step")
	b.ReportMetric((perTraced-perStock)*1000, "added-ms/step")
	b.Logf("1 step: stock %.2fs, buildtrace %.2fs; 10 steps: stock %.2fs, buildtrace %.2fs; per extra step: stock %.0f ms, buildtrace %.0f ms",
		s1, t1, s10, t10, perStock*1000, perTraced*1000)
}
