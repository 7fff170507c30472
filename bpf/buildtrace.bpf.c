//go:build ignore

// SPDX-License-Identifier: GPL-2.0
// buildtrace kernel side: follows processes, file changes and network use of
// tasks in cgroups under /buildtrace/ of the cgroup2 hierarchy. Everything
// else returns after one map lookup. See docs/bpf.md.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

#define BLOB_MAX 4096   /* one string, argv block or path */
#define DATA_SZ 16384   /* all blobs of one event */
#define PATH_DEPTH 64   /* dentry components walked */
#define NAME_MAX_ 255
#define DNS_MAX 512
#define ENV_STRINGS 64

#define AT_FDCWD_ -100
#define AT_REMOVEDIR_ 0x200
#define SIGNAL_GROUP_EXIT_ 0x4
#define S_IFMT_ 00170000
#define S_IFSOCK_ 0140000
#define AF_INET_ 2
#define AF_INET6_ 10
#define ETH_P_IP_ 0x0800
#define ETH_P_IPV6_ 0x86DD
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define SOCK_STREAM_ 1
#define SOCK_DGRAM_ 2
#define EINPROGRESS_ 115
#define O_WRONLY_ 01
#define O_CREAT_ 0100
#define O_TRUNC_ 01000

/* x86_64 syscall numbers */
#define NR_read 0
#define NR_write 1
#define NR_open 2
#define NR_connect 42
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47
#define NR_truncate 76
#define NR_ftruncate 77
#define NR_rename 82
#define NR_mkdir 83
#define NR_rmdir 84
#define NR_creat 85
#define NR_link 86
#define NR_unlink 87
#define NR_symlink 88
#define NR_chmod 90
#define NR_fchmod 91
#define NR_chown 92
#define NR_fchown 93
#define NR_lchown 94
#define NR_personality 135
#define NR_openat 257
#define NR_mkdirat 258
#define NR_fchownat 260
#define NR_unlinkat 263
#define NR_renameat 264
#define NR_linkat 265
#define NR_symlinkat 266
#define NR_fchmodat 268
#define NR_recvmmsg 299
#define NR_sendmmsg 307
#define NR_renameat2 316
#define NR_openat2 437
#define NR_fchmodat2 452

/* Sync marker: personality(SYNC_MAGIC, seq) from the tracer's own process
 * (seen at sys_exit). */
#define SYNC_MAGIC 0xffffffffUL

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
};

enum net_op {
	NOP_CONNECT = 1,
	NOP_SENDTO,
	NOP_SENDMSG,
};

enum event_flags {
	EF_TRUNCATED = 1 << 0,      /* a path, argv or payload was cut */
	EF_ARGV_TRUNCATED = 1 << 1,
	EF_FIRST_IN_CGROUP = 1 << 2,
	EF_HAS_MODE = 1 << 3,
	EF_HAS_OWNER = 1 << 4,
	EF_OUTGOING = 1 << 5,
	EF_TRACE_ID = 1 << 6,
};

/* One ring buffer record: this header, then len[0..3] bytes of blobs. */
struct event {
	__u64 ts;
	__u64 cgroup_id;
	__u64 b[5];   /* exit: utime, stime, maxrss bytes, rchar, wchar; sync: seq */
	__u32 pid;
	__u32 tid;
	__u32 ppid;
	__u32 a[5];   /* exec: uid gid; exit: code signal; file: op flags mode uid gid; net: op proto */
	__u16 kind;
	__u16 flags;
	__u16 family; /* net, dns: AF_INET or AF_INET6 */
	__u16 port;   /* net, dns: remote port, host order */
	__u16 len[4]; /* blob lengths */
	__u8 addr[16];
	__u8 trace_id[32];
};

struct scratch {
	struct event ev;
	__u8 data[DATA_SZ];
};

struct pathbuf {
	__u8 buf[BLOB_MAX + NAME_MAX_ + 1];
};

struct cg_stats {
	__u64 emitted;
	__u64 dropped;
	__u64 truncated;
	__u64 io_uring;
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
	__u64 nr;
	__u64 a[6];
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

volatile const __u32 tracer_tgid = 0;
/* Pending bytes in the ring at which a record wakes the reader; below it
 * records are written without a wakeup (see emit). Set by Go from the ring
 * size. */
volatile const __u64 wake_bytes = 1 << 18;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct cg_stats);
} stats SEC(".maps");

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

static __always_inline bool is_tracked(__u64 cg)
{
	return bpf_map_lookup_elem(&tracked, &cg) != NULL;
}

