package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/registry"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
	"github.com/buildtrace/buildtrace/pkg/verify"
	"github.com/buildtrace/buildtrace/test/lab"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestRedTeam turns the red team's reproductions (docs/threat-model.md) into
// regression tests. Each subtest performs one attack the way the red team
// did: it forges an image in the lab registry and runs the CLI on it, or
// runs a real build through the lab; and checks that the attack is refused,
// by the check that should refuse it. Where cheap, the same pipeline without
// the attack (an untouched republication) must pass, so a subtest cannot
// pass because the forging itself is broken.
func TestRedTeam(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	key := l.TracerPub

	// The honest image the registry-writer forgeries start from (the red
	// team's b1): a RUN layer, a COPY layer holding /f, and a last RUN
	// layer (making /g) that ran on both, so every layer is bound to a
	// traced run. (Each RUN lasts a second: a container that exits
	// before the tracer has read its bundle is left unattributed, and the
	// honest image would then fail to verify.)
	var (
		honestOnce sync.Once
		honestRef  string
		honestImg  *registry.Image
	)
	honest := func(t *testing.T, ctx context.Context) (string, *registry.Image) {
		t.Helper()
		honestOnce.Do(func() {
			dir := lab.WriteContext(t, map[string]string{
				"Dockerfile": "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\nRUN echo " + randHex(8) + " > /hi && sleep 1\nCOPY f /f\nRUN cat /hi /f > /g && sleep 1\n",
				"f":          "honest file\n",
			})
			ref := l.Ref("redteam")
			res := l.Buildx(ctx, lab.Build{Context: dir, Tag: ref, Push: true})
			if res.Err != nil {
				t.Fatalf("%v\n%s", res.Err, res.Output)
			}
			honestRef, honestImg = ref, l.Image(t, ctx, ref)
		})
		if honestImg == nil {
			t.Fatal("the honest image could not be built (see an earlier subtest)")
		}
		return honestRef, honestImg
	}
	verifyCLI := func(t *testing.T, ref string, extra ...string) (string, int) {
		t.Helper()
		return runCLI(t, l, append([]string{"verify", ref, "--key", key}, extra...)...)
	}
	mustPass := func(t *testing.T, ref string, extra ...string) string {
		t.Helper()
		out, code := verifyCLI(t, ref, extra...)
		expectCode(t, out, code, 0, append([]string{"verify", ref}, extra...)...)
		return out
	}
	mustFail := func(t *testing.T, ref string, wants []string, extra ...string) string {
		t.Helper()
		t.Logf("verify %s (must be refused)", ref)
		out, code := verifyCLI(t, ref, extra...)
		expectCode(t, out, code, 1, append([]string{"verify", ref}, extra...)...)
		for _, w := range wants {
			if !strings.Contains(out, w) {
				t.Errorf("verify output lacks %q:\n%s", w, out)
			}
		}
		return out
	}

	t.Run("untouched republication passes", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		_, img := honest(t, ctx)
		// The same layer tar read and written again, gzipped afresh: what
		// the tar forgeries below do, without their extra entries.
		forged := l.Ref("redteam")
		rtRetarLayer(t, ctx, img, forged, -1, func(es []rtEnt) []rtEnt { return es })
		mustPass(t, forged)
		// The honest index pushed again under another tag: what the
		// index forgeries below do, without the hidden entry.
		again := l.Ref("redteam")
		rtPushIndex(t, ctx, again, *img.Index)
		mustPass(t, again)
	})

	t.Run("symlink-through write with cancelling directory headers", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		_, img := honest(t, ctx)
		forged := l.Ref("redteam")
		// The last RUN layer gets a symlink zz-redteam -> /etc, a file
		// written through it (/etc/passwd for an extractor), and directory
		// headers that made the digest's reading of the tar come out
		// unchanged, so it still matched the traced run's diff.
		rtRetarLayer(t, ctx, img, forged, -1, func(es []rtEnt) []rtEnt {
			return append(es, rtInjection("/etc/passwd", []byte("root::0:0:root:/root:/bin/sh\n"))...)
		})
		out := mustFail(t, forged, []string{"[binding]", "layer tar entry"})
		if !strings.Contains(out, "non-directory") {
			t.Errorf("verify does not say the entry is below a non-directory of the same layer:\n%s", out)
		}
	})

	t.Run("empty-digest inserted layer that adds a file", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		_, img := honest(t, ctx)
		forged := l.Ref("redteam")
		c := registry.New(registry.Options{})
		raw := rtWriteTar(t, rtInjection("/bin/busybox-evil", []byte("#!/bin/sh\necho pwned\n")))
		ld := pushBytes(t, ctx, c, forged, ocispec.MediaTypeImageLayerGzip, rtGzip(t, raw))
		// Above the base image's one layer, below the layers the last RUN
		// ran on: the old binding took it for a directories-only layer.
		const pos = 1
		forge(t, ctx, img, forged, forgery{
			config: func(cfg *ocispec.Image) {
				ids := slices.Clone(cfg.RootFS.DiffIDs)
				cfg.RootFS.DiffIDs = slices.Insert(ids, pos, digest.FromBytes(raw))
				var hist []ocispec.History
				n, inserted := 0, false
				for _, h := range cfg.History {
					if !h.EmptyLayer && n == pos && !inserted {
						hist = append(hist, ocispec.History{CreatedBy: "redteam"})
						inserted = true
					}
					if !h.EmptyLayer {
						n++
					}
					hist = append(hist, h)
				}
				if !inserted {
					hist = append(hist, ocispec.History{CreatedBy: "redteam"})
				}
				cfg.History = hist
			},
			layers: func(ls []ocispec.Descriptor) []ocispec.Descriptor { return slices.Insert(ls, pos, ld) },
		})
		mustFail(t, forged, []string{"[binding]"})
	})

	t.Run("hard link header with other metadata", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		_, img := honest(t, ctx)
		forged := l.Ref("redteam")
		// /g (made by the last RUN) becomes a hard link to a temporary
		// copy, the link header carrying mode 4755 (setuid root); a
		// directory header cancels the copy.
		rtRetarLayer(t, ctx, img, forged, -1, func(es []rtEnt) []rtEnt {
			var out []rtEnt
			found := false
			for _, e := range es {
				if strings.TrimPrefix(e.h.Name, "./") == "g" && e.h.Typeflag == tar.TypeReg {
					found = true
					const tmp = "zz-redteam-tmp"
					th := *e.h
					th.Name = tmp
					out = append(out,
						rtEnt{&th, e.data},
						rtEnt{&tar.Header{Name: e.h.Name, Typeflag: tar.TypeLink, Linkname: tmp, Mode: 04755, Uid: 0, Gid: e.h.Gid, ModTime: e.h.ModTime, Format: tar.FormatPAX}, nil},
						rtEnt{&tar.Header{Name: tmp + "/", Typeflag: tar.TypeDir, Mode: 0o755}, nil})
					continue
				}
				out = append(out, e)
			}
			if !found {
				t.Fatal("the last RUN layer has no file g")
			}
			return out
		})
		mustFail(t, forged, []string{"[binding]", "hard link"})
	})

	t.Run("hidden image manifest in the index", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		_, img := honest(t, ctx)
		c := registry.New(registry.Options{})
		m := img.Manifests[0]
		// An image: the honest one plus a layer writing /etc/passwd.
		evilManifest := func(ref string) ocispec.Descriptor {
			raw := tarOf(t, map[string]string{"etc/passwd": "root::0:0:root:/root:/bin/sh\n"})
			ld := pushBytes(t, ctx, c, ref, ocispec.MediaTypeImageLayerGzip, rtGzip(t, raw))
			cfg := m.Config
			cfg.RootFS.DiffIDs = append(slices.Clone(cfg.RootFS.DiffIDs), digest.FromBytes(raw))
			cfg.History = append(slices.Clone(cfg.History), ocispec.History{CreatedBy: "evil"})
			mf := m.Manifest
			mf.Config = pushJSON(t, ctx, c, ref, ocispec.MediaTypeImageConfig, cfg)
			mf.Layers = append(slices.Clone(mf.Layers), ld)
			md := pushJSON(t, ctx, c, ref, ocispec.MediaTypeImageManifest, mf)
			md.Platform = m.Descriptor.Platform
			return md
		}
		expectRefused := func(t *testing.T, ref string, wants ...string) {
			t.Helper()
			t.Logf("verify %s (must be refused)", ref)
			out, code := verifyCLI(t, ref)
			if code != 1 && code != 2 {
				t.Fatalf("verify %s: exit %d, want 1 or 2 (refused)\n%s", ref, code, out)
			}
			for _, w := range wants {
				if !strings.Contains(out, w) {
					t.Errorf("verify output lacks %q:\n%s", w, out)
				}
			}
		}

		t.Run("marked as an attestation, with a platform", func(t *testing.T) {
			forged := l.Ref("redteam")
			emd := evilManifest(forged)
			emd.Annotations = map[string]string{registry.AnnotationReferenceType: registry.ReferenceTypeAttestation}
			idx := *img.Index
			idx.Manifests = append([]ocispec.Descriptor{emd}, img.Index.Manifests...)
			rtPushIndex(t, ctx, forged, idx)
			expectRefused(t, forged, emd.Digest.String(), "claims platform")
		})

		t.Run("two image manifests for one platform", func(t *testing.T) {
			forged := l.Ref("redteam")
			emd := evilManifest(forged)
			idx := *img.Index
			idx.Manifests = append(slices.Clone(img.Index.Manifests), emd)
			rtPushIndex(t, ctx, forged, idx)
			expectRefused(t, forged, emd.Digest.String(), "two image manifests")
		})

		// redteam8: an "attestation" entry with no platform, whose config
		// names a real OS and architecture: containerd matches such an
		// entry on its config (after the entries that name a platform),
		// so where no image names that platform it is what gets pulled.
		// Its layers are the honest attestation's statements, so it reads
		// as an attestation too.
		t.Run("marked as an attestation, with no platform", func(t *testing.T) {
			forged := l.Ref("redteam")
			a := img.Attestations[0]
			mf := a.Manifest
			mf.Config = pushJSON(t, ctx, c, forged, ocispec.MediaTypeImageConfig, m.Config)
			emd := pushJSON(t, ctx, c, forged, ocispec.MediaTypeImageManifest, mf)
			emd.Annotations = maps.Clone(a.Descriptor.Annotations)
			emd.Platform = nil
			idx := *img.Index
			idx.Manifests = append(slices.Clone(img.Index.Manifests), emd)
			rtPushIndex(t, ctx, forged, idx)
			expectRefused(t, forged, emd.Digest.String(), "names no platform")
		})
	})

	t.Run("case-variant duplicate keys in the predicate", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		_, img := honest(t, ctx)
		forged := l.Ref("redteam")
		// monitorLog and buildtrace without the RUN step for case-sensitive
		// readers; MonitorLog and BuildTrace, the signed originals, for
		// Go's case-insensitive decoder.
		forge(t, ctx, img, forged, forgery{statement: func(st []byte) []byte {
			return rtCaseDup(t, st, "RUN cat")
		}})
		mustFail(t, forged, []string{"[attestation]", "differ only in case"})
	})

	t.Run("cross-build evidence swap", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		// v and a: the same Dockerfile (so the same step ID), other script.
		df := "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\nCOPY script.sh /script.sh\nRUN sh /script.sh # " + randHex(6) + "\n"
		vdir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "script.sh": "echo honest > /out\n"})
		adir := lab.WriteContext(t, map[string]string{"Dockerfile": df,
			"script.sh": "echo honest > /out\nprintf '#!/bin/sh\\necho pwned\\n' > /bin/backdoor; chmod 755 /bin/backdoor\n"})
		v1, a1, v2 := l.Ref("redteam-ev"), l.Ref("redteam-ev"), l.Ref("redteam-ev")
		l.MustBuild(t, ctx, lab.Build{Context: vdir, Tag: v1, Push: true})
		l.MustBuild(t, ctx, lab.Build{Context: adir, Tag: a1, Push: true})
		res := l.MustBuild(t, ctx, lab.Build{Context: vdir, Tag: v2, Push: true})
		if runs, cached := cachedRuns(res.Output); runs != 1 || cached != 1 {
			t.Fatalf("v2's RUN was not served from the cache (%d runs, %d cached):\n%s", runs, cached, res.Output)
		}
		// The attack needs a1's run among v2's evidence (the tracer offers
		// every earlier run of the step, up to a few).
		a1Build := rtSignedBuild(t, ctx, l, a1).BuildTraceID
		builds := map[string]bool{}
		for _, e := range rtSignedBuild(t, ctx, l, v2).Evidence {
			builds[e.BuildTraceID] = true
		}
		t.Logf("v2's cached step carries evidence from %d build(s), a1's (%s) among them: %v", len(builds), a1Build, builds[a1Build])
		mustPass(t, v2)

		// v2 with its RUN layer replaced by a1's: a1's run (in the
		// evidence) made that layer, but on another COPY layer.
		forged := l.Ref("redteam-ev")
		rtSwapLayer(t, ctx, l.Image(t, ctx, v2), forged, -1, l.Image(t, ctx, a1), -1)
		mustFail(t, forged, []string{"[binding]"})
	})

	t.Run("client-chosen TRACEPARENT", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		n := randHex(6)
		vm, am := "victim-"+randHex(6), "attacker-"+randHex(6)
		df := "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\nCOPY script.sh /script.sh\nRUN sh /script.sh # " + n + "\n"
		vdir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "script.sh": "echo honest > /out; touch /" + vm + "; sleep 12\n"})
		adir := lab.WriteContext(t, map[string]string{"Dockerfile": df,
			"script.sh": "echo honest > /out; touch /" + am + "; /bin/busybox true " + am + "\nprintf '#!/bin/sh\\necho pwned\\n' > /bin/backdoor; chmod 755 /bin/backdoor\n"})
		logPath := filepath.Join(l.Dir, "logs", "buildtraced.log")
		from := rtLogSize(t, logPath)

		victim := l.Ref("redteam-inj")
		done := make(chan lab.Result, 1)
		go func() { done <- l.Buildx(ctx, lab.Build{Context: vdir, Tag: victim, Push: true}) }()
		var id string
		for deadline := time.Now().Add(90 * time.Second); id == ""; time.Sleep(100 * time.Millisecond) {
			for _, line := range rtLogLines(t, logPath, from) {
				if v, ok := rtLogField(line, `msg="plan received"`, "trace"); ok {
					id = v
					break
				}
			}
			if id == "" && time.Now().After(deadline) {
				t.Fatal("the victim build registered no plan with the tracer")
			}
		}
		t.Logf("victim build %s", id)

		// The attacker's build, under the victim's trace ID.
		attacker := l.Ref("redteam-inj")
		ares := rtBuildxEnv(ctx, l, []string{"TRACEPARENT=00-" + id + "-0123456789abcdef-01"},
			"-t", attacker, "--push", "--build-arg", "BUILDTRACE_UNMONITORED=allow", adir)
		if ares.Err != nil {
			t.Fatalf("the attacker's build: %v\n%s", ares.Err, ares.Output)
		}
		if runs, cached := cachedRuns(ares.Output); runs != 1 || cached != 0 {
			t.Fatalf("the attacker's RUN did not run (%d runs, %d cached):\n%s", runs, cached, ares.Output)
		}
		vres := <-done
		if vres.Err != nil {
			t.Fatalf("the victim's build: %v\n%s", vres.Err, vres.Output)
		}

		env, err := tracerapi.AdminClient(l.TracerAdmin).Trace(ctx, id, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		b, err := attest.DecodeEnvelope(env)
		if err != nil {
			t.Fatal(err)
		}
		victimRan, unattributed := false, 0
		for i := range b.Steps {
			s := &b.Steps[i]
			has := func(m string) bool { return rtStepMentions(s, m) }
			if s.Attribution == trace.AttributionNone {
				if has(am) {
					unattributed++
				}
				continue
			}
			if has(vm) {
				victimRan = true
			}
			if has(am) || has("/bin/backdoor") {
				t.Errorf("a run attributed to the victim build %s (container %s, attribution %q) has the attacker's content", id, s.ContainerID, s.Attribution)
			}
		}
		if !victimRan {
			t.Fatalf("the victim build %s has no attributed run of its own step: wrong build ID?\n%+v", id, b.Steps)
		}
		t.Logf("the attacker's run is in the victim's trace as unattributed %d time(s)", unattributed)
		lacks := false
		for _, line := range rtLogLines(t, logPath, from) {
			if strings.Contains(line, "lacks its step's nonce") && strings.Contains(line, "trace="+id) {
				lacks = true
			}
		}
		if !lacks {
			t.Errorf("the tracer's log does not say a container named build %s without its nonce", id)
		}
		if out, code := verifyCLI(t, victim); code != 0 {
			t.Logf("the victim image does not verify (exit %d) after the attack:\n%s", code, out)
		}

		// The victim's attestation with the attacker's RUN layer.
		forged := l.Ref("redteam-inj")
		rtSwapLayer(t, ctx, l.Image(t, ctx, victim), forged, -1, l.Image(t, ctx, attacker), -1)
		mustFail(t, forged, []string{"[binding]"})
	})

	t.Run("exec after identification", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		_, img := honest(t, ctx)
		realFE := rtSignedBuild(t, ctx, l, img.Ref).Requester.ExecutableDigest
		bin := filepath.Join(t.TempDir(), "toctou")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./testdata/redteam/toctou.go")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building the helper: %v\n%s", err, out)
		}
		prog, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		// No syntax line: BuildKit's built-in Dockerfile frontend.
		dir := lab.WriteContext(t, map[string]string{
			"Dockerfile": "FROM " + l.BaseImage + "\n" +
				"COPY --from=" + l.Frontend + " /bin/buildtrace-frontend /fe\n" +
				"COPY --chmod=0755 toctou /toctou\n" +
				"ENV BUILDKIT_SESSION_ID=x BUILDKIT_EXPORTEDPRODUCT=y\n" +
				"RUN [\"/toctou\", \"" + l.TracerAddr + "\"]\n",
			"toctou": string(prog),
		})
		logPath := filepath.Join(l.Dir, "logs", "buildtraced.log")
		from := rtLogSize(t, logPath)
		id := randHex(16)
		res := rtBuildxEnv(ctx, l, []string{"TRACEPARENT=00-" + id + "-" + randHex(8) + "-01"}, "--no-cache", dir)
		// The exec'd frontend cannot speak to BuildKit on a pipe: the step
		// fails whatever the tracer did.
		if !strings.Contains(res.Output, "requests written") {
			t.Fatalf("the helper did not write its requests:\n%s", res.Output)
		}
		if !strings.Contains(res.Output, "toctou trace="+id) {
			t.Fatalf("the helper's build is not %s:\n%s", id, res.Output)
		}
		// Give the tracer time to answer the pipelined requests.
		var lines []string
		sealRefused := ""
		for deadline := time.Now().Add(20 * time.Second); sealRefused == "" && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			lines = rtLogLines(t, logPath, from)
			for _, line := range lines {
				if strings.Contains(line, `msg="refused a caller"`) && strings.Contains(line, "/v1/builds/"+id+"/seal") {
					sealRefused = line
				}
			}
		}
		for _, line := range lines {
			if !strings.Contains(line, id) {
				continue
			}
			if !strings.Contains(line, `msg="refused a caller"`) {
				t.Logf("tracer: %s", line)
			}
			if strings.Contains(line, `msg="plan received"`) && strings.Contains(line, "frontend="+realFE) {
				t.Errorf("the tracer took the plan of build %s from the real frontend's executable: %s", id, line)
			}
			if strings.Contains(line, `msg="trace sealed"`) {
				t.Errorf("the tracer sealed build %s for the helper: %s", id, line)
			}
		}
		if sealRefused == "" {
			t.Fatalf("the tracer's log shows no refused seal of build %s", id)
		}
		t.Logf("tracer: %s", sealRefused)
		if !strings.Contains(sealRefused, "no longer runs") {
			t.Errorf("the seal was refused, but not because the caller no longer runs its container's program: %s", sealRefused)
		}
	})

	t.Run("evidence from a non-allowed frontend", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		_, img := honest(t, ctx)
		realFE := rtSignedBuild(t, ctx, l, img.Ref).Requester.ExecutableDigest
		out := mustPass(t, img.Ref)
		if !strings.Contains(out, "frontend "+realFE) {
			t.Logf("verify does not print the frontend digest %s:\n%s", realFE, out)
		}
		// Another frontend: the real binary with bytes appended (it still
		// runs; its digest differs).
		other := rtOtherFrontend(t, ctx, l)
		body := "FROM " + l.BaseImage + "\nRUN echo " + randHex(8) + " > /n.txt\n"
		first, second := l.Ref("redteam-fe"), l.Ref("redteam-fe")
		l.MustBuild(t, ctx, lab.Build{Context: lab.WriteContext(t, map[string]string{"Dockerfile": "# syntax=" + other + "\n" + body}), Tag: first, Push: true})
		otherFE := rtSignedBuild(t, ctx, l, first).Requester.ExecutableDigest
		if otherFE == realFE || otherFE == "" {
			t.Fatalf("the other frontend's build was signed for %q (the real one is %s)", otherFE, realFE)
		}
		res := l.MustBuild(t, ctx, lab.Build{Context: lab.WriteContext(t, map[string]string{"Dockerfile": "# syntax=" + l.Frontend + "\n" + body}), Tag: second, Push: true})
		if runs, cached := cachedRuns(res.Output); runs != 1 || cached != 1 {
			t.Fatalf("the real frontend's build did not take the step from the cache (%d runs, %d cached):\n%s", runs, cached, res.Output)
		}
		sb := rtSignedBuild(t, ctx, l, second)
		if sb.Requester.ExecutableDigest != realFE {
			t.Fatalf("the second build was signed for %s, not the real frontend %s", sb.Requester.ExecutableDigest, realFE)
		}
		fromOther := false
		for _, e := range sb.Evidence {
			if e.Envelope == nil {
				continue
			}
			if eb, err := attest.DecodeEnvelope(e.Envelope); err == nil && eb.Requester.ExecutableDigest == otherFE {
				fromOther = true
			}
		}
		if !fromOther {
			t.Fatalf("the cached step's evidence does not come from the other frontend's build: %+v", sb.Evidence)
		}
		mustPass(t, second)
		pol := writePolicy(t, "frontend:\n  digests: [\""+realFE+"\"]\n")
		mustPass(t, img.Ref, "--policy", pol)
		mustFail(t, second, []string{"[requester", "frontend.digests", "evidence", otherFE}, "--policy", pol)
	})
}

