package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/registry"
	"github.com/buildtrace/buildtrace/test/lab"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestRedTeam14AmbiguousAttestation: a registry writer adds, next to an
// honest image's signed runtime-trace attestation, a second runtime-trace
// statement for the same image manifest (a second attestation manifest in
// the index, or a second statement layer in the honest one) holding a
// forged, unsigned predicate. verify read only the first and accepted the
// image, so the image it called verified carried a trace that is not what
// the tracer saw, and which one a reader gets depends on the reader.
// BuildKit writes one attestation manifest per image manifest and one
// statement per predicate type: two are refused.
func TestRedTeam14AmbiguousAttestation(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	dir := lab.WriteContext(t, map[string]string{
		"Dockerfile": "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\nRUN echo " + randHex(8) + " > /hi && sleep 1\n",
	})
	ref := l.Ref("redteam14")
	if res := l.Buildx(ctx, lab.Build{Context: dir, Tag: ref, Push: true}); res.Err != nil {
		t.Fatalf("%v\n%s", res.Err, res.Output)
	}
	img := l.Image(t, ctx, ref)
	if out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub); code != 0 {
		t.Fatalf("honest image: verify exit %d\n%s", code, out)
	}
	m := img.Manifests[0]
	a, ok := img.ForManifest(m.Descriptor.Digest)
	if !ok {
		t.Fatal("honest image has no attestation")
	}
	c := registry.New(registry.Options{})
	repo := ref[:strings.LastIndex(ref, ":")]

	// A forged statement about the same manifest: readable predicate only.
	forgedStatement := func(t *testing.T, target string) ocispec.Descriptor {
		st := map[string]any{
			"_type":         "https://in-toto.io/Statement/v0.1",
			"predicateType": attest.PredicateType,
			"subject":       []any{map[string]any{"name": ref, "digest": map[string]string{"sha256": m.Descriptor.Digest.Encoded()}}},
			"predicate":     map[string]any{"forged": "nothing was observed"},
		}
		data, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		d := pushBytes(t, ctx, c, target, registry.MediaTypeInToto, data)
		d.Annotations = map[string]string{registry.AnnotationPredicateType: attest.PredicateType}
		return d
	}
	expectRefused := func(t *testing.T, forged string) {
		t.Helper()
		out, code := runCLI(t, l, "verify", forged, "--key", l.TracerPub)
		if code == 0 {
			t.Fatalf("verify %s accepted an image with two runtime-trace statements for one manifest:\n%s", forged, out)
		}
		if !strings.Contains(out, "runtime-trace") && !strings.Contains(out, "attestation") {
			t.Errorf("verify output does not say why:\n%s", out)
		}
	}

	t.Run("a second attestation manifest for the image", func(t *testing.T) {
		forged := repo + ":" + randHex(6)
		am := a.Manifest
		am.Layers = []ocispec.Descriptor{forgedStatement(t, forged)}
		amd := pushJSON(t, ctx, c, forged, ocispec.MediaTypeImageManifest, am)
		amd.Platform = a.Descriptor.Platform
		amd.Annotations = a.Descriptor.Annotations
		idx := *img.Index
		idx.Manifests = append(slices.Clone(img.Index.Manifests), amd)
		rtPushIndex(t, ctx, forged, idx)
		expectRefused(t, forged)
	})

	t.Run("a second runtime-trace layer in the attestation", func(t *testing.T) {
		forged := repo + ":" + randHex(6)
		am := a.Manifest
		am.Layers = append(slices.Clone(a.Manifest.Layers), forgedStatement(t, forged))
		amd := pushJSON(t, ctx, c, forged, ocispec.MediaTypeImageManifest, am)
		amd.Platform = a.Descriptor.Platform
		amd.Annotations = a.Descriptor.Annotations
		idx := *img.Index
		idx.Manifests = nil
		for _, d := range img.Index.Manifests {
			if d.Digest == a.Descriptor.Digest {
				d = amd
			}
			idx.Manifests = append(idx.Manifests, d)
		}
		rtPushIndex(t, ctx, forged, idx)
		expectRefused(t, forged)
	})
}