static __always_inline void stat_add(__u64 cg, int field)
{
	struct cg_stats *st = bpf_map_lookup_elem(&stats, &cg);
	if (!st)
		return;
	switch (field) {
	case 0: __sync_fetch_and_add(&st->emitted, 1); break;
	case 1: __sync_fetch_and_add(&st->dropped, 1); break;
	case 2: __sync_fetch_and_add(&st->truncated, 1); break;
	case 3: __sync_fetch_and_add(&st->io_uring, 1); break;
	}
}

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
	s->ev.ppid = BPF_CORE_READ(t, real_parent, tgid);
	return s;
}

/* Waking the reader per record costs an IPI and a context switch per
 * event (measured: most of the tracer's cost on a file-heavy step). So
 * records are written without a wakeup, and the reader is woken when
 * wake_bytes are pending or for a record the daemon must act on at once
 * (a container starts or ends, its first exec, a sync marker); the reader
 * also polls every few tens of milliseconds. Order is unchanged. */
static __always_inline __u64 wake_flags(struct event *ev)
{
	if (ev->kind == K_CGROUP_MKDIR || ev->kind == K_CGROUP_RMDIR ||
	    (ev->kind == K_EXEC && (ev->flags & EF_FIRST_IN_CGROUP)))
		return BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wake_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void emit(struct scratch *s, __u32 pos)
{
	__u64 size = sizeof(struct event) + (__u64)pos;
	if (size > sizeof(struct scratch))
		size = sizeof(struct scratch);
	__u64 cg = s->ev.cgroup_id;
	bool trunc = s->ev.flags & EF_TRUNCATED;
	if (bpf_ringbuf_output(&events, s, size, wake_flags(&s->ev)) < 0) {
		stat_add(cg, 1);
		return;
	}
	stat_add(cg, 0);
	if (trunc)
		stat_add(cg, 2);
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

/* Path walk: from a dentry up to the task's root, crossing mounts, writing
 * components backwards into pathbuf. */
struct walk_ctx {
	__u64 dentry;
	__u64 mnt; /* struct mount * */
	__u64 root_dentry;
	__u64 root_mnt; /* struct vfsmount * */
	__u32 off;
	__u32 done;
	__u32 trunc;
};

static long walk_step(__u32 i, struct walk_ctx *c)
{
	__u32 zero = 0;
	struct pathbuf *pb = bpf_map_lookup_elem(&pathbufs, &zero);
	if (!pb)
		return 1;
	struct dentry *d = (struct dentry *)c->dentry;
	struct mount *m = (struct mount *)c->mnt;
	__u64 vfsmnt = c->mnt + bpf_core_field_offset(struct mount, mnt);
	if (c->dentry == c->root_dentry && vfsmnt == c->root_mnt) {
		c->done = 1;
		return 1;
	}
	struct dentry *mnt_root = BPF_CORE_READ(m, mnt.mnt_root);
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	if (d == mnt_root || d == parent) {
		struct mount *mp = BPF_CORE_READ(m, mnt_parent);
		if (mp == m || !mp) {
			c->done = 1;
			return 1;
		}
		c->dentry = (__u64)BPF_CORE_READ(m, mnt_mountpoint);
		c->mnt = (__u64)mp;
		return 0;
	}
	__u32 len = BPF_CORE_READ(d, d_name.len);
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
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
	return 0;
}

static __always_inline __u32 append_walk(struct scratch *s, __u32 pos, int slot,
					 struct dentry *dentry, struct vfsmount *vfsmnt,
					 struct task_struct *t)
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
		.root_dentry = (__u64)BPF_CORE_READ(t, fs, root.dentry),
		.root_mnt = (__u64)BPF_CORE_READ(t, fs, root.mnt),
		.off = BLOB_MAX,
	};
	bpf_loop(PATH_DEPTH, walk_step, &c, 0);
	if (!c.done || c.trunc)
		s->ev.flags |= EF_TRUNCATED;
	__u32 zero = 0;
	struct pathbuf *pb = bpf_map_lookup_elem(&pathbufs, &zero);
	if (!pb)
		return pos;
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
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	if (!fdt)
		return NULL;
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	if (fd >= max)
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/* Appends path p (user memory) as blob slot, and, when it is relative or
 * absent, the directory it is relative to (dirfd or cwd) as slot+1. */
static __always_inline __u32 append_at_path(struct scratch *s, __u32 pos, int slot,
					    const void *p, long dfd, bool resolve)
{
	struct task_struct *t = bpf_get_current_task_btf();
	__u32 start = pos;
	if (p)
		pos = append_user_str(s, pos, slot, p);
	if (!resolve)
		return pos;
	if (pos > start && s->data[start & (DATA_SZ - 1)] == '/')
		return pos;
	if ((int)dfd == AT_FDCWD_) {
		struct fs_struct *fs = BPF_CORE_READ(t, fs);
		return append_walk(s, pos, slot + 1, BPF_CORE_READ(fs, pwd.dentry),
				   BPF_CORE_READ(fs, pwd.mnt), t);
	}
	struct file *f = fd_file(t, (int)dfd);
	if (!f)
		return pos;
	return append_walk(s, pos, slot + 1, BPF_CORE_READ(f, f_path.dentry),
			   BPF_CORE_READ(f, f_path.mnt), t);
}

/* ---- cgroups ---- */

/* Cgroups created under /buildtrace/, for a reader that acts on them at
 * once: a container's overlay root is mounted only while it runs, and the
 * main ring can be seconds behind when another step is busy. */
struct ctl_event {
	__u64 cgroup_id;
	char path[256];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} ctl SEC(".maps");

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0) /* cgroup2 only */
		return 0;
	char pfx[12];
	if (bpf_probe_read_kernel(pfx, sizeof(pfx), path) < 0)
		return 0;
	const char want[] = "/buildtrace/";
