// SPDX-License-Identifier: GPL-2.0
// Shared by the buildtrace programs: record layout, maps, and the helpers
// that build and emit a record (strings, path walks). See docs/bpf.md.
#ifndef BUILDTRACE_COMMON_H
#define BUILDTRACE_COMMON_H
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>


#define BLOB_MAX 4096   /* one string, argv block or path */
#define DATA_SZ 16384   /* all blobs of one event */
#define PATH_DEPTH 64   /* dentry components walked */
#define NAME_MAX_ 255
#define DNS_MAX BLOB_MAX /* DNS payload: EDNS answers are normally <= 4096 */
#define ARGV_MAX (128 << 10) /* argv bytes kept per exec: the exec record's
			      * first BLOB_MAX, then continuation records */
#define ARGV_CONTS ((ARGV_MAX - BLOB_MAX + DATA_SZ - 1) / DATA_SZ)

#define AT_FDCWD_ -100
#define AT_REMOVEDIR_ 0x200
#define SIGNAL_GROUP_EXIT_ 0x4
#define S_IFMT_ 00170000
#define S_IFREG_ 0100000
#define S_IFSOCK_ 0140000
#define AF_INET_ 2
#define AF_INET6_ 10
#define ETH_P_IP_ 0x0800
#define ETH_P_IPV6_ 0x86DD
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPPROTO_DCCP_ 33
#define IPPROTO_SCTP_ 132
#define IPPROTO_UDPLITE_ 136
#define IPV6_HOPOPTS_ 0
#define IPV6_ROUTING_ 43
#define IPV6_FRAGMENT_ 44
#define IPV6_DSTOPTS_ 60
#define IPPROTO_MPTCP_ 262
#define AF_PACKET_ 17
#define SOCK_PACKET_ 10
#define SOCK_STREAM_ 1
#define SOCK_DGRAM_ 2
#define SOCK_RAW_ 3
#define EINPROGRESS_ 115
#define O_WRONLY_ 01
#define O_RDWR_ 02
#define O_CREAT_ 0100
#define O_TRUNC_ 01000
#define RENAME_EXCHANGE_ (1 << 1)


enum kind {
	K_CGROUP_MKDIR = 1,
	K_CGROUP_RMDIR = 2,
	K_FORK = 3,
	K_EXEC = 4,
	K_EXIT = 5,
	K_FILE = 6,
	K_NET = 7,
	K_DNS = 8,
	K_IOURING = 9,
	K_ARGV_CONT = 10, /* argv bytes past the exec record's first chunk */
	K_CRED = 11,      /* a process's IDs changed without an exec */
	K_SYNC = 100,
};

enum file_op {
	FOP_OPEN = 1, /* classified in Go from the flags */
	FOP_TRUNCATE,
	FOP_UNLINK,
	FOP_RENAME,
	FOP_CHMOD,
	FOP_CHOWN,
	FOP_LINK,
	FOP_SYMLINK,
	FOP_MKDIR,
	FOP_RMDIR,
	FOP_EXCHANGE, /* renameat2(RENAME_EXCHANGE): path and target swapped */
	FOP_MKNOD,    /* a file, FIFO, socket or device node made by mknod */
	FOP_SETXATTR, /* target: the attribute's name */
	FOP_REMOVEXATTR,
};

enum net_op {
	NOP_CONNECT = 1,
	NOP_SENDTO,
	NOP_SENDMSG,
	NOP_FOREIGN, /* I/O on a socket made in another cgroup (foreign_sock) */
};

enum event_flags {
	EF_TRUNCATED = 1 << 0,      /* a path, argv or payload was cut */
	EF_ARGV_TRUNCATED = 1 << 1,
	EF_FIRST_IN_CGROUP = 1 << 2,
	EF_HAS_MODE = 1 << 3,
	EF_HAS_OWNER = 1 << 4,
	EF_OUTGOING = 1 << 5,
	EF_RUNTIME_MNTNS = 1 << 6,  /* exec: by a task in its parent's or the tracer's mount namespace */
	EF_DETACHED = 1 << 7,       /* exec: the file has no path (memfd, anonymous inode) */
	EF_UNTRACKED = 1 << 8,      /* mkdir: the tracked map was full: nothing of it is followed */
	EF_OPENED = 1 << 9,         /* file: blob 2 is the file a writing open returned, walked */
	EF_FOREIGN = 1 << 10,       /* net: on a socket made in another cgroup (foreign_sock) */
};

