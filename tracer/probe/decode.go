package probe

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"path"
	"strings"
	"time"
)

// Kernel record layout (struct event in bpf/buildtrace.bpf.c); a test checks
// headerSize against the bpf2go type.
const headerSize = 120

// kindSync is the marker Sync makes the kernel emit; never passed to fn.
const kindSync Kind = 100

// kindArgvCont is a continuation of an exec's argv (K_ARGV_CONT), joined
// to the exec that follows it; never passed to fn.
const kindArgvCont Kind = 10

const (
	flagTruncated     = 1 << 0
	flagArgvTruncated = 1 << 1
	flagFirstInCgroup = 1 << 2
	flagHasMode       = 1 << 3
	flagHasOwner      = 1 << 4
	flagOutgoing      = 1 << 5
	flagRuntimeMntNS  = 1 << 6
	flagDetached      = 1 << 7
	flagUntracked     = 1 << 8
	flagOpened        = 1 << 9  // file: blob 2 is the file a writing open returned
	flagForeign       = 1 << 10 // net: on a socket made in another cgroup
)

// File operations as the kernel reports them (enum file_op).
const (
	fopOpen = iota + 1
	fopTruncate
	fopUnlink
	fopRename
	fopChmod
	fopChown
	fopLink
	fopSymlink
	fopMkdir
	fopRmdir
	fopExchange
	fopMknod
	fopSetxattr
	fopRemovexattr
)

const (
	oWronly = 01
	oRdwr   = 02
	oCreat  = 0100
	oTrunc  = 01000

	afInet   = 2
	afInet6  = 10
	afPacket = 17

	protoICMP    = 1
	protoTCP     = 6
	protoUDP     = 17
	protoDCCP    = 33
	protoICMPv6  = 58
	protoSCTP    = 132
	protoUDPLite = 136
)

// header is the fixed part of a kernel record.
type header struct {
	ts, cgroupID   uint64
	b              [5]uint64
	pid, tid, ppid uint32
	a              [5]uint32
	kind, flags    uint16
	family, port   uint16
	lens           [4]uint16
	addr           [16]byte
}

func parseHeader(rec []byte) (header, [4][]byte, error) {
	var h header
	var blobs [4][]byte
	if len(rec) < headerSize {
		return h, blobs, fmt.Errorf("short record: %d bytes", len(rec))
	}
	le := binary.LittleEndian
	h.ts = le.Uint64(rec[0:])
	h.cgroupID = le.Uint64(rec[8:])
	for i := range h.b {
		h.b[i] = le.Uint64(rec[16+8*i:])
	}
	h.pid = le.Uint32(rec[56:])
	h.tid = le.Uint32(rec[60:])
	h.ppid = le.Uint32(rec[64:])
	for i := range h.a {
		h.a[i] = le.Uint32(rec[68+4*i:])
	}
	h.kind = le.Uint16(rec[88:])
	h.flags = le.Uint16(rec[90:])
	h.family = le.Uint16(rec[92:])
	h.port = le.Uint16(rec[94:])
	for i := range h.lens {
		h.lens[i] = le.Uint16(rec[96+2*i:])
	}
	copy(h.addr[:], rec[104:120])
	data := rec[headerSize:]
	for i, n := range h.lens {
		if int(n) > len(data) {
			return h, blobs, fmt.Errorf("record kind %d: blob %d of %d bytes overruns record", h.kind, i, n)
		}
		blobs[i], data = data[:n], data[n:]
	}
	return h, blobs, nil
}

// decode turns one ring buffer record into an Event. bootWall converts
// the kernel's CLOCK_MONOTONIC nanoseconds to wall time. An exec's argv is
// only its record's first chunk: Run joins continuation records
// (argvJoiner).
func decode(rec []byte, bootWall int64) (Event, error) {
	h, blobs, err := parseHeader(rec)
	if err != nil {
		return Event{}, err
	}
	return decodeParsed(h, blobs, bootWall)
}

