package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/test/lab"
)

// TestRedTeam13PeakRSSReset: resources.maxPeakMemoryBytes is checked
// against the largest peak RSS of a step's processes, which the tracer takes
// from the kernel (signal->maxrss) when each process exits. Any process may
// reset its own peak ("high water mark") to its current RSS by writing 5 to
// /proc/<pid>/clear_refs; root in the container may do it for every process
// of the step. A RUN step touches 256 MiB, unmaps it and resets its peak
// before it exits: the signed record says its peak RSS was well under a
// MiB, and verify accepted it under a 128 MiB ceiling. The honest twin
// (no reset) is refused.
func TestRedTeam13PeakRSSReset(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	policy := writePolicy(t, "resources:\n  maxPeakMemoryBytes: 134217728\n")
	bin := staticTestdataC(t, "redteam13", "rssreset")
	for _, mode := range []string{"keep", "reset"} {
		t.Run(mode, func(t *testing.T) {
			df := dockerfile(l, "FROM BASE\nCOPY --chmod=0755 rssreset /usr/local/bin/rssreset\n"+
				`RUN ["/usr/local/bin/rssreset", "256", "`+mode+`", "`+randHex(8)+`"]`+"\n")
			dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "rssreset": bin})
			ref := l.Ref("redteam13-rss-" + mode)
			res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
			if !strings.Contains(res.Output, "RT13 RSS SPIKE 256 MiB done") {
				t.Fatalf("the step did not touch its memory:\n%s", res.Output)
			}
			b := rtSignedBuild(t, ctx, l, ref)
			for _, st := range b.Steps {
				if len(st.Processes) > 0 {
					t.Logf("step %s: peak RSS %d bytes, complete %v, reasons %q", st.StepID, st.Resources.PeakRSSBytes, st.Completeness.Complete, st.Completeness.Reasons)
				}
			}
			out := rtPolicyRefuses(t, l, ref, policy, "a step that held 256 MiB of RSS under a 128 MiB peak-memory ceiling")
			if mode == "reset" && !strings.Contains(out, "clear_refs") {
				t.Errorf("verify did not name the peak-RSS reset")
			}
		})
	}
}

// TestRedTeam13BusyboxAppletByArgument: docs/policy.md says a base-name
// entry of binaries.denied catches busybox applets by their applet name,
// matched against argv[0]. busybox also runs the applet named by its first
// argument when argv[0] starts with "busybox" ("busybox wget ..."; the
// same for "busybox busybox wget" and argv[0] "busybox-x"), and strips a
// leading "-" from argv[0] (a login shell's "-wget"). Each way, wget runs
// and contacts the lab registry while the record's binary is /bin/busybox
// and argv[0] is not "wget": verify accepted the image under
// binaries.denied: [wget]. The honest "wget" is refused.
func TestRedTeam13BusyboxAppletByArgument(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	policy := writePolicy(t, "binaries:\n  denied: [wget]\n")
	url := "http://" + l.Registry + "/v2/"
	for _, c := range []struct{ name, run string }{
		{"honest", "wget -q -O /dev/null " + url},
		{"argument", "busybox wget -q -O /dev/null " + url},
		{"twice", "busybox busybox wget -q -O /dev/null " + url},
		{"prefix", "exec -a busybox-x /bin/busybox wget -q -O /dev/null " + url},
		{"dash", "exec -a -wget /bin/busybox -q -O /dev/null " + url},
	} {
		t.Run(c.name, func(t *testing.T) {
			df := dockerfile(l, "FROM BASE\nRUN echo "+randHex(8)+" > /done && "+c.run+" && echo RT13 FETCHED\n")
			dir := lab.WriteContext(t, map[string]string{"Dockerfile": df})
			ref := l.Ref("redteam13-applet-" + c.name)
			res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
			if strings.HasPrefix(c.run, "exec") {
				// exec replaced the shell: no echo after it.
			} else if !strings.Contains(res.Output, "RT13 FETCHED") {
				t.Fatalf("wget did not run:\n%s", res.Output)
			}
			b := rtSignedBuild(t, ctx, l, ref)
			for _, st := range b.Steps {
				for _, p := range st.Processes {
					t.Logf("signed process %d: binary %q argv %q", p.PID, p.Binary, p.Argv)
				}
				for _, d := range st.Network {
					t.Logf("signed destination %s %s:%d", d.Protocol, d.IP, d.Port)
				}
			}
			rtPolicyRefuses(t, l, ref, policy, "a step that ran busybox's wget applet under binaries.denied: [wget]")
		})
	}
}

