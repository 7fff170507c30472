package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/test/lab"
)

// TestRedTeam11ForgedRuntimeMountPoint: a registry writer changes the
// mode and owner of the empty /proc, /dev and /sys that runc left in the
// first RUN layer above a base that lacks them (the lab's busybox). The
// diff digest leaves a new, empty runtime mount point out whatever its
// header says, so the forged layer keeps its digest. What a puller
// unpacks (the image's root file system, exported by BuildKit) has them
// world-writable and owned by uid 1000. verify now leaves such a mount
// point out only with runc's mode and owner (0755, root), so it refuses.
func TestRedTeam11ForgedRuntimeMountPoint(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n := randHex(6)
	body := "FROM BASE\nRUN echo x > /rt11-" + n + "\n"
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, body)})
	honest := l.Ref("redteam11")
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: honest, Push: true})
	out, code := runCLI(t, l, "verify", honest, "--key", l.TracerPub)
	expectCode(t, out, code, 0, "verify", honest)

	img := l.Image(t, ctx, honest)
	li := layerOf(t, img.Manifests[0].Config, "RUN /bin/sh -c echo x")
	forged := l.Ref("redteam11")
	rtRetarLayer(t, ctx, img, forged, li, func(es []rtEnt) []rtEnt {
		want := map[string]bool{"/proc": true, "/dev": true, "/sys": true}
		for _, e := range es {
			p := path.Clean("/" + e.h.Name)
			t.Logf("honest layer entry %s type %c mode %o uid %d gid %d", p, e.h.Typeflag, e.h.Mode, e.h.Uid, e.h.Gid)
			if want[p] && e.h.Typeflag == tar.TypeDir {
				e.h.Mode, e.h.Uid, e.h.Gid = 0o777, 1000, 1000
				delete(want, p)
			}
		}
		for p := range want {
			es = append(es, rtEnt{&tar.Header{Name: p[1:] + "/", Typeflag: tar.TypeDir, Mode: 0o777, Uid: 1000, Gid: 1000, ModTime: time.Unix(0, 0)}, nil})
		}
		return es
	})
	out, code = runCLI(t, l, "verify", forged, "--key", l.TracerPub)
	t.Logf("verify %s: exit %d\n%s", forged, code, out)

	// What a puller unpacks: BuildKit pulls the forged image and exports
	// its root file system.
	dest := t.TempDir()
	probe := lab.WriteContext(t, map[string]string{"Dockerfile": "FROM " + forged + "\n"})
	res := l.Buildx(ctx, lab.Build{Context: probe, Args: []string{"--no-cache", "--output", "type=local,dest=" + dest}})
	if res.Err != nil {
		t.Fatalf("exporting %s: %v\n%s", forged, res.Err, res.Output)
	}
	changed := 0
	for _, p := range []string{"proc", "dev", "sys"} {
		fi, err := os.Lstat(filepath.Join(dest, p))
		if err != nil {
			t.Errorf("exported root file system: %v", err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		t.Logf("a puller's /%s: mode %o uid %d gid %d", p, st.Mode&0o7777, st.Uid, st.Gid)
		if st.Mode&0o777 == 0o777 {
			changed++
		}
	}
	if code == 0 && changed > 0 {
		t.Errorf("verify accepted %s, whose layer %d makes %d of /proc, /dev, /sys world-writable and owned by uid 1000 (no traced run did)", forged, li, changed)
	}
}

// rt11Honest builds body through the buildtrace frontend with ctxFiles and
// extra buildx flags, and says whether verify accepts it; on a refusal it
// logs verify's output and the signed diff of every step.
func rt11Honest(t *testing.T, ctx context.Context, l *lab.Lab, body string, ctxFiles map[string]string, args ...string) bool {
	t.Helper()
	files := map[string]string{"Dockerfile": dockerfile(l, body)}
	for k, v := range ctxFiles {
		files[k] = v
	}
	dir := lab.WriteContext(t, files)
	ref := l.Ref("redteam11")
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: ref, Push: true, Args: args})
	out, code := runCLI(t, l, "verify", ref, "--key", l.TracerPub)
	if code == 0 {
		t.Logf("verify %s: exit 0", ref)
		return true
	}
	t.Errorf("FALSE REFUSAL: verify %s of an honest build: exit %d\nDockerfile:\n%s\nverify:\n%s", ref, code, body, out)
	p := runtimeTrace(t, ctx, l, ref)
	for _, s := range p.Buildtrace.Steps {
		var lines []string
		for _, f := range p.MonitorLog.FileAccess {
			if f.Annotations.Step == s.StepID && f.Annotations.Source == attest.SourceDiff {
				lines = append(lines, f.Name+" "+f.Annotations.Operation+" "+f.Annotations.Type)
			}
		}
		t.Logf("step %q signed diff: %s", s.Instruction, strings.Join(lines, ", "))
	}
	return false
}

