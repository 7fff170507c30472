// Command buildtraced follows the containers of traced BuildKit steps with
// eBPF and serves their signed traces on a loopback HTTP API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/buildtrace/buildtrace/tracer/daemon"
)

// version is set at link time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	cfg, level, err := daemon.ParseFlags("buildtraced", os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "buildtraced:", err)
		os.Exit(2)
	}
	cfg.Version = version
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := daemon.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "buildtraced:", err)
		os.Exit(1)
	}
}
