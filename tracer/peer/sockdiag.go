package peer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// tcpInfoNeed is how much of struct tcp_info must be there: up to
// bytes_retrans (Linux 5.5).
var tcpInfoNeed = int(unsafe.Offsetof(unix.TCPInfo{}.Bytes_retrans) + 8)

// sockInfo is what the kernel keeps about one end of a TCP connection.
type sockInfo struct {
	inode uint64
	// cgroup is the cgroup2 ID of the task that created the socket,
	// recorded by the kernel at creation (sk_cgrp_data): moving the
	// task, or passing the descriptor on, does not change it.
	cgroup uint64
	// received is how many bytes of the peer's stream this end has
	// taken in order; sent how many it has sent, once each
	// (tcp_info: bytes_received, bytes_sent less bytes_retrans).
	received, sent uint64
}

// Linux uapi values that golang.org/x/sys/unix does not carry
// (linux/inet_diag.h, net/tcp_states.h).
const (
	inetDiagInfo     = 2  // INET_DIAG_INFO: struct tcp_info
	inetDiagCgroupID = 21 // INET_DIAG_CGROUP_ID
	tcpListen        = 10 // TCP_LISTEN
	diagReqLen       = 56 // struct inet_diag_req_v2
	diagMsgLen       = 72 // struct inet_diag_msg
	diagSockIDOff    = 8  // inet_diag_req_v2.id
	diagMsgIDOff     = 4  // inet_diag_msg.id
	diagSockIDLen    = 48 // struct inet_diag_sockid
)

// diagOpen opens a NETLINK_SOCK_DIAG socket in the network namespace of
// the file nsPath ("" for the tracer's own). A netlink socket answers for
// the namespace it was made in, whichever thread later uses it: the
// namespace is entered on a locked thread and left again before the
// thread runs anything else.
func diagOpen(nsPath string) (int, error) {
	open := func() (int, error) {
		return unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	}
	if nsPath == "" {
		return diagTimeout(open())
	}
	ns, err := os.Open(nsPath)
	if err != nil {
		return -1, err
	}
	defer ns.Close()
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, err}
			return
		}
		defer own.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("entering network namespace %s: %w", nsPath, err)}
			return
		}
		fd, err := open()
		// A thread that cannot go back stays locked: the runtime ends it
		// (or, for the main thread, never runs anything on it again).
		if unix.Setns(int(own.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{fd, err}
	}()
	r := <-ch
	return diagTimeout(r.fd, r.err)
}

// diagTimeout bounds every wait for the kernel's answer, so that a request
// handler can never hang on it.
func diagTimeout(fd int, err error) (int, error) {
	if err != nil {
		return fd, err
	}
	tv := unix.Timeval{Sec: 2}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("sock_diag receive timeout: %w", err)
	}
	return fd, nil
}

// diagLookup asks the kernel for the established TCP socket whose own
// address is src and whose peer is dst. It reports false when there is
// none.
func diagLookup(fd int, src, dst netip.AddrPort) (sockInfo, bool, error) {
	req := diagRequest(src, dst)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return sockInfo{}, false, fmt.Errorf("sock_diag request: %w", err)
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return sockInfo{}, false, fmt.Errorf("sock_diag answer: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return sockInfo{}, false, fmt.Errorf("sock_diag answer: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return sockInfo{}, false, errors.New("sock_diag: short error message")
				}
				errno := -int32(binary.NativeEndian.Uint32(m.Data))
				if errno == 0 {
					continue // an acknowledgement
				}
				if unix.Errno(errno) == unix.ENOENT {
					return sockInfo{}, false, nil
				}
				return sockInfo{}, false, fmt.Errorf("sock_diag: %w", unix.Errno(errno))
			case unix.NLMSG_DONE:
				return sockInfo{}, false, nil
			case unix.SOCK_DIAG_BY_FAMILY:
				return parseDiagMsg(m.Data, src, dst)
			}
		}
	}
}

// diagRequest builds a request for the one socket src → dst: with no
// NLM_F_DUMP, the kernel looks it up by its addresses.
func diagRequest(src, dst netip.AddrPort) []byte {
	family := byte(unix.AF_INET6)
	if src.Addr().Unmap().Is4() && dst.Addr().Unmap().Is4() {
		family = unix.AF_INET
	}
	b := make([]byte, unix.NLMSG_HDRLEN+diagReqLen)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST)
	r := b[unix.NLMSG_HDRLEN:]
	r[0] = family
	r[1] = unix.IPPROTO_TCP
	r[2] = 1 << (inetDiagInfo - 1)  // idiag_ext: tcp_info too
	ne.PutUint32(r[4:], ^uint32(0)) // every state; the answer's is checked
	putSockID(r[diagSockIDOff:], family, src, dst)
	return b
}