// TestRedTeam13DenyWriteOpsTheRulesForgot: files.denyWrite checked the
// records of create, write, truncate, unlink, rename, chmod, chown, link,
// symlink, mkdir and rmdir, but not of the other file changes the tracer
// records: exchange (renameat2 RENAME_EXCHANGE), mknod (which makes
// regular files too) and setxattr/removexattr. In a layer the diff shows
// their effect; in a cache mount, which no layer holds, only the record
// does. An earlier build leaves /cache/f (with an attribute user.rt13)
// and /cache/f.old; the step swaps the old one in, makes /cache/tool by
// mknod, or sets or removes /cache/f's attribute: verify accepted each under
// files.denyWrite: [/cache/**]. The honest echo > /cache/f is refused.
func TestRedTeam13DenyWriteOpsTheRulesForgot(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	policy := writePolicy(t, "files:\n  denyWrite: [\"/cache/**\"]\n")
	bin := staticTestdataC(t, "redteam13", "fileops")
	const fo = "/usr/local/bin/fileops"
	for _, c := range []struct{ name, run string }{
		{"honest", "echo evil > /cache/f"},
		{"exchange", fo + " exchange /cache/f.old /cache/f"},
		{"mknod", fo + " mknod /cache/tool"},
		{"setxattr", fo + " setxattr /cache/f"},
		{"removexattr", fo + " removexattr /cache/f"},
	} {
		t.Run(c.name, func(t *testing.T) {
			mount := "RUN --mount=type=cache,target=/cache,id=rt13-" + randHex(8) + " "
			head := "FROM BASE\nCOPY --chmod=0755 fileops " + fo + "\n"
			setup := dockerfile(l, head+mount+"echo good > /cache/f && echo old > /cache/f.old && "+fo+" setxattr /cache/f && echo "+randHex(8)+"\n")
			l.MustBuild(t, ctx, lab.Build{Context: lab.WriteContext(t, map[string]string{"Dockerfile": setup, "fileops": bin})})
			df := dockerfile(l, head+mount+c.run+" && echo \"RT13 CACHE HOLDS $(cat /cache/f)\" && echo "+randHex(8)+" > /done\n")
			ref := l.Ref("redteam13-ops-" + c.name)
			res := l.MustBuild(t, ctx, lab.Build{Context: lab.WriteContext(t, map[string]string{"Dockerfile": df, "fileops": bin}), Tag: ref, Push: true})
			if !strings.Contains(res.Output, "RT13 CACHE HOLDS ") {
				t.Fatalf("the step did not run:\n%s", res.Output)
			}
			b := rtSignedBuild(t, ctx, l, ref)
			for _, st := range b.Steps {
				for _, f := range st.Files {
					if strings.HasPrefix(f.Path, "/cache") || strings.HasPrefix(f.Target, "/cache") {
						t.Logf("signed file op: %s %q %q", f.Op, f.Path, f.Target)
					}
				}
			}
			rtPolicyRefuses(t, l, ref, policy, "a step that changed /cache/ ("+c.name+") under files.denyWrite: [/cache/**]")
		})
	}
}

// TestRedTeam13SetuidRunsAsRoot: a process's uid in the record was its
// real user ID. A step that runs as USER 1000 executes a setuid-root
// program (installed by an earlier step, as packages install su, sudo or
// passwd): it runs as root (effective user ID 0) and writes /rt13-root,
// which only root can create, while the record says uid 1000. A policy
// requiring the step to run unprivileged (a CEL rule on processes' uid)
// accepted it.
func TestRedTeam13SetuidRunsAsRoot(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// Lines 2-4 (FROM, COPY, the RUN that makes it setuid) run as root.
	policy := writePolicy(t, "cel:\n  - name: unprivileged\n    expr: step.locations[0].startLine <= 4 || step.processes.all(p, p.uid != 0)\n")
	df := dockerfile(l, "FROM BASE\nCOPY suid /usr/local/bin/suid\nRUN chmod 4755 /usr/local/bin/suid\nUSER 1000\n"+
		"RUN /usr/local/bin/suid && echo "+randHex(8)+"\n")
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "suid": staticTestdataC(t, "redteam13", "suid")})
	ref := l.Ref("redteam13-setuid")
	res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
	if !strings.Contains(res.Output, "RT13 UID 1000 EUID 0 WROTE yes") {
		t.Fatalf("the setuid program did not run as root:\n%s", res.Output)
	}
	b := rtSignedBuild(t, ctx, l, ref)
	for _, st := range b.Steps {
		for _, p := range st.Processes {
			t.Logf("signed process %d: binary %q uid %d gid %d", p.PID, p.Binary, p.UID, p.GID)
		}
	}
	rtPolicyRefuses(t, l, ref, policy, "a step whose setuid program ran as root under a rule that no process run as root")
}

// TestRedTeam13FileCapabilitySetuid: the same rule, through a file
// capability instead of a setuid bit. An earlier step gives a program
// CAP_SETUID (security.capability, as setcap cap_setuid+ep does; layers
// keep that attribute); the USER 1000 step runs it, and it calls setuid(0)
// and writes /rt13-root as root without another exec. The record's uid
// was taken at exec only (1000, real and effective), so the rule that no
// process of the step run as root held.
func TestRedTeam13FileCapabilitySetuid(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	policy := writePolicy(t, "cel:\n  - name: unprivileged\n    expr: step.locations[0].startLine <= 4 || step.processes.all(p, p.uid != 0)\n")
	df := dockerfile(l, "FROM BASE\nCOPY --chmod=0755 capsuid /usr/local/bin/capsuid\nRUN /usr/local/bin/capsuid setcap /usr/local/bin/capsuid\nUSER 1000\n"+
		"RUN /usr/local/bin/capsuid run && echo "+randHex(8)+"\n")
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "capsuid": staticTestdataC(t, "redteam13", "capsuid")})
	ref := l.Ref("redteam13-filecap")
	res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
	if !strings.Contains(res.Output, "RT13 EUID BEFORE 1000 AFTER 0 WROTE yes") {
		t.Fatalf("the program did not become root:\n%s", res.Output)
	}
	b := rtSignedBuild(t, ctx, l, ref)
	for _, st := range b.Steps {
		for _, p := range st.Processes {
			t.Logf("signed process %d: binary %q uid %d gid %d", p.PID, p.Binary, p.UID, p.GID)
		}
	}
	rtPolicyRefuses(t, l, ref, policy, "a step whose program made itself root under a rule that no process run as root")
}
