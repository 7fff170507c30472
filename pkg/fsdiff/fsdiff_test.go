package fsdiff

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/buildtrace/buildtrace/pkg/trace"
)

type tarEntry struct {
	hdr  tar.Header
	body string
}

func layerTar(t testing.TB, entries ...tarEntry) *bytes.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.Size = int64(len(e.body))
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		h.Format = tar.FormatPAX
		must(t, tw.WriteHeader(&h))
		if e.body != "" {
			_, err := tw.Write([]byte(e.body))
			must(t, err)
		}
	}
	must(t, tw.Close())
	return bytes.NewReader(buf.Bytes())
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// TestSerialisation pins the canonical form documented in
// docs/diff-digest.md.
func TestSerialisation(t *testing.T) {
	r := layerTar(t,
		tarEntry{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}},
		tarEntry{hdr: tar.Header{Name: "etc/a b", Mode: 0o4755, Uid: 1, Gid: 2,
			PAXRecords: map[string]string{paxCapability: "\x01\x00"}}, body: "hi"},
		tarEntry{hdr: tar.Header{Name: "etc/.wh.old"}},
		tarEntry{hdr: tar.Header{Name: "var/", Typeflag: tar.TypeDir, Mode: 0o755}},
		tarEntry{hdr: tar.Header{Name: "var/.wh..wh..opq"}},
		tarEntry{hdr: tar.Header{Name: "ln", Typeflag: tar.TypeSymlink, Linkname: "/etc/a b", Mode: 0o777}},
		tarEntry{hdr: tar.Header{Name: "dev/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 3}},
		tarEntry{hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}},
		tarEntry{hdr: tar.Header{Name: "hard", Typeflag: tar.TypeLink, Linkname: "etc/a b", Mode: 0o4755, Uid: 1, Gid: 2,
			PAXRecords: map[string]string{paxCapability: "\x01\x00"}}},
		tarEntry{hdr: tar.Header{Name: "p%", Typeflag: tar.TypeFifo, Mode: 0o600}},
	)
	want := "buildtrace-diff-v3\n" +
		"dir /dev mode=750 uid=3 gid=0\n" +
		"char /dev/null mode=666 uid=0 gid=0 dev=1,3\n" +
		"dir /etc mode=755 uid=0 gid=0\n" +
		"file /etc/a%20b mode=4755 uid=1 gid=2 size=2 sha256=" + sum("hi") + " cap=0100\n" +
		"deleted /etc/old\n" +
		"file /hard mode=4755 uid=1 gid=2 size=2 sha256=" + sum("hi") + " cap=0100\n" +
		"symlink /ln mode=777 uid=0 gid=0 target=/etc/a%20b\n" +
		"fifo /p%25 mode=600 uid=0 gid=0\n" +
		"dir /var mode=755 uid=0 gid=0\n" +
		"opaque /var\n"
	d, changes, err := FromLayer(context.Background(), r, nil)
	must(t, err)
	// The literal is also in docs/diff-digest.md.
	if wantD := "sha256:0959dbac89a4d81ce7c9e763c6230702b28e07d1f35d3bd3c5824c6dc72050a3"; d != wantD || "sha256:"+sum(want) != wantD {
		t.Errorf("digest %s, want %s over:\n%s", d, wantD, want)
	}
	if len(changes) != 10 || changes[3].Path != "/etc/a b" || changes[3].Mode != 0o4755 || changes[4].Change != trace.ChangeDeleted || changes[0].Type != "dir" || changes[0].Mode != 0o750 {
		t.Errorf("changes = %+v", changes)
	}
}

func TestFromLayerErrors(t *testing.T) {
	r := layerTar(t, tarEntry{hdr: tar.Header{Name: "b", Typeflag: tar.TypeLink, Linkname: "a"}})
	if _, _, err := FromLayer(context.Background(), r, nil); err == nil || !strings.Contains(err.Error(), "hard link b") {
		t.Fatalf("err = %v, want dangling hard link error", err)
	}
	if _, _, err := FromLayer(context.Background(), strings.NewReader("not a tar, but long enough to hold a header?"+strings.Repeat("x", 600)), nil); err == nil {
		t.Fatal("garbage accepted as a tar")
	}
}

