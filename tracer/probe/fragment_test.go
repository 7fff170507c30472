//go:build linux

package probe

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// rawSendEnv makes the test binary send, with a raw IPv4 socket that
// writes its own headers (CAP_NET_RAW, which BuildKit's steps hold), a UDP
// fragment other than the first to 127.0.0.9: its payload, which holds no
// UDP header, starts with what would read as ports 8080.
const rawSendEnv = "BUILDTRACE_PROBE_RAW_SEND"

func rawSend() int {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		fmt.Fprintln(os.Stderr, "raw socket:", err)
		return 1
	}
	defer unix.Close(fd)
	dst := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 9}}
	ipv4 := func(fragOff uint16, payload []byte) []byte {
		h := make([]byte, 20)
		h[0] = 4<<4 | 5
		binary.BigEndian.PutUint16(h[2:], uint16(len(h)+len(payload)))
		binary.BigEndian.PutUint16(h[4:], 0x4242)
		binary.BigEndian.PutUint16(h[6:], fragOff)
		h[8] = 64
		h[9] = unix.IPPROTO_UDP
		copy(h[12:], []byte{127, 0, 0, 1})
		copy(h[16:], []byte{127, 0, 0, 9})
		return append(h, payload...)
	}
	// The payload starts as a UDP header to port 8080 would.
	payload := []byte{0x1f, 0x90, 0x1f, 0x90, 0, 16, 0, 0, 'r', 'e', 'd', 't', 'e', 'a', 'm', '!'}
	// Offset 185 × 8 bytes: not the first fragment.
	if err := unix.Sendto(fd, ipv4(185, payload), 0, dst); err != nil {
		fmt.Fprintln(os.Stderr, "sendto:", err)
		return 1
	}
	return 0
}

// TestTrafficWithoutPorts: an IPv4 fragment other than the first, which
// holds no upper-layer header, is counted by its address without a port,
// as IPv6's already were. Read as ports, its payload made a destination
// up: an honest build's fragmented datagram could match a flagged port.
func TestTrafficWithoutPorts(t *testing.T) {
	requireRoot(t)
	p, _ := startProbe(t)
	cg := mkCgroup(t, randHex(t, 16), "raw")
	cgID := inode(t, cg)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := inCgroup(cg, t.TempDir(), []string{rawSendEnv + "=1"}, `"`+self+`"`).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	dst := netip.MustParseAddr("127.0.0.9")
	var seen []Traffic
	for _, tr := range p.Traffic(cgID) {
		if tr.Addr.Addr() == dst {
			seen = append(seen, tr)
		}
	}
	if len(seen) != 1 || seen[0].Addr.Port() != 0 || seen[0].Protocol != "udp" || seen[0].BytesSent == 0 {
		t.Fatalf("traffic to %s: %+v, want one udp destination without a port", dst, seen)
	}
}
