package peer

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestInjectedBytesAreNotTheCallers: bytes written into a connection with
// a raw socket (CAP_NET_RAW, which BuildKit's steps hold; the e2e test
// TestRedTeam4InjectIntoFrontendConnection does it from a step) arrive at
// the tracer's end as the caller's, on the caller's 4-tuple. The caller's
// socket did not send them, and the kernel's byte counts of both ends say
// so.
func TestInjectedBytesAreNotTheCallers(t *testing.T) {
	needRoot(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	remote := netip.MustParseAddrPort(c.LocalAddr().String())
	local := netip.MustParseAddrPort(s.LocalAddr().String())
	f := &Finder{}
	check := func() error {
		own, err := f.ownEnd(remote, local)
		if err != nil {
			t.Fatal(err)
		}
		sk, err := f.socket(remote, local)
		if err != nil {
			t.Fatal(err)
		}
		return intact(own, sk, remote)
	}

	if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := io.ReadFull(s, buf[:18]); err != nil {
		t.Fatal(err)
	}
	if err := check(); err != nil {
		t.Fatalf("the caller's own bytes: %v", err)
	}

	injected := "GET /injected HTTP/1.1\r\n\r\n"
	inject(t, remote, local, injected)
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.ReadFull(s, buf[:len(injected)])
	if err != nil || string(buf[:n]) != injected {
		t.Fatalf("the injection did not arrive (%q, %v): the test proves nothing", buf[:n], err)
	}
	err = check()
	if err == nil || !strings.Contains(err.Error(), "someone else wrote into it") {
		t.Fatalf("bytes injected into the connection are taken for the caller's: %v", err)
	}
}

// inject writes data into the connection from → to (both on loopback) as
// if from's socket had sent it: the receiver's duplicate ACK for an
// out-of-window byte gives the sequence numbers.
func inject(t *testing.T, from, to netip.AddrPort, data string) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_TCP)
	if err != nil {
		t.Fatalf("raw socket: %v", err)
	}
	defer unix.Close(fd)
	send := func(seq, ack uint32, flags byte, ts []byte, payload string) {
		hl := 20 + len(ts)
		p := make([]byte, hl+len(payload))
		be := binary.BigEndian
		be.PutUint16(p[0:], from.Port())
		be.PutUint16(p[2:], to.Port())
		be.PutUint32(p[4:], seq)
		be.PutUint32(p[8:], ack)
		p[12] = byte(hl/4) << 4
		p[13] = flags
		be.PutUint16(p[14:], 0xffff)
		copy(p[20:], ts)
		copy(p[hl:], payload)
		src, dst := from.Addr().As4(), to.Addr().As4()
		ph := append(append(append([]byte{}, src[:]...), dst[:]...), 0, unix.IPPROTO_TCP, byte(len(p)>>8), byte(len(p)))
		be.PutUint16(p[16:], checksum(append(ph, p...)))
		if err := unix.Sendto(fd, p, 0, &unix.SockaddrInet4{Addr: dst}); err != nil {
			t.Fatalf("sending a segment: %v", err)
		}
	}
	const ack, psh = 0x10, 0x08
	send(0x5a5a5a5a, 0, ack, nil, "x")
	deadline := time.Now().Add(3 * time.Second)
	buf := make([]byte, 65536)
	for time.Now().Before(deadline) {
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1})
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil || n < 40 {
			continue
		}
		tcp := buf[(buf[0]&15)*4 : n]
		be := binary.BigEndian
		if be.Uint16(tcp[0:]) != to.Port() || be.Uint16(tcp[2:]) != from.Port() || tcp[13]&ack == 0 {
			continue
		}
		seq, next := be.Uint32(tcp[4:]), be.Uint32(tcp[8:])
		var ts []byte
		opts := tcp[20 : (tcp[12]>>4)*4]
		for i := 0; i+1 < len(opts); {
			switch opts[i] {
			case 0:
				i = len(opts)
				continue
			case 1:
				i++
				continue
			}
			if opts[i] == 8 && opts[i+1] == 10 && i+10 <= len(opts) {
				// TSval: the caller's last one (the receiver's TSecr).
				ts = []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
				be.PutUint32(ts[4:], be.Uint32(opts[i+6:])+1)
				be.PutUint32(ts[8:], be.Uint32(opts[i+2:]))
			}
			i += int(opts[i+1])
		}
		send(next, seq, ack|psh, ts, data)
		return
	}
	t.Fatal("no duplicate ACK from the receiver")
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