func decodeParsed(h header, blobs [4][]byte, bootWall int64) (Event, error) {
	ev := Event{
		Kind:     Kind(h.kind),
		Time:     time.Unix(0, int64(h.ts)+bootWall),
		CgroupID: h.cgroupID,
		PID:      h.pid,
		TID:      h.tid,
		PPID:     h.ppid,
	}
	trunc := h.flags&flagTruncated != 0
	switch ev.Kind {
	case KindCgroupMkdir, KindCgroupRmdir:
		ev.Cgroup = &CgroupInfo{Path: string(blobs[0]), Untracked: h.flags&flagUntracked != 0}
	case KindFork, KindIOUring, kindSync, kindArgvCont:
	case KindExec:
		cwd := string(blobs[2])
		name := joinPath(cwd, string(blobs[0]))
		binary := string(blobs[3])
		anon := h.flags&flagDetached != 0
		if anon {
			binary = strings.TrimPrefix(binary, "/") // a name, not a path
		}
		if binary == "" {
			binary = name
		}
		x := &ExecInfo{
			Binary:          binary,
			BinaryAnonymous: anon,
			Filename:        name,
			Argv:            splitArgv(blobs[1]),
			ArgvTruncated:   h.flags&flagArgvTruncated != 0,
			UID:             h.a[0],
			GID:             h.a[1],
			EUID:            h.a[3],
			EGID:            h.a[4],
			Cwd:             cwd,
			FirstInCgroup:   h.flags&flagFirstInCgroup != 0,
			RuntimeMountNS:  h.flags&flagRuntimeMntNS != 0,
		}
		ev.Exec = x
	case KindCred:
		ev.Cred = &CredInfo{UID: h.a[0], GID: h.a[1], FSUID: h.a[2], EUID: h.a[3], EGID: h.a[4]}
	case KindExit:
		ev.Exit = &ExitInfo{
			Code:           int(h.a[0]),
			Signal:         int(h.a[1]),
			CPUUserNanos:   h.b[0],
			CPUSystemNanos: h.b[1],
			MaxRSSBytes:    h.b[2],
			ReadBytes:      h.b[3],
			WriteBytes:     h.b[4],
		}
	case KindFile:
		// File records come by the hundred thousand: the info and its
		// optional fields are one allocation.
		fa := &struct {
			f        FileInfo
			mode     uint32
			uid, gid int64
		}{}
		f := &fa.f
		f.Op = fileOp(h.a[0], h.a[1])
		f.Path = joinBlobs(blobs[1], blobs[0], rootLen(h.b[1]))
		f.Truncated = trunc
		if f.Op == "" {
			return Event{}, fmt.Errorf("file record with unknown op %d", h.a[0])
		}
		switch {
		case h.a[0] == fopOpen && h.flags&flagOpened != 0 && len(blobs[2]) > 0:
			// The file the open returned, walked by the kernel: the
			// path given may go through symlinks (out of the layer,
			// into a cache mount). The given path is kept as the
			// target when it differs.
			if opened := string(blobs[2]); opened != f.Path {
				f.Target, f.Path = f.Path, opened
			}
		case h.a[0] == fopSymlink, h.a[0] == fopSetxattr, h.a[0] == fopRemovexattr:
			f.Target = string(blobs[2]) // as given, not resolved (a link target, an attribute name)
		case h.lens[2] > 0 || h.lens[3] > 0:
			f.Target = joinBlobs(blobs[3], blobs[2], rootLen(h.b[3]))
		}
		if h.flags&flagHasMode != 0 {
			fa.mode = h.a[2] & 07777
			f.Mode = &fa.mode
		}
		if h.flags&flagHasOwner != 0 {
			fa.uid, fa.gid = int64(int32(h.a[3])), int64(int32(h.a[4]))
			f.UID, f.GID = &fa.uid, &fa.gid
		}
		ev.File = f
	case KindNet:
		if h.a[0] == nopForeign {
			ev.Net = decodeForeign(h)
			break
		}
		addr, ok := addrPort(h)
		if !ok {
			return Event{}, fmt.Errorf("net record with address family %d", h.family)
		}
		proto := protoName(h.a[1], h.a[3] != 0)
		if !hasPorts(proto) {
			addr = netip.AddrPortFrom(addr.Addr(), 0) // no ports; as the packet counters key it
		}
		ev.Net = &NetInfo{Op: netOp(h.a[0]), Protocol: proto, Addr: addr, Errno: h.a[2], Foreign: h.flags&flagForeign != 0}
	case KindDNS:
		addr, ok := addrPort(h)
		if !ok {
			return Event{}, fmt.Errorf("dns record with address family %d", h.family)
		}
		ev.DNS = &DNSInfo{
			Outgoing: h.flags&flagOutgoing != 0,
			Peer:     addr,
			Payload:  append([]byte(nil), blobs[0]...),
		}
	default:
		return Event{}, fmt.Errorf("unknown record kind %d", h.kind)
	}
	return ev, nil
}