#pragma unroll
	for (int i = 0; i < 12; i++)
		if (pfx[i] != want[i])
			return 0;
	__u64 id = BPF_CORE_READ(cgrp, kn, id);
	__u8 one = 1;
	struct cg_stats zs = {};
	bpf_map_update_elem(&stats, &id, &zs, BPF_NOEXIST);
	bpf_map_update_elem(&tracked, &id, &one, BPF_ANY);
	struct ctl_event *ce = bpf_ringbuf_reserve(&ctl, sizeof(*ce), 0);
	if (ce) {
		ce->cgroup_id = id;
		bpf_probe_read_kernel_str(ce->path, sizeof(ce->path), path);
		bpf_ringbuf_submit(ce, 0);
	}
	struct scratch *s = begin(K_CGROUP_MKDIR, id);
	if (!s)
		return 0;
	emit(s, append_kernel_str(s, 0, 0, path));
	return 0;
}

SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(cgroup_rmdir, struct cgroup *cgrp, const char *path)
{
	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0)
		return 0;
	__u64 id = BPF_CORE_READ(cgrp, kn, id);
	if (!is_tracked(id))
		return 0;
	struct scratch *s = begin(K_CGROUP_RMDIR, id);
	if (!s)
		return 0;
	emit(s, append_kernel_str(s, 0, 0, path));
	return 0;
}

/* ---- processes ---- */

SEC("tp_btf/sched_process_fork")
int BPF_PROG(sched_fork, struct task_struct *parent, struct task_struct *child)
{
	if (child->pid != child->tgid)
		return 0;
	__u64 cg = bpf_get_current_cgroup_id();
	if (!is_tracked(cg))
		return 0;
	struct scratch *s = begin(K_FORK, cg);
	if (!s)
		return 0;
	s->ev.pid = child->tgid;
	s->ev.tid = child->pid;
	s->ev.ppid = parent->tgid;
	emit(s, 0);
	return 0;
}

struct env_ctx {
	__u64 p;
	__u64 end;
	__u32 strings;
	__u32 mid;
	__u32 found;
};

/* One step of the TRACEPARENT scan. The environment string is read onto the
 * BPF stack only; just the 32 trace ID characters are copied out, and only
 * when all 32 are lower-case hex. */
static long env_step(__u32 i, struct env_ctx *c)
{
	char buf[64];
	if (c->p >= c->end || c->strings >= ENV_STRINGS)
		return 1;
	long n = bpf_probe_read_user_str(buf, sizeof(buf), (const void *)c->p);
	if (n <= 0)
		return 1;
	if (!c->mid && n >= 15 + 32 + 1 && bpf_strncmp(buf, 15, "TRACEPARENT=00-") == 0) {
		__u32 bad = 0;
		for (int k = 15; k < 47; k++) {
			char h = buf[k];
			if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f')))
				bad = 1;
		}
		if (!bad) {
			__u32 zero = 0;
			struct scratch *s = bpf_map_lookup_elem(&scratch_map, &zero);
			if (s) {
				__builtin_memcpy(s->ev.trace_id, &buf[15], 32);
				s->ev.flags |= EF_TRACE_ID;
			}
		}
		c->found = 1;
		return 1;
	}
	if (n == sizeof(buf)) { /* longer than buf: skip ahead within it */
		c->p += sizeof(buf) - 1;
		c->mid = 1;
	} else {
		c->p += n;
		c->mid = 0;
		c->strings++;
	}
	return 0;
}

