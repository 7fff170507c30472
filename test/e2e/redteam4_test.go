package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/test/lab"
)

// TestRedTeam4InjectIntoFrontendConnection: a hostile RUN step (root in
// its container with BuildKit's default capabilities, CAP_NET_RAW among
// them, on the host's network as in the lab) speaks on its own build's
// frontend's keep-alive connection to the tracer
// (testdata/redteam4/inject.c). It finds the connection in /proc/net/tcp,
// learns its sequence numbers from the duplicate ACK the tracer sends for
// an out-of-window segment, and injects a request with a raw IP socket.
// The tracer identifies callers by the kernel's record of the socket at
// the other end of the 4-tuple (tracer/peer): that socket is the
// frontend's, so the bytes the step wrote must still not be taken for the
// frontend's. The request asks to seal another build, so that the answer
// says who the tracer took the caller for without changing anything.
func TestRedTeam4InjectIntoFrontendConnection(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	_, port, err := net.SplitHostPort(l.TracerAddr)
	if err != nil {
		t.Fatalf("lab tracer %q: %v", l.TracerAddr, err)
	}
	other := randHex(16) // a build the step's frontend is not
	df := "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\n" +
		"COPY --chmod=0755 inject /usr/local/bin/inject\n" +
		`RUN ["/usr/local/bin/inject", "` + port + `", "/v1/builds/` + other + `/seal", "` + randHex(8) + `"]` + "\n"
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "inject": staticRedTeam4C(t, "inject")})
	// The frontend's connection is reset by the step: the build may fail
	// or end unmonitored; what matters is what the tracer answered.
	res := l.Buildx(ctx, lab.Build{Context: dir, Tag: l.Ref("redteam4-inject")})
	var answers []string
	for _, line := range strings.Split(res.Output, "\n") {
		if i := strings.Index(line, "RT4 "); i >= 0 {
			t.Logf("step: %s", line[i:])
			if strings.HasPrefix(line[i:], "RT4 RESP ") && strings.Contains(line, "HTTP/1.1 ") {
				answers = append(answers, line[i:])
			}
		}
	}
	if !strings.Contains(res.Output, "RT4 RAW ok") {
		t.Skipf("the step could not open a raw socket (no CAP_NET_RAW): the attack cannot run here:\n%s", res.Output)
	}
	if len(answers) == 0 {
		t.Fatalf("the step got no answer from the tracer on any connection: the attack did not run:\n%s", res.Output)
	}
	for _, a := range answers {
		if strings.Contains(a, "the caller is the frontend of build") {
			t.Errorf("ATTACK: the tracer took bytes a step injected into a frontend's connection for the frontend's: %s", a)
		} else if !strings.Contains(a, " 403 ") {
			t.Errorf("the injected request was not refused: %s", a)
		}
	}
}

// staticRedTeam4C compiles testdata/redteam4/<name>.c with gcc -static and
// returns the binary, for a build context.
func staticRedTeam4C(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	c := filepath.Join("testdata", "redteam4", name+".c")
	if out, err := runCmd("gcc", "-static", "-no-pie", "-O1", "-Wall", "-o", bin, c); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