// TestPlainUpper covers a bottommost step (no lowers) without overlay.
func TestPlainUpper(t *testing.T) {
	ctx := context.Background()
	upper := t.TempDir()
	writeFile(t, filepath.Join(upper, "a/b"), "x", 0o644)
	writeFile(t, filepath.Join(upper, "proc/stub"), "", 0o644)
	writeFile(t, filepath.Join(upper, "etc/resolv.conf"), "", 0o644)
	must(t, os.Symlink("b", filepath.Join(upper, "a/l")))
	d, err := FromUpper(ctx, upper, Options{Exclude: []string{"/proc", "etc/resolv.conf"}})
	must(t, err)
	if len(d.Changes) != 3 || d.Changes[0].Path != "/a" || d.Changes[0].Type != "dir" || d.Changes[1].Path != "/a/b" || d.Changes[1].Change != trace.ChangeCreated || d.Changes[2].LinkTarget != "b" {
		t.Fatalf("changes = %+v", d.Changes)
	}
	uid, gid := os.Getuid(), os.Getgid()
	r := layerTar(t,
		tarEntry{hdr: tar.Header{Name: "a/", Typeflag: tar.TypeDir, Mode: 0o755, Uid: uid, Gid: gid}},
		tarEntry{hdr: tar.Header{Name: "a/b", Mode: 0o644, Uid: uid, Gid: gid}, body: "x"},
		tarEntry{hdr: tar.Header{Name: "a/l", Typeflag: tar.TypeSymlink, Linkname: "b", Mode: 0o777, Uid: uid, Gid: gid}},
	)
	ld, _, err := FromLayer(ctx, r, nil)
	must(t, err)
	if ld != d.Digest {
		t.Fatalf("layer digest %s != upper digest %s", ld, d.Digest)
	}
	if _, err := FromUpper(ctx, filepath.Join(upper, "missing"), Options{}); err == nil {
		t.Fatal("missing upper dir accepted")
	}
}

// BenchmarkFromUpper walks an upper dir of 10k small files.
func BenchmarkFromUpper(b *testing.B) {
	upper := b.TempDir()
	const n = 10000
	for i := range n {
		p := filepath.Join(upper, fmt.Sprintf("d%02d/f%05d", i%100, i))
		if i < 100 {
			must(b, os.MkdirAll(filepath.Dir(p), 0o755))
		}
		must(b, os.WriteFile(p, []byte(strings.Repeat("x", i%4096)), 0o644))
	}
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		d, err := FromUpper(ctx, upper, Options{})
		if err != nil || len(d.Changes) != n+100 { // the files and their 100 new directories
			b.Fatalf("%v, %d changes", err, len(d.Changes))
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "files/s")
}

// TestFromLayerRefusesWhatExtractorsReadOtherwise: tars whose extraction
// differs from what the digest would say (a registry writer's forgeries
// that keep a signed diff digest) are refused.
func TestFromLayerRefusesWhatExtractorsReadOtherwise(t *testing.T) {
	file := func(name, body string) tarEntry {
		return tarEntry{hdr: tar.Header{Name: name, Mode: 0o644}, body: body}
	}
	cases := map[string][]tarEntry{
		"write through a symlink of the layer": {
			{hdr: tar.Header{Name: "zz", Typeflag: tar.TypeSymlink, Linkname: "/etc", Mode: 0o777}},
			file("zz/passwd", "root::0:0"),
		},
		"a directory over a file of the layer": {
			file("zz", "x"), {hdr: tar.Header{Name: "zz/", Typeflag: tar.TypeDir, Mode: 0o755}},
		},
		"a path twice": {file("a", "1"), file("a", "2")},
		"a global header with a name (containerd removes the path)": {
			file("etc/a", "x"), {hdr: tar.Header{Name: "etc/a", Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "x"}}},
		},
		"an ACL in an extended attribute": {
			{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755, PAXRecords: map[string]string{"SCHILY.xattr.system.posix_acl_access": "\x02\x00\x00\x00"}}},
		},
		"an overlay marker in an extended attribute": {
			{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755, PAXRecords: map[string]string{"SCHILY.xattr.user.overlay.opaque": "y"}}},
		},
		"a hard link whose target has ..": {
			file("app/a", ""), {hdr: tar.Header{Name: "app/b", Typeflag: tar.TypeLink, Linkname: "app/s/../a", Mode: 0o644}},
		},
		"a whiteout and the path": {{hdr: tar.Header{Name: ".wh.a"}}, file("a", "1")},
		"leaving the root":        {file("../etc/passwd", "x")},
		"a hard link that changes its target's mode": {
			file("g", "x"), {hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "g", Mode: 0o4755}},
		},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			if d, _, err := FromLayer(context.Background(), layerTar(t, entries...), nil); err == nil {
				t.Fatalf("accepted, digest %s", d)
			}
		})
	}
}

