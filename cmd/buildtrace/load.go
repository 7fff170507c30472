package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/registry"
	"github.com/buildtrace/buildtrace/pkg/report"
	"github.com/buildtrace/buildtrace/pkg/sign"
	"github.com/buildtrace/buildtrace/pkg/verify"
	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// targets reads ref and pairs each platform manifest with its
// runtime-trace statement.
func targets(ctx context.Context, c *registry.Client, ref string) ([]verify.Target, error) {
	img, err := c.Read(ctx, ref)
	if err != nil {
		return nil, err
	}
	if len(img.Manifests) == 0 {
		return nil, fmt.Errorf("%s has no image manifests", ref)
	}
	var out []verify.Target
	for _, m := range img.Manifests {
		t := verify.Target{Manifest: m.Descriptor, Platform: platforms.Format(m.Platform), Image: m.Manifest, Config: m.Config}
		// Two runtime-trace statements for one manifest (a second
		// attestation manifest, or a second layer) would let verify vouch
		// for one while another reader takes the other: BuildKit writes
		// one, so more is refused.
		n := 0
		for _, a := range img.Attestations {
			if a.Subject != m.Descriptor.Digest {
				continue
			}
			for _, s := range a.Statements {
				if s.PredicateType == attest.PredicateType {
					n++
					t.Statement = s.Data
				}
			}
		}
		if n > 1 {
			return nil, fmt.Errorf("%s: %d runtime-trace attestation statements (%s) for manifest %s: which one a reader takes is ambiguous", ref, n, attest.PredicateType, m.Descriptor.Digest)
		}
		out = append(out, t)
	}
	return out, nil
}

// authenticity lists the checks on which whether the shown content is
// what the tracer saw on this image depends. Completeness, cached steps
// and policy are verdicts about a build, not about the trace's origin.
var authenticity = []string{verify.CheckAttestation, verify.CheckSubject, verify.CheckSignature,
	verify.CheckRequester, verify.CheckContent, verify.CheckBinding}

// loadTraces reads ref's traces for show and diff. With keyRef, each
// platform goes through verify (no policy): the trace is "verified" only
// when every authenticity check verify makes holds, and then what is shown
// is what the signed trace yields, not the attestation's readable copy.
// Otherwise the readable copy is shown, marked unverified.
func loadTraces(ctx context.Context, ref, keyRef string, plainHTTP bool, cache verify.Cache) ([]report.Trace, error) {
	c := registry.New(registry.Options{PlainHTTP: plainHTTP})
	ts, err := targets(ctx, c, ref)
	if err != nil {
		return nil, err
	}
	var v *sign.Verifier
	if keyRef != "" {
		if v, err = sign.LoadVerifier(ctx, keyRef); err != nil {
			return nil, err
		}
	}
	var out []report.Trace
	for _, t := range ts {
		rt := report.Trace{Image: ref, Platform: t.Platform, Manifest: t.Manifest.Digest.String(), Signature: "UNVERIFIED: not checked (no --key); nothing shown is known to be what the tracer saw"}
		if t.Statement == nil {
			rt.Err = "no runtime-trace attestation for this manifest"
			out = append(out, rt)
			continue
		}
		pred, err := attest.Parse(t.Statement)
		if err != nil {
			rt.Err = err.Error()
			out = append(out, rt)
			continue
		}
		rt.Predicate = pred
		if !pred.Buildtrace.Monitored {
			rt.Signature = "none (build was not monitored: " + pred.Buildtrace.UnmonitoredReason + ")"
			out = append(out, rt)
			continue
		}
		if v != nil {
			r := verify.Verify(ctx, t, verify.Options{
				Verifier: v,
				OpenLayer: func(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
					return c.OpenBlob(ctx, ref, d)
				},
				BaseLayers: c.PlatformLayers,
				BaseCache:  cache,
			})
			var bad []string
			for _, f := range r.Failures {
				if slices.Contains(authenticity, f.Check) {
					bad = append(bad, f.Check+": "+f.Event)
				}
			}
			if len(bad) == 0 && r.Predicate != nil {
				rt.Predicate, rt.Build, rt.Verified = r.Predicate, r.Build, true
				rt.Signature = "verified with key " + v.KeyID() + ": signature, subject, requester, plan and layer binding hold (run `buildtrace verify` for completeness and policy)"
				out = append(out, rt)
				continue
			}
			rt.Signature = "UNVERIFIED (shown as the attestation says): " + strings.Join(bad, "; ")
		}
		b, err := attest.DecodeEnvelope(pred.Buildtrace.Envelope)
		if err != nil {
			rt.Err = err.Error()
		}
		rt.Build = b
		out = append(out, rt)
	}
	return out, nil
}
