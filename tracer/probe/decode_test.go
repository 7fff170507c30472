package probe

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/buildtrace/buildtrace/bpf"
)

func TestHeaderSizeMatchesKernel(t *testing.T) {
	if n := binary.Size(bpf.BuildtraceEvent{}); n != headerSize {
		t.Fatalf("struct event is %d bytes, decoder assumes %d", n, headerSize)
	}
}

func TestJoinPath(t *testing.T) {
	for _, c := range []struct{ dir, p, want string }{
		{"/work", "a/b", "/work/a/b"},
		{"/work", "../x", "/x"},
		{"/work", "/abs//y", "/abs/y"},
		{"/work/fd-dir", "", "/work/fd-dir"},
		{"", "rel", "rel"},
		// ".." after a name of the path may leave a symlink's target: kept
		{"/work", "l/../evil", "/work/l/../evil"},
		{"/", "/opt/l/../evil", "/opt/l/../evil"},
		{"/work", "../a/./../b", "/a/../b"},
		{"/work", "./a//b/.", "/work/a/b"},
		{"/work", "/../x", "/x"},
	} {
		if got := joinPath(c.dir, c.p); got != c.want {
			t.Errorf("joinPath(%q, %q) = %q, want %q", c.dir, c.p, got, c.want)
		}
	}
}

func TestJoinBlobsMatchesJoinPath(t *testing.T) {
	for _, c := range []struct{ dir, p string }{
		{"/work", "a/b"}, {"/work", "../x"}, {"/work", "./x"}, {"/work", "a//b"}, {"/work", "a/"},
		{"/", "a"}, {"/", ""},
		{"/work/fd-dir", ""}, {"", "rel"}, {"", "/abs"}, {"/a/./b", "c"}, {"/a/", "c"},
		{"/work", "."}, {"/work", ".."}, {"/work", "..."}, {"/work", ".hidden/f"},
	} {
		want := joinPath(c.dir, c.p)
		if got := joinBlobs([]byte(c.dir), []byte(c.p), 0); got != want {
			t.Errorf("joinBlobs(%q, %q) = %q, joinPath gives %q", c.dir, c.p, got, want)
		}
	}
}

// TestJoinBlobsChrooted: the kernel sends a directory with an absolute path
// only for a task that chrooted (its root); the path is inside it.
func TestJoinBlobsChrooted(t *testing.T) {
	for _, c := range []struct {
		dir     string
		rootLen uint64
		p, want string
	}{
		// absolute: the kernel walked the root itself
		{"/cache", 6, "/etc/profile", "/cache/etc/profile"},
		{"/opt/jail", 9, "/abs//y", "/opt/jail/abs/y"},
		{"/opt/jail", 9, "/../../etc/passwd", "/opt/jail/etc/passwd"},
		{"/opt/jail", 9, "/", "/opt/jail"},
		{"/", 0, "/etc/x", "/etc/x"},
		// relative: the directory, of which the root is the first rootLen bytes
		{"/opt/jail", 9, "../../etc/passwd", "/opt/jail/etc/passwd"},
		{"/opt/jail/a/b", 9, "../../../../etc/passwd", "/opt/jail/etc/passwd"},
		{"/opt/jail/a/b", 9, "../c", "/opt/jail/a/c"},
		{"/opt/jail/a", 9, "", "/opt/jail/a"},
		// a cwd outside the root (fchdir before chroot): the walk did not pass it
		{"/opt", 0, "../etc/passwd", "/etc/passwd"},
	} {
		if got := joinBlobs([]byte(c.dir), []byte(c.p), c.rootLen); got != c.want {
			t.Errorf("joinBlobs(%q, %q, %d) = %q, want %q", c.dir, c.p, c.rootLen, got, c.want)
		}
	}
}

func TestRootLen(t *testing.T) {
	for _, c := range []struct{ v, want uint64 }{
		{0, 0},                // did not pass the root
		{4096<<32 | 4096, 0},  // the root is the tree's top, walked alone
		{4090<<32 | 4080, 10}, // /cache/sub: the root /cache and /sub
		{4096<<32 | 4090, 6},  // the root /cache itself
		{4080<<32 | 4090, 0},  // nonsense: ends below where it met the root
		{8192<<32 | 4090, 0},  // nonsense: past the buffer
		{0<<32 | 4090, 0},     // did not pass the root, ended somewhere
	} {
		if got := rootLen(c.v); got != c.want {
			t.Errorf("rootLen(%#x) = %d, want %d", c.v, got, c.want)
		}
	}
}

func TestFileOpFromOpenFlags(t *testing.T) {
	for _, c := range []struct {
		flags uint32
		want  string
	}{
		{0, "read"},
		{oWronly, "write"},
		{oRdwr, "write"},
		{oWronly | oTrunc, "truncate"},
		{oWronly | oCreat | oTrunc, "create"},
		// O_RDONLY|O_TRUNC truncates on Linux: not a read.
		{oTrunc, "truncate"},
	} {
		if got := fileOp(fopOpen, c.flags); got != c.want {
			t.Errorf("flags %#o: %q, want %q", c.flags, got, c.want)
		}
	}
	if got := fileOp(fopExchange, 0); got != "exchange" {
		t.Errorf("exchange decoded as %q", got)
	}
}

