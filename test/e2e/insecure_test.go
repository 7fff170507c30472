package e2e

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/test/lab"
)

// TestAttackInsecureStep is a hostile step that the builder lets run with
// RUN --security=insecure (the security.insecure entitlement, which the
// lab's buildkitd allows): every capability and a writable cgroup file
// system. The step moves itself out of the cgroup the tracer follows —
// into the hierarchy's root through a cgroup2 mount of its own, or into
// a deep child of its container's cgroup — and then talks to the
// registry. The tracer cannot follow such a step, so its signed trace must
// say the step is not vouched for, and verify must refuse the image.
func TestAttackInsecureStep(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	host, port, err := net.SplitHostPort(l.Registry)
	if err != nil {
		t.Fatalf("lab registry %q: %v", l.Registry, err)
	}
	script := `mkdir -p /tmp/cg; ` +
		`if mount -t cgroup2 none /tmp/cg 2>/dev/null && echo $$ > /tmp/cg/cgroup.procs; then echo "RTI MOVED root"; ` +
		`else for m in $(grep " - cgroup2 " /proc/self/mountinfo | cut -d" " -f5); do ` +
		`mkdir -p $m/a/b/c/d && echo $$ > $m/a/b/c/d/cgroup.procs && echo "RTI MOVED deep $m"; done; fi; ` +
		`grep "^0::" /proc/self/cgroup; ` +
		`wget -q -O /dev/null http://` + host + `:` + port + `/v2/ && echo "RTI connected"`
	df := "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\n" +
		"RUN --security=insecure sh -c '" + script + "' # " + randHex(8) + "\n"
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": df})
	ref := l.Ref("attack-insecure")
	res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true, Args: []string{"--allow", "security.insecure"}})
	for _, line := range strings.Split(res.Output, "\n") {
		if strings.Contains(line, "RTI ") || strings.Contains(line, "0::") {
			t.Logf("step: %s", strings.TrimSpace(line))
		}
	}
	if !strings.Contains(res.Output, "RTI connected") {
		t.Fatalf("the insecure step did not reach %s: the attack did not run:\n%s", l.Registry, res.Output)
	}

	b := rtSignedBuild(t, ctx, l, ref)
	var step *trace.Step
	for i := range b.Steps {
		if rtStepMentions(&b.Steps[i], "RTI connected") || rtStepMentions(&b.Steps[i], "/tmp/cg") {
			step = &b.Steps[i]
		}
	}
	if step == nil {
		t.Fatalf("the signed trace of %s has no run of the insecure step", ref)
	}
	if step.Completeness.Complete {
		t.Errorf("ATTACK: the insecure step's signed run is complete (reasons %q)", step.Completeness.Reasons)
	}
	if !strings.Contains(strings.Join(step.Completeness.Reasons, "\n"), "CAP_SYS_ADMIN") {
		t.Errorf("the insecure step's reasons do not name CAP_SYS_ADMIN: %q", step.Completeness.Reasons)
	}
	out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub)
	if code == 0 {
		t.Fatalf("ATTACK: verify %s passes an image whose step left what the tracer follows:\n%s", ref, out)
	}
	if !strings.Contains(out, "not vouched for") {
		t.Errorf("verify %s refuses, but not for the insecure step:\n%s", ref, out)
	}
}
