package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/buildtrace/buildtrace/pkg/policy"
	"github.com/buildtrace/buildtrace/pkg/registry"
	"github.com/buildtrace/buildtrace/pkg/sign"
	"github.com/buildtrace/buildtrace/pkg/termsafe"
	"github.com/buildtrace/buildtrace/pkg/verify"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// verifyReport is the --output json document.
type verifyReport struct {
	Image     string           `json:"image"`
	Pass      bool             `json:"pass"`
	Policy    string           `json:"policy,omitempty"`
	Platforms []*verify.Result `json:"platforms"`
}

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("verify", stderr)
	key := fs.String("key", "", "tracer public key: PEM file or KMS URI (required)")
	policyFile := fs.String("policy", "", "policy YAML file (docs/policy.md)")
	output := fs.String("output", "text", "text or json")
	plainHTTP := fs.Bool("plain-http", false, "use plain HTTP for every registry")
	cacheDir := cacheFlag(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitUsage
		}
		return exitUsage
	}
	usageErr := func(msg string) int {
		fmt.Fprintf(stderr, "buildtrace verify: %s\nusage: buildtrace verify IMAGE --key PUB [--policy FILE] [--output text|json] [--plain-http] [--cache-dir DIR]\n", msg)
		return exitUsage
	}
	if len(pos) != 1 {
		return usageErr("want exactly one IMAGE")
	}
	if *key == "" {
		return usageErr("--key is required")
	}
	if *output != "text" && *output != "json" {
		return usageErr("--output must be text or json")
	}
	ioErr := func(err error) int {
		fmt.Fprintf(stderr, "buildtrace verify: %s\n", ts(err.Error()))
		return exitUsage
	}
	ref := pos[0]
	v, err := sign.LoadVerifier(ctx, *key)
	if err != nil {
		return ioErr(err)
	}
	var checker *policy.Checker
	if *policyFile != "" {
		p, err := policy.Load(*policyFile)
		if err != nil {
			return ioErr(err)
		}
		if checker, err = policy.Compile(p); err != nil {
			return ioErr(err)
		}
	}
	c := registry.New(registry.Options{PlainHTTP: *plainHTTP})
	ts, err := targets(ctx, c, ref)
	if err != nil {
		return ioErr(err)
	}
	opts := verify.Options{
		Verifier: v,
		Policy:   checker,
		OpenLayer: func(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
			return c.OpenBlob(ctx, ref, d)
		},
		BaseLayers: c.PlatformLayers,
		BaseCache:  openCache(*cacheDir, stderr),
	}
	rep := verifyReport{Image: ref, Pass: true, Policy: *policyFile}
	for _, t := range ts {
		r := verify.Verify(ctx, t, opts)
		rep.Platforms = append(rep.Platforms, r)
		rep.Pass = rep.Pass && r.Pass()
	}
	if err := ctx.Err(); err != nil {
		return ioErr(err)
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return ioErr(err)
		}
	} else {
		printVerify(stdout, rep)
	}
	if !rep.Pass {
		return exitFailed
	}
	return exitOK
}

func printVerify(w io.Writer, rep verifyReport) {
	for _, r := range rep.Platforms {
		status := "PASS"
		if !r.Pass() {
			status = "FAIL"
		}
		fmt.Fprintf(w, "%s  %s %s (manifest %s)\n", status, ts(rep.Image), ts(r.Platform), ts(r.Manifest))
		if r.BuildTraceID != "" {
			fmt.Fprintf(w, "  build trace %s", ts(r.BuildTraceID))
			if r.KeyID != "" {
				fmt.Fprintf(w, ", key %s", ts(r.KeyID))
			}
			fmt.Fprintln(w)
		}
		for _, s := range r.Steps {
			mark := "ok  "
			if s.Failures > 0 {
				mark = "FAIL"
			}
			fmt.Fprintf(w, "  %s %-9s %-16s %s\n", mark, ts(s.Status), ts(s.Location), ts(oneLine(s.Instruction, 80)))
		}
		if r.Frontend != "" {
			fmt.Fprintf(w, "  frontend %s\n", ts(r.Frontend))
		}
		if len(r.Layers) > 0 {
			n := map[string]int{}
			for _, l := range r.Layers {
				n[l.Binding]++
			}
			fmt.Fprintf(w, "  layers: %d; bound to the base manifest %d, to traced runs %d, to what a traced run ran on %d, by plan position only %d, directory times only %d, cached %d\n",
				len(r.Layers), n[verify.BindBase], n[verify.BindRun], n[verify.BindLower], n[verify.BindPlan], n[verify.BindDirs], n[verify.BindCached])
		}
		for _, f := range r.Failures {
			check := f.Check
			if f.Rule != "" {
				check += " " + f.Rule
			}
			fmt.Fprintf(w, "  ✗ [%s]", ts(check))
			if f.Location != "" || f.Instruction != "" {
				fmt.Fprintf(w, " %s %s:", ts(f.Location), ts(oneLine(f.Instruction, 60)))
			}
			fmt.Fprintf(w, " %s", ts(f.Event))
			if len(f.Argv) > 0 {
				fmt.Fprintf(w, " — process %d: %s", f.PID, oneLine(strings.Join(termsafe.Strings(f.Argv), " "), 100))
			} else if f.Binary != "" {
				fmt.Fprintf(w, " — process %d: %s", f.PID, ts(f.Binary))
			}
			fmt.Fprintln(w)
		}
	}
	if rep.Pass {
		fmt.Fprintln(w, "verification passed")
	} else {
		fmt.Fprintln(w, "verification FAILED")
	}
}

// ts escapes control characters of attestation-derived text.
func ts(s string) string { return termsafe.String(s) }

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len([]rune(s)) > max {
		return string([]rune(s)[:max-1]) + "…"
	}
	return s
}
