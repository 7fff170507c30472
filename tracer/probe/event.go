package probe

import (
	"net/netip"
	"time"
)

// Kind says which of Event's detail fields is set.
type Kind uint8

const (
	KindCgroupMkdir Kind = iota + 1 // Cgroup set: a cgroup under /buildtrace/ was created (and is now tracked)
	KindCgroupRmdir                 // Cgroup set: a tracked cgroup was removed
	KindFork                        // a new thread group in a tracked cgroup (PID child of PPID)
	KindExec                        // Exec set
	KindExit                        // Exit set: the last thread of a thread group exited
	KindFile                        // File set
	KindNet                         // Net set: connect / sendto / sendmsg to a remote address
	KindDNS                         // DNS set: a DNS message sent to or received from port 53
	KindIOUring                     // an io_uring submission (counted; contents not seen)
)

// KindCred (Cred set): a process's IDs changed without an exec
// (setuid(2) and its kin). 10 is the kernel's argv continuation record.
const KindCred Kind = 11

// Event is one decoded record from the kernel. Exactly one detail pointer
// matching Kind is set (none for KindFork and KindIOUring).
type Event struct {
	Kind     Kind
	Time     time.Time // wall clock, converted from the kernel's monotonic time
	CgroupID uint64    // cgroup v2 ID of the task (for Cgroup events: of the cgroup itself)
	PID      uint32    // thread group ID, host PID namespace
	TID      uint32
	PPID     uint32 // real parent's thread group ID

	Cgroup *CgroupInfo
	Exec   *ExecInfo
	Exit   *ExitInfo
	File   *FileInfo
	Net    *NetInfo
	DNS    *DNSInfo
	Cred   *CredInfo
}

// CredInfo is a process's IDs after a successful setuid(2), setgid(2),
// setreuid(2), setresuid(2), setfsuid(2) or their gid and 32-bit kin.
type CredInfo struct {
	UID, GID   uint32 // real
	EUID, EGID uint32 // effective
	FSUID      uint32 // file system user ID: whose rights file access has
}

// CgroupInfo describes a cgroup mkdir/rmdir.
type CgroupInfo struct {
	Path string // as in /proc/<pid>/cgroup's "0::" line, e.g. /buildtrace/<step>/buildkit/<id>
	// On a mkdir: the kernel's map of tracked cgroups (which holds their
	// counters too) was full, so nothing of the cgroup is followed.
	Untracked bool
}

// ExecInfo is a successful execve/execveat.
type ExecInfo struct {
	Binary string // path of the executed file as the process sees it (symlinks resolved)
	// BinaryAnonymous: the file has no path (a memfd, an anonymous inode);
	// Binary is its name, e.g. "memfd:<name>".
	BinaryAnonymous bool
	Filename        string // the name execve was given, joined with Cwd when relative
	// Argv is whole up to 128 KiB (the kernel sends what exceeds its
	// record's 4 KiB in continuation records, joined by Run).
	Argv []string
	// ArgvTruncated: argv was longer than 128 KiB, or a part of it could
	// not be read or was lost; Argv is then a correct prefix.
	ArgvTruncated bool
	UID, GID      uint32 // real IDs
	// EUID, EGID are the effective IDs the image runs with: a setuid or
	// setgid file makes them differ from UID and GID.
	EUID, EGID uint32
	Cwd        string
	// TraceID is never set by the probe, which reads no environment: a
	// container's build is decided from its OCI bundle (tracer/rootfs).
	// Deprecated: kept for tests that feed events without a bundle; the
	// assembler uses it only when the bundle named no build.
	TraceID string
	// FirstInCgroup is true for the first exec the probe saw in this cgroup.
	FirstInCgroup bool
	// RuntimeMountNS is true when the exec'ing task was in its parent's or
	// the tracer's mount namespace: runc's own re-exec of itself, before it
	// enters the container's namespaces (the container's first process is
	// in a mount namespace of its own, not its parent runc's).
	RuntimeMountNS bool
}

