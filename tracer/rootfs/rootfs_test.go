package rootfs

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to mount an overlay")
		}
		t.Skip("SKIP (needs root: mounts an overlay)")
	}
}

func TestParseAndFindBundle(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "exec utor", "abc123")
	if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := `{"mounts":[{"destination":"/proc"},{"destination":"/etc/resolv.conf"},{"destination":"dev/"}]}`
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	mp := strings.ReplaceAll(filepath.Join(bundle, "rootfs"), " ", `\040`)
	info := strings.Join([]string{
		"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
		"99 22 0:50 / /other/abc123/rootfsx rw - overlay overlay rw,lowerdir=/x,upperdir=/y,workdir=/z",
		"100 22 0:51 / " + mp + " rw,relatime shared:40 - overlay overlay rw,lowerdir=/s/2/fs:/s/1\\:a/fs,upperdir=/s/3/f\\040s,workdir=/s/3/work,index=off",
	}, "\n") + "\n"
	mounts, err := ParseMountinfo(strings.NewReader(info))
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 3 || mounts[0].MountPoint != "/" || mounts[2].MountPoint != filepath.Join(bundle, "rootfs") {
		t.Fatalf("mounts = %+v", mounts)
	}
	l, err := FindBundle(mounts, "abc123")
	if err != nil {
		t.Fatal(err)
	}
	if l.Upper != "/s/3/f s" || !slices.Equal(l.Lowers, []string{"/s/2/fs", "/s/1:a/fs"}) || l.Bundle != bundle {
		t.Errorf("layout = %+v", l)
	}
	if !slices.Equal(l.Exclude, []string{"/proc", "/etc/resolv.conf", "/dev"}) {
		t.Errorf("exclude = %q", l.Exclude)
	}
	if _, err := FindBundle(mounts, "nope"); err == nil {
		t.Error("found a bundle for an unknown container")
	}
}

func TestProcessRootAndRelativeLowers(t *testing.T) {
	info := "1 0 0:5 / / rw - overlay overlay rw,lowerdir=7/fs:6/fs,upperdir=/var/lib/bk/snapshots/8/fs,workdir=/w\n" +
		"2 1 0:6 / /proc rw - proc proc rw\n" +
		"3 1 0:7 / /etc/hosts rw - ext4 /dev/sda1 rw\n"
	mounts, err := ParseMountinfo(strings.NewReader(info))
	if err != nil {
		t.Fatal(err)
	}
	l, err := ProcessRoot(mounts)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(l.Lowers, []string{"/var/lib/bk/snapshots/7/fs", "/var/lib/bk/snapshots/6/fs"}) || !slices.Equal(l.Exclude, []string{"/proc", "/etc/hosts"}) {
		t.Errorf("layout = %+v", l)
	}
	if _, err := ParseMountinfo(strings.NewReader("garbage line\n")); err == nil {
		t.Error("parsed a malformed line")
	}
}

// TestRealOverlay mounts an overlay the way BuildKit's executor does and
// finds it in this process's mount table.
func TestRealOverlay(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	id := "rtest" + filepath.Base(dir)
	lower1, lower2, upper, work := filepath.Join(dir, "l 1"), filepath.Join(dir, "l2"), filepath.Join(dir, "up"), filepath.Join(dir, "work")
	bundle := filepath.Join(dir, "executor", id)
	root := filepath.Join(bundle, "rootfs")
	for _, d := range []string{lower1, lower2, upper, work, root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"mounts":[{"destination":"/proc"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := "lowerdir=" + lower1 + ":" + lower2 + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", root, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	defer unix.Unmount(root, unix.MNT_DETACH)
	l, err := FromBundle("/proc/self/mountinfo", id)
	if err != nil {
		t.Fatal(err)
	}
	if l.Upper != upper || !slices.Equal(l.Lowers, []string{lower1, lower2}) || !slices.Equal(l.Exclude, []string{"/proc"}) {
		t.Errorf("layout = %+v, want upper %s lowers %s,%s", l, upper, lower1, lower2)
	}
}

func TestReadBundleTraceID(t *testing.T) {
	const id = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, c := range []struct {
		env     string
		want    string
		wantErr string
	}{
		// BuildKit appends its TRACEPARENT after the user's ENV: the last wins.
		{`["TRACEPARENT=00-ffffffffffffffffffffffffffffffff-0000000000000001-01","SECRET=x","TRACEPARENT=00-` + id + `-00f067aa0ba902b7-01"]`, id, ""},
		{`["PATH=/bin"]`, "", "no TRACEPARENT"},
		{`["TRACEPARENT=00-` + id + `-00f067aa0ba902b7-01","TRACEPARENT=junk"]`, "", "not a W3C traceparent"},
		{`["TRACEPARENT=00-00000000000000000000000000000000-00f067aa0ba902b7-01"]`, "", "not a W3C traceparent"},
	} {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "config.json")
		if err := os.WriteFile(cfg, []byte(`{"process":{"env":`+c.env+`},"mounts":[{"destination":"/proc"},{"destination":"/"}]}`), 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := ReadBundle(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if b.TraceID != c.want || (c.wantErr == "") != (b.TraceErr == nil) ||
			(b.TraceErr != nil && !strings.Contains(b.TraceErr.Error(), c.wantErr)) {
			t.Errorf("env %s: trace ID %q err %v, want %q %q", c.env, b.TraceID, b.TraceErr, c.want, c.wantErr)
		}
		if b.TraceErr != nil && strings.Contains(b.TraceErr.Error(), "SECRET") {
			t.Errorf("error quotes the environment: %v", b.TraceErr)
		}
		if len(b.Mounts) != 1 || b.Mounts[0] != "/proc" {
			t.Errorf("mounts = %q", b.Mounts)
		}
	}
}

// TestReadBundlePowers: a bundle of RUN --security=insecure (all
// capabilities, cgroupfs writable) is told apart from BuildKit's default.
func TestReadBundlePowers(t *testing.T) {
	dir := t.TempDir()
	read := func(t *testing.T, spec string) []string {
		t.Helper()
		p := filepath.Join(dir, "config.json")
		if err := os.WriteFile(p, []byte(spec), 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := ReadBundle(p)
		if err != nil {
			t.Fatal(err)
		}
		return b.Powers
	}
	defaults := `{"process":{"capabilities":{"bounding":["CAP_CHOWN","CAP_MKNOD","CAP_NET_RAW"],"effective":["CAP_CHOWN","CAP_MKNOD","CAP_NET_RAW"]}},
		"mounts":[{"destination":"/sys/fs/cgroup","type":"cgroup","options":["ro","nosuid"]},{"destination":"/proc","type":"proc"}]}`
	if p := read(t, defaults); len(p) != 0 {
		t.Errorf("BuildKit's defaults: %q", p)
	}
	insecure := `{"process":{"capabilities":{"bounding":["CAP_CHOWN","CAP_SYS_ADMIN","CAP_BPF"]}},
		"mounts":[{"destination":"/sys/fs/cgroup","type":"cgroup","options":["nosuid"]}]}`
	p := read(t, insecure)
	for _, want := range []string{"writable", "CAP_SYS_ADMIN", "CAP_BPF"} {
		if !strings.Contains(strings.Join(p, ";"), want) {
			t.Errorf("insecure: %q lacks %s", p, want)
		}
	}
}
