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
}

// CgroupInfo describes a cgroup mkdir/rmdir.
type CgroupInfo struct {
	Path string // as in /proc/<pid>/cgroup's "0::" line, e.g. /buildtrace/<step>/buildkit/<id>
}

// ExecInfo is a successful execve/execveat.
type ExecInfo struct {
	Binary        string // path of the executed file as the process sees it (symlinks resolved)
	Filename      string // the name execve was given, joined with Cwd when relative
	Argv          []string
	ArgvTruncated bool
	UID, GID      uint32
	Cwd           string
	// TraceID is the trace ID from the TRACEPARENT variable, read only on the
	// first exec in a cgroup; no other part of the environment leaves the kernel.
	TraceID string
	// FirstInCgroup is true for the first exec the probe saw in this cgroup.
	FirstInCgroup bool
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
	Target    string // rename/link destination; symlink target (as given)
	Mode      *uint32
	UID, GID  *int64
	Truncated bool // Path or Target was cut at the probe's limit
}

// NetInfo is a socket reaching a remote address.
type NetInfo struct {
	Op       string // connect, sendto, sendmsg
	Protocol string // tcp, udp
	Addr     netip.AddrPort
}

// DNSInfo is one DNS message (at most 512 bytes of it) on port 53.
type DNSInfo struct {
	Outgoing bool           // true for a query sent, false for an answer received
	Peer     netip.AddrPort // the DNS server
	Payload  []byte
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
	Truncated uint64 // events whose path or argv was cut
	IOUring   uint64 // io_uring submissions
}