/* One ring buffer record: this header, then len[0..3] bytes of blobs. */
struct event {
	__u64 ts;
	__u64 cgroup_id;
	__u64 b[5];   /* exit: utime, stime, maxrss bytes, rchar, wchar; sync: seq; file: b[1], b[3] where the task's root ends in blob 1, 3 (append_walk); net foreign: b[0] the socket's cgroup */
	__u32 pid;
	__u32 tid;
	__u32 ppid;
	__u32 a[5];   /* exec: uid gid (real) argv-conts euid egid; cred: uid gid fsuid euid egid; exit: code signal; file: op flags mode uid gid; net: op proto errno raw */
	__u16 kind;
	__u16 flags;
	__u16 family; /* net, dns: AF_INET or AF_INET6 */
	__u16 port;   /* net, dns: remote port, host order */
	__u16 len[4]; /* blob lengths */
	__u8 addr[16];
};

struct scratch {
	struct event ev;
	__u8 data[DATA_SZ];
};

struct pathbuf {
	__u8 buf[BLOB_MAX + NAME_MAX_ + 1];
	/* where the walk met the task's root (its off then), 0 if it did not:
	 * kept here, not in the walk's context, whose every value the
	 * verifier tracks through the loop */
	__u32 root_off;
};

struct cg_stats {
	__u64 emitted;
	__u64 dropped;
	__u64 truncated;
	__u64 io_uring;
	__u64 map_full;     /* a per-cgroup map insert failed (seen) */
	__u64 traffic_full; /* packets not counted: the traffic map was full */
	__u64 af_packet;    /* AF_PACKET sockets created */
	__u64 unhooked;     /* execs/forks while the syscall hook was detached */
	__u64 escaped;      /* processes moved, or born, out of the cgroup */
	__u64 dns_source;   /* UDP packets sent from local port 53: the step can answer as a resolver */
};

struct traffic_key {
	__u64 cgroup_id;
	__u8 addr[16];
	__u16 port;
	__u8 proto;
	__u8 family;
	__u32 _pad;
};

struct traffic_val {
	__u64 sent;
	__u64 received;
};

struct sargs {
	__u64 nr;     /* enum sc */
	__u64 a[6];
	bool compat;  /* a 32-bit call (i386, arm32): pointers in user structs are 32-bit */
};

struct tg_acc {
	__u64 utime;
	__u64 stime;
	__u64 rchar;
	__u64 wchar;
};

struct net_key {
	__u64 sk;
	__u8 addr[16];
	__u16 port;
	__u16 op;
	__u32 tgid;
};

/* The tracer's mount namespace (inode number): runc execs itself in the
 * host's before it enters the container's. Set by Go. */
volatile const __u32 tracer_mntns = 0;
/* Pending bytes in the ring at which a record wakes the reader; below it
 * records are written without a wakeup (see emit). Set by Go from the ring
 * size. */
volatile const __u64 wake_bytes = 1 << 18;
/* The kernel's page size: maxrss is counted in pages, which are 4 KiB on
 * x86_64 but 4, 16 or 64 KiB on arm64. Set by Go. */
volatile const __u64 page_size = 4096;
/* 1 while raw_tp/sys_exit is attached: Go sets it after attaching the link
 * and clears it before detaching (see docs/bpf.md, "The syscall hook"). A
 * process of a tracked cgroup that execs or forks while it is 0 may have
 * made system calls nobody saw: counted as unhooked, never silently. */
volatile __u32 sys_live = 0;
/* Most bytes seen pending in the events ring (records and their headers),
 * for the health endpoint. */
volatile __u64 rb_high = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

/* The tracked cgroups, each with its counters: one lookup tells a hook
 * whether to look further and gives it the counters to add to. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct cg_stats);
} tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} seen SEC(".maps");

/* The tracked cgroup of each process that forked or exec'd in one (tgid →
 * cgroup ID). Every hook filters on the current cgroup, so a process moved
 * out of its step's would vanish unnoticed: the move is caught by looking
 * its process up here (cgroup.bpf.c). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} task_step SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct traffic_key);
	__type(value, struct traffic_val);
} traffic SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct tg_acc);
} tgacc SEC(".maps");

/* Runtime a container's first process had used (as runc init) when it
 * exec'd the step's command; subtracted at its exit. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} execbase SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct net_key);
	__type(value, __u8);
} netseen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pathbuf);
} pathbufs SEC(".maps");

/* The counters of a tracked cgroup; NULL when it is not tracked. */
static __always_inline struct cg_stats *tracked_stats(__u64 cg)
{
	return bpf_map_lookup_elem(&tracked, &cg);
}

