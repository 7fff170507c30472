//go:build linux

package probe

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// foreignEnv makes the test binary a process of a tracked step that was
// handed sockets made outside its cgroup (as another local user passes
// one over SCM_RIGHTS, redteam9): its value lists one way of moving bytes
// per descriptor, the first on fd 3. "own=ADDR" dials ADDR itself (a
// socket of its own cgroup) and writes to it; "unix" writes to a unix
// socket made outside (BuildKit's --mount=type=ssh is one).
const foreignEnv = "BUILDTRACE_PROBE_FOREIGN"

func foreignUse() int {
	for i, op := range strings.Split(os.Getenv(foreignEnv), ",") {
		fd := 3 + i
		if err := foreignOp(fd, op); err != nil {
			fmt.Fprintf(os.Stderr, "%s on fd %d: %v\n", op, fd, err)
			return 1
		}
	}
	return 0
}

func foreignOp(fd int, op string) error {
	// The descriptors are dups of the test's non-blocking ones; reads
	// below wait for the server's greeting.
	if err := unix.SetNonblock(fd, false); err != nil && !strings.HasPrefix(op, "own=") {
		return err
	}
	msg := []byte("foreign " + op + "\n")
	buf := make([]byte, 64)
	var err error
	switch op {
	case "write", "unix":
		_, err = unix.Write(fd, msg)
	case "writev":
		_, err = unix.Writev(fd, [][]byte{msg[:4], msg[4:]})
	case "pwritev2":
		// An offset of -1 is the file position: a socket takes it.
		_, err = unix.Pwritev2(fd, [][]byte{msg}, -1, 0)
	case "sendto":
		err = unix.Sendto(fd, msg, 0, nil)
	case "sendfile":
		var f *os.File
		if f, err = os.Open("/proc/self/exe"); err != nil {
			return err
		}
		defer f.Close()
		var off int64
		_, err = unix.Sendfile(fd, int(f.Fd()), &off, 16)
	case "splice":
		var p [2]int
		if err = unix.Pipe(p[:]); err != nil {
			return err
		}
		defer unix.Close(p[0])
		defer unix.Close(p[1])
		if _, err = unix.Write(p[1], msg); err != nil {
			return err
		}
		_, err = unix.Splice(p[0], nil, fd, nil, len(msg), 0)
	case "splice-in":
		var p [2]int
		if err = unix.Pipe(p[:]); err != nil {
			return err
		}
		defer unix.Close(p[0])
		defer unix.Close(p[1])
		_, err = unix.Splice(fd, nil, p[1], nil, 3, 0)
	case "aio":
		err = aioWrite(fd, msg)
	case "read":
		_, err = unix.Read(fd, buf)
	case "readv":
		_, err = unix.Readv(fd, [][]byte{buf[:1], buf[1:]})
	case "recvfrom":
		_, _, err = unix.Recvfrom(fd, buf, 0)
	default:
		if to, ok := strings.CutPrefix(op, "sendto-udp="); ok {
			ap := netip.MustParseAddrPort(to)
			return unix.Sendto(fd, msg, 0, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())})
		}
		addr, ok := strings.CutPrefix(op, "own=")
		if !ok {
			return fmt.Errorf("unknown op %q", op)
		}
		var c net.Conn
		if c, err = net.Dial("tcp4", addr); err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(msg)
	}
	return err
}

// aioWrite writes msg to fd with Linux AIO: one IOCB_CMD_PWRITE, which the
// kernel performs inside io_submit (redteam16). Two iocbs go in one call,
// a pipe's first, so the socket's is not the array's first.
func aioWrite(fd int, msg []byte) error {
	var ctx uint64
	if _, _, e := unix.Syscall(unix.SYS_IO_SETUP, 2, uintptr(unsafe.Pointer(&ctx)), 0); e != 0 {
		return fmt.Errorf("io_setup: %w", e)
	}
	defer unix.Syscall(unix.SYS_IO_DESTROY, uintptr(ctx), 0, 0)
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		return err
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	// struct iocb (linux/aio_abi.h): data, key and rw_flags, opcode,
	// reqprio, fildes, buf, nbytes, offset, reserved2, flags, resfd.
	type iocb struct {
		data         uint64
		key, rwFlags uint32
		opcode       uint16
		reqprio      int16
		fildes       uint32
		buf, nbytes  uint64
		offset       int64
		reserved2    uint64
		flags, resfd uint32
	}
	const cmdPwrite = 1
	cbs := []iocb{
		{opcode: cmdPwrite, fildes: uint32(p[1]), buf: uint64(uintptr(unsafe.Pointer(&msg[0]))), nbytes: uint64(len(msg))},
		{opcode: cmdPwrite, fildes: uint32(fd), buf: uint64(uintptr(unsafe.Pointer(&msg[0]))), nbytes: uint64(len(msg))},
	}
	ptrs := []uintptr{uintptr(unsafe.Pointer(&cbs[0])), uintptr(unsafe.Pointer(&cbs[1]))}
	n, _, e := unix.Syscall(unix.SYS_IO_SUBMIT, uintptr(ctx), 2, uintptr(unsafe.Pointer(&ptrs[0])))
	if e != 0 || n != 2 {
		return fmt.Errorf("io_submit: %d, %v", n, e)
	}
	// struct io_event: data, obj, res, res2.
	evs := make([]int64, 8)
	if n, _, e := unix.Syscall6(unix.SYS_IO_GETEVENTS, uintptr(ctx), 2, 2, uintptr(unsafe.Pointer(&evs[0])), 0, 0); e != 0 || n != 2 {
		return fmt.Errorf("io_getevents: %d, %v", n, e)
	}
	for _, res := range []int64{evs[2], evs[6]} {
		if res < 0 {
			return fmt.Errorf("aio write: %w", syscall.Errno(-res))
		}
	}
	runtime.KeepAlive(cbs)
	runtime.KeepAlive(msg)
	return nil
}

