package fsdiff

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/moby/buildkit/util/overlay"
	"golang.org/x/sys/unix"

	"github.com/buildtrace/buildtrace/pkg/trace"
)

func requireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("needs root: %s", why)
		}
		t.Skipf("SKIP (needs root: %s)", why)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, p, content string, mode os.FileMode) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(content), mode))
	must(t, os.Chmod(p, mode))
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}

// overlayStep builds two lower layers, mounts an overlay, applies a RUN
// step's worth of changes through the merged dir and unmounts. It returns
// the upper dir and the lowers, topmost first.
func overlayStep(t *testing.T) (upper string, lowers []string) {
	t.Helper()
	dir := t.TempDir()
	l1, l2 := filepath.Join(dir, "l1"), filepath.Join(dir, "l2")
	upper, work, merged := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, d := range []string{l1, l2, upper, work, merged} {
		must(t, os.MkdirAll(d, 0o755))
	}
	// Bottom layer.
	writeFile(t, filepath.Join(l1, "etc/config"), "a=1\n", 0o644)
	writeFile(t, filepath.Join(l1, "etc/keep"), "unchanged\n", 0o644)
	writeFile(t, filepath.Join(l1, "etc/hosts"), "", 0o644)
	writeFile(t, filepath.Join(l1, "bin/tool"), "#!/bin/sh\n", 0o755)
	writeFile(t, filepath.Join(l1, "data/old1"), "old1", 0o644)
	writeFile(t, filepath.Join(l1, "data/sub/old2"), "old2", 0o644)
	writeFile(t, filepath.Join(l1, "gone"), "bye", 0o644)
	writeFile(t, filepath.Join(l1, "opt/x"), "hidden by l2", 0o644)
	writeFile(t, filepath.Join(l1, "etc/guard.conf"), "deny all", 0o644)
	must(t, os.Symlink("/etc", filepath.Join(l1, "lnk")))
	// Top lower layer: a whiteout over /opt/x and files of its own.
	must(t, os.MkdirAll(filepath.Join(l2, "opt"), 0o755))
	must(t, unix.Mknod(filepath.Join(l2, "opt/x"), unix.S_IFCHR|0o000, 0))
	writeFile(t, filepath.Join(l2, "etc/config2"), "c2", 0o600)
	writeFile(t, filepath.Join(l2, "data/l2file"), "l2", 0o644)

	run(t, "mount", "-t", "overlay", "overlay", "-o",
		"lowerdir="+l2+":"+l1+",upperdir="+upper+",workdir="+work+",index=off", merged)
	mounted := true
	defer func() {
		if mounted {
			unix.Unmount(merged, 0)
		}
	}()
	m := func(p string) string { return filepath.Join(merged, p) }
	writeFile(t, m("new/file.txt"), "hello\n", 0o644)                  // create
	f, err := os.OpenFile(m("etc/config"), os.O_APPEND|os.O_WRONLY, 0) // modify
	must(t, err)
	_, err = f.WriteString("b=2\n")
	must(t, err)
	must(t, f.Close())
	must(t, os.Remove(m("gone")))        // delete
	must(t, os.Remove(m("etc/config2"))) // delete from l2
	must(t, os.RemoveAll(m("data")))     // opaque replace
	must(t, os.Mkdir(m("data"), 0o755))
	writeFile(t, m("data/new"), "new", 0o644)
	must(t, os.Symlink("/etc/config", m("link"))) // symlink
	must(t, os.Chmod(m("bin/tool"), 0o700))       // chmod
	writeFile(t, m("usr/a"), "linked", 0o644)     // hard link
	must(t, os.Link(m("usr/a"), m("usr/b")))
	writeFile(t, m("usr/suid"), "s", 0o755)
	must(t, unix.Chmod(m("usr/suid"), 0o4755))
	writeFile(t, m("usr/capped"), "cap", 0o755) // file capabilities: cap_net_bind_service=ep
	capV2 := []byte{0x01, 0, 0, 0x02, 0, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	must(t, unix.Lsetxattr(m("usr/capped"), "security.capability", capV2, 0))
	must(t, os.MkdirAll(m("run"), 0o755))
	must(t, os.MkdirAll(m("devs"), 0o755))
	must(t, unix.Mkfifo(m("run/fifo"), 0o640))
	must(t, unix.Mknod(m("devs/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	writeFile(t, m("opt/x"), "recreated", 0o644)            // was whited out in l2
	must(t, os.Chown(m("etc/keep"), 0, 0))                  // copy-up, no change
	writeFile(t, m("etc/hosts"), "127.0.0.1 stub\n", 0o644) // a mount point (excluded)
	writeFile(t, m("tmpfile"), "x", 0o644)                  // created then removed
	must(t, os.Remove(m("etc/guard.conf")))                 // a file replaced by a directory
	writeFile(t, m("etc/guard.conf/inner"), "in", 0o644)
	must(t, os.Remove(m("lnk"))) // a symlink replaced by an empty directory
	must(t, os.Mkdir(m("lnk"), 0o755))
	must(t, os.Remove(m("tmpfile")))
	must(t, os.Chmod(m("etc"), 0o750))          // a directory's mode (v3)
	must(t, os.Chown(m("opt"), 1000, 1000))     // and owner
	must(t, os.MkdirAll(m("empty/sub"), 0o700)) // new directories, empty: entries
	must(t, os.MkdirAll(m("stubs/m"), 0o755))   // a mount stub and its new parent: no entry
	must(t, os.Mkdir(m("proc"), 0o755))         // runc's mount point, which stays: no entry
	must(t, os.Chmod(m("bin"), 0o755))          // chmod to the same mode: no entry
	must(t, unix.Unmount(merged, 0))
	mounted = false
	return upper, []string{l2, l1}
}

func TestOverlayMatchesBuildKitLayer(t *testing.T) {
	requireRoot(t, "mounts overlayfs and creates whiteout devices")
	ctx := context.Background()
	upper, lowers := overlayStep(t)
	if _, err := os.Stat(filepath.Join(upper, "etc/keep")); err != nil {
		t.Fatalf("test setup: expected /etc/keep copied up: %v", err)
	}

	d, err := FromUpper(ctx, upper, Options{Lowers: lowers, Exclude: []string{"/etc/hosts", "/proc", "/stubs/m"}})
	must(t, err)
	t.Logf("digest %s", d.Digest)
	got, gotDirs := map[string]trace.FileChange{}, map[string]trace.FileChange{}
	for _, c := range d.Changes {
		if c.Type == kindDir {
			gotDirs[c.Path] = c
		} else {
			got[c.Path] = c
		}
		t.Logf("%-8s %-6s %-20s mode=%o uid=%d sha=%.12s link=%s", c.Change, c.Type, c.Path, c.Mode, c.UID, c.SHA256, c.LinkTarget)
	}
	wantDirs := map[string]string{
		"/new": "created", "/devs": "created", "/run": "created", "/usr": "created",
		"/etc/guard.conf": "created", "/etc": "modified", "/opt": "modified",
		"/empty": "created", "/empty/sub": "created", "/lnk": "created",
	}
	for p, c := range wantDirs {
		if gotDirs[p].Change != c {
			t.Errorf("directory %s: change %q, want %q", p, gotDirs[p].Change, c)
		}
	}
	if len(gotDirs) != len(wantDirs) {
		t.Errorf("got %d directory changes, want %d", len(gotDirs), len(wantDirs))
	}
	if gotDirs["/etc"].Mode != 0o750 || gotDirs["/opt"].UID != 1000 || gotDirs["/opt"].GID != 1000 {
		t.Errorf("directory metadata: /etc %o, /opt %d:%d", gotDirs["/etc"].Mode, gotDirs["/opt"].UID, gotDirs["/opt"].GID)
	}
	want := map[string]string{
		"/new/file.txt": "created", "/etc/config": "modified", "/gone": "deleted",
		"/etc/config2": "deleted", "/data/old1": "deleted", "/data/sub": "deleted",
		"/data/l2file": "deleted", "/data/new": "created", "/link": "created",
		"/bin/tool": "modified", "/usr/a": "created", "/usr/b": "created", "/usr/suid": "created", "/usr/capped": "created",
		"/run/fifo": "created", "/devs/null": "created", "/opt/x": "created",
		"/etc/guard.conf": "deleted", "/etc/guard.conf/inner": "created", "/lnk": "deleted",
	}
	for p, c := range want {
		if got[p].Change != c {
			t.Errorf("%s: change %q, want %q", p, got[p].Change, c)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d changes, want %d", len(got), len(want))
	}
	if got["/bin/tool"].Mode != 0o700 || got["/usr/suid"].Mode != 0o4755 || got["/link"].LinkTarget != "/etc/config" {
		t.Errorf("metadata: tool %o suid %o link %q", got["/bin/tool"].Mode, got["/usr/suid"].Mode, got["/link"].LinkTarget)
	}
	if c, err := getxattr(filepath.Join(upper, "usr/capped"), "security.capability"); err != nil || len(c) == 0 {
		t.Errorf("test setup: capability not copied to the upper dir: %v", err)
	}
	if got["/usr/a"].SHA256 == "" || got["/usr/a"].SHA256 != got["/usr/b"].SHA256 {
		t.Errorf("hard link content differs: %q %q", got["/usr/a"].SHA256, got["/usr/b"].SHA256)
	}

	// BuildKit removes mount-point stubs before it exports the layer.
	must(t, os.Remove(filepath.Join(upper, "etc/hosts")))
	must(t, os.Remove(filepath.Join(upper, "stubs/m")))
	must(t, os.Remove(filepath.Join(upper, "stubs")))
	lowerMount := []mount.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=" + lowers[0] + ":" + lowers[1]}}}
	// The lower layers as BuildKit would export them, applied in order:
	// what a verifier knows of the layers below the step's.
	lowerStack := func(t *testing.T) *Stack {
		s := NewStack()
		var l1, l2 bytes.Buffer
		must(t, archive.WriteDiff(ctx, &l1, "", lowers[1]))
		must(t, overlay.WriteUpperdir(ctx, &l2, lowers[0], []mount.Mount{{Type: "bind", Source: lowers[1], Options: []string{"rbind", "ro"}}}))
		for _, l := range []*bytes.Buffer{&l1, &l2} {
			_, _, err := FromLayer(ctx, l, s)
			must(t, err)
		}
		return s
	}

	t.Run("overlay differ", func(t *testing.T) {
		var tarBuf bytes.Buffer
		must(t, overlay.WriteUpperdir(ctx, &tarBuf, upper, lowerMount))
		ld, changes, err := FromLayer(ctx, &tarBuf, lowerStack(t))
		must(t, err)
		if ld != d.Digest {
			t.Errorf("layer digest %s != upper digest %s", ld, d.Digest)
			for _, c := range changes {
				t.Logf("layer: %-8s %-6s %s mode=%o", c.Change, c.Type, c.Path, c.Mode)
			}
		}
	})

	t.Run("double-walk differ", func(t *testing.T) {
		// containerd's fallback differ: compare the lower view with the
		// merged view of the finished step.
		mergedView := []mount.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=" + upper + ":" + lowers[0] + ":" + lowers[1]}}}
		var tarBuf bytes.Buffer
		must(t, mount.WithTempMount(ctx, lowerMount, func(lowerRoot string) error {
			return mount.WithTempMount(ctx, mergedView, func(mergedRoot string) error {
				return archive.WriteDiff(ctx, &tarBuf, lowerRoot, mergedRoot)
			})
		}))
		ld, changes, err := FromLayer(ctx, &tarBuf, lowerStack(t))
		must(t, err)
		if ld != d.Digest {
			t.Errorf("double-walk layer digest %s != upper digest %s", ld, d.Digest)
			for _, c := range changes {
				t.Logf("layer: %-8s %-6s %s mode=%o", c.Change, c.Type, c.Path, c.Mode)
			}
		}
	})

	// The digest must notice a one-byte change, a mode change, and an
	// extra deletion.
	opts := Options{Lowers: lowers}
	base, err := FromUpper(ctx, upper, opts)
	must(t, err)
	if base.Digest != d.Digest {
		t.Fatalf("digest changed after removing an excluded path: %s vs %s", base.Digest, d.Digest)
	}
	changed := func(what string) {
		t.Helper()
		n, err := FromUpper(ctx, upper, opts)
		must(t, err)
		if n.Digest == base.Digest {
			t.Errorf("%s did not change the digest", what)
		}
		base = n
	}
	writeFile(t, filepath.Join(upper, "new/file.txt"), "hellO\n", 0o644)
	changed("one-byte content change")
	must(t, os.Chmod(filepath.Join(upper, "new/file.txt"), 0o640))
	changed("mode change")
	must(t, os.Chmod(filepath.Join(upper, "new"), 0o777))
	changed("a new directory's mode")
	must(t, os.Chown(filepath.Join(upper, "etc"), 0, 1000))
	changed("a lower directory's group")
	must(t, os.Mkdir(filepath.Join(upper, "empty2"), 0o777))
	changed("a new empty directory")
	must(t, unix.Mknod(filepath.Join(upper, "etc/keep2"), unix.S_IFCHR, 0)) // not in lower: ignored
	n, err := FromUpper(ctx, upper, opts)
	must(t, err)
	if n.Digest != base.Digest {
		t.Errorf("whiteout over nothing changed the digest")
	}
	must(t, os.Remove(filepath.Join(upper, "etc/keep")))
	must(t, unix.Mknod(filepath.Join(upper, "etc/keep"), unix.S_IFCHR, 0))
	changed("extra deleted file")

	// The cap keeps the digest whole.
	tr, err := FromUpper(ctx, upper, Options{Lowers: lowers, MaxChanges: 3})
	must(t, err)
	if !tr.Truncated || len(tr.Changes) != 3 || tr.Digest != base.Digest {
		t.Errorf("truncated diff: truncated=%v changes=%d digest=%s want %s", tr.Truncated, len(tr.Changes), tr.Digest, base.Digest)
	}
}