// putSockID writes struct inet_diag_sockid: ports big-endian, addresses
// in network order, no interface, no cookie (INET_DIAG_NOCOOKIE).
func putSockID(id []byte, family byte, src, dst netip.AddrPort) {
	binary.BigEndian.PutUint16(id[0:], src.Port())
	binary.BigEndian.PutUint16(id[2:], dst.Port())
	put := func(b []byte, a netip.Addr) {
		if family == unix.AF_INET {
			a4 := a.Unmap().As4()
			copy(b, a4[:])
			return
		}
		a16 := a.As16()
		copy(b, a16[:])
	}
	put(id[4:20], src.Addr())
	put(id[20:36], dst.Addr())
	binary.NativeEndian.PutUint32(id[40:], ^uint32(0))
	binary.NativeEndian.PutUint32(id[44:], ^uint32(0))
}

// sockIDAddrs reads the two ends of a struct inet_diag_sockid.
func sockIDAddrs(family byte, id []byte) (src, dst netip.AddrPort) {
	addr := func(b []byte) netip.Addr {
		if family == unix.AF_INET {
			return netip.AddrFrom4([4]byte(b[:4]))
		}
		return netip.AddrFrom16([16]byte(b[:16]))
	}
	src = netip.AddrPortFrom(addr(id[4:20]), binary.BigEndian.Uint16(id[0:]))
	dst = netip.AddrPortFrom(addr(id[20:36]), binary.BigEndian.Uint16(id[2:]))
	return src, dst
}

// parseDiagMsg reads struct inet_diag_msg and its attributes. The answer
// must be the very connection asked for: a lookup with no established
// socket can fall back to a listening one on the same port.
func parseDiagMsg(b []byte, src, dst netip.AddrPort) (sockInfo, bool, error) {
	if len(b) < diagMsgLen {
		return sockInfo{}, false, fmt.Errorf("sock_diag: short message (%d bytes)", len(b))
	}
	gotSrc, gotDst := sockIDAddrs(b[0], b[diagMsgIDOff:diagMsgIDOff+diagSockIDLen])
	if b[1] == tcpListen || !sameAddr(gotSrc, src) || !sameAddr(gotDst, dst) {
		return sockInfo{}, false, nil
	}
	ne := binary.NativeEndian
	info := sockInfo{inode: uint64(ne.Uint32(b[68:]))}
	haveCgroup, haveInfo := false, false
	for a := b[diagMsgLen:]; len(a) >= unix.SizeofRtAttr; {
		l := int(ne.Uint16(a[0:]))
		if l < unix.SizeofRtAttr || l > len(a) {
			return sockInfo{}, false, errors.New("sock_diag: malformed attribute")
		}
		switch typ := ne.Uint16(a[2:]); {
		case typ == inetDiagCgroupID && l >= unix.SizeofRtAttr+8:
			info.cgroup = ne.Uint64(a[unix.SizeofRtAttr:])
			haveCgroup = true
		case typ == inetDiagInfo && l >= unix.SizeofRtAttr+tcpInfoNeed:
			// The kernel's struct tcp_info grows at its end: older
			// kernels send less than unix.TCPInfo, newer ones more.
			var ti unix.TCPInfo
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&ti)), unsafe.Sizeof(ti)), a[unix.SizeofRtAttr:l])
			info.received, info.sent = ti.Bytes_received, ti.Bytes_sent-ti.Bytes_retrans
			haveInfo = true
		}
		l = (l + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1)
		if l > len(a) {
			break
		}
		a = a[l:]
	}
	if !haveCgroup {
		return sockInfo{}, false, errors.New("sock_diag: the kernel gave no socket cgroup (INET_DIAG_CGROUP_ID, Linux 5.9 with CONFIG_SOCK_CGROUP_DATA)")
	}
	if !haveInfo {
		return sockInfo{}, false, errors.New("sock_diag: the kernel gave no byte counts (INET_DIAG_INFO with bytes_sent, Linux 5.5)")
	}
	if info.inode == 0 {
		return sockInfo{}, false, errors.New("sock_diag: the socket has no inode (orphaned)")
	}
	return info, true, nil
}