// rootLen decodes what the kernel's walk of a file record's directory says
// of the task's root (append_walk in bpf/common.h): the offset in its path
// buffer where the walk met the root (high 32 bits, 0 if it never did) and
// where it ended (low). The walk writes backwards, so the difference is how
// many leading bytes of the directory are the root: 0 unless the task
// chrooted.
func rootLen(v uint64) uint64 {
	const blobMax = 4096 // BLOB_MAX: the walk's buffer
	met, end := v>>32, v&0xffffffff
	if met == 0 || met < end || met > blobMax {
		return 0
	}
	return met - end
}

// joinPath makes p absolute against dir, the directory the kernel walked for
// a relative path (dirfd or cwd). An empty p means dir itself (fd calls).
func joinPath(dir, p string) string {
	switch {
	case p == "":
		return dir
	case !strings.HasPrefix(p, "/") && dir == "":
		return p // the directory could not be resolved; keep what was given
	}
	return resolve(dir, "", p)
}

// resolve joins p, a path as the call was given it, to dir, a directory the
// kernel walked (physical: no symlink in it), as far as that can be told
// without the file system. root is the leading part of dir that is the
// task's root ("" unless it chrooted): an absolute p starts there, and ".."
// does not leave it. "." and empty names go; a ".." before any name of p
// goes up from dir, as the kernel does from a directory; a ".." after a name
// of p stays as given: that name may be a symlink, whose ".." is its
// target's parent, not the directory the string names (redteam10: a step
// wrote /opt/l/../evil, /opt/l a link into its cache mount, and a lexical
// clean signed it as /opt/evil).
func resolve(dir, root, p string) string {
	var out []string
	add := func(s string) {
		for _, c := range strings.Split(path.Clean("/"+s), "/") {
			if c != "" {
				out = append(out, c)
			}
		}
	}
	add(root)
	floor := len(out)
	if !strings.HasPrefix(p, "/") {
		add(strings.TrimPrefix(dir, root))
	}
	named := false
	for _, c := range strings.Split(p, "/") {
		switch {
		case c == "" || c == ".":
		case c == ".." && !named:
			if len(out) > floor {
				out = out[:len(out)-1]
			}
		default:
			named = true
			out = append(out, c)
		}
	}
	return "/" + strings.Join(out, "/")
}

// joinBlobs is joinPath for kernel blobs. The kernel's directory walk
// gives a clean absolute path and most programs pass clean names, so the
// common case is one allocation, without resolve.
//
// rootLen is how many leading bytes of dir are the task's root when it
// chrooted (0 otherwise): the kernel then walks, for an absolute path, the
// root itself, and for a relative one the directory as usual; the path is
// inside the root, which neither "/" nor ".." leaves.
func joinBlobs(dir, p []byte, rootLen uint64) string {
	if len(p) == 0 {
		return string(dir)
	}
	if rootLen > 0 && rootLen <= uint64(len(dir)) {
		return resolve(string(dir), string(dir[:rootLen]), string(p))
	}
	if p[0] == '/' {
		if len(dir) > 0 && !(len(dir) == 1 && dir[0] == '/') {
			// A chrooted task whose root is not under its tree's
			// top: dir is its root, and the path is inside it.
			return resolve(string(dir), string(dir), string(p))
		}
		if cleanComponents(p[1:]) {
			return string(p)
		}
		return resolve("", "", string(p))
	}
	if len(dir) == 0 || dir[0] != '/' || !cleanComponents(p) ||
		!(len(dir) == 1 || cleanComponents(dir[1:])) {
		return joinPath(string(dir), string(p))
	}
	var b strings.Builder
	b.Grow(len(dir) + 1 + len(p))
	b.Write(dir)
	if len(dir) > 1 {
		b.WriteByte('/')
	}
	b.Write(p)
	return b.String()
}

// cleanComponents reports whether p is a non-empty list of /-separated
// names none of which is empty, "." or "..", so path.Clean would keep it.
func cleanComponents(p []byte) bool {
	start := 0
	for i := 0; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			continue
		}
		switch c := p[start:i]; {
		case len(c) == 0, len(c) == 1 && c[0] == '.', len(c) == 2 && c[0] == '.' && c[1] == '.':
			return false
		}
		start = i + 1
	}
	return true
}