/* cpu_split splits a thread's exact runtime by its tick-sampled
 * user/system ratio, as the kernel does for getrusage. */
static __always_inline void cpu_split(struct task_struct *p, __u64 skip, __u64 *user, __u64 *sys)
{
	__u64 ut = p->utime, st = p->stime, rt = p->se.sum_exec_runtime;
	rt = rt > skip ? rt - skip : 0;
	__u64 u = rt, sy = 0;
	if (ut + st > 0) {
		__u64 a = ut, b = st;
		if (a + b > (1ULL << 30)) {
			a >>= 20;
			b >>= 20;
		}
		__u64 tot = a + b;
		if (tot > 0) {
			u = rt / tot * a + (rt % tot) * a / tot;
			sy = rt - u;
		}
	}
	*user = u;
	*sys = sy;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(sched_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u64 cg = bpf_get_current_cgroup_id();
	if (!is_tracked(cg))
		return 0;
	struct scratch *s = begin(K_EXEC, cg);
	if (!s)
		return 0;
	__u64 ug = bpf_get_current_uid_gid();
	s->ev.a[0] = (__u32)ug;
	s->ev.a[1] = ug >> 32;

	__u32 pos = append_kernel_str(s, 0, 0, BPF_CORE_READ(bprm, filename));

	struct mm_struct *mm = BPF_CORE_READ(p, mm);
	__u64 as = BPF_CORE_READ(mm, arg_start), ae = BPF_CORE_READ(mm, arg_end);
	__u64 n = ae > as ? ae - as : 0;
	if (n > BLOB_MAX) {
		n = BLOB_MAX;
		s->ev.flags |= EF_ARGV_TRUNCATED | EF_TRUNCATED;
	}
	pos = append_user_bytes(s, pos, 1, (const void *)as, n);

	struct fs_struct *fs = BPF_CORE_READ(p, fs);
	pos = append_walk(s, pos, 2, BPF_CORE_READ(fs, pwd.dentry), BPF_CORE_READ(fs, pwd.mnt), p);
	/* The file actually executed: execve's name can be a symlink or
	 * /proc/self/exe (busybox re-executing itself). */
	struct file *exe = BPF_CORE_READ(bprm, file);
	pos = append_walk(s, pos, 3, BPF_CORE_READ(exe, f_path.dentry), BPF_CORE_READ(exe, f_path.mnt), p);

	/* The step's command is the first exec in the cgroup whose environment
	 * carries TRACEPARENT, which BuildKit sets for every container of a
	 * build. Execs before it are the runtime's own: runc init re-executes
	 * itself from a sealed copy, and under load that can happen after runc
	 * has already moved it into the container's cgroup. */
	if (!bpf_map_lookup_elem(&seen, &cg)) {
		struct env_ctx ec = {
			.p = BPF_CORE_READ(mm, env_start),
			.end = BPF_CORE_READ(mm, env_end),
		};
		bpf_loop(4 * ENV_STRINGS, env_step, &ec, 0);
		__u8 one = 1;
		if ((s->ev.flags & EF_TRACE_ID) && bpf_map_update_elem(&seen, &cg, &one, BPF_NOEXIST) == 0) {
			s->ev.flags |= EF_FIRST_IN_CGROUP;
			/* What the container runtime (runc init) used before this
			 * exec is not the step's: start the process's accounts at
			 * minus what it has so far (unsigned wrap-around), dropping
			 * runc's exited threads too. */
			__u64 rt = BPF_CORE_READ(p, se.sum_exec_runtime);
			struct tg_acc base = {
				.rchar = -BPF_CORE_READ(p, ioac.rchar),
				.wchar = -BPF_CORE_READ(p, ioac.wchar),
			};
			__u32 tgid = BPF_CORE_READ(p, tgid);
			bpf_map_update_elem(&tgacc, &tgid, &base, BPF_ANY);
			bpf_map_update_elem(&execbase, &tgid, &rt, BPF_ANY);
		} else {
			s->ev.flags &= ~EF_TRACE_ID;
		}
	}
	emit(s, pos);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(sched_exit, struct task_struct *p, bool group_dead)
{
	__u64 cg = bpf_get_current_cgroup_id();
	if (!is_tracked(cg))
		return 0;
	__u32 tgid = p->tgid;
	__u64 u, sy, skip = 0;
	if (p->pid == tgid) {
		__u64 *b = bpf_map_lookup_elem(&execbase, &tgid);
		if (b) {
			skip = *b;
			bpf_map_delete_elem(&execbase, &tgid);
		}
	}
	cpu_split(p, skip, &u, &sy);
	struct tg_acc zero = {}, *acc;
	bpf_map_update_elem(&tgacc, &tgid, &zero, BPF_NOEXIST);
	acc = bpf_map_lookup_elem(&tgacc, &tgid);
	if (!acc)
		return 0;
	acc->utime += u;
	acc->stime += sy;
	acc->rchar += p->ioac.rchar;
	acc->wchar += p->ioac.wchar;
	if (!group_dead)
		return 0;
	struct scratch *s = begin(K_EXIT, cg);
	if (!s) {
		bpf_map_delete_elem(&tgacc, &tgid);
		return 0;
	}
	struct signal_struct *sig = p->signal;
	int code = p->exit_code;
	if (sig->flags & SIGNAL_GROUP_EXIT_)
		code = sig->group_exit_code;
	s->ev.a[0] = (code >> 8) & 0xff;
	s->ev.a[1] = code & 0x7f;
	s->ev.b[0] = acc->utime;
	s->ev.b[1] = acc->stime;
	s->ev.b[2] = (__u64)sig->maxrss * 4096;
	s->ev.b[3] = acc->rchar;
	s->ev.b[4] = acc->wchar;
	bpf_map_delete_elem(&tgacc, &tgid);
	emit(s, 0);
	return 0;
}

SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(io_uring_submit_req, struct io_kiocb *req)
{
	__u64 cg = bpf_get_current_cgroup_id();
	if (!is_tracked(cg))
		return 0;
	stat_add(cg, 3);
	return 0;
}

/* ---- syscalls ---- */

static __always_inline bool interesting(long nr)
{
	switch (nr) {
	case NR_read: case NR_write: case NR_open: case NR_connect: case NR_sendto:
	case NR_recvfrom: case NR_sendmsg: case NR_recvmsg: case NR_truncate:
	case NR_ftruncate: case NR_rename: case NR_mkdir: case NR_rmdir: case NR_creat:
	case NR_link: case NR_unlink: case NR_symlink: case NR_chmod: case NR_fchmod:
	case NR_chown: case NR_fchown: case NR_lchown: case NR_openat: case NR_mkdirat:
	case NR_fchownat: case NR_unlinkat: case NR_renameat: case NR_linkat:
	case NR_symlinkat: case NR_fchmodat: case NR_recvmmsg: case NR_sendmmsg:
	case NR_renameat2: case NR_openat2: case NR_fchmodat2:
		return true;
	}
	return false;
}

static __always_inline struct sock *fd_sock(struct task_struct *t, __u64 fd)
{
	struct file *f = fd_file(t, fd);
	if (!f)
		return NULL;
	umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & S_IFMT_) != S_IFSOCK_)
		return NULL;
	struct socket *so = BPF_CORE_READ(f, private_data);
	return BPF_CORE_READ(so, sk);
}

