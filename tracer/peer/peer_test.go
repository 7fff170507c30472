package peer

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/buildtrace/buildtrace/tracer/rootfs"
)

func TestFindSocket(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1CDE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:D2F0 0100007F:1CDE 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 20 4 30 10 -1
`
	remote := netip.MustParseAddrPort("127.0.0.1:54000")
	local := netip.MustParseAddrPort("127.0.0.1:7390")
	ino, ok, err := findSocket(strings.NewReader(table), remote, local)
	if err != nil || !ok || ino != 222 {
		t.Fatalf("findSocket = %d %v %v, want 222", ino, ok, err)
	}
	if _, ok, _ := findSocket(strings.NewReader(table), netip.MustParseAddrPort("127.0.0.1:54001"), local); ok {
		t.Error("found a connection from another port")
	}
	v6 := "  sl  local_address                         remote_address                        st\n" +
		"   0: 00000000000000000000000001000000:D2F0 00000000000000000000000001000000:1CDE 01 00000000:00000000 00:00000000 00000000     0        0 333 1\n"
	ino, ok, _ = findSocket(strings.NewReader(v6), netip.MustParseAddrPort("[::1]:54000"), netip.MustParseAddrPort("[::1]:7390"))
	if !ok || ino != 333 {
		t.Fatalf("IPv6: %d %v", ino, ok)
	}
}

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

// TestSocketInOtherNetns: a connection to a bridge address is looked up in
// the caller's network namespace, and refused when two namespaces show it;
// a loopback connection is only ever looked up in the tracer's own.
func TestSocketInOtherNetns(t *testing.T) {
	hdr := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	bridge := hdr + "   0: 050011AC:D2F0 010011AC:1CDE 01 00000000:00000000 00:00000000 00000000     0        0 444 1\n"
	loop := hdr + "   0: 0100007F:D2F0 0100007F:1CDE 01 00000000:00000000 00:00000000 00000000     0        0 555 1\n"
	layout := func(t *testing.T, nets map[string][2]string) *Finder {
		proc := t.TempDir()
		mk := func(pid, ns, table string) {
			d := filepath.Join(proc, pid)
			os.MkdirAll(filepath.Join(d, "ns"), 0o755)
			os.MkdirAll(filepath.Join(d, "net"), 0o755)
			os.Symlink(ns, filepath.Join(d, "ns", "net"))
			os.WriteFile(filepath.Join(d, "net", "tcp"), []byte(table), 0o644)
		}
		mk("self", "net:[1]", hdr)
		os.MkdirAll(filepath.Join(proc, "net"), 0o755)
		os.WriteFile(filepath.Join(proc, "net", "tcp"), []byte(hdr), 0o644)
		for pid, v := range nets {
			mk(pid, v[0], v[1])
		}
		return &Finder{Proc: proc}
	}
	remote := netip.MustParseAddrPort("172.17.0.5:54000")
	local := netip.MustParseAddrPort("172.17.0.1:7390")

	f := layout(t, map[string][2]string{"10": {"net:[5]", bridge}, "11": {"net:[5]", bridge}, "12": {"net:[6]", hdr}})
	if ino, err := f.socketInode(remote, local); err != nil || ino != 444 {
		t.Errorf("socketInode = %d, %v, want 444 from the caller's namespace", ino, err)
	}
	f = layout(t, map[string][2]string{"10": {"net:[5]", bridge}, "12": {"net:[6]", bridge}})
	if ino, err := f.socketInode(remote, local); err == nil {
		t.Errorf("a connection two namespaces show was taken (inode %d)", ino)
	}
	f = layout(t, map[string][2]string{"10": {"net:[5]", loop}})
	if ino, err := f.socketInode(netip.MustParseAddrPort("127.0.0.1:54000"), netip.MustParseAddrPort("127.0.0.1:7390")); err == nil {
		t.Errorf("a loopback connection was taken from another namespace (inode %d)", ino)
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
	// Another program at the same path, in the upper layer.
	other, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Skip("SKIP (no /bin/true)")
	}
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
