package rootfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeProc lays out the /proc entries Resolver reads: the tracer ("self")
// and processes with a mount and user namespace, a status and a parent.
type fakeProc struct {
	t    *testing.T
	proc string
	cg   string // cgroup2 root
}

func newFakeProc(t *testing.T) *fakeProc {
	dir := t.TempDir()
	f := &fakeProc{t: t, proc: filepath.Join(dir, "proc"), cg: filepath.Join(dir, "cgroup")}
	f.process("self", "mnt:[1]", "user:[1]", "0", "/")
	f.process("1", "mnt:[1]", "user:[1]", "0", "/")
	return f
}

func (f *fakeProc) process(pid, mnt, user, uid, cgroup string) {
	d := filepath.Join(f.proc, pid)
	for _, p := range []string{filepath.Join(d, "ns"), filepath.Join(d, "root")} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			f.t.Fatal(err)
		}
	}
	os.Symlink(mnt, filepath.Join(d, "ns", "mnt"))
	os.Symlink(user, filepath.Join(d, "ns", "user"))
	os.WriteFile(filepath.Join(d, "status"), []byte("Name:\tx\nUid:\t"+strings.Repeat(uid+"\t", 3)+uid+"\n"), 0o644)
	os.WriteFile(filepath.Join(d, "stat"), []byte(pid+" (x) S 1 0"), 0o644) // parent: 1, outside
	os.WriteFile(filepath.Join(d, "cgroup"), []byte("0::"+cgroup+"\n"), 0o644)
}

func (f *fakeProc) cgroup(prefix string, pids ...string) string {
	d := filepath.Join(f.cg, prefix)
	if err := os.MkdirAll(d, 0o755); err != nil {
		f.t.Fatal(err)
	}
	os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strings.Join(pids, "\n")+"\n"), 0o644)
	return d
}

// TestResolverNestedBuildkitd: the containers of a buildkitd in a container
// are read in that container's mount namespace, through its first
// process's /proc/<pid>/root.
func TestResolverNestedBuildkitd(t *testing.T) {
	f := newFakeProc(t)
	f.process("100", "mnt:[7]", "user:[1]", "0", "/docker/c")
	f.cgroup("/docker/c", "100")
	root := filepath.Join(f.proc, "100", "root")
	bundle := filepath.Join(root, "var/lib/buildkit/executor/c1")
	os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o755)
	cfg := `{"process":{"env":["TRACEPARENT=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]},"mounts":[{"destination":"/proc"}]}`
	os.WriteFile(filepath.Join(bundle, "config.json"), []byte(cfg), 0o644)
	mi := "58 102 0:49 / /var/lib/buildkit/executor/c1/rootfs rw,relatime - overlay overlay rw,lowerdir=/var/lib/buildkit/s/4/fs,upperdir=/var/lib/buildkit/s/5/fs,workdir=/var/lib/buildkit/s/5/work\n"
	os.WriteFile(filepath.Join(f.proc, "100", "mountinfo"), []byte(mi), 0o644)

	r := &Resolver{Proc: f.proc, CgroupRoot: f.cg, Mountinfo: filepath.Join(f.proc, "self", "mountinfo")}
	l, err := r.FromBundle("/docker/c", "c1")
	if err != nil {
		t.Fatalf("FromBundle: %v", err)
	}
	if l.Upper != root+"/var/lib/buildkit/s/5/fs" || len(l.Lowers) != 1 || l.Lowers[0] != root+"/var/lib/buildkit/s/4/fs" ||
		l.Bundle != bundle || l.Root != root || l.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("layout = %+v", l)
	}
	if _, err := r.FromBundle("/docker/c", "other"); err == nil {
		t.Error("found a container that is not mounted")
	}
}

// TestResolverRefusesUntrusted: a mount namespace is taken for a
// buildkitd's only from a process that is root in the tracer's user
// namespace, in a cgroup root made, in a mount namespace not the tracer's.
func TestResolverRefusesUntrusted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP (needs root: chowns a directory)")
	}
	for name, setup := range map[string]func(f *fakeProc){
		"a user's process": func(f *fakeProc) {
			f.process("100", "mnt:[7]", "user:[1]", "1000", "/x")
			f.cgroup("/x", "100")
		},
		"root in a user namespace": func(f *fakeProc) {
			f.process("100", "mnt:[7]", "user:[9]", "0", "/x")
			f.cgroup("/x", "100")
		},
		"the tracer's own mount namespace": func(f *fakeProc) {
			f.process("100", "mnt:[1]", "user:[1]", "0", "/x")
			f.cgroup("/x", "100")
		},
		"a cgroup a user made": func(f *fakeProc) {
			f.process("100", "mnt:[7]", "user:[1]", "0", "/x")
			if err := os.Chown(f.cgroup("/x", "100"), 65534, 65534); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFakeProc(t)
			setup(f)
			r := &Resolver{Proc: f.proc, CgroupRoot: f.cg}
			if nss, err := r.Namespaces("/x"); err == nil {
				t.Errorf("Namespaces accepted %+v", nss)
			}
		})
	}
}
