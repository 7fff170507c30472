package peer

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/buildtrace/buildtrace/tracer/rootfs"
)

func TestParentOf(t *testing.T) {
	f := filepath.Join(t.TempDir(), "stat")
	// A command name with spaces and a parenthesis must not shift fields.
	os.WriteFile(f, []byte("4242 (evil) 1 (x) S 77 4242 4242 0 -1"), 0o644)
	if p, err := parentOf(f); err != nil || p != 77 {
		t.Fatalf("parentOf = %d, %v, want 77", p, err)
	}
}

func TestCandidates(t *testing.T) {
	if c := candidates("/bin/buildtrace-frontend", ""); len(c) != 1 || c[0] != "/bin/buildtrace-frontend" {
		t.Errorf("absolute: %q", c)
	}
	if c := candidates("run", "/a:/b"); len(c) != 2 || c[0] != "/a/run" || c[1] != "/b/run" {
		t.Errorf("PATH: %q", c)
	}
}

// TestNotAFrontend: this test process is no BuildKit container's init.
func TestNotAFrontend(t *testing.T) {
	f := &Finder{}
	if _, err := f.frontendProcess(uint32(os.Getpid())); err == nil {
		t.Fatal("the test process was taken for a frontend")
	}
}

// TestExecutableDigestAcrossOverlays: the same program in the lower layer
// of two overlay roots (two builds' frontend containers) is hashed once,
// and a different program at the same path in an upper layer is not taken
// for it.
func TestExecutableDigestAcrossOverlays(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP (needs root: mounts overlays)")
	}
	base := t.TempDir()
	if err := unix.Mount("tmpfs", base, "tmpfs", 0, ""); err != nil {
		t.Fatalf("mounting tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(base, unix.MNT_DETACH) })
	prog, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Skip("SKIP (no /bin/sleep to run)")
	}
	lower := filepath.Join(base, "lower")
	os.MkdirAll(lower, 0o755)
	if err := os.WriteFile(filepath.Join(lower, "prog"), prog, 0o755); err != nil {
		t.Fatal(err)
	}
	mountOverlay := func(name string) (string, rootfs.Mount) {
		dir := filepath.Join(base, name)
		for _, d := range []string{"upper", "work", "merged"} {
			os.MkdirAll(filepath.Join(dir, d), 0o755)
		}
		m := rootfs.Mount{MountPoint: filepath.Join(dir, "merged"), FSType: "overlay",
			Options: []string{"lowerdir=" + lower, "upperdir=" + filepath.Join(dir, "upper"), "workdir=" + filepath.Join(dir, "work")}}
		if err := unix.Mount("overlay", m.MountPoint, "overlay", 0, strings.Join(m.Options, ",")); err != nil {
			t.Skipf("SKIP (overlayfs: %v)", err)
		}
		t.Cleanup(func() { unix.Unmount(m.MountPoint, unix.MNT_DETACH) })
		return dir, m
	}
	f := &Finder{}
	digest := func(m rootfs.Mount) string {
		t.Helper()
		layers := layersDev(rootfs.Namespace{}, m)
		if layers == nil {
			t.Fatalf("layersDev(%s) = nil for layers on one tmpfs", m.MountPoint)
		}
		cmd := exec.Command(filepath.Join(m.MountPoint, "prog"), "30")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		_, d, err := f.executable(strconv.Itoa(cmd.Process.Pid), filepath.Join(m.MountPoint, "prog"), "", layers)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	_, m1 := mountOverlay("a")
	d1 := digest(m1)
	_, m2 := mountOverlay("b")
	if d2 := digest(m2); d2 != d1 {
		t.Fatalf("the same lower file: %s, then %s", d1, d2)
	}
	if len(f.digests) != 1 {
		t.Fatalf("the program was hashed %d times, want once", len(f.digests))
	}
	// Another program at the same path, in the upper layer: sleep with
	// bytes appended (an ELF file runs the same), so that it lives until
	// its root is opened; /bin/true could exit first, and a dead
	// process has no root to open.
	other := append(slices.Clone(prog), "buildtrace"...)
	dir3, m3 := mountOverlay("c")
	unix.Unmount(m3.MountPoint, unix.MNT_DETACH)
	if err := os.WriteFile(filepath.Join(dir3, "upper", "prog"), other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("overlay", m3.MountPoint, "overlay", 0, strings.Join(m3.Options, ",")); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(other)
	if d3 := digest(m3); d3 != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Fatalf("a different program in the upper layer got digest %s, want its own", d3)
	}
}