// ExitInfo is the end of a thread group, with what it used over its life.
type ExitInfo struct {
	Code           int // exit status when it exited normally
	Signal         int // terminating signal, 0 when it exited normally
	CPUUserNanos   uint64
	CPUSystemNanos uint64
	MaxRSSBytes    uint64
	ReadBytes      uint64 // bytes through read-like syscalls (rchar)
	WriteBytes     uint64 // bytes through write-like syscalls (wchar)
}

// FileOp names a file system call's effect; the strings are trace.Op*.
type FileInfo struct {
	Op        string // trace.OpCreate ... trace.OpRmdir, or "read" for a read-only open
	Path      string // absolute, as the process sees it
	Target    string // rename/link destination; symlink target, xattr name (as given)
	Mode      *uint32
	UID, GID  *int64
	Truncated bool // Path or Target was cut at the probe's limit
}

// NetInfo is a socket reaching (or, for connect, trying to reach) a
// remote address.
type NetInfo struct {
	Op       string // connect, sendto, sendmsg; foreign (Foreign set)
	Protocol string // tcp, udp, icmp, icmpv6, raw, ... (port 0 but for tcp and udp); packet for an AF_PACKET socket
	Addr     netip.AddrPort
	Errno    uint32 // a failed connect's error (ECONNREFUSED, ...); 0 when it succeeded or is in progress
	// Foreign: the process moved bytes through (or connected) an IP or
	// AF_PACKET socket made in another cgroup (passed to it over a unix
	// socket, or inherited), whose packets the counters charge to that
	// cgroup, not to this one. With Op foreign, Addr is the socket's
	// peer, the zero AddrPort when it has none (unconnected, or
	// AF_PACKET), reported once per socket, peer and process; a
	// connect, sendto or sendmsg on such a socket is flagged too (it
	// names the address an unconnected one was sent to).
	Foreign bool
	// SocketCgroupID is the cgroup the foreign socket was made in (0 if
	// it has none); only on Op foreign.
	SocketCgroupID uint64
}

// DNSInfo is one DNS message (at most 4096 bytes of it) on port 53. An
// answer's event has no PID: it is the packet's, delivered to a socket of
// the cgroup.
type DNSInfo struct {
	Outgoing bool // true for a query sent, false for an answer received
	// Peer is the DNS server: a question's destination, an answer's
	// source as the packet had it (answers are read from the packets the
	// kernel delivers, not from the receiver's memory).
	Peer    netip.AddrPort
	Payload []byte
}

// Traffic is bytes a cgroup exchanged with one remote endpoint, counted by
// the cgroup_skb programs.
type Traffic struct {
	Protocol      string
	Addr          netip.AddrPort
	BytesSent     uint64
	BytesReceived uint64
}

// CgroupStats is what the kernel side counted per tracked cgroup.
type CgroupStats struct {
	Emitted   uint64 // events written to the ring buffer
	Dropped   uint64 // events lost because the ring buffer was full
	Truncated uint64 // events whose path, argv or DNS payload was cut (or whose argv could not be joined)
	IOUring   uint64 // io_uring submissions
	// MapFull counts failed inserts into a per-cgroup kernel map (the
	// first-exec state); TrafficFull packets whose bytes were not counted
	// because the traffic map was full.
	MapFull     uint64
	TrafficFull uint64
	AFPacket    uint64 // AF_PACKET sockets created: frames sent on them are not seen
	// Unhooked counts the step's execs and forks while the syscall hook
	// was detached: their system calls until it attached were not seen.
	Unhooked uint64
	// Escaped counts the step's processes moved to another cgroup, or
	// cloned into one (CLONE_INTO_CGROUP): no hook follows them there.
	Escaped uint64
	// DNSSource counts UDP packets sent from local port 53: a socket there
	// can send a resolver's answer with the resolver's address as source
	// (IP_PKTINFO, IP_TRANSPARENT), so no answer the step got is confirmed.
	DNSSource uint64
}