// rtEnt is one tar entry with its content.
type rtEnt struct {
	h    *tar.Header
	data []byte
}

// rtLayerTar returns the uncompressed tar of one layer of ref.
func rtLayerTar(t *testing.T, ctx context.Context, ref string, d ocispec.Descriptor) []byte {
	t.Helper()
	rc, err := registry.New(registry.Options{}).OpenBlob(ctx, ref, d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	r, closeFn, err := verify.Decompress(rc)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("reading layer %s: %v", d.Digest, err)
	}
	return b
}

func rtReadTar(t *testing.T, b []byte) []rtEnt {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var out []rtEnt
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		} else if err != nil {
			t.Fatalf("tar: %v", err)
		}
		d, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rtEnt{h, d})
	}
}

func rtWriteTar(t *testing.T, es []rtEnt) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := *e.h
		h.Size = 0
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %s: %v", h.Name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func rtGzip(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rtInjection writes content to target through a symlink, then cancels
// every entry out of the digest's old reading with directory headers.
func rtInjection(target string, content []byte) []rtEnt {
	i := strings.LastIndex(target, "/")
	dir, base := target[:i], target[i+1:]
	if dir == "" {
		dir = "/"
	}
	const s = "zz-redteam"
	return []rtEnt{
		{&tar.Header{Name: s, Typeflag: tar.TypeSymlink, Linkname: dir, Mode: 0o777}, nil},
		{&tar.Header{Name: s + "/" + base, Typeflag: tar.TypeReg, Mode: 0o755}, content},
		{&tar.Header{Name: s + "/", Typeflag: tar.TypeDir, Mode: 0o755}, nil},
		{&tar.Header{Name: s + "/" + base + "/", Typeflag: tar.TypeDir, Mode: 0o755}, nil},
	}
}

