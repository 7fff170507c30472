package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/test/lab"
)

// TestRedTeam5SpoofedDNSAnswer: a RUN step (default capabilities, CAP_NET_RAW
// among them, host network) asks the allowed resolver for deb.debian.org and
// writes the answer itself with a raw IP socket, in the resolver's name
// (source address and port 53), naming 127.0.0.1; then it fetches from the
// lab registry on 127.0.0.1:5000. The tracer takes the answer as confirmed
// (same server, ID and question: docs/tracer.md DNS), so the registry is
// "deb.debian.org" in the signed trace, and an allow-list policy that names
// the resolver and deb.debian.org, as docs/threat-model.md advises against a
// DNS server of the step's own choosing, lets it through.
func TestRedTeam5SpoofedDNSAnswer(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const resolver = "127.0.0.153" // nothing listens there: the answer is the step's alone
	df := "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\n" +
		"COPY --chmod=0755 dnsspoof /usr/local/bin/dnsspoof\n" +
		"RUN /usr/local/bin/dnsspoof " + resolver + " deb.debian.org && wget -q -O /dev/null http://127.0.0.1:5000/v2/ && echo " + randHex(8) + " > /fetched\n"
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "dnsspoof": staticTestdataC(t, "redteam5", "dnsspoof")})
	ref := l.Ref("redteam5-dns")
	res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
	if !strings.Contains(res.Output, "RT5 RAW ok") {
		t.Skipf("the step could not open a raw socket (no CAP_NET_RAW): the attack cannot run here:\n%s", res.Output)
	}
	if !strings.Contains(res.Output, "RT5 ANSWER") {
		t.Fatalf("the step did not read its own answer:\n%s", res.Output)
	}
	policy := writePolicy(t, "egress:\n  allowed: [deb.debian.org, \""+resolver+":53\"]\n")
	out, code := runCLI(t, l, "show", ref, "--key", l.TracerPub)
	t.Logf("show:\n%s", out)
	out, code = runCLI(t, l, "verify", ref, "--key", l.TracerPub, "--policy", policy)
	t.Logf("verify --policy (allowed: deb.debian.org, %s:53):\n%s", resolver, out)
	if code == 0 {
		t.Errorf("verify accepted a step that fetched from the lab registry (127.0.0.1:5000) under an allow-list of deb.debian.org and the resolver: the step's own raw-socket answer made 127.0.0.1 \"deb.debian.org\" in the signed trace")
	}
}