// TestRedTeam11MountThroughSymlink: a RUN --mount whose target goes
// through a symlink. runc makes the mount point (and missing parents) at
// the resolved path; the tracer excludes the unresolved target, so a stub
// it reads before BuildKit's cleaner removes it is a new directory of the
// step, and the layer does not have it: verify refused these honest
// builds until the tracer also excluded each target resolved through the
// lower layers' symlinks.
func TestRedTeam11MountThroughSymlink(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n := randHex(6)
	for _, tc := range []struct{ name, body string }{
		{"tmpfs through a symlink to /tmp", "FROM BASE\nRUN ln -s /tmp /lnk-" + n + "\n" +
			"RUN --mount=type=tmpfs,target=/lnk-" + n + "/m echo 1 > /a-" + n + "\n"},
		{"cache through a dangling symlink", "FROM BASE\nRUN ln -s /opt-" + n + " /o-" + n + "\n" +
			"RUN --mount=type=cache,target=/o-" + n + "/c/d echo 1 > /b-" + n + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i < 2; i++ {
				if !rt11Honest(t, ctx, l, tc.body+"RUN echo "+randHex(4)+"\n", nil) {
					return
				}
			}
		})
	}
}

// rt11Tar returns a tar with a 0700 directory of uid 9 and a file in it.
func rt11Tar(t *testing.T) string {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "td/", Typeflag: tar.TypeDir, Mode: 0o700, Uid: 9, Gid: 9, ModTime: time.Unix(1, 0)},
		{Name: "td/sub/", Typeflag: tar.TypeDir, Mode: 0o2750, Uid: 9, Gid: 9, ModTime: time.Unix(1, 0)},
		{Name: "td/sub/f", Typeflag: tar.TypeReg, Mode: 0o600, Uid: 9, Gid: 9, Size: 2, ModTime: time.Unix(1, 0)},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte("hi"))
		}
	}
	tw.Close()
	return buf.String()
}

// TestRedTeam11HonestDirectories: honest builds that make, change and
// mount over directories in many ways; each must verify.
func TestRedTeam11HonestDirectories(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	n := randHex(6)
	secret := filepath.Join(t.TempDir(), "s")
	if err := os.WriteFile(secret, []byte("dummy"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, body string
		files      map[string]string
		args       []string
	}{
		{"mounts with new parents", "FROM BASE\n" +
			"RUN --mount=type=cache,target=/na-" + n + "/b/c --mount=type=tmpfs,target=/nt-" + n + "/x/y " +
			"--mount=type=bind,target=/nb-" + n + "/z mkdir -p /na-" + n + "/keep && chmod 700 /nt-" + n + "\n" +
			"RUN --mount=type=secret,id=s --mount=type=secret,id=s,target=/ns-" + n + "/d/s cat /run/secrets/s /ns-" + n + "/d/s >/dev/null\n",
			map[string]string{"f": "x"}, []string{"--secret", "id=s,src=" + secret}},
		{"workdir, user, umask, special modes", "FROM BASE\nWORKDIR /w-" + n + "/a/b\n" +
			"RUN mkdir sub && umask 077 && mkdir -p /um-" + n + "/a/b && echo > /um-" + n + "/a/b/f\n" +
			"USER 1000:1000\nRUN mkdir -p /tmp/u-" + n + "/x && echo > /tmp/u-" + n + "/x/f\nUSER 0\n" +
			"RUN mkdir -m 1777 /st-" + n + " && mkdir -m 2750 /sg-" + n + " && chown 3:4 /sg-" + n +
			" && chmod 700 /root && chmod 0711 / && chmod 4755 /tmp\n", nil, nil},
		{"copies", "FROM BASE AS s\nRUN mkdir -p /s-" + n + "/d && echo > /s-" + n + "/d/f && chown -R 5:6 /s-" + n + " && chmod 700 /s-" + n + "/d\n" +
			"FROM BASE\nCOPY --chown=7:8 --chmod=750 d/ /cp-" + n + "/\nCOPY --link d/ /lk-" + n + "/\n" +
			"COPY --from=s /s-" + n + " /fs-" + n + "\nADD t.tar /ad-" + n + "/\n" +
			"RUN ls -la /cp-" + n + " /lk-" + n + " /fs-" + n + " /ad-" + n + " && mkdir /cp-" + n + "/z /ad-" + n + "/td/n\n",
			map[string]string{"d/x/y": "y", "t.tar": rt11Tar(t)}, nil},
		{"scratch", "FROM BASE AS b\nFROM scratch\nCOPY --from=b /bin/busybox /bin/busybox\n" +
			`RUN ["/bin/busybox", "sh", "-c", "/bin/busybox mkdir -p /x-` + n + `/y && /bin/busybox touch /x-` + n + `/y/f"]` + "\n" +
			`RUN ["/bin/busybox", "sh", "-c", "/bin/busybox mkdir -p /etc && /bin/busybox touch /etc/z"]` + "\n" +
			`RUN ["/bin/busybox", "sh", "-c", "/bin/busybox mkdir -p /opt && /bin/busybox chmod 700 /etc /opt"]` + "\n", nil, nil},
		{"debian", "FROM " + l.Registry + "/library/debian:bookworm\n" +
			"RUN mkdir -p /var/lib/apt/lists/partial-" + n + " && chown 42:0 /var/lib/apt/lists/partial-" + n + " && chmod 700 /var/lib/apt/lists/partial-" + n + "\n" +
			"RUN --mount=type=cache,target=/var/cache/apt-" + n + " --mount=type=secret,id=s,target=/var/run/secrets-" + n + "/s " +
			"mkdir -p /usr/share/doc/x-" + n + "/a/b && chmod 2755 /usr/share/doc/x-" + n + "\n",
			nil, []string{"--secret", "id=s,src=" + secret}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rt11Honest(t, ctx, l, tc.body, tc.files, tc.args...)
		})
	}
}

