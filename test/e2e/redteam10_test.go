package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/test/lab"
)

// TestRedTeam10ChrootMisnamesPaths: a RUN step holds CAP_SYS_CHROOT (one of
// BuildKit's default capabilities; its seccomp profile allows chroot then).
// A static program chroots into the step's cache mount (/cache) and writes
// /etc/profile and /bin/sh there by absolute paths, then runs that /bin/sh
// (a copy of itself) as "/bin/sh -c true"; it does the same in a directory of
// the step's root file system (/opt/jail). A later RUN of the same build reads
// the poisoned /cache/etc/profile. The file hooks record an absolute path as
// given and walk a relative one (and an exec's binary) only up to the task's
// root, which chroot moved: so the signed trace says the step wrote the
// container's /etc/profile and /bin/sh and ran /bin/sh, names no file of
// the cache mount it poisoned, and calls the step complete; the layer's diff
// (/opt/jail/...) agrees with the layer, so verify accepts the image.
func TestRedTeam10ChrootMisnamesPaths(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	id := "rt10-" + randHex(8)
	df := dockerfile(l, "FROM BASE\n"+
		"COPY --chmod=0755 chrootw /usr/local/bin/chrootw\n"+
		"RUN --mount=type=cache,target=/cache,id="+id+" /usr/local/bin/chrootw /cache && mkdir -p /opt/jail && /usr/local/bin/chrootw /opt/jail && echo "+randHex(8)+" > /done\n"+
		"RUN --mount=type=cache,target=/cache,id="+id+" echo \"RT10 LATER STEP READS $(cat /cache/etc/profile)\"\n")
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "chrootw": staticTestdataC(t, "redteam10", "chrootw")})
	ref := l.Ref("redteam10-chroot")
	res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
	if !strings.Contains(res.Output, "RT10 CHROOT DONE in /cache") || !strings.Contains(res.Output, "RT10 LATER STEP READS export PATH=/opt/evil") {
		t.Fatalf("the step did not poison its cache mount:\n%s", res.Output)
	}
	b := rtSignedBuild(t, ctx, l, ref)
	var st *trace.Step
	for i := range b.Steps {
		for _, pr := range b.Steps[i].Processes {
			if strings.HasSuffix(pr.Binary, "chrootw") {
				st = &b.Steps[i]
			}
		}
	}
	if st == nil {
		t.Fatalf("no step ran chrootw")
	}
	t.Logf("step %s: complete %v, reasons %q, unobserved %v", st.StepID, st.Completeness.Complete, st.Completeness.Reasons, st.Completeness.Unobserved)
	for _, pr := range st.Processes {
		t.Logf("signed process %d: binary %q argv %q", pr.PID, pr.Binary, pr.Argv)
	}
	named := map[string]bool{}
	for _, f := range st.Files {
		t.Logf("signed file op: %s %q %q", f.Op, f.Path, f.Target)
		named[f.Path] = true
	}
	for _, c := range st.Diff.Changes {
		t.Logf("signed diff: %s %q", c.Change, c.Path)
	}
	misnamed := false
	if st.Completeness.Complete {
		for _, want := range []string{"/cache/etc/profile", "/cache/etc/motd", "/cache/bin/sh", "/opt/jail/etc/profile", "/opt/jail/etc/motd", "/opt/jail/bin/sh"} {
			if !named[want] {
				misnamed = true
				t.Errorf("the complete signed record names no operation on %s, which the step wrote", want)
			}
		}
		if named["/etc/profile"] || named["/etc/motd"] || named["/bin/sh"] {
			misnamed = true
			t.Errorf("the complete signed record says the step wrote the container's /etc/profile, /etc/motd or /bin/sh, which it did not touch")
		}
		for _, pr := range st.Processes {
			if pr.Binary == "/bin/sh" && len(pr.Argv) == 3 && pr.Argv[2] == "true" {
				misnamed = true
				t.Errorf("the complete signed record says process %d ran /bin/sh; it ran the step's copy of its own program, /cache/bin/sh or /opt/jail/bin/sh", pr.PID)
			}
		}
	}
	out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub)
	t.Logf("verify:\n%s", out)
	if code == 0 && misnamed {
		t.Errorf("verify accepted an image whose complete signed trace misnames the paths the chrooted step wrote and ran")
	}
}

