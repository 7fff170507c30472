package e2e

import (
	"archive/tar"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/test/lab"
)

// TestRedTeam5DirectoryReplacesFile: someone with push access adds, to a
// layer above the base, a directory entry named like a file of a layer below
// it (here /etc/guard.conf, which a COPY made and the traced RUN read).
// Extractors (containerd's archive.Apply, Docker's) replace a non-directory
// with a directory entry of the same name, so the image no longer has the
// file. The diff digest leaves directories out (docs/diff-digest.md), so the
// forged layer keeps its digest: the WORKDIR layer still has the digest of an
// empty change, which the RUN's signed lower digests skip; the RUN's own layer
// still has the digest of the traced run's diff, and stays "bound to a traced
// run".
//
// The threat model lists "layers that change only directories (mode, owner,
// empty directories)" as not covered; deleting a file of the image is not
// that, and a file below a traced run is what its lower digests cover.
// Since diff digest v2 a directory over a lower non-directory is a
// deletion on both sides, so the forged layers no longer keep their digests.
func TestRedTeam5DirectoryReplacesFile(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	n := randHex(8)
	body := "FROM BASE\nCOPY guard.conf /etc/guard.conf\nWORKDIR /app\nRUN cat /etc/guard.conf > /app/seen-" + n + "\n"
	dir := lab.WriteContext(t, map[string]string{
		"Dockerfile": dockerfile(l, body),
		"guard.conf": "deny all " + n + "\n",
	})
	honest := l.Ref("redteam5-dir")
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: honest, Push: true})
	out, code := runCLI(t, l, "verify", honest, "--key", l.TracerPub)
	expectCode(t, out, code, 0, "verify", honest)
	img := l.Image(t, ctx, honest)
	for _, h := range img.Manifests[0].Config.History {
		t.Logf("history: %q empty=%v", h.CreatedBy, h.EmptyLayer)
	}

	for _, tc := range []struct {
		name, made string
	}{
		{"WORKDIR layer", "WORKDIR /app"},
		{"the traced RUN's own layer", "RUN /bin/sh -c cat /etc/guard.conf"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i := layerOf(t, img.Manifests[0].Config, tc.made)
			forged := l.Ref("redteam5-dir")
			// The layer as it was, plus /etc and /etc/guard.conf as directories.
			rtRetarLayer(t, ctx, img, forged, i, func(es []rtEnt) []rtEnt {
				for _, d := range []string{"etc/", "etc/guard.conf/"} {
					es = append(es, rtEnt{&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}, nil})
				}
				return es
			})

			// What the forged image is once pulled and unpacked: BuildKit's
			// own unpacking (containerd's applier) runs a step on it.
			probe := lab.WriteContext(t, map[string]string{"Dockerfile": "FROM " + forged + "\n" +
				"RUN if [ -d /etc/guard.conf ]; then echo RT5 GUARD-IS-A-DIRECTORY; else echo RT5 GUARD-IS-A-FILE; cat /etc/guard.conf; fi; ls -la /etc/guard.conf /app\n"})
			res := l.Buildx(ctx, lab.Build{Context: probe, Args: []string{"--no-cache"}})
			if res.Err != nil {
				t.Logf("building on the forged image: %v", res.Err)
			}
			for _, line := range strings.Split(res.Output, "\n") {
				if strings.Contains(line, "RT5 ") || strings.Contains(line, "guard.conf") {
					t.Logf("build on forged image: %s", line)
				}
			}
			gone := strings.Contains(res.Output, "RT5 GUARD-IS-A-DIRECTORY")

			out, code := runCLI(t, l, "verify", forged, "--key", l.TracerPub)
			t.Logf("verify %s:\n%s", forged, out)
			if code == 0 || !strings.Contains(out, "[binding]") {
				t.Errorf("verify did not refuse the binding of %s (exit %d), whose layer %d (%s) now also names /etc/guard.conf, a file of the layer below that the traced RUN read, as a directory: unpacked, the image has no such file (a build on it saw a directory there: %v)", forged, code, i, tc.made, gone)
			}
		})
	}
}

// TestRunReplacesFileWithDirectory: the honest twin of the forgery above.
// A RUN that replaces a lower file and a lower symlink with directories
// verifies, and its signed diff names both as deleted.
func TestRunReplacesFileWithDirectory(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n := randHex(8)
	body := "FROM BASE\nCOPY guard.conf /etc/guard.conf\nRUN ln -s /etc /etc-link-" + n + "\n" +
		"RUN rm /etc/guard.conf /etc-link-" + n + " && mkdir /etc/guard.conf /etc-link-" + n + " && echo " + n + " > /etc/guard.conf/inner\n"
	dir := lab.WriteContext(t, map[string]string{
		"Dockerfile": dockerfile(l, body),
		"guard.conf": "deny all " + n + "\n",
	})
	ref := l.Ref("dir-over-file")
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
	out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub)
	expectCode(t, out, code, 0, "verify", ref)
	if !strings.Contains(out, "to traced runs 2") {
		t.Errorf("both RUN layers should be bound to their traced runs:\n%s", out)
	}
	p := runtimeTrace(t, ctx, l, ref)
	s := stepByInstruction(t, p, "RUN rm /etc/guard.conf")
	// Each path is both deleted (the file, the symlink) and created (the
	// directory, diff digest v3).
	for _, path := range []string{"/etc/guard.conf", "/etc-link-" + n} {
		for _, want := range []attest.FileAnnotations{{Operation: trace.ChangeDeleted}, {Operation: trace.ChangeCreated, Type: "dir"}} {
			found := slices.ContainsFunc(p.MonitorLog.FileAccess, func(f attest.ResourceDescriptor) bool {
				a := f.Annotations
				return a.Step == s.StepID && f.Name == path && a.Source == attest.SourceDiff && a.Operation == want.Operation && a.Type == want.Type
			})
			if !found {
				t.Errorf("no diff entry for %s with %+v", path, want)
			}
		}
	}
	if _, ok := fileAccess(p, s.StepID, "/etc/guard.conf/inner", attest.SourceDiff); !ok {
		t.Errorf("no diff entry for /etc/guard.conf/inner")
	}
}
