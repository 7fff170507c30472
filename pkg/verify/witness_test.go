package verify

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/fsdiff"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

const witnessStep = "33333333333333333333333333333333"

// witnessFixture is newFixture with the second layer made by a COPY (a file
// op after the last traced run, as in FROM scratch + COPY --from), and,
// when lowers is not nil, a witness part on the result whose run saw
// lowers (top first; "l1", "l2" and "base" name the fixture's layers).
func witnessFixture(t *testing.T, lowers []string, mutate func(b *trace.Build)) *fixture {
	t.Helper()
	return newFixture(t, witnessMutation(t, lowers, mutate))
}

// witnessEvidenceFixture is witnessFixture whose witness did not run in
// the build: its run, on lowers, is the evidence of another build's.
func witnessEvidenceFixture(t *testing.T, lowers []string) *fixture {
	t.Helper()
	return newSigningFixture(t, func(b *trace.Build, sign func(trace.Build) *dsse.Envelope) {
		witnessMutation(t, lowers, nil)(b)
		n := len(b.Steps)
		eb := *b
		eb.BuildTraceID = "1bf7651916cd43dd8448eb211c80319d"
		eb.Steps = b.Steps[n-1:]
		eb.Evidence = nil
		b.Steps = b.Steps[:n-1]
		b.Tracer.Since = b.Plan[0].Received.Add(-time.Hour)
		b.Evidence = []trace.Evidence{{StepID: witnessStep, BuildTraceID: eb.BuildTraceID, ContainerID: "cw", Envelope: sign(eb)}}
	})
}

// witnessMutation makes newFixture's build witnessFixture's.
func witnessMutation(t *testing.T, lowers []string, mutate func(b *trace.Build)) func(b *trace.Build) {
	t.Helper()
	return func(b *trace.Build) {
		l1, l2 := b.Steps[0].Diff.Digest, b.Steps[1].Diff.Digest
		b.Steps = b.Steps[:1]
		p := &b.Plan[0]
		p.Steps = p.Steps[:1]
		p.Layers[1] = trace.LayerOp{Kind: trace.LayerFile, OpDigest: "sha256:copy", Name: "[stage-1 2/2] COPY --from=build /app /app"}
		if lowers == nil {
			return
		}
		var ls []string
		for _, l := range lowers {
			switch l {
			case "l1":
				l = l1
			case "l2":
				l = l2
			case "base":
				l = "sha256:base-layer"
			}
			ls = append(ls, l)
		}
		args := []string{"/.buildtrace-witness/bin/buildtrace-frontend", "buildtrace-witness"}
		start := b.Steps[0].End.Add(time.Second)
		exit := 0
		b.Plan = append(b.Plan, trace.PlanPart{
			ID: "sha256:witness", Platform: "linux/amd64", Received: start, Base: p.Base,
			Layers:  append(append([]trace.LayerOp{}, p.Layers...), trace.LayerOp{Kind: trace.LayerRun, OpDigest: "sha256:w", StepID: witnessStep, Name: "[buildtrace] witness linux/amd64"}),
			Steps:   []trace.PlanStep{{StepID: witnessStep, OpDigest: "sha256:w", Name: "[buildtrace] witness linux/amd64", Platform: "linux/amd64", Args: args}},
			Witness: &trace.Witness{Platform: "linux/amd64", Of: p.ID, StepID: witnessStep},
		})
		b.Steps = append(b.Steps, trace.Step{StepID: witnessStep, ContainerID: "cw", Start: start, End: start.Add(time.Second),
			Processes:    []trace.Process{{PID: 300, Exec: true, Binary: args[0], Argv: args, ExitCode: &exit, Start: start}},
			Diff:         trace.Diff{Digest: fsdiff.EmptyDigest},
			Lowers:       ls,
			Completeness: trace.Completeness{Complete: true, FollowedFromStart: true}})
		if mutate != nil {
			mutate(b)
		}
	}
}

func bindings(r *Result) map[string]int {
	n := map[string]int{}
	for _, l := range r.Layers {
		n[l.Binding]++
	}
	return n
}

