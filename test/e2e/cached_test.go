package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/test/lab"
	"github.com/buildtrace/buildtrace/tracer/store"
)

// Cached steps carry the signed record of the run that produced their
// layer: a rebuild served from BuildKit's cache verifies by default, the
// policy applies to the earlier run, and without evidence a cached step is
// "unproven" and fails.

// runtimeTrace reads an image's runtime-trace predicate (one platform).
func runtimeTrace(t *testing.T, ctx context.Context, l *lab.Lab, ref string) *attest.Predicate {
	t.Helper()
	img := l.Image(t, ctx, ref)
	a, ok := img.ForManifest(img.Manifests[0].Descriptor.Digest)
	if !ok {
		t.Fatalf("%s has no attestation manifest", ref)
	}
	st, ok := a.Statement(attest.PredicateType)
	if !ok {
		t.Fatalf("%s has no runtime-trace statement", ref)
	}
	p, err := attest.Parse(st.Data)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// cachedRuns counts the RUN vertices BuildKit reported CACHED.
func cachedRuns(out string) (runs, cached int) {
	vertex := map[string]string{} // "#7" → its name
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.HasPrefix(f[0], "#") {
			continue
		}
		if strings.HasPrefix(f[1], "[") && strings.Contains(line, "] RUN ") {
			vertex[f[0]] = line
			runs++
		}
		if f[1] == "CACHED" && vertex[f[0]] != "" {
			cached++
		}
	}
	return runs, cached
}

// wipeTracerStore stops buildtraced and starts it with an empty store;
// when the test ends the lab gets its store back, so the evidence of
// earlier builds (make demo's, other tests') is not lost to them.
func wipeTracerStore(t *testing.T, l *lab.Lab) {
	t.Helper()
	state := filepath.Join(l.Dir, "tracer")
	suffix := ".saved-" + randHex(4)
	l.Kill(t, "buildtraced")
	time.Sleep(200 * time.Millisecond)
	for _, f := range []string{store.IndexFile, store.BlobDir} {
		if err := os.Rename(filepath.Join(state, f), filepath.Join(state, f+suffix)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		l.Kill(t, "buildtraced")
		time.Sleep(200 * time.Millisecond)
		for _, f := range []string{store.IndexFile, store.BlobDir} {
			p := filepath.Join(state, f)
			if err := os.RemoveAll(p); err != nil {
				t.Errorf("removing the test's store: %v", err)
			}
			if err := os.Rename(p+suffix, p); err != nil {
				t.Errorf("restoring the tracer's store: %v", err)
			}
		}
		l.Up(t)
	})
	l.Up(t)
	l.RequireTracer(t)
}