static __always_inline bool is_udp(struct sock *sk)
{
	return sk && BPF_CORE_READ(sk, sk_protocol) == IPPROTO_UDP_ &&
	       BPF_CORE_READ(sk, sk_type) == SOCK_DGRAM_;
}

static __always_inline int do_file(struct sargs *a, long ret)
{
	__u64 cg = bpf_get_current_cgroup_id();
	struct scratch *s = begin(K_FILE, cg);
	if (!s)
		return 0;
	__u32 op = 0, pos = 0;
	const void *pa = NULL, *pb = NULL;
	long da = AT_FDCWD_, db = AT_FDCWD_;
	bool rb = true;
	__u64 *x = a->a;
	switch (a->nr) {
	case NR_open: op = FOP_OPEN; pa = (void *)x[0]; s->ev.a[1] = x[1]; s->ev.a[2] = x[2]; break;
	case NR_openat: op = FOP_OPEN; da = x[0]; pa = (void *)x[1]; s->ev.a[1] = x[2]; s->ev.a[2] = x[3]; break;
	case NR_openat2: {
		struct open_how how = {};
		bpf_probe_read_user(&how, sizeof(how), (void *)x[2]);
		op = FOP_OPEN; da = x[0]; pa = (void *)x[1]; s->ev.a[1] = how.flags; s->ev.a[2] = how.mode;
		break;
	}
	case NR_creat: op = FOP_OPEN; pa = (void *)x[0]; s->ev.a[1] = O_CREAT_ | O_WRONLY_ | O_TRUNC_; s->ev.a[2] = x[1]; break;
	case NR_truncate: op = FOP_TRUNCATE; pa = (void *)x[0]; break;
	case NR_ftruncate: op = FOP_TRUNCATE; da = x[0]; break;
	case NR_unlink: op = FOP_UNLINK; pa = (void *)x[0]; break;
	case NR_unlinkat: op = (x[2] & AT_REMOVEDIR_) ? FOP_RMDIR : FOP_UNLINK; da = x[0]; pa = (void *)x[1]; break;
	case NR_rmdir: op = FOP_RMDIR; pa = (void *)x[0]; break;
	case NR_rename: op = FOP_RENAME; pa = (void *)x[0]; pb = (void *)x[1]; break;
	case NR_renameat: case NR_renameat2:
		op = FOP_RENAME; da = x[0]; pa = (void *)x[1]; db = x[2]; pb = (void *)x[3]; break;
	case NR_chmod: op = FOP_CHMOD; pa = (void *)x[0]; s->ev.a[2] = x[1]; s->ev.flags |= EF_HAS_MODE; break;
	case NR_fchmod: op = FOP_CHMOD; da = x[0]; s->ev.a[2] = x[1]; s->ev.flags |= EF_HAS_MODE; break;
	case NR_fchmodat: case NR_fchmodat2:
		op = FOP_CHMOD; da = x[0]; pa = (void *)x[1]; s->ev.a[2] = x[2]; s->ev.flags |= EF_HAS_MODE; break;
	case NR_chown: case NR_lchown:
		op = FOP_CHOWN; pa = (void *)x[0]; s->ev.a[3] = x[1]; s->ev.a[4] = x[2]; s->ev.flags |= EF_HAS_OWNER; break;
	case NR_fchown: op = FOP_CHOWN; da = x[0]; s->ev.a[3] = x[1]; s->ev.a[4] = x[2]; s->ev.flags |= EF_HAS_OWNER; break;
	case NR_fchownat:
		op = FOP_CHOWN; da = x[0]; pa = (void *)x[1]; s->ev.a[3] = x[2]; s->ev.a[4] = x[3]; s->ev.flags |= EF_HAS_OWNER; break;
	case NR_link: op = FOP_LINK; pa = (void *)x[0]; pb = (void *)x[1]; break;
	case NR_linkat: op = FOP_LINK; da = x[0]; pa = (void *)x[1]; db = x[2]; pb = (void *)x[3]; break;
	/* symlink: Path is the new link; Target is kept as given */
	case NR_symlink: op = FOP_SYMLINK; pa = (void *)x[1]; pb = (void *)x[0]; rb = false; break;
	case NR_symlinkat: op = FOP_SYMLINK; da = x[1]; pa = (void *)x[2]; pb = (void *)x[0]; rb = false; break;
	case NR_mkdir: op = FOP_MKDIR; pa = (void *)x[0]; s->ev.a[2] = x[1]; s->ev.flags |= EF_HAS_MODE; break;
	case NR_mkdirat: op = FOP_MKDIR; da = x[0]; pa = (void *)x[1]; s->ev.a[2] = x[2]; s->ev.flags |= EF_HAS_MODE; break;
	default:
		return 0;
	}
	s->ev.a[0] = op;
	if (op == FOP_OPEN && (s->ev.a[1] & O_CREAT_))
		s->ev.flags |= EF_HAS_MODE;
	pos = append_at_path(s, pos, 0, pa, da, true);
	if (pb)
		pos = append_at_path(s, pos, 2, pb, db, rb);
	emit(s, pos);
	return 0;
}

