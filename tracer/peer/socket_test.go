package peer

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// These tests ask the real kernel (sock_diag, cgroup file handles) about
// real sockets; the e2e tests identify real frontends with the same code.

func TestMain(m *testing.M) {
	if os.Getenv("PEER_TEST_HELPER") != "" {
		os.Exit(helper())
	}
	os.Exit(m.Run())
}

// helper runs in a network namespace of its own: it puts addr on its
// loopback device, connects from addr:54000 to addr:7390, prints the
// client socket's inode and waits for its stdin to close.
func helper() int {
	addr := os.Getenv("PEER_TEST_HELPER")
	for _, args := range [][]string{{"link", "set", "lo", "up"}, {"addr", "add", addr + "/32", "dev", "lo"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "ip %s: %v: %s\n", strings.Join(args, " "), err, out)
			return 1
		}
	}
	ln, err := net.Listen("tcp", addr+":7390")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(addr), Port: 54000}}
	c, err := d.Dial("tcp", addr+":7390")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s, _ := ln.Accept()
	fmt.Println(inodeOf(c))
	bufio.NewReader(os.Stdin).ReadString('\n')
	s.Close()
	c.Close()
	return 0
}

func inodeOf(c net.Conn) uint64 {
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		return 0
	}
	defer f.Close()
	var st unix.Stat_t
	unix.Fstat(int(f.Fd()), &st)
	return st.Ino
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP (needs root: opens cgroups by handle and makes network namespaces)")
	}
}

// ownCgroup returns this process's cgroup2 path and its ID (the inode
// number of its directory).
func ownCgroup(t *testing.T) (string, uint64) {
	t.Helper()
	cg, err := unifiedCgroup("/proc/self/cgroup")
	if err != nil {
		t.Skipf("SKIP (no cgroup2 membership: %v)", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join("/sys/fs/cgroup/unified", cg), &st); err != nil {
		t.Skipf("SKIP (no cgroup2 hierarchy at /sys/fs/cgroup/unified: %v)", err)
	}
	return cg, st.Ino
}

func loopbackPair(t *testing.T, network, addr string) (client net.Conn, remote, local netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("SKIP (%s %s: %v)", network, addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	c, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, netip.MustParseAddrPort(c.LocalAddr().String()), netip.MustParseAddrPort(c.RemoteAddr().String())
}

// TestSocketFromKernel: the kernel names the caller's socket and the
// cgroup that made it, for IPv4 and IPv6; a listening socket on the
// caller's port is never taken for it, nor is a connection that is gone.
func TestSocketFromKernel(t *testing.T) {
	needRoot(t)
	cg, id := ownCgroup(t)
	f := &Finder{}
	for _, tc := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			c, remote, local := loopbackPair(t, tc.network, tc.addr)
			sk, err := f.socket(remote, local)
			if err != nil {
				t.Fatal(err)
			}
			if want := inodeOf(c); sk.inode != want {
				t.Errorf("inode %d, want %d", sk.inode, want)
			}
			if sk.cgroup != id {
				t.Errorf("cgroup ID %d, want %d (%s)", sk.cgroup, id, cg)
			}
			gotCg, pids, err := f.cgroupProcs(sk.cgroup, func(string) error { return nil })
			if err != nil || gotCg != cg {
				t.Fatalf("cgroupProcs = %q, %v; want %q", gotCg, err, cg)
			}
			self := false
			for _, p := range pids {
				self = self || p == uint32(os.Getpid())
			}
			if !self || !f.holds(uint32(os.Getpid()), "socket:["+strconv.FormatUint(sk.inode, 10)+"]") {
				t.Errorf("this process is not among cgroup %s's holders (%v)", cg, pids)
			}
			// The reverse direction names the listener's accepted end, a
			// port with only a listener names nothing.
			if sk2, err := f.socket(local, remote); err != nil || sk2.inode == sk.inode {
				t.Errorf("the accepted end: %+v, %v", sk2, err)
			}
			ln2, err := net.Listen(tc.network, tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln2.Close()
			lp := netip.MustParseAddrPort(ln2.Addr().String())
			if sk, err := f.socket(lp, local); err == nil {
				t.Errorf("a listening socket was taken for a connection: %+v", sk)
			}
			c.Close()
			if sk, err := f.socket(remote, local); err == nil {
				t.Errorf("a closed connection was found: %+v", sk)
			}
		})
	}
}

