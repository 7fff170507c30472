// Command buildtrace creates tracer keys and verifies, shows and compares
// the runtime-trace attestations of images built under buildtraced.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // verification failed, or diff found something new
	exitUsage  = 2 // bad usage or an I/O error
)

const usage = `usage: buildtrace <command> [arguments]

commands:
  keygen --private FILE --public FILE
        write a new ECDSA P-256 key pair for buildtraced
  verify IMAGE --key PUB [--policy FILE] [--output text|json] [--plain-http]
        verify an image's runtime-trace attestation (exit 0 pass, 1 fail, 2 error)
  show IMAGE [--key PUB] [--full] [--format text|markdown] [--policy FILE] [--html FILE] [--plain-http]
        print what each build step did; --html writes a self-contained page
  diff OLD NEW [--threshold 0.5] [--key PUB] [--output text|json] [--plain-http]
        compare two images' traces (exit 1 when something new appeared)

See docs/cli.md.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch args[0] {
	case "keygen":
		err = runKeygen(args[1:], stdout, stderr)
	case "verify":
		return runVerify(ctx, args[1:], stdout, stderr)
	case "show":
		err = runShow(ctx, args[1:], stdout, stderr)
	case "diff":
		return runDiff(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "buildtrace: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "buildtrace %s: %s\n", args[0], ts(err.Error()))
		}
		return exitUsage
	}
	return exitOK
}

// parseInterspersed parses flags that may come before, between or after
// positional arguments (the standard flag package stops at the first
// positional one) and returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("buildtrace "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}