/* Fills family/addr/port from a user sockaddr; false for other families. */
static __always_inline bool read_sockaddr(struct event *ev, const void *ua)
{
	__u8 sa[28] = {};
	if (!ua)
		return false;
	if (bpf_probe_read_user(sa, sizeof(sa), ua) < 0 &&
	    bpf_probe_read_user(sa, 16, ua) < 0)
		return false;
	__u16 fam = *(__u16 *)sa;
	ev->port = bpf_ntohs(*(__u16 *)&sa[2]);
	ev->family = fam;
	if (fam == AF_INET_) {
		__builtin_memcpy(ev->addr, &sa[4], 4);
		return true;
	}
	if (fam == AF_INET6_) {
		__builtin_memcpy(ev->addr, &sa[8], 16);
		return true;
	}
	return false;
}

static __always_inline bool sock_peer(struct event *ev, struct sock *sk)
{
	__u16 fam = BPF_CORE_READ(sk, __sk_common.skc_family);
	__u16 port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (port == 0)
		return false;
	ev->family = fam;
	ev->port = port;
	if (fam == AF_INET_) {
		__u32 d = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(ev->addr, &d, 4);
		return true;
	}
	if (fam == AF_INET6_) {
		BPF_CORE_READ_INTO(&ev->addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
		return true;
	}
	return false;
}

static __always_inline __u32 proto_of(struct sock *sk)
{
	__u16 t = BPF_CORE_READ(sk, sk_type);
	if (t == SOCK_STREAM_)
		return IPPROTO_TCP_;
	if (t == SOCK_DGRAM_)
		return IPPROTO_UDP_;
	return 0;
}

static __always_inline void emit_dns(struct scratch *s, bool out, const void *buf, long n)
{
	s->ev.kind = K_DNS;
	if (out)
		s->ev.flags |= EF_OUTGOING;
	if (n > DNS_MAX) {
		n = DNS_MAX;
		s->ev.flags |= EF_TRUNCATED;
	}
	__u32 pos = 0;
	if (n > 0)
		pos = append_user_bytes(s, 0, 0, buf, n);
	emit(s, pos);
}

static __always_inline int do_net(struct sargs *a, long ret)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct sock *sk = fd_sock(t, a->a[0]);
	if (!sk)
		return 0;
	__u64 cg = bpf_get_current_cgroup_id();
	struct scratch *s = begin(K_NET, cg);
	if (!s)
		return 0;
	__u32 proto = proto_of(sk);
	s->ev.a[1] = proto;
	__u64 *x = a->a;
	const void *ua = NULL, *buf = NULL;
	long n = ret;
	bool send = true, net = true;
	__u32 op = 0;
	switch (a->nr) {
	case NR_connect: op = NOP_CONNECT; ua = (void *)x[1]; break;
	case NR_sendto: op = NOP_SENDTO; ua = (void *)x[4]; buf = (void *)x[1]; break;
	case NR_write: op = NOP_SENDTO; buf = (void *)x[1]; net = false; break;
	case NR_sendmsg: case NR_sendmmsg: case NR_recvmsg: case NR_recvmmsg: {
		struct user_msghdr mh = {};
		bpf_probe_read_user(&mh, sizeof(mh), (void *)x[1]);
		ua = mh.msg_name;
		struct iovec iov = {};
		if (mh.msg_iovlen > 0)
			bpf_probe_read_user(&iov, sizeof(iov), mh.msg_iov);
		buf = iov.iov_base;
		if (n > (long)iov.iov_len)
			n = iov.iov_len;
		if (a->nr == NR_sendmmsg || a->nr == NR_recvmmsg) {
			__u32 ml = 0; /* mmsghdr.msg_len follows the msghdr */
			bpf_probe_read_user(&ml, sizeof(ml), (void *)(x[1] + sizeof(struct user_msghdr)));
			n = ml;
			if (n > (long)iov.iov_len)
				n = iov.iov_len;
		}
		op = NOP_SENDMSG;
		send = a->nr == NR_sendmsg || a->nr == NR_sendmmsg;
		break;
	}
	case NR_read: buf = (void *)x[1]; send = false; net = false; break;
	case NR_recvfrom: buf = (void *)x[1]; ua = (void *)x[4]; send = false; net = false; break;
	default:
		return 0;
	}
	if (!send) {
		/* Receive: from a peer at port 53, or on a local port 53. */
		bool got = ua && read_sockaddr(&s->ev, ua);
		if (!got && !sock_peer(&s->ev, sk))
			return 0;
		__u16 lport = BPF_CORE_READ(sk, __sk_common.skc_num);
		if (proto != IPPROTO_UDP_ || (s->ev.port != 53 && lport != 53))
			return 0;
		emit_dns(s, false, buf, n);
		return 0;
	}
	if (!(ua && read_sockaddr(&s->ev, ua)) && !sock_peer(&s->ev, sk))
		return 0;
	if (s->ev.family != AF_INET_ && s->ev.family != AF_INET6_)
		return 0;
	s->ev.a[0] = op;
	if (net) {
		struct net_key k = {.sk = (__u64)sk, .port = s->ev.port, .op = op, .tgid = s->ev.pid};
		__builtin_memcpy(k.addr, s->ev.addr, 16);
		__u8 one = 1;
		if (bpf_map_update_elem(&netseen, &k, &one, BPF_NOEXIST) == 0)
			emit(s, 0);
	}
	if (proto == IPPROTO_UDP_ && s->ev.port == 53 && op != NOP_CONNECT)
		emit_dns(s, true, buf, n);
	return 0;
}

