package main

import (
	"context"
	"fmt"

	"encoding/json"
	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/registry"
	"github.com/buildtrace/buildtrace/pkg/report"
	"github.com/buildtrace/buildtrace/pkg/sign"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/pkg/verify"
	"github.com/containerd/platforms"
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
		if a, ok := img.ForManifest(m.Descriptor.Digest); ok {
			if s, ok := a.Statement(attest.PredicateType); ok {
				t.Statement = s.Data
			}
		}
		out = append(out, t)
	}
	return out, nil
}

// loadTraces reads ref's traces for show and diff. With keyRef, each
// tracer envelope's signature is checked and an invalid one is reported
// (the trace is still shown, marked as such).
func loadTraces(ctx context.Context, ref, keyRef string, plainHTTP bool) ([]report.Trace, error) {
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
		rt := report.Trace{Image: ref, Platform: t.Platform, Manifest: t.Manifest.Digest.String(), Signature: "not checked (no --key)"}
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
			payload, err := sign.Verify(ctx, v, pred.Buildtrace.Envelope, trace.PayloadType)
			if err != nil {
				rt.Signature = "INVALID: " + err.Error()
			} else {
				var b trace.Build
				if err := json.Unmarshal(payload, &b); err != nil {
					rt.Signature = "INVALID: signed payload is not a trace: " + err.Error()
				} else {
					rt.Build, rt.Verified = &b, true
					rt.Signature = "verified with key " + v.KeyID() + " (run `buildtrace verify` for the full checks)"
				}
			}
		}
		if rt.Build == nil {
			b, err := attest.DecodeEnvelope(pred.Buildtrace.Envelope)
			if err != nil {
				rt.Err = err.Error()
			}
			rt.Build = b
		}
		out = append(out, rt)
	}
	return out, nil
}
