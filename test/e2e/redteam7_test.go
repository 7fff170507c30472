package e2e

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/test/lab"
)

// rt7Resolver is an honest resolver on addr:53 (UDP) for the test's length:
// every A question gets one A record, 192.0.2.10 (TEST-NET-1), with the
// question's ID and question echoed. It stands for the resolver a policy
// trusts (egress.allowed names it), as docs/threat-model.md advises.
func rt7Resolver(t *testing.T, addr string) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", addr+":53")
	if err != nil {
		t.Fatalf("the honest resolver cannot listen on %s:53: %v", addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 12 || buf[2]&0x80 != 0 {
				continue
			}
			// Header, the first question as asked, one A record by pointer.
			end := 12
			for end < n && buf[end] != 0 {
				end += int(buf[end]) + 1
			}
			end += 5 // the root label, type, class
			if end > n {
				continue
			}
			a := append([]byte(nil), buf[:end]...)
			a[2], a[3] = 0x81, 0x80
			a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11] = 0, 1, 0, 1, 0, 0, 0, 0
			a = append(a, 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 10)
			_, _ = pc.WriteTo(a, from)
		}
	}()
}

// TestRedTeam7DNSAnswerPastTheBuffer: a RUN step (default capabilities, no
// raw socket, one thread) asks a trusted resolver for deb.debian.org, which
// honestly answers 192.0.2.10. The step receives that answer with
// recvfrom(fd, buf, 0, MSG_TRUNC): the kernel writes none of it into buf and
// returns its full length, and the probe reads that many bytes of buf as the
// answer's payload. buf holds the step's own answer, "deb.debian.org A
// 127.0.0.1", with the question's ID; its source address is the resolver's
// (the kernel wrote it). So the signed trace has a confirmed answer the
// resolver never gave, the lab registry (127.0.0.1:5000) the step then
// fetches from is "deb.debian.org", the step is complete, and an allow-list
// of the resolver and deb.debian.org lets it through.
func TestRedTeam7DNSAnswerPastTheBuffer(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const resolver = "127.0.0.154"
	rt7Resolver(t, resolver)
	df := dockerfile(l, "FROM BASE\n"+
		"COPY --chmod=0755 dnstrunc /usr/local/bin/dnstrunc\n"+
		"RUN /usr/local/bin/dnstrunc "+resolver+" deb.debian.org && wget -q -O /dev/null http://127.0.0.1:5000/v2/ && echo "+randHex(8)+" > /fetched\n")
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "dnstrunc": staticTestdataC(t, "redteam7", "dnstrunc")})
	ref := l.Ref("redteam7-dnstrunc")
	res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
	if !strings.Contains(res.Output, "RT7 TRUNC") {
		t.Fatalf("the step did not receive the resolver's answer:\n%s", res.Output)
	}
	p := runtimeTrace(t, ctx, l, ref)
	b, err := attest.DecodeEnvelope(p.Buildtrace.Envelope)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range b.Steps {
		for _, q := range st.DNS {
			t.Logf("signed DNS entry of step %s (complete %v): %+v", st.StepID, st.Completeness.Complete, q)
		}
		for _, d := range st.Network {
			t.Logf("signed destination of step %s: %s %s:%d hostname %q unconfirmed %q", st.StepID, d.Protocol, d.IP, d.Port, d.Hostname, d.HostnameUnconfirmed)
			if d.IP == "127.0.0.1" && d.Port == 5000 && d.Hostname == "deb.debian.org" {
				t.Errorf("the signed trace names the lab registry 127.0.0.1:5000 \"deb.debian.org\" (confirmed), from an answer the resolver never sent (it said 192.0.2.10)")
			}
		}
	}
	policy := writePolicy(t, "egress:\n  allowed: [deb.debian.org, \""+resolver+":53\"]\n")
	out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub, "--policy", policy)
	t.Logf("verify --policy (allowed: deb.debian.org, %s:53):\n%s", resolver, out)
	if code == 0 {
		t.Errorf("verify accepted a step that fetched from the lab registry (127.0.0.1:5000) under an allow-list of deb.debian.org and the trusted resolver: the step's own bytes, read past what recvfrom wrote, made 127.0.0.1 \"deb.debian.org\" in the signed trace")
	}
}