// TestDecodeNet: raw and ICMP sockets are named, not numbered; a failed
// connect carries its errno; ports are dropped but for tcp and udp.
func TestDecodeNet(t *testing.T) {
	for _, c := range []struct {
		proto, raw, errno uint32
		want              string
		port              uint16
	}{
		{protoTCP, 0, 111, "tcp", 80},
		{protoUDP, 0, 0, "udp", 80},
		{protoICMP, 0, 0, "icmp", 0}, // a ping socket
		{protoICMP, 1, 0, "icmp", 0}, // a raw ICMP socket
		{protoICMPv6, 1, 0, "icmpv6", 0},
		{255, 1, 0, "raw", 0}, // IPPROTO_RAW
		{protoUDP, 1, 0, "raw", 0},
		{0, 1, 0, "raw", 0},
	} {
		rec := make([]byte, headerSize)
		le := binary.LittleEndian
		le.PutUint16(rec[88:], uint16(KindNet))
		le.PutUint32(rec[68:], 1)
		le.PutUint32(rec[72:], c.proto)
		le.PutUint32(rec[76:], c.errno)
		le.PutUint32(rec[80:], c.raw)
		le.PutUint16(rec[92:], afInet)
		le.PutUint16(rec[94:], 80)
		copy(rec[104:], []byte{127, 0, 0, 1})
		ev, err := decode(rec, 0)
		if err != nil {
			t.Fatal(err)
		}
		n := ev.Net
		if n.Protocol != c.want || n.Addr.Port() != c.port || n.Errno != c.errno || n.Op != "connect" || n.Addr.Addr().String() != "127.0.0.1" {
			t.Errorf("proto %d raw %d: %+v, want %s port %d", c.proto, c.raw, n, c.want, c.port)
		}
	}
}

// TestDecodeForeign: a foreign-socket record (NOP_FOREIGN) carries the
// socket's peer when it has one, none for an unconnected socket (address
// 0) or an AF_PACKET one, and the cgroup the socket was made in.
func TestDecodeForeign(t *testing.T) {
	for _, c := range []struct {
		family uint16
		proto  uint32
		addr   []byte
		port   uint16
		want   string // protocol
		peer   string // "" for none
	}{
		{afInet, protoTCP, []byte{127, 0, 0, 164}, 8082, "tcp", "127.0.0.164:8082"},
		{afInet6, protoUDP, net.ParseIP("2001:db8::1"), 53, "udp", "[2001:db8::1]:53"},
		{afInet, protoUDP, []byte{0, 0, 0, 0}, 0, "udp", ""},
		{afPacket, 0, nil, 0, "packet", ""},
	} {
		rec := make([]byte, headerSize)
		le := binary.LittleEndian
		le.PutUint64(rec[16:], 77)
		le.PutUint16(rec[88:], uint16(KindNet))
		le.PutUint32(rec[68:], nopForeign)
		le.PutUint32(rec[72:], c.proto)
		le.PutUint16(rec[92:], c.family)
		le.PutUint16(rec[94:], c.port)
		copy(rec[104:], c.addr)
		ev, err := decode(rec, 0)
		if err != nil {
			t.Fatalf("%s: %v", c.want, err)
		}
		n := ev.Net
		peer := ""
		if n.Addr.IsValid() {
			peer = n.Addr.String()
		}
		if !n.Foreign || n.Op != "foreign" || n.Protocol != c.want || peer != c.peer || n.SocketCgroupID != 77 {
			t.Errorf("%+v, want foreign %s peer %q from cgroup 77", n, c.want, c.peer)
		}
	}
}

func TestDecodeFile(t *testing.T) {
	rec := make([]byte, headerSize)
	le := binary.LittleEndian
	le.PutUint64(rec[0:], 1000)
	le.PutUint64(rec[8:], 42)
	le.PutUint32(rec[56:], 7)
	le.PutUint16(rec[88:], uint16(KindFile))
	le.PutUint16(rec[90:], flagHasMode)
	le.PutUint32(rec[68:], fopRename)
	le.PutUint32(rec[76:], 0o100644)
	blobs := []string{"old", "/w", "../new", "/w/sub"}
	for i, b := range blobs {
		le.PutUint16(rec[96+2*i:], uint16(len(b)))
		rec = append(rec, b...)
	}
	ev, err := decode(rec, 5)
	if err != nil {
		t.Fatal(err)
	}
	f := ev.File
	if ev.CgroupID != 42 || ev.PID != 7 || ev.Time.UnixNano() != 1005 || f.Op != "rename" || f.Path != "/w/old" || f.Target != "/w/new" || *f.Mode != 0o644 {
		t.Fatalf("decoded %+v %+v", ev, *f)
	}
	if _, err := decode(rec[:len(rec)-1], 0); err == nil {
		t.Fatal("short record decoded")
	}
}

// BenchmarkDecodeFile decodes the record an untar makes per file: a
// relative path and the walked directory.
func BenchmarkDecodeFile(b *testing.B) {
	rec := make([]byte, headerSize)
	le := binary.LittleEndian
	le.PutUint64(rec[8:], 42)
	le.PutUint16(rec[88:], uint16(KindFile))
	le.PutUint16(rec[90:], flagHasMode)
	le.PutUint32(rec[68:], fopOpen)
	le.PutUint32(rec[72:], oWronly|oCreat|oTrunc)
	for i, s := range []string{"d123/f00042.txt", "/x"} {
		le.PutUint16(rec[96+2*i:], uint16(len(s)))
		rec = append(rec, s...)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decode(rec, 5); err != nil {
			b.Fatal(err)
		}
	}
}