func TestCachedStepsCarryEvidence(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	key := l.TracerPub
	n := randHex(8)
	dir := lab.WriteContext(t, map[string]string{
		"Dockerfile": "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\nCOPY nonce.txt /nonce.txt\n" +
			"RUN cat /nonce.txt > /copy.txt\nRUN wget -q -O /fetched.json http://127.0.0.1:5000/v2/\n",
		"nonce.txt": n,
	})
	first := l.Ref("cached")
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: first, Push: true})
	fp := runtimeTrace(t, ctx, l, first)
	for _, s := range fp.Buildtrace.Steps {
		if s.Status != attest.StatusExecuted {
			t.Fatalf("first build: step %s is %s", s.Instruction, s.Status)
		}
	}

	again := l.Ref("cached")
	res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: again, Push: true})
	if runs, cached := cachedRuns(res.Output); runs != 2 || cached != 2 {
		t.Fatalf("rebuild: %d of %d RUN steps CACHED, want all:\n%s", cached, runs, res.Output)
	}

	t.Run("an identical rebuild verifies by default", func(t *testing.T) {
		p := runtimeTrace(t, ctx, l, again)
		for _, s := range p.Buildtrace.Steps {
			if s.Status != attest.StatusCached || s.Proof != attest.ProofEvidence || len(s.Evidence) == 0 || s.Evidence[0].BuildTraceID != fp.MonitoredProcess.Event {
				t.Errorf("step %s: status %s proof %s evidence %+v, want cached with evidence from build %s", s.Instruction, s.Status, s.Proof, s.Evidence, fp.MonitoredProcess.Event)
			}
		}
		if len(p.MonitorLog.Process) != 0 || len(p.MonitorLog.Network) != 0 {
			t.Errorf("monitorLog holds observations of a build that ran nothing: %+v", p.MonitorLog)
		}
		out, code := runCLI(t, l, "verify", again, "--key", key)
		expectCode(t, out, code, 0, "verify", again)
		if strings.Count(out, "cached (evidence)") != 2 {
			t.Errorf("verify does not show the cached steps with evidence:\n%s", out)
		}
		out, code = runCLI(t, l, "show", again, "--key", key)
		expectCode(t, out, code, 0)
		if !strings.Contains(out, fp.MonitoredProcess.Event) {
			t.Errorf("show does not name the build whose run is the evidence:\n%s", out)
		}
	})

	t.Run("the policy applies to the evidence", func(t *testing.T) {
		out, code := runCLI(t, l, "verify", again, "--key", key, "--policy", writePolicy(t, "egress:\n  flagged: [127.0.0.0/8]\n"))
		expectCode(t, out, code, 1)
		if !strings.Contains(out, "[policy egress.flagged]") || !strings.Contains(out, "127.0.0.1:5000") {
			t.Errorf("the flagged destination of the earlier run is not named:\n%s", out)
		}
	})

	t.Run("without the store the cached steps are unproven", func(t *testing.T) {
		wipeTracerStore(t, l)
		third := l.Ref("cached")
		res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: third, Push: true})
		if _, cached := cachedRuns(res.Output); cached != 2 {
			t.Fatalf("rebuild after the wipe is not cached:\n%s", res.Output)
		}
		for _, s := range runtimeTrace(t, ctx, l, third).Buildtrace.Steps {
			if s.Status != attest.StatusCached || s.Proof != attest.ProofUnproven || len(s.Evidence) != 0 {
				t.Errorf("step %s: status %s proof %s, want cached, unproven", s.Instruction, s.Status, s.Proof)
			}
		}
		out, code := runCLI(t, l, "verify", third, "--key", key)
		expectCode(t, out, code, 1)
		if strings.Count(out, "[cached]") != 2 {
			t.Errorf("want both unproven cached steps to fail:\n%s", out)
		}
	})
}

// TestCachedEvidenceAcrossHosts: a cache exported to the registry and
// imported into a fresh lab state (no BuildKit cache, an empty tracer
// store) keeps its evidence, read from the attestation of the image that
// exported the cache.
func TestCachedEvidenceAcrossHosts(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	n := randHex(8)
	dir := lab.WriteContext(t, map[string]string{
		"Dockerfile": "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\n" +
			"RUN echo " + n + " > /n.txt\nRUN wget -q -O /fetched.json http://127.0.0.1:5000/v2/\n",
	})
	cache := l.Ref("cache")
	first := l.Ref("cached")
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: first, Push: true, Args: []string{"--cache-to", "type=registry,ref=" + cache + ",mode=max"}})

	// A fresh state: BuildKit's cache pruned, the tracer's store wiped.
	if out, err := exec.CommandContext(ctx, filepath.Join(l.Dir, "bin", "buildctl"), "--addr", l.BuildkitAddr, "prune", "--all").CombinedOutput(); err != nil {
		t.Fatalf("buildctl prune: %v\n%s", err, out)
	}
	wipeTracerStore(t, l)

	again := l.Ref("cached")
	res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: again, Push: true, Args: []string{
		"--cache-from", "type=registry,ref=" + cache,
		"--build-arg", "BUILDTRACE_EVIDENCE_FROM=" + first,
	}})
	if runs, cached := cachedRuns(res.Output); runs != 2 || cached != 2 {
		t.Fatalf("the rebuild did not take its RUN steps from the registry cache (%d of %d):\n%s", cached, runs, res.Output)
	}
	for _, s := range runtimeTrace(t, ctx, l, again).Buildtrace.Steps {
		if s.Proof != attest.ProofEvidence {
			t.Errorf("step %s: proof %q, want evidence from the first build", s.Instruction, s.Proof)
		}
	}
	out, code := runCLI(t, l, "verify", again, "--key", l.TracerPub)
	expectCode(t, out, code, 0, "verify", again)
}

// tracerStoreFiles is every file of the lab tracer's store: its index and
// the files that hold the sealed steps and envelopes.
func tracerStoreFiles(t testing.TB, l *lab.Lab) []string {
	t.Helper()
	state := filepath.Join(l.Dir, "tracer")
	files := []string{filepath.Join(state, store.IndexFile)}
	blobs, err := os.ReadDir(filepath.Join(state, store.BlobDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blobs {
		files = append(files, filepath.Join(state, store.BlobDir, b.Name()))
	}
	return files
}