// rtRetarLayer republishes img under newRef with layer i (negative: from
// the end) read, edited and written again, config and attestation kept
// consistent.
func rtRetarLayer(t *testing.T, ctx context.Context, img *registry.Image, newRef string, i int, edit func([]rtEnt) []rtEnt) {
	t.Helper()
	m := img.Manifests[0]
	if i < 0 {
		i += len(m.Manifest.Layers)
	}
	raw := rtWriteTar(t, edit(rtReadTar(t, rtLayerTar(t, ctx, img.Ref, m.Manifest.Layers[i]))))
	ld := pushBytes(t, ctx, registry.New(registry.Options{}), newRef, ocispec.MediaTypeImageLayerGzip, rtGzip(t, raw))
	forge(t, ctx, img, newRef, forgery{
		config: func(cfg *ocispec.Image) {
			cfg.RootFS.DiffIDs = slices.Clone(cfg.RootFS.DiffIDs)
			cfg.RootFS.DiffIDs[i] = digest.FromBytes(raw)
		},
		layers: func(ls []ocispec.Descriptor) []ocispec.Descriptor { ls[i] = ld; return ls },
	})
}

// rtSwapLayer republishes img under newRef with its layer i replaced by
// other's layer k (negative: from the end), the blob copied over.
func rtSwapLayer(t *testing.T, ctx context.Context, img *registry.Image, newRef string, i int, other *registry.Image, k int) {
	t.Helper()
	m, om := img.Manifests[0], other.Manifests[0]
	if i < 0 {
		i += len(m.Manifest.Layers)
	}
	if k < 0 {
		k += len(om.Manifest.Layers)
	}
	raw := rtLayerTar(t, ctx, other.Ref, om.Manifest.Layers[k])
	if d := m.Manifest.Layers[i].Digest; d == om.Manifest.Layers[k].Digest {
		t.Fatalf("the layers to swap are the same (%s)", d)
	}
	ld := pushBytes(t, ctx, registry.New(registry.Options{}), newRef, ocispec.MediaTypeImageLayerGzip, rtGzip(t, raw))
	forge(t, ctx, img, newRef, forgery{
		config: func(cfg *ocispec.Image) {
			cfg.RootFS.DiffIDs = slices.Clone(cfg.RootFS.DiffIDs)
			cfg.RootFS.DiffIDs[i] = digest.FromBytes(raw)
		},
		layers: func(ls []ocispec.Descriptor) []ocispec.Descriptor { ls[i] = ld; return ls },
	})
}

