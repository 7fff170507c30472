package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/buildtrace/buildtrace/pkg/policy"
	"github.com/buildtrace/buildtrace/pkg/report"
)

const showUsage = "usage: buildtrace show IMAGE [--key PUB] [--full] [--format text|markdown] [--html FILE] [--policy FILE] [--plain-http] [--cache-dir DIR]"

func runShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("show", stderr)
	key := fs.String("key", "", "tracer public key; when given, the trace signature is checked")
	htmlFile := fs.String("html", "", "also write a self-contained HTML report to this file")
	full := fs.Bool("full", false, "print every process, destination, downloaded file and file change, not only the summary")
	format := fs.String("format", "text", "text or markdown (for CI job summaries)")
	policyFile := fs.String("policy", "", "policy YAML file (docs/policy.md): list each step's violations")
	plainHTTP := fs.Bool("plain-http", false, "use plain HTTP for every registry")
	cacheDir := cacheFlag(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("want exactly one IMAGE (%s)", showUsage)
	}
	if *format != "text" && *format != "markdown" {
		return fmt.Errorf("--format must be text or markdown (%s)", showUsage)
	}
	opts := report.Options{Full: *full}
	if *policyFile != "" {
		p, err := policy.Load(*policyFile)
		if err != nil {
			return err
		}
		if opts.Policy, err = policy.Compile(p); err != nil {
			return err
		}
		opts.PolicyName = *policyFile
	}
	traces, err := loadTraces(ctx, pos[0], *key, *plainHTTP, openCache(*cacheDir, stderr))
	if err != nil {
		return err
	}
	render := report.TextWith
	if *format == "markdown" {
		render = report.Markdown
	}
	if err := render(stdout, traces, opts); err != nil {
		return err
	}
	if *htmlFile != "" {
		f, err := os.Create(*htmlFile)
		if err != nil {
			return fmt.Errorf("creating HTML report: %w", err)
		}
		if err := report.HTMLWith(f, traces, opts); err != nil {
			f.Close()
			return fmt.Errorf("writing HTML report %s: %w", *htmlFile, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("writing HTML report %s: %w", *htmlFile, err)
		}
		if *format == "markdown" { // stdout is the job summary
			fmt.Fprintf(stderr, "wrote %s\n", ts(*htmlFile))
		} else {
			fmt.Fprintf(stdout, "\nwrote %s\n", ts(*htmlFile))
		}
	}
	return nil
}