// TestRedTeam10DirfdSwappedByAThread: docs/bpf.md lists "cwd and dirfd
// directories (kernel dentry walks)" as covered against arguments changed
// during the call. A RUN step creates 400 files with openat(100, name,
// O_CREAT) while a second thread keeps dup2-ing its cache mount's directory
// and /tmp/rt10 onto descriptor 100. The kernel takes the directory when the
// call starts; the probe walks descriptor 100 when the call returns, by then
// often the other directory. The step then removes the files that landed in
// /tmp/rt10 (its layer keeps none of them) and prints those in the cache
// mount. Every one of those must be named in the signed record under the
// cache mount; a complete record that names one under /tmp/rt10 instead
// misstates where the step wrote, and nothing else in the image shows it.
func TestRedTeam10DirfdSwappedByAThread(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	id := "rt10-" + randHex(8)
	df := dockerfile(l, "FROM BASE\n"+
		"COPY --chmod=0755 dirrace /usr/local/bin/dirrace\n"+
		"RUN --mount=type=cache,target=/cache,id="+id+" /usr/local/bin/dirrace /cache/rt10 /tmp/rt10 400 && rmdir /tmp/rt10 && echo "+randHex(8)+" > /done\n")
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": df, "dirrace": staticTestdataC(t, "redteam10", "dirrace")})
	ref := l.Ref("redteam10-dirrace")
	res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
	var inCache []string
	for _, ln := range strings.Split(res.Output, "\n") {
		if i := strings.Index(ln, "RT10 IN /cache/rt10:"); i >= 0 {
			inCache = strings.Fields(ln[i+len("RT10 IN /cache/rt10:"):])
		}
		if strings.Contains(ln, "RT10 DIRRACE") {
			t.Logf("build: %s", strings.TrimSpace(ln))
		}
	}
	if len(inCache) == 0 {
		t.Fatalf("no file landed in the cache mount:\n%s", res.Output)
	}
	b := rtSignedBuild(t, ctx, l, ref)
	var st *trace.Step
	for i := range b.Steps {
		for _, pr := range b.Steps[i].Processes {
			if strings.HasSuffix(pr.Binary, "dirrace") {
				st = &b.Steps[i]
			}
		}
	}
	if st == nil {
		t.Fatalf("no step ran dirrace")
	}
	created := map[string]bool{}
	for _, f := range st.Files {
		if f.Op == "create" {
			created[f.Path] = true
		}
	}
	t.Logf("step %s: complete %v, reasons %q, unobserved %v, %d file ops", st.StepID, st.Completeness.Complete, st.Completeness.Reasons, st.Completeness.Unobserved, len(st.Files))
	wrong := 0
	for _, n := range inCache {
		if !created["/cache/rt10/"+n] {
			wrong++
			if wrong <= 5 {
				t.Logf("%s is in the cache mount; the record says created %q: %v", n, "/tmp/rt10/"+n, created["/tmp/rt10/"+n])
			}
		}
	}
	t.Logf("%d of the %d files in the cache mount are not named there in the signed record", wrong, len(inCache))
	if wrong > 0 && st.Completeness.Complete {
		t.Errorf("the complete signed record names %d of the step's %d files in its cache mount as created in /tmp/rt10 (which the layer does not have), not where they are", wrong, len(inCache))
	}
	out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub)
	t.Logf("verify:\n%s", out)
	if code == 0 && wrong > 0 && st.Completeness.Complete {
		t.Errorf("verify accepted a trace that misplaces the step's writes into its cache mount")
	}
}