/* Only sys_exit is hooked: the argument registers in pt_regs are the
 * caller's still (the kernel writes only ax), so the arguments need not be
 * saved at entry, and failed calls, which change nothing, are skipped
 * before any map lookup. */
SEC("raw_tp/sys_exit")
int BPF_PROG(sys_exit, struct pt_regs *regs, long ret)
{
	long nr = BPF_CORE_READ(regs, orig_ax);
	if (nr == NR_personality) {
		if (BPF_CORE_READ(regs, di) != SYNC_MAGIC || (bpf_get_current_pid_tgid() >> 32) != tracer_tgid)
			return 0;
		struct scratch *s = begin(K_SYNC, 0);
		if (!s)
			return 0;
		s->ev.b[0] = BPF_CORE_READ(regs, si);
		bpf_ringbuf_output(&events, s, sizeof(struct event), BPF_RB_FORCE_WAKEUP);
		return 0;
	}
	if (!interesting(nr))
		return 0;
	if (ret < 0 && !(nr == NR_connect && ret == -EINPROGRESS_))
		return 0;
	if (!is_tracked(bpf_get_current_cgroup_id()))
		return 0;
	struct sargs a = {.nr = nr};
	a.a[0] = BPF_CORE_READ(regs, di);
	a.a[1] = BPF_CORE_READ(regs, si);
	a.a[2] = BPF_CORE_READ(regs, dx);
	a.a[3] = BPF_CORE_READ(regs, r10);
	a.a[4] = BPF_CORE_READ(regs, r8);
	a.a[5] = BPF_CORE_READ(regs, r9);
	switch (nr) {
	case NR_read: case NR_write: case NR_recvfrom: case NR_recvmsg: case NR_recvmmsg:
		/* Only UDP sockets matter here (DNS); skip the rest cheaply. */
		if (!is_udp(fd_sock(bpf_get_current_task_btf(), a.a[0])))
			return 0;
		return do_net(&a, ret);
	case NR_connect: case NR_sendto: case NR_sendmsg: case NR_sendmmsg:
		return do_net(&a, ret);
	}
	return do_file(&a, ret);
}

