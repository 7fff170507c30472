package fsdiff

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestFromLayersIsTheSnapshotOfTheGroup: several layers read as one give
// the digest of one upper directory holding what they made together (the
// snapshot BuildKit's merge makes of consecutive COPY --link layers), over
// the same lower.
func TestFromLayersIsTheSnapshotOfTheGroup(t *testing.T) {
	ctx := context.Background()
	uid, gid := os.Getuid(), os.Getgid()
	dir := func(name string, mode int64) tarEntry {
		return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode, Uid: uid, Gid: gid}}
	}
	file := func(name, body string) tarEntry {
		return tarEntry{hdr: tar.Header{Name: name, Mode: 0o644, Uid: uid, Gid: gid}, body: body}
	}
	group := func(s *Stack, rs ...io.Reader) (string, error) {
		return FromLayers(ctx, len(rs), func(i int) (io.ReadCloser, error) { return io.NopCloser(rs[i]), nil }, s)
	}
	base := func() *Stack {
		s := NewStack()
		must(t, s.Apply(ctx, layerTar(t, dir("bin/", 0o755), file("bin/sh", "sh"), dir("etc/", 0o755))))
		return s
	}
	lowerDir := t.TempDir()
	writeFile(t, filepath.Join(lowerDir, "bin/sh"), "sh", 0o644)
	must(t, os.MkdirAll(filepath.Join(lowerDir, "etc"), 0o755))
	must(t, os.Chmod(filepath.Join(lowerDir, "bin"), 0o755))

	// COPY --link a: /app/a; COPY --link b: /app/b, /app/a again, /bin/run.sh.
	l1 := func() io.Reader { return layerTar(t, dir("app/", 0o755), file("app/a", "one")) }
	l2 := func() io.Reader {
		return layerTar(t, dir("app/", 0o755), file("app/a", "two"), file("app/b", "b"), dir("bin/", 0o755), file("bin/run.sh", "run"))
	}
	upper := t.TempDir()
	writeFile(t, filepath.Join(upper, "app/a"), "two", 0o644)
	writeFile(t, filepath.Join(upper, "app/b"), "b", 0o644)
	writeFile(t, filepath.Join(upper, "bin/run.sh"), "run", 0o644)
	must(t, os.Chmod(filepath.Join(upper, "app"), 0o755))
	must(t, os.Chmod(filepath.Join(upper, "bin"), 0o755))
	want, err := FromUpper(ctx, upper, Options{Lowers: []string{lowerDir}})
	must(t, err)

	got, err := group(base(), l1(), l2())
	must(t, err)
	if got != want.Digest {
		t.Fatalf("group digest %s, the snapshot's %s (%+v)", got, want.Digest, want.Changes)
	}
	// Each layer alone is not the group.
	s := base()
	d1, _, err := FromLayer(ctx, l1(), s)
	must(t, err)
	d2, _, err := FromLayer(ctx, l2(), s)
	must(t, err)
	if d1 == want.Digest || d2 == want.Digest {
		t.Fatal("one layer of the group has the group's digest")
	}
	// Another first layer (a registry writer's) changes the group's digest
	// even when the second overwrites the same path.
	evil := layerTar(t, dir("app/", 0o755), file("app/a", "one"), file("app/evil", "x"))
	if got, err := group(base(), evil, l2()); err != nil || got == want.Digest {
		t.Fatalf("a changed layer in the group: %s, %v", got, err)
	}
	// A directory changed and changed back is no change.
	chmod := layerTar(t, dir("etc/", 0o700))
	back := layerTar(t, dir("etc/", 0o755))
	empty, _, err := FromLayer(ctx, layerTar(t), base())
	must(t, err)
	if got, err := group(base(), chmod, back); err != nil || got != empty {
		t.Fatalf("a directory changed back: %s (want %s), %v", got, empty, err)
	}
	// What a later layer deletes of an earlier one's leaves nothing.
	mk := layerTar(t, dir("tmp/", 0o755), file("tmp/x", "x"))
	rm := layerTar(t, tarEntry{hdr: tar.Header{Name: ".wh.tmp", Mode: 0o644}})
	if got, err := group(base(), mk, rm); err != nil || got != empty {
		t.Fatalf("made and deleted in the group: %s (want %s), %v", got, empty, err)
	}
}