// TestRedTeam11HardLinkTargetTrailingSlash: a registry writer turns the
// second of two symlinks to the same file, in a traced run's layer, into
// a hard link whose target is the first symlink's name with a trailing
// slash ("app/a/"). verify cleans the target to the symlink and reads the
// link as that symlink, so the digest keeps its line; containerd resolves
// the target fully (the trailing slash makes the symlink a parent to
// resolve), links the file itself, and applies the link header's mode,
// the symlink's 0777, to it: the run's 0600 file is world-writable.
// verify now refuses a link target that ends in "/" or ".".
func TestRedTeam11HardLinkTargetTrailingSlash(t *testing.T) {
	l := lab.Require(t)
	l.RequireTracer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n := randHex(6)
	app := "app-" + n
	body := "FROM BASE\nRUN mkdir /" + app + " && echo key > /" + app + "/secret && chmod 600 /" + app + "/secret" +
		" && ln -s secret /" + app + "/a && ln -s secret /" + app + "/b\n"
	dir := lab.WriteContext(t, map[string]string{"Dockerfile": dockerfile(l, body)})
	honest := l.Ref("redteam11")
	l.MustBuild(t, ctx, lab.Build{Context: dir, Tag: honest, Push: true})
	out, code := runCLI(t, l, "verify", honest, "--key", l.TracerPub)
	expectCode(t, out, code, 0, "verify", honest)

	img := l.Image(t, ctx, honest)
	li := layerOf(t, img.Manifests[0].Config, "RUN /bin/sh -c mkdir /"+app)
	forged := l.Ref("redteam11")
	rtRetarLayer(t, ctx, img, forged, li, func(es []rtEnt) []rtEnt {
		// The file first: containerd links to it when it reads the link.
		var secret, rest []rtEnt
		for _, e := range es {
			switch path.Clean("/" + e.h.Name) {
			case "/" + app + "/secret":
				secret = append(secret, e)
				continue
			case "/" + app + "/b":
				e.h.Typeflag, e.h.Linkname = tar.TypeLink, app+"/a/"
			}
			rest = append(rest, e)
		}
		var out []rtEnt
		for _, e := range rest {
			out = append(out, e)
			if path.Clean("/"+e.h.Name) == "/"+app {
				out = append(out, secret...)
			}
		}
		for _, e := range out {
			t.Logf("forged layer entry %s type %c mode %o uid %d link %q", e.h.Name, e.h.Typeflag, e.h.Mode, e.h.Uid, e.h.Linkname)
		}
		return out
	})
	out, code = runCLI(t, l, "verify", forged, "--key", l.TracerPub)
	t.Logf("verify %s: exit %d\n%s", forged, code, out)

	dest := t.TempDir()
	probe := lab.WriteContext(t, map[string]string{"Dockerfile": "FROM " + forged + "\n"})
	res := l.Buildx(ctx, lab.Build{Context: probe, Args: []string{"--no-cache", "--output", "type=local,dest=" + dest}})
	if res.Err != nil {
		t.Logf("exporting %s failed (a puller cannot unpack it): %v\n%s", forged, res.Err, res.Output)
		return
	}
	mode := os.FileMode(0)
	for _, p := range []string{"secret", "a", "b"} {
		fi, err := os.Lstat(filepath.Join(dest, app, p))
		if err != nil {
			t.Errorf("exported root file system: %v", err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		t.Logf("a puller's /%s/%s: %v (mode %o) links %d", app, p, fi.Mode(), st.Mode&0o7777, st.Nlink)
		if p == "secret" {
			mode = fi.Mode().Perm()
		}
	}
	if code == 0 && mode != 0o600 {
		t.Errorf("verify accepted %s, whose layer %d makes the run's 0600 /%s/secret mode %o", forged, li, app, mode)
	}
}