#define stat_inc(st, field) __sync_fetch_and_add(&(st)->field, 1)

static __always_inline struct scratch *begin(__u16 kind, __u64 cg)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!s)
		return NULL;
	__builtin_memset(&s->ev, 0, sizeof(s->ev));
	struct task_struct *t = bpf_get_current_task_btf();
	s->ev.ts = bpf_ktime_get_ns();
	s->ev.cgroup_id = cg;
	s->ev.kind = kind;
	s->ev.pid = t->tgid;
	s->ev.tid = t->pid;
	s->ev.ppid = t->real_parent->tgid;
	return s;
}

/* Waking the reader per record costs an IPI and a context switch per
 * event (measured: most of the tracer's cost on a file-heavy step). So
 * records are written without a wakeup, and the reader is woken by the
 * record that takes the pending bytes past a multiple of wake_bytes, or by
 * a record the daemon must act on at once (a container starts or ends, its
 * first exec, a sync marker); the reader also polls every few tens of
 * milliseconds. Not by every record while wake_bytes are pending: until
 * the woken reader has drained the ring, each would raise the self-IPI
 * again (an MSR write, a VM exit in a guest: a third of a file event's
 * cost, measured). The reader reads until the ring is empty, and epoll
 * keeps the ring ready while it holds data, so one wakeup per crossing
 * loses nothing; crossing each multiple, not just the first, bounds what
 * a missed crossing (two CPUs each seeing the other's bytes late) can
 * leave unread to the poll. Order is unchanged. */