// rtPushIndex pushes idx tagged ref.
func rtPushIndex(t *testing.T, ctx context.Context, ref string, idx ocispec.Index) {
	t.Helper()
	data, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := registry.New(registry.Options{}).Push(ctx, ref, d, data); err != nil {
		t.Fatal(err)
	}
}

// rtCaseDup rewrites a statement so that its predicate holds monitorLog and
// buildtrace without the step whose instruction starts with instr, and the
// signed originals under MonitorLog and BuildTrace: a case-sensitive reader
// sees no such step, Go's decoder (last case-insensitive match wins) the
// signed content.
func rtCaseDup(t *testing.T, statement []byte, instr string) []byte {
	t.Helper()
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(statement, &doc); err != nil {
		t.Fatal(err)
	}
	var pred map[string]json.RawMessage
	if err := json.Unmarshal(doc["predicate"], &pred); err != nil {
		t.Fatal(err)
	}
	var bt map[string]any
	var ml map[string][]map[string]any
	if err := json.Unmarshal(pred["buildtrace"], &bt); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(pred["monitorLog"], &ml); err != nil {
		t.Fatal(err)
	}
	var keep []any
	hidden := ""
	for _, s := range bt["steps"].([]any) {
		sm := s.(map[string]any)
		if strings.HasPrefix(fmt.Sprint(sm["instruction"]), instr) {
			hidden = sm["stepID"].(string)
			continue
		}
		keep = append(keep, s)
	}
	if hidden == "" {
		t.Fatalf("the predicate has no step %q", instr)
	}
	if keep == nil {
		keep = []any{}
	}
	bt["steps"] = keep
	for k, entries := range ml {
		out := []map[string]any{}
		for _, e := range entries {
			stp, _ := e["step"].(string)
			if ip, ok := e["invokingProcess"].(map[string]any); ok {
				stp, _ = ip["step"].(string)
			}
			if an, ok := e["annotations"].(map[string]any); ok {
				stp, _ = an["step"].(string)
			}
			if stp != hidden {
				out = append(out, e)
			}
		}
		ml[k] = out
	}
	fbt, err := json.Marshal(bt)
	if err != nil {
		t.Fatal(err)
	}
	fml, err := json.Marshal(ml)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	sb.WriteString("{")
	for k, v := range pred {
		if k == "monitorLog" || k == "buildtrace" {
			continue
		}
		fmt.Fprintf(&sb, "%q:%s,", k, v)
	}
	fmt.Fprintf(&sb, "%q:%s,%q:%s,", "monitorLog", fml, "buildtrace", fbt)
	fmt.Fprintf(&sb, "%q:%s,%q:%s}", "MonitorLog", pred["monitorLog"], "BuildTrace", pred["buildtrace"])
	doc["predicate"] = json.RawMessage(sb.String())
	var out strings.Builder
	out.WriteString("{")
	first := true
	for k, v := range doc {
		if !first {
			out.WriteString(",")
		}
		first = false
		fmt.Fprintf(&out, "%q:%s", k, v)
	}
	out.WriteString("}")
	return []byte(out.String())
}