// TestFromLayerOverLower: a directory header deletes a non-directory of
// the layers below it, and the digest says so; an entry below a lower
// non-directory is refused. A registry writer's forgery of one directory
// header would otherwise delete a lower file and keep the layer's digest.
func TestFromLayerOverLower(t *testing.T) {
	ctx := context.Background()
	dir := func(name string) tarEntry {
		return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}}
	}
	lower := func(t *testing.T) *Stack {
		s := NewStack()
		err := s.Apply(ctx, layerTar(t,
			dir("etc/"),
			tarEntry{hdr: tar.Header{Name: "etc/guard.conf", Mode: 0o644}, body: "deny all"},
			tarEntry{hdr: tar.Header{Name: "x", Typeflag: tar.TypeSymlink, Linkname: "/etc", Mode: 0o777}},
			dir("d/"),
			tarEntry{hdr: tar.Header{Name: "d/f", Mode: 0o644}, body: "f"},
			tarEntry{hdr: tar.Header{Name: "gone", Mode: 0o644}, body: "g"},
		))
		must(t, err)
		// A layer between: the whiteout takes /gone out of the view.
		_, _, err = FromLayer(ctx, layerTar(t, tarEntry{hdr: tar.Header{Name: ".wh.gone"}}), s)
		must(t, err)
		return s
	}
	empty, _, err := FromLayer(ctx, layerTar(t, dir("etc/")), lower(t))
	must(t, err)
	if empty != EmptyDigest {
		t.Fatalf("a directory over a directory: digest %s, want the empty one", empty)
	}

	for _, c := range []struct {
		name    string
		entries []tarEntry
		deleted string
	}{
		{"over a file", []tarEntry{dir("etc/"), dir("etc/guard.conf/")}, "/etc/guard.conf"},
		{"over a symlink", []tarEntry{dir("x/")}, "/x"},
		{"over a whited-out file", []tarEntry{dir("gone/")}, ""},
		{"over a directory", []tarEntry{dir("d/")}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, changes, err := FromLayer(ctx, layerTar(t, c.entries...), lower(t))
			must(t, err)
			deleted := func(changes []trace.FileChange) []string {
				var out []string
				for _, ch := range changes {
					if ch.Change == trace.ChangeDeleted {
						out = append(out, ch.Path)
					}
				}
				return out
			}
			if c.deleted == "" {
				if del := deleted(changes); len(del) != 0 {
					t.Fatalf("digest %s, changes %+v; want no deletion", d, changes)
				}
				if c.name == "over a directory" && d != EmptyDigest {
					t.Fatalf("digest %s, want the empty one", d)
				}
				return
			}
			if del := deleted(changes); len(del) != 1 || del[0] != c.deleted {
				t.Fatalf("digest %s, changes %+v; want %s deleted", d, changes, c.deleted)
			}
			// Without the layers below, the same tar deletes nothing.
			d0, changes0, err := FromLayer(ctx, layerTar(t, c.entries...), nil)
			if err != nil || d0 == d || len(deleted(changes0)) != 0 {
				t.Fatalf("over no layers: %s %+v, %v", d0, changes0, err)
			}
		})
	}

	for name, entries := range map[string][]tarEntry{
		"a directory through a lower symlink": {dir("x/guard.conf/")},
		"a file through a lower symlink":      {tarEntry{hdr: tar.Header{Name: "x/passwd", Mode: 0o644}, body: "x"}},
		"a whiteout through a lower symlink":  {tarEntry{hdr: tar.Header{Name: "x/.wh.guard.conf"}}},
		"below a lower file":                  {dir("etc/guard.conf/x/")},
	} {
		t.Run(name, func(t *testing.T) {
			if d, _, err := FromLayer(ctx, layerTar(t, entries...), lower(t)); err == nil {
				t.Fatalf("accepted, digest %s", d)
			} else {
				t.Log(err)
			}
		})
	}

	// A directory that replaced the file first may hold entries.
	s := lower(t)
	_, changes, err := FromLayer(ctx, layerTar(t, dir("x/"), tarEntry{hdr: tar.Header{Name: "x/in", Mode: 0o644}, body: "i"}), s)
	must(t, err)
	if len(changes) != 3 || changes[0].Path != "/x" || changes[0].Change != trace.ChangeDeleted ||
		changes[1].Path != "/x" || changes[1].Type != "dir" || changes[2].Path != "/x/in" {
		t.Fatalf("changes %+v", changes)
	}
	if n := s.lookup("/x/in"); n == nil || n.dir {
		t.Fatal("the stack lost the layer's file")
	}
}