// TestWitness: a witness run on the result binds every layer above the
// base by its signed lowers; a plan without one keeps the COPY layer's
// plan position (images built before witnesses); a plan with one fails
// when it did not run or ran on other layers.
func TestWitness(t *testing.T) {
	ctx := context.Background()
	t.Run("absent", func(t *testing.T) {
		f := witnessFixture(t, nil, nil)
		r := Verify(ctx, f.target, f.opts(t, f.pub, ""))
		if !r.Pass() || bindings(r)[BindPlan] != 1 || r.Witness != "" {
			t.Fatalf("no witness: pass %v, layers %+v, witness %q: %+v", r.Pass(), r.Layers, r.Witness, r.Failures)
		}
	})
	t.Run("present", func(t *testing.T) {
		f := witnessFixture(t, []string{"l2", "l1", "base"}, nil)
		r := Verify(ctx, f.target, f.opts(t, f.pub, ""))
		if !r.Pass() || bindings(r)[BindPlan] != 0 || r.Layers[2].Binding != BindLower || r.Witness != WitnessExecuted {
			t.Fatalf("witness: pass %v, layers %+v, witness %q: %+v", r.Pass(), r.Layers, r.Witness, r.Failures)
		}
		// Not a step of the Dockerfile: the policy's step rules do not
		// apply to it.
		r = Verify(ctx, f.target, f.opts(t, f.pub, "binaries:\n  denied: [buildtrace-frontend]\n"))
		if !r.Pass() {
			t.Fatalf("the policy's step rules applied to the witness: %+v", r.Failures)
		}
	})
	t.Run("mismatched", func(t *testing.T) {
		// The COPY layer is not what the witness ran on (a registry
		// writer replaced it).
		f := witnessFixture(t, []string{"sha256:the-honest-copy", "l1", "base"}, nil)
		r := Verify(ctx, f.target, f.opts(t, f.pub, ""))
		if checks(r) != CheckBinding || !strings.Contains(r.Failures[0].Event, "layer 2 ("+f.target.Image.Layers[2].Digest.String()) {
			t.Fatalf("got %q: %+v", checks(r), r.Failures)
		}
		t.Log(r.Failures[0].Event)
	})
	t.Run("layer where an empty one was dropped", func(t *testing.T) {
		// The plan's two COPYs made empty layers, which BuildKit drops;
		// a registry writer put layer 2 in their place.
		f := witnessFixture(t, []string{fsdiff.EmptyDigest, fsdiff.EmptyDigest, "l1", "base"}, func(b *trace.Build) {
			extra := trace.LayerOp{Kind: trace.LayerFile, OpDigest: "sha256:workdir", Name: "WORKDIR /w"}
			for i := range b.Plan {
				p := &b.Plan[i]
				n := len(p.Layers)
				if p.Witness != nil {
					p.Layers = append(p.Layers[:n-1:n-1], extra, p.Layers[n-1])
				} else {
					p.Layers = append(p.Layers, extra)
				}
			}
		})
		r := Verify(ctx, f.target, f.opts(t, f.pub, ""))
		if checks(r) != CheckBinding || !strings.Contains(r.Failures[0].Event, "is one it did not run on") {
			t.Fatalf("got %q: %+v", checks(r), r.Failures)
		}
		t.Log(r.Failures[0].Event)
	})
	t.Run("did not run", func(t *testing.T) {
		notRun := func(b *trace.Build) { b.Steps = b.Steps[:len(b.Steps)-1] }
		// The tracer started after the build: the witness did not run or
		// was not seen.
		f := witnessFixture(t, []string{"l2", "l1", "base"}, func(b *trace.Build) {
			notRun(b)
			b.Tracer.Since = b.Plan[0].Received.Add(time.Second)
		})
		r := Verify(ctx, f.target, f.opts(t, f.pub, "cached:\n  allow: true\n"))
		if !strings.Contains(checks(r), CheckBinding) || !strings.Contains(failureText(r), "did not run in this build") {
			t.Fatalf("got %q: %+v", checks(r), r.Failures)
		}
		// Cached, no evidence: fails unless cached.allow, which accepts
		// the layers by plan position as it does an unproven RUN's.
		f = witnessFixture(t, []string{"l2", "l1", "base"}, notRun)
		r = Verify(ctx, f.target, f.opts(t, f.pub, ""))
		if checks(r) != CheckBinding || !strings.Contains(r.Failures[0].Event, "was cached") {
			t.Fatalf("got %q: %+v", checks(r), r.Failures)
		}
		r = Verify(ctx, f.target, f.opts(t, f.pub, "cached:\n  allow: true\n"))
		if !r.Pass() || r.Witness != WitnessUnproven || bindings(r)[BindPlan] != 1 {
			t.Fatalf("cached.allow: pass %v, witness %q, layers %+v: %+v", r.Pass(), r.Witness, r.Layers, r.Failures)
		}
	})
	t.Run("evidence of another build", func(t *testing.T) {
		// A cached witness's earlier run, carried as evidence, is of the
		// step, not of this image: its step ID does not cover the build
		// context, so the run can be another build's on other layers,
		// the very ones a registry writer puts into the image
		// (redteam16). It binds nothing: the layers above the last RUN
		// fail, or keep their plan position under cached.allow.
		f := witnessEvidenceFixture(t, []string{"l2", "l1", "base"})
		r := Verify(ctx, f.target, f.opts(t, f.pub, ""))
		if checks(r) != CheckBinding || !strings.Contains(r.Failures[0].Event, "evidence") {
			t.Fatalf("got %q, witness %q: %+v", checks(r), r.Witness, r.Failures)
		}
		t.Log(r.Failures[0].Event)
		r = Verify(ctx, f.target, f.opts(t, f.pub, "cached:\n  allow: true\n"))
		if !r.Pass() || r.Witness != WitnessUnproven || bindings(r)[BindPlan] != 1 {
			t.Fatalf("cached.allow: pass %v, witness %q, layers %+v: %+v", r.Pass(), r.Witness, r.Layers, r.Failures)
		}
	})
	t.Run("unhashed lower", func(t *testing.T) {
		f := witnessFixture(t, []string{"", "l1", "base"}, nil)
		r := Verify(ctx, f.target, f.opts(t, f.pub, ""))
		if !strings.Contains(checks(r), CheckBinding) {
			t.Fatalf("got %q: %+v", checks(r), r.Failures)
		}
	})
	t.Run("incomplete", func(t *testing.T) {
		f := witnessFixture(t, []string{"l2", "l1", "base"}, func(b *trace.Build) {
			b.Steps[len(b.Steps)-1].Completeness = trace.Completeness{FollowedFromStart: true, EventsDropped: 1}
		})
		r := Verify(ctx, f.target, f.opts(t, f.pub, ""))
		if checks(r) != CheckCompleteness {
			t.Fatalf("got %q: %+v", checks(r), r.Failures)
		}
	})
	t.Run("COPY --link layers in one snapshot", func(t *testing.T) {
		// Two consecutive COPY --link: BuildKit's merge applies both into
		// one snapshot (one lower), the image keeps two layers. The lower
		// must be the two layers read as one.
		link := func(ops ...trace.LayerOp) func(b *trace.Build) {
			return func(b *trace.Build) {
				for i := range b.Plan {
					p := &b.Plan[i]
					if p.Witness != nil {
						p.Layers = append(append([]trace.LayerOp{}, ops...), p.Layers[len(p.Layers)-1])
					} else if p.ID == "sha256:part" {
						p.Layers = append([]trace.LayerOp{}, ops...)
					}
				}
			}
		}
		c1 := trace.LayerOp{Kind: trace.LayerFile, OpDigest: "sha256:c1", Name: "COPY --link a /a"}
		c2 := trace.LayerOp{Kind: trace.LayerFile, OpDigest: "sha256:c2", Name: "COPY --link b /b"}
		m1 := trace.LayerOp{Kind: trace.LayerMerge, OpDigest: "sha256:m1"}
		m2 := trace.LayerOp{Kind: trace.LayerMerge, OpDigest: "sha256:m2"}
		merged := groupOfFixtureLayers(t)
		f := witnessFixture(t, []string{merged, "base"}, link(c1, m1, c2, m2))
		r := Verify(ctx, f.target, f.opts(t, f.pub, ""))
		if !r.Pass() || bindings(r)[BindLower] != 2 || r.Witness != WitnessExecuted {
			t.Fatalf("COPY --link group: pass %v, layers %+v, witness %q: %+v", r.Pass(), r.Layers, r.Witness, r.Failures)
		}
		// Another group (a registry writer replaced one of its layers).
		f = witnessFixture(t, []string{"sha256:another-merge", "base"}, link(c1, m1, c2, m2))
		if r := Verify(ctx, f.target, f.opts(t, f.pub, "")); checks(r) != CheckBinding {
			t.Fatalf("a group that is not the lower passed: %q %+v", checks(r), r.Failures)
		}
		// Plain COPYs are one snapshot each: no group.
		f = witnessFixture(t, []string{merged, "base"}, link(c1, c2))
		if r := Verify(ctx, f.target, f.opts(t, f.pub, "")); checks(r) != CheckBinding {
			t.Fatalf("plain COPY layers grouped: %q %+v", checks(r), r.Failures)
		}
		// One lower per COPY --link layer: both bound.
		f = witnessFixture(t, []string{"l2", "l1", "base"}, link(c1, m1, c2, m2))
		if r := Verify(ctx, f.target, f.opts(t, f.pub, "")); !r.Pass() || bindings(r)[BindLower] != 2 {
			t.Fatalf("COPY --link layers one lower each: pass %v %+v %+v", r.Pass(), r.Layers, r.Failures)
		}
	})
	t.Run("not on the result", func(t *testing.T) {
		f := witnessFixture(t, []string{"l2", "l1", "base"}, func(b *trace.Build) {
			b.Plan[1].Layers[1].OpDigest = "sha256:another-copy"
		})
		r := Verify(ctx, f.target, f.opts(t, f.pub, ""))
		if checks(r) != CheckBinding || !strings.Contains(r.Failures[0].Event, "does not run on the result") {
			t.Fatalf("got %q: %+v", checks(r), r.Failures)
		}
	})
}

func failureText(r *Result) string {
	var s []string
	for _, f := range r.Failures {
		s = append(s, f.Event)
	}
	return strings.Join(s, "\n")
}

// groupOfFixtureLayers is the diff digest of newFixture's two layers
// above its base read as one (what a snapshot holding both shows).
func groupOfFixtureLayers(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	unzip := func(b []byte) io.Reader {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		return zr
	}
	s := fsdiff.NewStack()
	if err := s.Apply(ctx, unzip(layerTar(t, map[string]string{"bin/sh": "busybox"}))); err != nil {
		t.Fatal(err)
	}
	ls := [][]byte{layerTar(t, map[string]string{"built-on.txt": "x86_64\n"}), layerTar(t, map[string]string{"app/registry.json": "{}"})}
	d, err := fsdiff.FromLayers(ctx, len(ls), func(i int) (io.ReadCloser, error) { return io.NopCloser(unzip(ls[i])), nil }, s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
