// Command buildtrace-frontend is the buildtrace BuildKit frontend: the stock
// Dockerfile frontend with every RUN monitored by buildtraced and a
// runtime-trace attestation per image platform. Use it with
// "# syntax=<registry>/buildtrace/frontend:<tag>".
package main

import (
	"fmt"
	"os"

	"github.com/buildtrace/buildtrace/frontend"
	"github.com/moby/buildkit/frontend/gateway/grpcclient"
	"github.com/moby/buildkit/util/appcontext"
	"github.com/moby/buildkit/util/bklog"
	_ "github.com/moby/buildkit/util/grpcutil/encoding/proto"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-version" || os.Args[1] == "--version") {
		fmt.Println(os.Args[0], "github.com/buildtrace/buildtrace/cmd/buildtrace-frontend")
		return
	}
	if len(os.Args) > 1 && os.Args[1] == frontend.WitnessArg {
		// The witness step (frontend/witness.go): being traced on top of
		// the image's layers is all it is for. It touches nothing.
		return
	}
	if err := grpcclient.RunFromEnvironment(appcontext.Context(), frontend.Build); err != nil {
		bklog.L.Errorf("fatal error: %+v", err)
		os.Exit(1)
	}
}