// TestDirectoryMetadata: a directory header that changes a lower
// directory's mode or owner, or makes a new directory, is in the digest
// (v3); one that changes nothing is not; an entry whose new parent has no
// header before it is refused. A
// registry writer could otherwise open /etc to everyone, or give a
// traced run's new directory another owner, keeping the layer's digest.
func TestDirectoryMetadata(t *testing.T) {
	ctx := context.Background()
	hdr := func(name string, mode int64, uid int) tarEntry {
		return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode, Uid: uid}}
	}
	file := func(name string) tarEntry { return tarEntry{hdr: tar.Header{Name: name, Mode: 0o644}, body: "x"} }
	lower := func(t *testing.T) *Stack {
		s := NewStack()
		must(t, s.Apply(ctx, layerTar(t, hdr("etc/", 0o755, 0), file("etc/passwd"), hdr("home/", 0o700, 7), hdr("home/", 0o755, 0))))
		return s
	}
	digestOf := func(t *testing.T, entries ...tarEntry) (string, []trace.FileChange) {
		t.Helper()
		d, changes, err := FromLayer(ctx, layerTar(t, entries...), lower(t))
		must(t, err)
		return d, changes
	}
	for _, c := range []struct {
		name    string
		entries []tarEntry
		dir     string // the directory entry expected, "" for none
	}{
		{"same metadata", []tarEntry{hdr("etc/", 0o755, 0)}, ""},
		{"the last header of a base layer counts", []tarEntry{hdr("home/", 0o755, 0)}, ""},
		{"mode", []tarEntry{hdr("etc/", 0o777, 0)}, "/etc"},
		{"owner", []tarEntry{hdr("etc/", 0o755, 1000)}, "/etc"},
		{"new, empty", []tarEntry{hdr("opt/", 0o777, 0)}, "/opt"},
		{"new, holding a file", []tarEntry{hdr("opt/", 0o755, 0), file("opt/f")}, "/opt"},
		{"a runtime mount point, new and empty", []tarEntry{hdr("proc/", 0o755, 0)}, ""},
		// redteam11: only what runc makes is left out; a writer's mode or
		// owner is what a puller unpacks.
		{"a runtime mount point, new and empty, other mode", []tarEntry{hdr("proc/", 0o777, 0)}, "/proc"},
		{"a runtime mount point, new and empty, other owner", []tarEntry{hdr("dev/", 0o755, 1000)}, "/dev"},
		{"a runtime mount point holding a file", []tarEntry{hdr("sys/", 0o755, 0), file("sys/f")}, "/sys"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, changes := digestOf(t, c.entries...)
			var dirs []string
			for _, ch := range changes {
				if ch.Type == "dir" {
					dirs = append(dirs, ch.Path)
				}
			}
			if c.dir == "" && len(dirs) != 0 || c.dir != "" && (len(dirs) != 1 || dirs[0] != c.dir) {
				t.Fatalf("directory entries %v, want %q", dirs, c.dir)
			}
		})
	}
	// The forgeries a writer would make of an honest layer.
	honest, _ := digestOf(t, hdr("opt/", 0o755, 0), file("opt/f"), file("etc/new"), hdr("etc/", 0o755, 0))
	for name, entries := range map[string][]tarEntry{
		"a lower directory opened":         {hdr("opt/", 0o755, 0), file("opt/f"), file("etc/new"), hdr("etc/", 0o777, 0)},
		"a new directory given away":       {hdr("opt/", 0o755, 1000), file("opt/f"), file("etc/new"), hdr("etc/", 0o755, 0)},
		"a lower directory's header added": {hdr("opt/", 0o755, 0), file("opt/f"), file("etc/new"), hdr("etc/", 0o755, 0), hdr("home/", 0o1777, 0)},
	} {
		if d, _ := digestOf(t, entries...); d == honest {
			t.Errorf("%s: digest unchanged", name)
		}
	}
	if d, _, err := FromLayer(ctx, layerTar(t, file("opt/f")), lower(t)); err == nil {
		t.Errorf("a file with no header for its new parent: accepted, digest %s", d)
	}
	// A base layer may leave a parent to the extractor: 0755, root.
	s := NewStack()
	must(t, s.Apply(ctx, layerTar(t, file("usr/lib/x"))))
	if n := s.lookup("/usr/lib"); n == nil || n.meta != implicitDir {
		t.Fatalf("implicit parent: %+v", n)
	}
}

