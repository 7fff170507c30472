package fsdiff

import (
	"context"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// mkdeep makes dir/<rel> with relative calls (its absolute path is longer
// than PATH_MAX), the file at its end holding content.
func mkdeep(t *testing.T, dir string, comps []string, file, content string) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range comps {
		if err := unix.Mkdirat(fd, c, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, c, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
	}
	defer unix.Close(fd)
	f, err := unix.Openat(fd, file, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(f)
	if _, err := unix.Write(f, []byte(content)); err != nil {
		t.Fatal(err)
	}
}

// TestFromUpperLongPaths: a path that fits in PATH_MAX from the layer's
// root is diffed, however long the way to the upper and lower directories
// (a buildkitd in a container is read through /proc/<pid>/root/…). It used
// to fail with ENAMETOOLONG, and a lower the tracer could not hash left the
// layers below a run unbound (redteam12).
func TestFromUpperLongPaths(t *testing.T) {
	root := t.TempDir()
	upper, lower := root+"/upper-with-a-long-name-"+strings.Repeat("u", 40), root+"/lower-with-a-long-name-"+strings.Repeat("l", 40)
	for _, d := range []string{upper, lower} {
		if err := unix.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var comps []string
	rel := ""
	for len(rel)+201 < 4000 {
		c := strings.Repeat("d", 200)
		comps = append(comps, c)
		rel += "/" + c
	}
	file := strings.Repeat("f", 4050-len(rel)-1)
	rel += "/" + file
	if len(upper)+len(rel) < 4096 {
		t.Fatalf("the test's path %d+%d is not longer than PATH_MAX", len(upper), len(rel))
	}
	// Sizes differ: files of one size made within one timestamp tick
	// are the same to the differ (sameDirent), as they are to BuildKit's.
	mkdeep(t, lower, comps, file, "lower\n")
	mkdeep(t, upper, comps, file, "upper, changed\n")
	d, err := FromUpper(context.Background(), upper, Options{Lowers: []string{lower}})
	if err != nil {
		t.Fatalf("FromUpper: %v", err)
	}
	if len(d.Changes) != 1 || d.Changes[0].Path != rel {
		t.Fatalf("want one change, of the %d-byte path, got %d", len(rel), len(d.Changes))
	}
	l, err := FromUpper(context.Background(), lower, Options{})
	if err != nil {
		t.Fatalf("FromUpper of the lower alone: %v", err)
	}
	if l.Digest == "" || l.Digest == d.Digest {
		t.Fatalf("digests %q %q", l.Digest, d.Digest)
	}
}