// rtSignedBuild decodes the signed trace in ref's runtime-trace attestation.
func rtSignedBuild(t *testing.T, ctx context.Context, l *lab.Lab, ref string) *trace.Build {
	t.Helper()
	p := runtimeTrace(t, ctx, l, ref)
	if p.Buildtrace.Envelope == nil {
		t.Fatalf("%s: the attestation holds no signed trace", ref)
	}
	b, err := attest.DecodeEnvelope(p.Buildtrace.Envelope)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rtPolicyRefuses runs verify of ref with the policy file and fails t when
// it exits 0: what the attack did must be refused. It returns verify's
// output.
func rtPolicyRefuses(t *testing.T, l *lab.Lab, ref, policy, what string) string {
	t.Helper()
	out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub, "--policy", policy)
	t.Logf("verify --policy %s: exit %d\n%s", policy, code, out)
	if code == 0 {
		t.Errorf("verify accepted %s", what)
	}
	return out
}

// rtStepMentions reports whether a run's processes, file operations or
// diff name s.
func rtStepMentions(s *trace.Step, m string) bool {
	for _, p := range s.Processes {
		if argvHas(p, m) || strings.Contains(p.Binary, m) {
			return true
		}
		for _, e := range p.Execs {
			if strings.Contains(e.Binary, m) || slices.ContainsFunc(e.Argv, func(a string) bool { return strings.Contains(a, m) }) {
				return true
			}
		}
	}
	for _, f := range s.Files {
		if strings.Contains(f.Path, m) {
			return true
		}
	}
	for _, c := range s.Diff.Changes {
		if strings.Contains(c.Path, m) {
			return true
		}
	}
	return false
}