// TestStackEncoding: a view survives encoding; damage is refused.
func TestStackEncoding(t *testing.T) {
	ctx := context.Background()
	s := NewStack()
	must(t, s.Apply(ctx, layerTar(t,
		tarEntry{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}},
		tarEntry{hdr: tar.Header{Name: "etc/passwd", Mode: 0o644}, body: "root"},
		tarEntry{hdr: tar.Header{Name: "bin", Typeflag: tar.TypeSymlink, Linkname: "usr/bin"}},
		tarEntry{hdr: tar.Header{Name: "a b\n/c", Mode: 0o644}, body: "odd name"},
		tarEntry{hdr: tar.Header{Name: "home/", Typeflag: tar.TypeDir, Mode: 0o1770, Uid: 5, Gid: 1 << 20}},
	)))
	b, err := s.MarshalBinary()
	must(t, err)
	var got Stack
	must(t, got.UnmarshalBinary(b))
	for p, dir := range map[string]bool{"/etc": true, "/etc/passwd": false, "/bin": false, "/a b\n/c": false, "/a b\n": true} {
		if n := got.lookup(p); n == nil || n.dir != dir {
			t.Errorf("%q: %+v, want dir=%v", p, n, dir)
		}
	}
	if got.lookup("/usr") != nil {
		t.Error("/usr appeared")
	}
	if n := got.lookup("/home"); n == nil || n.meta != (dirMeta{mode: 0o1770, uid: 5, gid: 1 << 20}) {
		t.Errorf("/home: %+v", n)
	}
	b2, _ := got.MarshalBinary()
	if !bytes.Equal(b, b2) {
		t.Error("encoding is not stable")
	}
	for i := range b {
		d := bytes.Clone(b)
		d[i] ^= 0x40
		if err := new(Stack).UnmarshalBinary(d); err == nil {
			t.Fatalf("byte %d flipped: accepted", i)
		}
	}
	if err := new(Stack).UnmarshalBinary(b[:len(b)-1]); err == nil {
		t.Fatal("truncated: accepted")
	}
}

