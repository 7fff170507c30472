package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/buildtrace/buildtrace/pkg/report"
)

func runShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("show", stderr)
	key := fs.String("key", "", "tracer public key; when given, the trace signature is checked")
	htmlFile := fs.String("html", "", "also write a self-contained HTML report to this file")
	plainHTTP := fs.Bool("plain-http", false, "use plain HTTP for every registry")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("want exactly one IMAGE\nusage: buildtrace show IMAGE [--key PUB] [--html FILE] [--plain-http]")
	}
	traces, err := loadTraces(ctx, pos[0], *key, *plainHTTP)
	if err != nil {
		return err
	}
	if err := report.Text(stdout, traces); err != nil {
		return err
	}
	if *htmlFile != "" {
		f, err := os.Create(*htmlFile)
		if err != nil {
			return fmt.Errorf("creating HTML report: %w", err)
		}
		if err := report.HTML(f, traces); err != nil {
			f.Close()
			return fmt.Errorf("writing HTML report %s: %w", *htmlFile, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("writing HTML report %s: %w", *htmlFile, err)
		}
		fmt.Fprintf(stdout, "\nwrote %s\n", *htmlFile)
	}
	return nil
}
