package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/trace"
)

// TestTracerLongArgv: real command lines (compilers, linkers) are longer
// than the probe's 4 KiB record blob. A RUN that execs /bin/true with ~40
// KiB of arguments must have that argv whole in its trace and stay
// complete; one with ~230 KiB (past the 128 KiB kept per exec) must have
// its argv marked truncated and say so in its completeness.
func TestTracerLongArgv(t *testing.T) {
	l := tracerLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	long := newTracedBuild(t, l, `sh -c 'set -- $(seq 1 8000); /bin/true long "$@"'`)
	huge := newTracedBuild(t, l, `sh -c 'set -- $(seq 1 40000); /bin/true huge "$@"'`)
	steps := make([]*trace.Step, 2)
	var wg sync.WaitGroup
	for i, b := range []tracedBuild{long, huge} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res := b.run(ctx, l); res.Err != nil {
				t.Errorf("%v\n%s", res.Err, res.Output)
				return
			}
			bt := fetchSignedTrace(t, ctx, l, b.traceID)
			if len(bt.Steps) != 1 {
				t.Errorf("build %s: want 1 step, got %d", b.traceID, len(bt.Steps))
				return
			}
			steps[i] = &bt.Steps[0]
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	trueExec := func(s *trace.Step, marker string) (trace.Process, bool) {
		return findProcess(s, func(p trace.Process) bool {
			return len(p.Argv) > 1 && p.Argv[0] == "/bin/true" && p.Argv[1] == marker
		})
	}

	s := steps[0]
	p, ok := trueExec(s, "long")
	if !ok {
		t.Fatalf("no exec of /bin/true long in %d processes", len(s.Processes))
	}
	want := []string{"/bin/true", "long"}
	for i := 1; i <= 8000; i++ {
		want = append(want, fmt.Sprint(i))
	}
	if p.ArgvTruncated || !slices.Equal(p.Argv, want) {
		t.Errorf("~40 KiB argv: truncated=%v, %d args (want all %d)", p.ArgvTruncated, len(p.Argv), len(want))
	}
	if c := s.Completeness; !c.Complete || len(c.Reasons) != 0 || c.EventsTruncated != 0 {
		t.Errorf("the ~40 KiB argv step is incomplete: %+v", c)
	}

	s = steps[1]
	p, ok = trueExec(s, "huge")
	if !ok {
		t.Fatalf("no exec of /bin/true huge in %d processes", len(s.Processes))
	}
	n := 0
	for _, a := range p.Argv {
		n += len(a) + 1
	}
	if !p.ArgvTruncated || n < 128<<10 || n > 128<<10+1 {
		t.Errorf("~230 KiB argv: truncated=%v, %d bytes kept; want it marked truncated and 128 KiB kept", p.ArgvTruncated, n)
	}
	for i, a := range p.Argv[2 : len(p.Argv)-1] {
		if a != fmt.Sprint(i+1) {
			t.Fatalf("~230 KiB argv: argument %d is %q, want %d", i+2, a, i+1)
		}
	}
	c := s.Completeness
	if c.Complete || c.EventsTruncated == 0 || !slices.ContainsFunc(c.Reasons, func(r string) bool { return strings.Contains(r, "argv") }) {
		t.Errorf("the ~230 KiB argv step's completeness does not name the cut argv: %+v", c)
	}
}

// dnsClientC asks argv[1]:53 for argv[2] A over UDP and reads the answer
// with a 4 KiB buffer (busybox nslookup reads 512 bytes at most).
const dnsClientC = `#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int main(int argc, char **argv) {
	unsigned char q[512] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
	int n = 12;
	if (argc != 3)
		return 2;
	for (char *l = argv[2]; *l;) {
		char *dot = strchr(l, '.');
		int len = dot ? dot - l : (int)strlen(l);
		q[n++] = len;
		memcpy(q + n, l, len);
		n += len;
		l += len + (dot ? 1 : 0);
	}
	q[n++] = 0;
	q[n++] = 0; q[n++] = 1; /* A */
	q[n++] = 0; q[n++] = 1; /* IN */
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53)};
	inet_pton(AF_INET, argv[1], &a.sin_addr);
	struct timeval tv = {5, 0};
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0 || send(s, q, n, 0) != n) {
		perror("send");
		return 1;
	}
	unsigned char buf[4096];
	long r = recv(s, buf, sizeof(buf), 0);
	printf("answer of %ld bytes\n", r);
	return r > 512 ? 0 : 1;
}
`

// bigDNSResponder answers every A question on addr:53/udp with 100
// addresses (a ~1.6 KiB message, as EDNS allows).
func bigDNSResponder(t *testing.T, addr string) {
	t.Helper()
	var addrs [][4]byte
	for i := range 100 {
		addrs = append(addrs, [4]byte{127, 0, 9, byte(i + 1)})
	}
	dnsResponder(t, addr, addrs)
}

// TestTracerLargeDNSAnswer: a DNS answer over 512 bytes (ordinary with
// EDNS) is captured whole: its addresses are in the trace and the step is
// complete.
func TestTracerLargeDNSAnswer(t *testing.T) {
	l := tracerLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Not 127.0.0.1: other tests may run a responder there meanwhile.
	server := fmt.Sprintf("127.0.%d.%d", 100+time.Now().Nanosecond()%100, 2+os.Getpid()%200)
	bigDNSResponder(t, server)
	src := filepath.Join(t.TempDir(), "dnsclient.c")
	if err := os.WriteFile(src, []byte(dnsClientC), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "dnsclient")
	if out, err := exec.Command("gcc", "-static", "-O1", "-Wall", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	client, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	name := "big-" + randHex(4) + ".buildtrace.test"
	b := evasionBuild(t, l, fmt.Sprintf("COPY --chmod=0755 dnsclient /usr/local/bin/dnsclient\nRUN [\"/usr/local/bin/dnsclient\", %q, %q]\n", server, name),
		map[string]string{"dnsclient": string(client)})
	s := runTraced(t, ctx, l, b)
	var answers []string
	for _, q := range s.DNS {
		if strings.TrimSuffix(q.Name, ".") == name && q.Type == "A" {
			answers = q.Answers
		}
	}
	if len(answers) != 100 {
		t.Errorf("the question for %s has %d answers in the trace, want 100: %+v", name, len(answers), s.DNS)
	}
	if c := s.Completeness; !c.Complete || c.EventsTruncated != 0 {
		t.Errorf("a ~1.6 KiB DNS answer made the step incomplete: %+v", c)
	}
}
