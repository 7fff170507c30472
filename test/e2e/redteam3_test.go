package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/test/lab"
)

// TestRedTeam3RuncInit is a hostile step against the rule that skips
// runc's re-exec of itself (the first exec in a step's cgroup, by a task
// in its parent's or the tracer's mount namespace, with argv "runc init";
// bpf/proc.bpf.c EF_RUNTIME_MNTNS, tracer/assemble runcReexec). The step's
// first process (testdata/redteam3/runcinit.c) first tries to leave its
// container cgroup for one the tracer does not follow (a child cgroup
// through its /sys/fs/cgroup; a cgroup2 mount of its own in a new user,
// mount and cgroup namespace), then forks a child that re-executes itself
// as argv ["runc", "init"] — an ordinary fork+exec, so in its parent's
// mount namespace, as runc's own re-exec is — and that child talks to the
// registry (127.0.0.0/8, flagged by the policy below). Whatever the escape
// attempts did, the signed trace must hold the child's exec and its
// connection, and verify with the policy must refuse the image.
func TestRedTeam3RuncInit(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	host, port, err := net.SplitHostPort(l.Registry)
	if err != nil {
		t.Fatalf("lab registry %q: %v", l.Registry, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		t.Fatalf("the lab registry %s is not on loopback: the policy below flags 127.0.0.0/8", l.Registry)
	}
	df := "# syntax=" + l.Frontend + "\nFROM " + l.BaseImage + "\n" +
		"ENV RT3_ADDR=" + host + " RT3_PORT=" + port + "\n" +
		"COPY --chmod=0755 runcinit /usr/local/bin/runcinit\n" +
		`RUN ["/usr/local/bin/runcinit", "` + randHex(8) + `"]` + "\n"
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "runcinit": staticTestdataC(t, "redteam3", "runcinit")})
	ref := l.Ref("redteam3-runcinit")
	res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
	for _, line := range strings.Split(res.Output, "\n") {
		if strings.Contains(line, "RT3 ") {
			t.Logf("step: %s", strings.TrimSpace(line))
		}
	}
	if !strings.Contains(res.Output, "RT3 HIDDEN connected") {
		t.Fatalf("the step's runc-init child did not talk to %s: the attack did not run:\n%s", l.Registry, res.Output)
	}
	escaped := regexp.MustCompile(`RT3 ESCAPE \S+ ok`).MatchString(res.Output)
	if escaped {
		t.Logf("the step left its container cgroup (see above): the tracer must still have seen what it did next")
	}

	b := rtSignedBuild(t, ctx, l, ref)
	var step *trace.Step
	var child *trace.Process
	for i := range b.Steps {
		for j := range b.Steps[i].Processes {
			p := &b.Steps[i].Processes[j]
			if runcInitArgv(p) {
				step, child = &b.Steps[i], p
			}
		}
	}
	if child == nil {
		for _, s := range b.Steps {
			for _, p := range s.Processes {
				t.Logf("step %s: pid %d ppid %d exec %v %s %q", s.StepID, p.PID, p.PPID, p.Exec, p.Binary, p.Argv)
			}
		}
		t.Fatalf("ATTACK: the signed trace of %s has no exec of [\"runc\" \"init\"]: the step hid a process from the tracer (escaped from its cgroup: %v)", ref, escaped)
	}
	pn := uint16(0)
	if _, err := fmt.Sscan(port, &pn); err != nil {
		t.Fatal(err)
	}
	d := destination(step, "tcp", host, pn)
	if d == nil {
		t.Fatalf("ATTACK: the signed trace of %s shows no tcp connection to %s: what the runc-init child did was not seen; network: %+v", ref, l.Registry, step.Network)
	}
	if !slices.Contains(d.PIDs, child.PID) {
		t.Errorf("the connection to %s is not the runc-init child's (pid %d): %+v", l.Registry, child.PID, d)
	}

	// The honest verdict passes (so the refusal below is the policy's),
	// and a policy flagging 127.0.0.0/8 refuses.
	if out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub); code != 0 {
		t.Fatalf("verify %s without a policy: exit %d, want 0 (the test's baseline):\n%s", ref, code, out)
	}
	pol := writePolicy(t, "egress:\n  flagged:\n    - 127.0.0.0/8\n")
	out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub, "--policy", pol)
	if code == 0 {
		t.Errorf("ATTACK: verify %s --policy (127.0.0.0/8 flagged) passes:\n%s", ref, out)
	} else if !strings.Contains(out, host) {
		t.Errorf("verify %s --policy refuses, but not for %s:\n%s", ref, l.Registry, out)
	}
}

// runcInitArgv reports whether any image p ran had argv ["runc" "init"].
func runcInitArgv(p *trace.Process) bool {
	want := []string{"runc", "init"}
	if p.Exec && slices.Equal(p.Argv, want) {
		return true
	}
	for _, e := range p.Execs {
		if slices.Equal(e.Argv, want) {
			return true
		}
	}
	return false
}

// staticTestdataC compiles testdata/<dir>/<name>.c with gcc -static and
// returns the binary, for a build context.
func staticTestdataC(t *testing.T, dir, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	c := filepath.Join("testdata", dir, name+".c")
	if out, err := runCmd("gcc", "-static", "-no-pie", "-O1", "-Wall", "-o", bin, c); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRedTeam3StoreOtherUsers: another local user (uid 65534) can neither
// read nor change the tracer's store (index and blob files) in the lab's
// state directory, which holds every sealed step of every build.
func TestRedTeam3StoreOtherUsers(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	state := filepath.Join(l.Dir, "tracer")
	blobs := filepath.Join(state, "blobs")
	names, err := os.ReadDir(blobs)
	if err != nil {
		t.Fatalf("the lab's store: %v", err)
	}
	if len(names) == 0 {
		t.Skip("the store holds no blob yet (run a traced build first)")
	}
	blob := filepath.Join(blobs, names[0].Name())
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	for _, c := range []struct {
		what string
		args []string
	}{
		{"read the index", []string{"cat", filepath.Join(state, "index.db")}},
		{"list the blobs", []string{"ls", blobs}},
		{"read a blob", []string{"cat", blob}},
		{"replace a blob", []string{"sh", "-c", "echo forged > " + blob}},
		{"add a blob", []string{"sh", "-c", "echo forged > " + filepath.Join(blobs, strings.Repeat("a", 32))}},
		{"rename the blob directory", []string{"mv", blobs, blobs + ".x"}},
	} {
		out, err := runCmdAs(nobody, c.args...)
		if err == nil {
			t.Errorf("ATTACK: uid 65534 could %s (%s):\n%s", c.what, strings.Join(c.args, " "), out)
		}
	}
}

func runCmd(args ...string) (string, error) {
	return runCmdAs(nil, args...)
}

// runCmdAs runs args as cred (nil: as the test) and returns its output.
func runCmdAs(cred *syscall.Credential, args ...string) (string, error) {
	cmd := exec.Command(args[0], args[1:]...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}
