package e2e

import (
	"archive/tar"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/test/lab"
)

// TestAttackDirectoryMetadata: someone with push access changes only
// directories in a layer above the base: opens a lower directory (/etc) to
// everyone, gives a directory a traced run made to another owner, or adds
// a world-writable directory. An extractor applies a directory header's
// mode and owner, so the pulled image has them; the diff digest before v3
// left directories out, so each forged layer kept its digest. The honest
// image verifies, and its signed diff names the run's directory changes.
func TestAttackDirectoryMetadata(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	n := randHex(8)
	body := "FROM BASE\nWORKDIR /app-" + n + "\n" +
		"RUN mkdir -p /srv-" + n + "/a && echo 1 > /srv-" + n + "/a/f\n" +
		"RUN chmod 0711 /srv-" + n + " && chown 5:5 /srv-" + n + "/a && mkdir -m 0700 /priv-" + n +
		" && echo x > /priv-" + n + "/f && mkdir /empty-" + n + "\n"
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, body)})
	honest := l.Ref("dirmeta")
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: honest, Push: true})
	out, code := runCLI(t, l, "verify", honest, "--key", l.TracerPub)
	expectCode(t, out, code, 0, "verify", honest)
	if !strings.Contains(out, "to traced runs 2") {
		t.Errorf("both RUN layers should be bound to their traced runs:\n%s", out)
	}
	p := runtimeTrace(t, ctx, l, honest)
	s := stepByInstruction(t, p, "RUN chmod 0711")
	for path, op := range map[string]string{
		"/srv-" + n: trace.ChangeModified, "/srv-" + n + "/a": trace.ChangeModified,
		"/priv-" + n: trace.ChangeCreated, "/empty-" + n: trace.ChangeCreated,
	} {
		if f, ok := fileAccess(p, s.StepID, path, attest.SourceDiff); !ok || f.Annotations.Operation != op || f.Annotations.Type != "dir" {
			t.Errorf("diff entry for %s = %+v (found %v), want a %s directory", path, f, ok, op)
		}
	}

	img := l.Image(t, ctx, honest)
	run := "RUN /bin/sh -c chmod 0711"
	setDir := func(name string, mode int64, uid int) func([]rtEnt) []rtEnt {
		return func(es []rtEnt) []rtEnt {
			for _, e := range es {
				if e.h.Name == name {
					e.h.Mode, e.h.Uid = mode, uid
					return es
				}
			}
			return append(es, rtEnt{&tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode, Uid: uid, ModTime: time.Unix(0, 0)}, nil})
		}
	}
	for _, tc := range []struct {
		name, layer string
		edit        func([]rtEnt) []rtEnt
		effect      string // what a build on the forged image sees
	}{
		{"a lower directory opened to everyone", run, setDir("etc/", 0o777, 0), "stat -c %a /etc"},
		{"a run's changed directory opened", run, setDir("srv-"+n+"/", 0o777, 0), "stat -c %a /srv-" + n},
		{"a run's new directory given away", run, setDir("priv-"+n+"/", 0o700, 1000), "stat -c %u /priv-" + n},
		{"a world-writable directory added", run, setDir("cron-"+n+"/", 0o1777, 0), "stat -c %a /cron-" + n},
		{"the WORKDIR layer's directory opened", "WORKDIR /app-" + n, setDir("app-"+n+"/", 0o777, 0), "stat -c %a /app-" + n},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forged := l.Ref("dirmeta")
			rtRetarLayer(t, ctx, img, forged, layerOf(t, img.Manifests[0].Config, tc.layer), tc.edit)

			// What the forged image is once BuildKit pulls and unpacks it.
			probe := lab.WriteContext(t, map[string]string{"Dockerfile": "FROM " + forged + "\nRUN echo DIRMETA $(" + tc.effect + ")\n"})
			res := l.Buildx(ctx, lab.Build{Context: probe, Args: []string{"--no-cache"}})
			for _, line := range strings.Split(res.Output, "\n") {
				if strings.Contains(line, "DIRMETA ") && !strings.Contains(line, "RUN echo") {
					t.Logf("a build on the forged image: %s", strings.TrimSpace(line))
				}
			}

			out, code := runCLI(t, l, "verify", forged, "--key", l.TracerPub)
			t.Logf("verify %s:\n%s", forged, out)
			if code == 0 || !strings.Contains(out, "[binding]") {
				t.Errorf("verify did not refuse the binding of %s (exit %d), whose %q layer now changes a directory's mode or owner that no traced run changed", forged, code, tc.layer)
			}
		})
	}
}