// greeter accepts connections on a loopback port, sends "hi\n" and reads
// until the peer is done.
func greeter(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(c, "hi\n")
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// TestForeignSocket: sockets connected outside the tracked cgroup (their
// packets are charged to the cgroup that made them) and handed to a
// process in it: every way of moving bytes through one is reported as a
// foreign socket with its peer, once per socket; an unconnected UDP one
// without a peer, and the address its sendto names flagged foreign; the
// process's own socket and a unix socket are not (redteam9,
// TestRedTeam9PassedSocket).
func TestForeignSocket(t *testing.T) {
	requireRoot(t)
	p, c := startProbe(t)
	ops := []string{"write", "writev", "pwritev2", "sendto", "sendfile", "splice", "splice-in", "aio", "read", "readv", "recvfrom"}
	peers := map[netip.AddrPort]string{}
	var files []*os.File
	for _, op := range ops {
		srv := greeter(t)
		conn, err := net.Dial("tcp4", srv.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		f, err := conn.(*net.TCPConn).File()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		files = append(files, f)
		peers[srv] = op
	}
	// An unconnected UDP socket, and where the child sends with it.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	udpDst := netip.MustParseAddrPort(pc.LocalAddr().String())
	udp, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	uf := os.NewFile(uintptr(udp), "udp")
	t.Cleanup(func() { uf.Close() })
	files = append(files, uf)
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[1])
	files = append(files, os.NewFile(uintptr(pair[0]), "unix"))
	own := greeter(t)
	cg := mkCgroup(t, randHex(t, 16), "foreign")
	cgID := inode(t, cg)
	d, err := os.Open(cg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = []string{foreignEnv + "=" + strings.Join(ops, ",") + ",sendto-udp=" + udpDst.String() + ",unix,own=" + own.String()}
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(d.Fd())}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tracked child: %v\n%s", err, out)
	}
	syncProbe(t, p)
	got := map[string]int{}
	udpPeerless, udpSent := 0, 0
	for _, ev := range c.all() {
		if ev.Kind != KindNet || ev.CgroupID != cgID {
			continue
		}
		if ev.Net.Op != "foreign" {
			// A send or connect on a foreign socket is flagged; on the
			// process's own, not.
			_, tcp := peers[ev.Net.Addr]
			if want := tcp || ev.Net.Addr == udpDst; ev.Net.Foreign != want {
				t.Errorf("%+v: foreign %v, want %v (own socket %s)", *ev.Net, ev.Net.Foreign, want, own)
			}
			if ev.Net.Addr == udpDst && ev.Net.Op == "sendto" {
				udpSent++
			}
			continue
		}
		if !ev.Net.Addr.IsValid() && ev.Net.Protocol == "udp" && ev.Net.SocketCgroupID != 0 && ev.Net.SocketCgroupID != cgID {
			udpPeerless++
			continue
		}
		op, ok := peers[ev.Net.Addr]
		if !ok || ev.Net.Protocol != "tcp" {
			t.Errorf("foreign socket reported with a peer no socket had: %+v (own socket %s)", *ev.Net, own)
			continue
		}
		got[op]++
	}
	for _, op := range ops {
		if got[op] != 1 {
			t.Errorf("%s on a socket made outside the cgroup: %d foreign-socket records, want 1", op, got[op])
		}
	}
	if udpPeerless != 1 || udpSent != 1 {
		t.Errorf("sendto on an unconnected UDP socket made outside the cgroup: %d peer-less foreign records, %d flagged sendto records to %s; want 1 and 1", udpPeerless, udpSent, udpDst)
	}
}
