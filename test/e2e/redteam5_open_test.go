//go:build buildtrace_open

// This file holds attacks that still succeed: it is built only with
// -tags buildtrace_open and fails until they are fixed (docs/threat-model.md,
// "Not guaranteed"). Run it with:
//
//	go test -tags buildtrace_open ./test/e2e -run TestRedTeam5DirectoryReplacesFile
//
// When a fix lands, drop the build tag so the test guards it.

package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/registry"
	"github.com/buildtrace/buildtrace/pkg/verify"
	"github.com/buildtrace/buildtrace/test/lab"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
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
func TestRedTeam5DirectoryReplacesFile(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	n := randHex(8)
	body := "FROM BASE\nCOPY guard.conf /etc/guard.conf\nWORKDIR /app\nRUN cat /etc/guard.conf > /app/seen-" + n + "\n"
	dir := lab.WriteContext(t, map[string]string{
		"Dockerfile": "# syntax=" + l.Frontend + "\n" + strings.ReplaceAll(body, "BASE", l.BaseImage),
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
	c := registry.New(registry.Options{})

	for _, tc := range []struct {
		name, made string
	}{
		{"WORKDIR layer", "WORKDIR /app"},
		{"the traced RUN's own layer", "RUN /bin/sh -c cat /etc/guard.conf"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i := layerOf(t, img.Manifests[0].Config, tc.made)
			forged := l.Ref("redteam5-dir")
			// The layer as it was, plus /etc and /etc/guard.conf as
			// directories, uncompressed.
			rc, err := c.OpenBlob(ctx, honest, img.Manifests[0].Manifest.Layers[i])
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			tr, closeFn, err := verify.Decompress(rc)
			if err != nil {
				t.Fatal(err)
			}
			defer closeFn()
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			r := tar.NewReader(tr)
			for {
				h, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("layer %d entry %s (%c)", i, h.Name, h.Typeflag)
				if err := tw.WriteHeader(h); err != nil {
					t.Fatal(err)
				}
				if _, err := io.Copy(tw, r); err != nil {
					t.Fatal(err)
				}
			}
			for _, d := range []string{"etc/", "etc/guard.conf/"} {
				if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
					t.Fatal(err)
				}
			}
			if err := tw.Close(); err != nil {
				t.Fatal(err)
			}
			layer := pushBytes(t, ctx, c, forged, ocispec.MediaTypeImageLayer, buf.Bytes())
			forge(t, ctx, img, forged, forgery{
				config: func(c *ocispec.Image) {
					// Consistent for any puller: the diff ID of an
					// uncompressed layer is its digest.
					c.RootFS.DiffIDs = slices.Clone(c.RootFS.DiffIDs)
					c.RootFS.DiffIDs[i] = layer.Digest
				},
				layers: func(ls []ocispec.Descriptor) []ocispec.Descriptor { ls[i] = layer; return ls },
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
			if code == 0 {
				t.Errorf("verify accepted %s, whose layer %d (%s) now also names /etc/guard.conf, a file of the layer below that the traced RUN read, as a directory: unpacked, the image has no such file (a build on it saw a directory there: %v)", forged, i, tc.made, gone)
			}
		})
	}
}