// rtBuildxEnv runs `docker buildx build` on the lab's builder with extra
// environment (a chosen TRACEPARENT, say).
func rtBuildxEnv(ctx context.Context, l *lab.Lab, env []string, args ...string) lab.Result {
	all := append([]string{"buildx", "build", "--builder", l.Builder, "--progress", "plain"}, args...)
	cmd := exec.CommandContext(ctx, "docker", all...)
	cmd.Env = append(os.Environ(), env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	res := lab.Result{Output: string(out), Duration: time.Since(start)}
	if err != nil {
		res.Err = fmt.Errorf("docker %s: %w", strings.Join(all, " "), err)
	}
	return res
}

func rtLogSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// rtLogLines returns the lines of the tracer's log written after offset.
func rtLogLines(t *testing.T, path string, offset int64) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() < offset {
		offset = 0 // rotated or truncated
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 4<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// rtLogField returns the value of key= on a log line holding msg.
func rtLogField(line, msg, key string) (string, bool) {
	if !strings.Contains(line, msg) {
		return "", false
	}
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return strings.Trim(v, `"`), true
		}
	}
	return "", false
}

// rtOtherFrontend pushes a frontend image whose binary is the lab's
// frontend with bytes appended: it runs as the real one, under another
// digest.
func rtOtherFrontend(t *testing.T, ctx context.Context, l *lab.Lab) string {
	t.Helper()
	c := registry.New(registry.Options{})
	img, err := c.Read(ctx, l.Frontend)
	if err != nil {
		t.Fatal(err)
	}
	var m *registry.Manifest
	for i := range img.Manifests {
		if img.Manifests[i].Platform.Architecture == "amd64" || img.Index == nil {
			m = &img.Manifests[i]
		}
	}
	if m == nil {
		t.Fatalf("%s has no linux/amd64 image", l.Frontend)
	}
	var prog []byte
	for _, ld := range m.Manifest.Layers {
		for _, e := range rtReadTar(t, rtLayerTar(t, ctx, l.Frontend, ld)) {
			if strings.TrimPrefix(e.h.Name, "./") == "bin/buildtrace-frontend" && e.h.Typeflag == tar.TypeReg {
				prog = e.data
			}
		}
	}
	if prog == nil {
		t.Fatalf("%s has no /bin/buildtrace-frontend", l.Frontend)
	}
	prog = append(slices.Clone(prog), []byte("\nredteam-"+randHex(8)+"\n")...)
	raw := rtWriteTar(t, []rtEnt{
		{&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}, nil},
		{&tar.Header{Name: "bin/buildtrace-frontend", Typeflag: tar.TypeReg, Mode: 0o755}, prog},
	})
	ref := l.Ref("redteam-frontend")
	for _, d := range m.Manifest.Layers {
		rc, err := c.OpenBlob(ctx, l.Frontend, d)
		if err != nil {
			t.Fatal(err)
		}
		blob, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Push(ctx, ref, d, blob); err != nil {
			t.Fatal(err)
		}
	}
	ld := pushBytes(t, ctx, c, ref, ocispec.MediaTypeImageLayerGzip, rtGzip(t, raw))
	cfg := m.Config
	cfg.RootFS.DiffIDs = append(slices.Clone(cfg.RootFS.DiffIDs), digest.FromBytes(raw))
	cfg.History = append(slices.Clone(cfg.History), ocispec.History{CreatedBy: "redteam: the frontend with bytes appended"})
	mf := m.Manifest
	mf.MediaType = ocispec.MediaTypeImageManifest
	mf.Config = pushJSON(t, ctx, c, ref, ocispec.MediaTypeImageConfig, cfg)
	mf.Layers = append(slices.Clone(mf.Layers), ld)
	data, err := json.Marshal(mf)
	if err != nil {
		t.Fatal(err)
	}
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := c.Push(ctx, ref, d, data); err != nil {
		t.Fatal(err)
	}
	return ref
}
