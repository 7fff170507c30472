package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/buildtrace/buildtrace/pkg/drift"
	"github.com/buildtrace/buildtrace/pkg/report"
)

func runDiff(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("diff", stderr)
	threshold := fs.Float64("threshold", 0.5, "relative resource change to report (0.5 = 50%)")
	key := fs.String("key", "", "tracer public key; when given, both traces must verify")
	output := fs.String("output", "text", "text or json")
	plainHTTP := fs.Bool("plain-http", false, "use plain HTTP for every registry")
	cacheDir := cacheFlag(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return exitUsage
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "buildtrace diff: "+format+"\n", a...)
		return exitUsage
	}
	if len(pos) != 2 {
		return fail("want OLD and NEW images\nusage: buildtrace diff OLD NEW [--threshold 0.5] [--key PUB] [--output text|json] [--plain-http] [--cache-dir DIR]")
	}
	if *threshold < 0 {
		return fail("--threshold must not be negative")
	}
	if *output != "text" && *output != "json" {
		return fail("--output must be text or json")
	}
	var sides [2][]report.Trace
	for i, ref := range pos {
		got, err := loadTraces(ctx, ref, *key, *plainHTTP, openCache(*cacheDir, stderr))
		if err != nil {
			return fail("%s", ts(err.Error()))
		}
		sides[i] = got
	}
	type platformDiff struct {
		Platform string        `json:"platform"`
		Result   *drift.Result `json:"result"`
	}
	var out []platformDiff
	anyNew := false
	for _, n := range sides[1] {
		o, ok := pick(sides[0], n.Platform)
		if !ok {
			return fail("%s has no %s manifest", ts(pos[0]), ts(n.Platform))
		}
		for _, t := range []report.Trace{o, n} {
			if t.Predicate == nil {
				return fail("%s %s: %s", ts(t.Image), ts(t.Platform), ts(t.Err))
			}
			if *key != "" && t.Predicate.Buildtrace.Monitored && !t.Verified {
				return fail("%s %s: %s", ts(t.Image), ts(t.Platform), ts(t.Signature))
			}
		}
		r := drift.Compare(drift.Steps(o.Predicate, o.Build), drift.Steps(n.Predicate, n.Build), *threshold)
		anyNew = anyNew || r.New()
		out = append(out, platformDiff{Platform: n.Platform, Result: r})
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"old": pos[0], "new": pos[1], "newFindings": anyNew, "platforms": out}); err != nil {
			return fail("%v", err)
		}
	} else {
		for _, pd := range out {
			fmt.Fprintf(stdout, "== %s: %s → %s\n", ts(pd.Platform), ts(pos[0]), ts(pos[1]))
			if err := pd.Result.Text(stdout); err != nil {
				return fail("%v", err)
			}
		}
	}
	if anyNew {
		return exitFailed
	}
	return exitOK
}

// pick finds the trace of a platform, or the only one.
func pick(ts []report.Trace, platform string) (report.Trace, bool) {
	for _, t := range ts {
		if t.Platform == platform {
			return t, true
		}
	}
	if len(ts) == 1 {
		return ts[0], true
	}
	return report.Trace{}, false
}
