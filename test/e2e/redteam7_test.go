package e2e

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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
	b := rtSignedBuild(t, ctx, l, ref)
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
	rtPolicyRefuses(t, l, ref, policy, "a step that fetched from the lab registry (127.0.0.1:5000) under an allow-list of deb.debian.org and the trusted resolver: the step's own bytes, read past what recvfrom wrote, made 127.0.0.1 \"deb.debian.org\" in the signed trace")
}

// TestRedTeam7CgroupEscapeWithALocalUser: another local user (uid 65534, no
// privilege) opens the host's cgroup2 root directory, which anyone may read,
// and offers the descriptor on an abstract unix socket. A RUN step (default
// capabilities, host network, so the same abstract namespace) takes it,
// opens cgroup.procs through it (the host's read-write mount, not the
// container's read-only one: the hierarchy has no nsdelegate and the step
// no cgroup namespace, and the step is uid 0) and moves itself to the root
// cgroup, which the probe does not follow. It then fetches from the lab
// registry. The signed trace shows the step complete with no such
// connection, and verify accepts it under a deny-all egress allow-list:
// the tracer lost the step's activity and did not say so.
func TestRedTeam7CgroupEscapeWithALocalUser(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	if os.Geteuid() != 0 {
		t.Skip("SKIP LOUDLY: running the helper as another user needs root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cgroup2 := "/sys/fs/cgroup/unified"
	if _, err := os.Stat(filepath.Join(cgroup2, "cgroup.procs")); err != nil {
		cgroup2 = "/sys/fs/cgroup"
	}
	// The other user's helper, in a directory that user can reach.
	hdir, err := os.MkdirTemp("", "rt7-cgfd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(hdir) })
	if err := os.Chmod(hdir, 0o755); err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(hdir, "cgfd")
	if err := os.WriteFile(helper, []byte(staticTestdataC(t, "redteam7", "cgfd")), 0o755); err != nil {
		t.Fatal(err)
	}
	name := "rt7cg-" + randHex(8)
	cmd := exec.CommandContext(ctx, helper, name, cgroup2)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.Contains(line, "RT7 CGFD ready uid 65534") {
		t.Fatalf("the other user's helper did not start: %q %v", line, err)
	}

	df := dockerfile(l, "FROM BASE\n"+
		"COPY --chmod=0755 cgescape /usr/local/bin/cgescape\n"+
		"RUN /usr/local/bin/cgescape "+name+" && echo "+randHex(8)+" > /done\n")
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "cgescape": staticTestdataC(t, "redteam7", "cgescape")})
	ref := l.Ref("redteam7-cgescape")
	res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
	if !strings.Contains(res.Output, "RT7 ESCAPED") || !strings.Contains(res.Output, "RT7 FETCHED") {
		t.Fatalf("the step did not leave its cgroup and fetch:\n%s", res.Output)
	}
	for _, ln := range strings.Split(res.Output, "\n") {
		if strings.Contains(ln, "RT7") || strings.Contains(ln, "0::") {
			t.Logf("build: %s", strings.TrimSpace(ln))
		}
	}
	b := rtSignedBuild(t, ctx, l, ref)
	for _, st := range b.Steps {
		seen := false
		for _, d := range st.Network {
			t.Logf("signed destination of step %s: %s %s:%d op %s", st.StepID, d.Protocol, d.IP, d.Port, d.Op)
			if d.IP == "127.0.0.1" && d.Port == 5000 {
				seen = true
			}
		}
		t.Logf("step %s: complete %v, reasons %q, unobserved %v, %d processes", st.StepID, st.Completeness.Complete, st.Completeness.Reasons, st.Completeness.Unobserved, len(st.Processes))
		if !seen && st.Completeness.Complete {
			t.Errorf("step %s fetched from 127.0.0.1:5000 after leaving its cgroup, and its signed record is complete without that connection", st.StepID)
		}
	}
	policy := writePolicy(t, "egress:\n  allowed: []\n")
	out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub, "--policy", policy)
	t.Logf("verify --policy (egress.allowed: []):\n%s", out)
	if code == 0 {
		t.Errorf("verify accepted, under a deny-all egress allow-list, a step that fetched from the lab registry after moving itself out of the cgroup the tracer follows")
	}
}