// TestSocketCgroupIsWhereItWasMade: a process that moves to another cgroup
// after connecting does not take its socket along, so a process cannot
// make a connection elsewhere and then pass for a container's process.
func TestSocketCgroupIsWhereItWasMade(t *testing.T) {
	needRoot(t)
	_, id := ownCgroup(t)
	dir := filepath.Join("/sys/fs/cgroup/unified", "buildtrace-peer-test-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("SKIP (making a cgroup: %v)", err)
	}
	c, remote, local := loopbackPair(t, "tcp4", "127.0.0.1:0")
	_ = c
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		os.Remove(dir)
	})
	// This test process moves; the socket stays the old cgroup's.
	orig, _ := unifiedCgroup("/proc/self/cgroup")
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Skipf("SKIP (moving into a cgroup: %v)", err)
	}
	defer os.WriteFile(filepath.Join("/sys/fs/cgroup/unified", orig, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	f := &Finder{}
	sk, err := f.socket(remote, local)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	unix.Stat(dir, &st)
	if sk.cgroup != id || sk.cgroup == st.Ino {
		t.Fatalf("the socket's cgroup is %d after its process moved; want %d (where it was made), not %d", sk.cgroup, id, st.Ino)
	}
}

// TestFrontendRefusesOtherCgroups: a connection made by a process that is
// not in a BuildKit container's cgroup is refused before anything else.
func TestFrontendRefusesOtherCgroups(t *testing.T) {
	needRoot(t)
	cg, _ := ownCgroup(t)
	_, remote, local := loopbackPair(t, "tcp4", "127.0.0.1:0")
	_, err := (&Finder{}).Frontend(remote, local)
	if !errors.Is(err, ErrNotFrontend) || !strings.Contains(err.Error(), "not a BuildKit container's") || !strings.Contains(err.Error(), cg) {
		t.Fatalf("Frontend = %v, want a refusal naming cgroup %s", err, cg)
	}
}

// TestSocketInOtherNetns: a connection to an address that is not loopback
// is looked up in the network namespace that has it; two namespaces with
// the same connection are refused.
func TestSocketInOtherNetns(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("SKIP (no ip command to set up a network namespace)")
	}
	_, id := ownCgroup(t)
	const addr = "10.250.0.1"
	start := func(t *testing.T) uint64 {
		t.Helper()
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), "PEER_TEST_HELPER="+addr)
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
		cmd.Stderr = os.Stderr
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Skipf("SKIP (a process in a new network namespace: %v)", err)
		}
		t.Cleanup(func() { in.Close(); cmd.Wait() })
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			t.Fatalf("helper: %v", err)
		}
		ino, err := strconv.ParseUint(strings.TrimSpace(line), 10, 64)
		if err != nil {
			t.Fatalf("helper said %q", line)
		}
		return ino
	}
	remote := netip.MustParseAddrPort(addr + ":54000")
	local := netip.MustParseAddrPort(addr + ":7390")
	hostNS, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	f := &Finder{}
	ino := start(t)
	sk, err := f.socket(remote, local)
	if err != nil || sk.inode != ino || sk.cgroup != id {
		t.Fatalf("socket = %+v, %v; want inode %d, cgroup %d", sk, err, ino, id)
	}
	start(t)
	if sk, err := f.socket(remote, local); err == nil || !strings.Contains(err.Error(), "2 network namespaces") {
		t.Fatalf("a connection two namespaces show: %+v, %v", sk, err)
	}
	// Every thread of this process is still in its own network namespace
	// (one left in the helper's would hide that namespace, and make its
	// sockets there).
	tasks, _ := filepath.Glob("/proc/self/task/*/ns/net")
	for _, task := range tasks {
		if ns, err := os.Readlink(task); err == nil && ns != hostNS {
			t.Errorf("%s is %s after the lookups, not %s", task, ns, hostNS)
		}
	}
	// A loopback address is only ever looked up in the tracer's own.
	if _, err := f.socket(netip.MustParseAddrPort("127.0.0.1:54000"), netip.MustParseAddrPort("127.0.0.1:7390")); err == nil {
		t.Fatal("a loopback connection was taken from another namespace")
	}
}

func TestContainerOfCgroup(t *testing.T) {
	for cg, want := range map[string][3]string{
		"/buildkit/abc":                     {"", "abc", "true"},
		"/docker/x/buildkit/abc":            {"/docker/x", "abc", "true"},
		"/buildkit":                         {"", "", "false"},
		"/buildkit/":                        {"", "", "false"},
		"/user.slice/buildkitx/abc":         {"", "", "false"},
		"/buildtrace/step/buildkit/abc/foo": {"", "", "false"},
	} {
		p, c, ok := containerOfCgroup(cg)
		if got := [3]string{p, c, strconv.FormatBool(ok)}; got != want {
			t.Errorf("containerOfCgroup(%q) = %q, want %q", cg, got, want)
		}
	}
}