// TestApplyFollowsSymlinks: a base layer's entry below a symlink of a
// layer under it lands where an extractor puts it (continuity's RootPath:
// inside the root), so the view above the base is right; the layers above
// the base get no such leniency (TestFromLayerOverLower).
func TestApplyFollowsSymlinks(t *testing.T) {
	ctx := context.Background()
	dir := func(name string) tarEntry {
		return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}}
	}
	link := func(name, target string) tarEntry {
		return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}}
	}
	file := func(name string) tarEntry { return tarEntry{hdr: tar.Header{Name: name, Mode: 0o644}, body: "x"} }
	s := NewStack()
	must(t, s.Apply(ctx, layerTar(t, dir("usr/"), dir("usr/bin/"), link("bin", "usr/bin"), dir("etc/"), file("etc/passwd"),
		link("up", "../../etc"), link("abs", "/etc"), link("loop", "loop"), file("f"))))
	must(t, s.Apply(ctx, layerTar(t, file("bin/sh"), tarEntry{hdr: tar.Header{Name: "abs/.wh.passwd"}}, file("up/shadow"))))
	for p, want := range map[string]string{"/usr/bin/sh": "file", "/bin": "link", "/bin/sh": "none", "/etc/passwd": "none", "/etc/shadow": "file"} {
		got := "none"
		if n := s.lookup(p); n != nil {
			got = map[bool]string{true: "dir", false: "file"}[n.dir]
			if n.link != "" {
				got = "link"
			}
		}
		if got != want {
			t.Errorf("%s: %s, want %s", p, got, want)
		}
	}
	for _, bad := range []string{"loop/x", "f/x"} {
		if err := s.Apply(ctx, layerTar(t, file(bad))); err == nil {
			t.Errorf("%s: applied", bad)
		} else {
			t.Log(err)
		}
	}
	b, err := s.MarshalBinary()
	must(t, err)
	var got Stack
	must(t, got.UnmarshalBinary(b))
	if n := got.lookup("/abs"); n == nil || n.link != "/etc" {
		t.Errorf("symlink target lost in encoding: %+v", n)
	}
}

// TestApplyAsContainerd: in a base layer, a named global header removes
// its path and an opaque marker keeps what the layer itself wrote before
// it, as containerd's extractor does.
func TestApplyAsContainerd(t *testing.T) {
	ctx := context.Background()
	file := func(name string) tarEntry { return tarEntry{hdr: tar.Header{Name: name, Mode: 0o644}, body: "x"} }
	s := NewStack()
	must(t, s.Apply(ctx, layerTar(t, file("d/old"), file("d/sub/old"), file("g"))))
	must(t, s.Apply(ctx, layerTar(t,
		file("d/new"), tarEntry{hdr: tar.Header{Name: "d/sub/", Typeflag: tar.TypeDir, Mode: 0o755}}, file("d/sub/new"), file("d/implicit/new"),
		tarEntry{hdr: tar.Header{Name: "g", Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "x"}}},
		tarEntry{hdr: tar.Header{Name: "d/.wh..wh..opq"}},
		file("d/after"))))
	for p, want := range map[string]bool{"/d/old": false, "/d/sub/old": false, "/d/new": true, "/d/sub/new": true, "/d/after": true, "/g": false,
		"/d/implicit/new": false, // its parent was not an entry, so the marker removes it
	} {
		if got := s.lookup(p) != nil; got != want {
			t.Errorf("%s present %v, want %v", p, got, want)
		}
	}
}

// TestMountTargetThroughSymlink: runc makes a RUN --mount's stub (and
// its missing parents) at the target resolved through the symlinks of the
// root it starts on, and BuildKit's cleaner removes them there; the
// tracer may read the upper dir before. Those stubs are no entry
// (redteam11: an honest build was refused).
func TestMountTargetThroughSymlink(t *testing.T) {
	ctx := context.Background()
	lower, upper := t.TempDir(), t.TempDir()
	must(t, os.Mkdir(filepath.Join(lower, "tmp"), 0o755))
	must(t, os.Symlink("/tmp", filepath.Join(lower, "lnk")))
	must(t, os.Symlink("../opt-x", filepath.Join(lower, "o")))
	must(t, os.Mkdir(filepath.Join(upper, "tmp"), 0o755))
	must(t, os.Mkdir(filepath.Join(upper, "tmp/m"), 0o755))
	must(t, os.MkdirAll(filepath.Join(upper, "opt-x/c/d"), 0o755))
	writeFile(t, filepath.Join(upper, "f"), "x", 0o644)
	d, err := FromUpper(ctx, upper, Options{Lowers: []string{lower}, Exclude: []string{"/lnk/m", "/o/c/d"}})
	must(t, err)
	if len(d.Changes) != 1 || d.Changes[0].Path != "/f" {
		t.Fatalf("changes = %+v, want /f only", d.Changes)
	}
}