/* ---- bytes per destination ---- */

static __always_inline void count_skb(struct __sk_buff *skb, bool egress)
{
	__u64 cg = bpf_skb_cgroup_id(skb);
	if (!is_tracked(cg))
		return;
	struct traffic_key k = {.cgroup_id = cg};
	__u32 l4 = 0;
	if (skb->protocol == bpf_htons(ETH_P_IP_)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0)
			return;
		k.family = AF_INET_;
		k.proto = ip.protocol;
		__builtin_memcpy(k.addr, egress ? &ip.daddr : &ip.saddr, 4);
		l4 = ip.ihl * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6_)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) < 0)
			return;
		k.family = AF_INET6_;
		k.proto = ip6.nexthdr;
		__builtin_memcpy(k.addr, egress ? &ip6.daddr : &ip6.saddr, 16);
		l4 = sizeof(ip6);
	} else {
		return;
	}
	if (k.proto == IPPROTO_TCP_ || k.proto == IPPROTO_UDP_) {
		__u16 ports[2];
		if (bpf_skb_load_bytes(skb, l4 & 0xff, ports, sizeof(ports)) == 0)
			k.port = bpf_ntohs(egress ? ports[1] : ports[0]);
	}
	struct traffic_val zero = {}, *v;
	v = bpf_map_lookup_elem(&traffic, &k);
	if (!v) {
		bpf_map_update_elem(&traffic, &k, &zero, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&traffic, &k);
		if (!v)
			return;
	}
	if (egress)
		__sync_fetch_and_add(&v->sent, skb->len);
	else
		__sync_fetch_and_add(&v->received, skb->len);
}

SEC("cgroup_skb/egress")
int skb_egress(struct __sk_buff *skb)
{
	count_skb(skb, true);
	return 1;
}

SEC("cgroup_skb/ingress")
int skb_ingress(struct __sk_buff *skb)
{
	count_skb(skb, false);
	return 1;
}