static __always_inline __u64 wake_flags(struct event *ev, __u64 size)
{
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	/* High-water mark: pending bytes once this record (and its 8-byte
	 * header) is in. A lost race leaves a value another CPU just wrote. */
	__u64 used = avail + ((size + 8 + 7) & ~7ULL);
	__u64 hw = rb_high;
	if (used > hw)
		__sync_val_compare_and_swap(&rb_high, hw, used);
	if (ev->kind == K_CGROUP_MKDIR || ev->kind == K_CGROUP_RMDIR ||
	    (ev->kind == K_EXEC && (ev->flags & EF_FIRST_IN_CGROUP)))
		return BPF_RB_FORCE_WAKEUP;
	if (avail / wake_bytes != used / wake_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

/* Writes the record; false when the ring was full. Counted in st, the
 * cgroup's counters (tracked_stats; NULL: not counted) as emitted,
 * truncated or dropped. */
static __always_inline bool emit(struct scratch *s, struct cg_stats *st, __u32 pos)
{
	__u64 size = sizeof(struct event) + (__u64)pos;
	if (size > sizeof(struct scratch))
		size = sizeof(struct scratch);
	bool trunc = s->ev.flags & EF_TRUNCATED;
	if (bpf_ringbuf_output(&events, s, size, wake_flags(&s->ev, size)) < 0) {
		if (st)
			stat_inc(st, dropped);
		return false;
	}
	if (st) {
		stat_inc(st, emitted);
		if (trunc)
			stat_inc(st, truncated);
	}
	return true;
}

/* Appends a string (without its NUL) as blob slot, read from user or
 * kernel memory; user is a constant at every call site. */
static __always_inline __u32 append_str(struct scratch *s, __u32 pos, int slot, const void *p, bool user)
{
	if (pos > DATA_SZ - BLOB_MAX) {
		s->ev.flags |= EF_TRUNCATED;
		return pos;
	}
	long n = user ? bpf_probe_read_user_str(&s->data[pos], BLOB_MAX, p)
		      : bpf_probe_read_kernel_str(&s->data[pos], BLOB_MAX, p);
	if (n <= 0)
		return pos;
	if (n == BLOB_MAX)
		s->ev.flags |= EF_TRUNCATED;
	n -= 1;
	s->ev.len[slot & 3] = n;
	return pos + n;
}

#define append_user_str(s, pos, slot, p) append_str(s, pos, slot, p, true)
#define append_kernel_str(s, pos, slot, p) append_str(s, pos, slot, p, false)

static __always_inline __u32 append_user_bytes(struct scratch *s, __u32 pos, int slot, const void *p, __u64 n)
{
	if (pos > DATA_SZ - BLOB_MAX)
		return pos;
	if (n > BLOB_MAX)
		n = BLOB_MAX;
	if (bpf_probe_read_user(&s->data[pos], n, p) < 0)
		return pos;
	s->ev.len[slot & 3] = n;
	return pos + n;
}

/* Path walk: from a dentry up to the top of the task's mount tree (the
 * container's root mount, which sits on its mount namespace's hidden root),
 * crossing mounts, writing components backwards into pathbuf. Not up to the
 * task's root: a step holds CAP_SYS_CHROOT, and a walk that stopped at a
 * root it chose (its cache mount, a directory of its own) would name every
 * file it then touches and every binary it runs as if it were the
 * container's (redteam10). Where the walk passes the task's root, the
 * offset is kept (pathbuf.root_off): the part above it is the root, which ".."
 * in a relative path does not leave. */
struct walk_ctx {
	__u64 dentry;
	__u64 mnt; /* struct mount * */
	__u64 root_dentry;
	__u64 root_mnt; /* struct vfsmount * */
	__u32 off;
	__u32 done;
	__u32 trunc;
	__u32 detached; /* ended at a dentry that is its own parent, not a mount root */
};

/* Casts a kernel address kept as a number (bpf_loop's context holds no
 * typed pointer) back to a BTF pointer, so that its fields are read with
 * plain loads (fault-safe) rather than one probe_read helper call each. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;
#define kcast(p, type) ((type *)bpf_rdonly_cast((void *)(p), bpf_core_type_id_kernel(type)))

static long walk_step(__u32 i, struct walk_ctx *c)
{
	__u32 zero = 0;
	struct pathbuf *pb = bpf_map_lookup_elem(&pathbufs, &zero);
	if (!pb)
		return 1;
	struct dentry *d = kcast(c->dentry, struct dentry);
	struct mount *m = kcast(c->mnt, struct mount);
	if (c->dentry == c->root_dentry && c->mnt + bpf_core_field_offset(struct mount, mnt) == c->root_mnt)
		pb->root_off = c->off; /* met once: the walk only goes up */
	struct dentry *mnt_root = m->mnt.mnt_root;
	struct dentry *parent = d->d_parent;
	/* A dentry that is its own parent but no mount's root belongs to no
	 * directory: a pseudo file (memfd, anonymous inode). Its name is all
	 * there is ("memfd:<name>"): keep it and stop. */
	bool detached = d == parent && d != mnt_root;
	if (d == mnt_root || (d == parent && !detached)) {
		struct mount *mp = m->mnt_parent;
		if (mp == m || !mp) {
			c->done = 1;
			return 1;
		}
		c->dentry = (__u64)m->mnt_mountpoint;
		c->mnt = (__u64)mp;
		return 0;
	}
	__u32 len = d->d_name.len;
	const unsigned char *name = d->d_name.name;
	if (len > NAME_MAX_)
		len = NAME_MAX_;
	if (len + 1 > c->off) {
		c->trunc = 1;
		return 1;
	}
	c->off -= len;
	bpf_probe_read_kernel(&pb->buf[c->off & (BLOB_MAX - 1)], len & NAME_MAX_, name);
	c->off -= 1;
	pb->buf[c->off & (BLOB_MAX - 1)] = '/';
	c->dentry = (__u64)parent;
	if (detached) {
		c->detached = 1;
		c->done = 1;
		return 1;
	}
	return 0;
}

/* append_walk writes the walk as blob slot. With rootlen, it stores there
 * where the walk met the task's root (root_off, high 32 bits) and its final off (low): root_off - off
 * leading bytes of the blob are the task's root (none when root_off is 0,
 * the walk did not pass it; or the root is the tree's top). */
static __always_inline __u32 append_walk(struct scratch *s, __u32 pos, int slot,
					 struct dentry *dentry, struct vfsmount *vfsmnt,
					 struct task_struct *t, __u16 detached_flag, __u64 *rootlen)
{
	if (!dentry || !vfsmnt)
		return pos;
	if (pos > DATA_SZ - BLOB_MAX) {
		s->ev.flags |= EF_TRUNCATED;
		return pos;
	}
	struct walk_ctx c = {
		.dentry = (__u64)dentry,
		.mnt = (__u64)vfsmnt - bpf_core_field_offset(struct mount, mnt),
		.root_dentry = (__u64)t->fs->root.dentry,
		.root_mnt = (__u64)t->fs->root.mnt,
		.off = BLOB_MAX,
	};
	__u32 zero = 0;
	struct pathbuf *pb = bpf_map_lookup_elem(&pathbufs, &zero);
	if (!pb)
		return pos;
	pb->root_off = 0;
	bpf_loop(PATH_DEPTH, walk_step, &c, 0);
	if (!c.done || c.trunc)
		s->ev.flags |= EF_TRUNCATED;
	if (c.detached)
		s->ev.flags |= detached_flag;
	/* No branch on them here (each multiplies the verifier's states at
	 * every call site): Go takes the difference. */
	if (rootlen)
		*rootlen = ((__u64)pb->root_off << 32) | c.off;
	__u32 off = c.off;
	if (off >= BLOB_MAX) { /* the root itself */
		off = BLOB_MAX - 1;
		pb->buf[BLOB_MAX - 1] = '/';
	}
	__u32 n = BLOB_MAX - off;
	if (n > BLOB_MAX || off > BLOB_MAX)
		return pos;
	bpf_probe_read_kernel(&s->data[pos], n, &pb->buf[off]);
	s->ev.len[slot & 3] = n;
	return pos + n;
}

static __always_inline struct file *fd_file(struct task_struct *t, __u64 fd)
{
	struct fdtable *fdt = t->files->fdt;
	if (!fdt)
		return NULL;
	unsigned int max = fdt->max_fds;
	if (fd >= max)
		return NULL;
	struct file **fds = fdt->fd;
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/* plain_root reports whether the task's root is its mount tree's: the root
 * of a mount that is the tree's top or sits on the top's root. Otherwise
 * the task chrooted (CAP_SYS_CHROOT is one of BuildKit's default
 * capabilities) and an absolute path is relative to where it chrooted. */
static __always_inline bool plain_root(struct task_struct *t)
{
	struct fs_struct *fs = t->fs;
	struct mount *m = kcast((__u64)fs->root.mnt - bpf_core_field_offset(struct mount, mnt), struct mount);
	if (fs->root.dentry != m->mnt.mnt_root)
		return false;
	struct mount *p = m->mnt_parent;
	if (p == m || !p)
		return true;
	if (m->mnt_mountpoint != p->mnt.mnt_root)
		return false;
	return p->mnt_parent == p;
}

/* Appends path p (user memory) as blob slot, and, when it is relative or
 * absent, the directory it is relative to (dirfd or cwd) as slot+1; when
 * it is absolute and the task chrooted, its root as slot+1. */
static __always_inline __u32 append_at_path(struct scratch *s, __u32 pos, int slot,
					    const void *p, long dfd, bool resolve)
{
	struct task_struct *t = bpf_get_current_task_btf();
	__u32 start = pos;
	if (p)
		pos = append_user_str(s, pos, slot, p);
	if (!resolve)
		return pos;
	if (pos > start && s->data[start & (DATA_SZ - 1)] == '/') {
		if (plain_root(t))
			return pos;
		struct fs_struct *rfs = t->fs;
		return append_walk(s, pos, slot + 1, rfs->root.dentry, rfs->root.mnt, t, 0, &s->ev.b[(slot + 1) & 3]);
	}
	if ((int)dfd == AT_FDCWD_) {
		struct fs_struct *fs = t->fs;
		return append_walk(s, pos, slot + 1, fs->pwd.dentry, fs->pwd.mnt, t, 0, &s->ev.b[(slot + 1) & 3]);
	}
	struct file *f = fd_file(t, (int)dfd);
	if (!f)
		return pos;
	struct file *kf = kcast(f, struct file);
	return append_walk(s, pos, slot + 1, kf->f_path.dentry, kf->f_path.mnt, t, 0, &s->ev.b[(slot + 1) & 3]);
}

static __always_inline struct sock *fd_sock(struct task_struct *t, __u64 fd)
{
	struct file *f = fd_file(t, fd);
	if (!f)
		return NULL;
	struct file *kf = kcast(f, struct file);
	umode_t mode = kf->f_inode->i_mode;
	if ((mode & S_IFMT_) != S_IFSOCK_)
		return NULL;
	struct socket *so = kcast(kf->private_data, struct socket);
	return so->sk;
}

static __always_inline bool is_udp(struct sock *sk)
{
	if (!sk)
		return false;
	struct sock *k = kcast(sk, struct sock);
	return k->sk_protocol == IPPROTO_UDP_ && k->sk_type == SOCK_DGRAM_;
}

#endif