// TestRedTeam10DotDotThroughASymlink: an earlier RUN leaves /opt/l, a
// symlink to /cache/a/b (the build's cache mount, not there yet). A later RUN
// mounts that cache and writes /opt/l/../evil. The kernel follows the link
// and then "..": the file is /cache/a/evil, in the cache mount. The probe
// records the path string as given and Go cleans it lexically, "/opt/evil":
// the complete signed record names a file of the layer that the layer does
// not have, and nothing names the cache's file.
func TestRedTeam10DotDotThroughASymlink(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	id := "rt10-" + randHex(8)
	df := dockerfile(l, "FROM BASE\n"+
		"RUN mkdir -p /opt && ln -s /cache/a/b /opt/l\n"+
		"RUN --mount=type=cache,target=/cache,id="+id+" mkdir -p /cache/a/b && echo poisoned > /opt/l/../evil && echo \"RT10 CACHE HOLDS $(cat /cache/a/evil)\" && echo "+randHex(8)+" > /done\n")
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": df})
	ref := l.Ref("redteam10-dotdot")
	res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
	if !strings.Contains(res.Output, "RT10 CACHE HOLDS poisoned") {
		t.Fatalf("the write did not land in the cache mount:\n%s", res.Output)
	}
	b := rtSignedBuild(t, ctx, l, ref)
	found := false
	for _, st := range b.Steps {
		if !strings.Contains(strings.Join(st.Processes[0].Argv, " "), "/opt/l/../evil") {
			continue
		}
		found = true
		t.Logf("step %s: complete %v, reasons %q", st.StepID, st.Completeness.Complete, st.Completeness.Reasons)
		for _, f := range st.Files {
			t.Logf("signed file op: %s %q", f.Op, f.Path)
			if f.Path == "/opt/evil" && st.Completeness.Complete {
				t.Errorf("the complete signed record says the step made /opt/evil (the layer has no such file); it wrote /cache/a/evil, through the symlink /opt/l")
			}
		}
		for _, c := range st.Diff.Changes {
			t.Logf("signed diff: %s %q", c.Change, c.Path)
		}
	}
	if !found {
		t.Fatalf("no step wrote /opt/l/../evil")
	}
	out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub)
	t.Logf("verify (exit %d):\n%s", code, out)
}

// TestRedTeam10DenyWriteThroughASymlink: files.denyWrite protects a cache
// mount (a module cache later builds read: "/cache/**"). The honest twin
// writes /cache/x and verify refuses. The attack: an earlier RUN leaves /opt/l,
// a symlink to /cache; the cached RUN writes /opt/l/x. The file hooks record
// the path as given, symlinks unresolved, and the diff (which the policy
// also reads) holds no cache mount, so nothing the policy sees matches.
func TestRedTeam10DenyWriteThroughASymlink(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	policy := writePolicy(t, "files:\n  denyWrite: [\"/cache/**\"]\n")
	for _, c := range []struct {
		name, body string
		refused    bool
		open       bool // a hole not closed yet: runs only when asked
	}{
		{"honest", "RUN --mount=type=cache,target=/cache,id=ID echo poisoned > /cache/x && echo NONCE > /done\n", true, false},
		{"symlink", "RUN mkdir -p /opt && ln -s /cache /opt/l\n" +
			"RUN --mount=type=cache,target=/cache,id=ID echo poisoned > /opt/l/x && echo \"RT10 CACHE HOLDS $(cat /cache/x)\" && echo NONCE > /done\n", true, false},
		// The same through calls that return no descriptor (symlink,
		// unlink, mkdir, rename): only the path string is recorded.
		{"symlink-ln", "RUN mkdir -p /opt && ln -s /cache /opt/l\n" +
			"RUN --mount=type=cache,target=/cache,id=ID ln -sf /opt/evil /opt/l/tool && mkdir /opt/l/d && echo \"RT10 CACHE HOLDS $(readlink /cache/tool)\" && echo NONCE > /done\n", true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.open && os.Getenv("BUILDTRACE_REDTEAM_OPEN") == "" {
				t.Skip("OPEN HOLE, not closed (docs/threat-model.md): a call that returns no descriptor is named by its path string, so a symlink into a cache mount hides where it wrote; set BUILDTRACE_REDTEAM_OPEN=1 to run the attack")
			}
			body := strings.NewReplacer("ID", "rt10-"+randHex(8), "NONCE", randHex(8)).Replace(c.body)
			dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, "FROM BASE\n"+body)})
			ref := l.Ref("redteam10-denywrite-" + c.name)
			res := l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true})
			if c.name != "honest" && !strings.Contains(res.Output, "RT10 CACHE HOLDS ") {
				t.Fatalf("the write did not land in the cache mount:\n%s", res.Output)
			}
			out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub, "--policy", policy)
			t.Logf("verify --policy (files.denyWrite: /cache/**) exit %d:\n%s", code, out)
			if c.refused && code == 0 {
				t.Errorf("verify accepted a step that wrote into /cache under files.denyWrite /cache/**")
			}
		})
	}
}