func splitArgv(b []byte) []string {
	s := strings.TrimSuffix(string(b), "\x00")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}

func fileOp(op, flags uint32) string {
	switch op {
	case fopOpen:
		switch {
		case flags&oCreat != 0:
			return "create"
		case flags&oTrunc != 0:
			// Linux truncates on O_TRUNC whatever the access mode
			// (O_RDONLY|O_TRUNC included).
			return "truncate"
		case flags&(oWronly|oRdwr) != 0:
			return "write"
		}
		return "read"
	case fopTruncate:
		return "truncate"
	case fopUnlink:
		return "unlink"
	case fopRename:
		return "rename"
	case fopChmod:
		return "chmod"
	case fopChown:
		return "chown"
	case fopLink:
		return "link"
	case fopSymlink:
		return "symlink"
	case fopMkdir:
		return "mkdir"
	case fopRmdir:
		return "rmdir"
	case fopExchange:
		return "exchange"
	case fopMknod:
		return "mknod"
	case fopSetxattr:
		return "setxattr"
	case fopRemovexattr:
		return "removexattr"
	}
	return ""
}

// nopForeign is enum net_op's NOP_FOREIGN: I/O on a socket made in another
// cgroup (foreign_sock in bpf/net.bpf.c).
const nopForeign = 4

// decodeForeign decodes a foreign-socket record: the peer when the socket
// has one (else the unspecified address, port 0), the socket's protocol,
// or "packet" for an AF_PACKET socket, and the cgroup it was made in.
func decodeForeign(h header) *NetInfo {
	n := &NetInfo{Op: "foreign", Foreign: true, SocketCgroupID: h.b[0]}
	if h.family == afPacket {
		n.Protocol = "packet"
		return n
	}
	n.Protocol = protoName(h.a[1], h.a[3] != 0)
	if addr, ok := addrPort(h); ok && !addr.Addr().IsUnspecified() {
		if !hasPorts(n.Protocol) {
			addr = netip.AddrPortFrom(addr.Addr(), 0)
		}
		n.Addr = addr
	}
	return n
}

func netOp(op uint32) string {
	switch op {
	case 1:
		return "connect"
	case 2:
		return "sendto"
	case 3:
		return "sendmsg"
	case nopForeign:
		return "foreign"
	}
	return fmt.Sprintf("op%d", op)
}

// protoName names an IP protocol; raw is a raw socket's, which names its
// protocol only for ICMP (the kernel builds the rest of the packet).
func protoName(p uint32, raw bool) string {
	switch {
	case p == protoICMP:
		return "icmp"
	case p == protoICMPv6:
		return "icmpv6"
	case raw:
		return "raw"
	case p == protoTCP:
		return "tcp"
	case p == protoUDP:
		return "udp"
	case p == protoUDPLite:
		return "udplite"
	case p == protoSCTP:
		return "sctp"
	case p == protoDCCP:
		return "dccp"
	}
	return fmt.Sprintf("ip%d", p)
}

// hasPorts reports whether a protocol, as protoName names it, addresses by
// port; the packet counters (count_skb) read ports for exactly these. A
// policy entry with a port must see the port (redteam9: a UDP-Lite datagram
// to a flagged address and port was "udplite <addr>:0").
func hasPorts(proto string) bool {
	switch proto {
	case "tcp", "udp", "udplite", "sctp", "dccp":
		return true
	}
	return false
}

func addrPort(h header) (netip.AddrPort, bool) {
	return makeAddrPort(int(h.family), h.addr, h.port)
}

func makeAddrPort(family int, a [16]byte, port uint16) (netip.AddrPort, bool) {
	switch family {
	case afInet:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[:4])), port), true
	case afInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a).Unmap(), port), true
	}
	return netip.AddrPort{}, false
}

// decodeCtl decodes a struct ctl_event: the cgroup ID and a NUL-terminated
// path of at most 255 bytes.
func decodeCtl(rec []byte) (uint64, string, error) {
	if len(rec) < 8+256 {
		return 0, "", fmt.Errorf("control record of %d bytes, want %d", len(rec), 8+256)
	}
	path := rec[8 : 8+256]
	if i := bytes.IndexByte(path, 0); i >= 0 {
		path = path[:i]
	}
	return binary.LittleEndian.Uint64(rec[:8]), string(path), nil
}
