//go:build ignore

// SPDX-License-Identifier: GPL-2.0
// Included by buildtrace.bpf.c.

/* ---- processes ---- */

SEC("tp_btf/sched_process_fork")
int BPF_PROG(sched_fork, struct task_struct *parent, struct task_struct *child)
{
	__u64 cg = bpf_get_current_cgroup_id();
	struct cg_stats *st = tracked_stats(cg);
	if (!st)
		return 0;
	/* clone3(CLONE_INTO_CGROUP) puts the child in another cgroup from
	 * birth, where no hook follows it. Fields are read with plain loads
	 * (the hook's arguments are BTF pointers), not a probe_read helper
	 * call per pointer: the exec storm pays these hooks per process. */
	if (child->cgroups->dfl_cgrp->kn->id != cg) {
		stat_inc(st, escaped);
		return 0;
	}
	if (child->pid != child->tgid)
		return 0;
	__u32 tgid = child->tgid;
	if (bpf_map_update_elem(&task_step, &tgid, &cg, BPF_ANY) != 0)
		stat_inc(st, map_full);
	/* Moved by another process of the step between the check above and
	 * the insert, it would be in no map when cgroup_attach_task ran. */
	if (child->cgroups->dfl_cgrp->kn->id != cg)
		stat_inc(st, escaped);
	if (!sys_live) {
		/* A fork of the step (after its first exec) while the syscall
		 * hook was detached; runc's forks before it are not the step's. */
		__u8 *sv = bpf_map_lookup_elem(&seen, &cg);
		if (sv && *sv == 2)
			stat_inc(st, unhooked);
	}
	struct scratch *s = begin(K_FORK, cg);
	if (!s)
		return 0;
	s->ev.pid = child->tgid;
	s->ev.tid = child->pid;
	s->ev.ppid = parent->tgid;
	emit(s, st, 0);
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

/* argv past the exec record's first BLOB_MAX bytes goes out in
 * continuation records (K_ARGV_CONT), written before the exec record by the
 * same program run: pid/tid of the exec, b[0] the exec's token, a[0] the
 * sequence number (from 1), up to DATA_SZ bytes each, ARGV_MAX in all. */
struct argv_ctx {
	__u64 src;
	__u64 end;
	__u64 cg;
	__u64 token;
	__u64 sent;   /* bytes in the records written */
	__u32 seq;    /* records written */
	__u32 failed; /* a read or a ring write failed: argv is cut there */
};

static long argv_step(__u32 i, struct argv_ctx *c)
{
	if (c->src >= c->end)
		return 1;
	struct scratch *s = begin(K_ARGV_CONT, c->cg);
	if (!s) {
		c->failed = 1;
		return 1;
	}
	__u64 n = c->end - c->src;
	if (n > DATA_SZ)
		n = DATA_SZ;
	if (bpf_probe_read_user(s->data, n, (const void *)c->src) < 0) {
		c->failed = 1;
		return 1;
	}
	s->ev.b[0] = c->token;
	s->ev.a[0] = c->seq + 1;
	s->ev.len[0] = n;
	/* Looked up again: a callback's context holds no map value. */
	if (!emit(s, tracked_stats(c->cg), n)) {
		c->failed = 1;
		return 1;
	}
	c->seq++;
	c->sent += n;
	c->src += n;
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(sched_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u64 cg = bpf_get_current_cgroup_id();
	struct cg_stats *st = tracked_stats(cg);
	if (!st)
		return 0;
	/* The container's first process was moved in, not forked there. */
	__u32 ptgid = p->tgid;
	if (bpf_map_update_elem(&task_step, &ptgid, &cg, BPF_ANY) != 0)
		stat_inc(st, map_full);

	/* argv: the first BLOB_MAX bytes in the exec record; the rest, up to
	 * ARGV_MAX, in continuation records written first (a short argv, the
	 * usual case, has none). Past ARGV_MAX, or when a continuation could
	 * not be read or written, argv is cut and flagged. */
	struct mm_struct *mm = p->mm;
	__u64 as = mm->arg_start, ae = mm->arg_end;
	__u64 n = ae > as ? ae - as : 0;
	bool cut = false;
	struct argv_ctx ac = {.cg = cg, .token = bpf_ktime_get_ns()};
	if (n > BLOB_MAX) {
		__u64 keep = n;
		if (keep > ARGV_MAX) {
			keep = ARGV_MAX;
			cut = true;
		}
		ac.src = as + BLOB_MAX;
		ac.end = as + keep;
		bpf_loop(ARGV_CONTS, argv_step, &ac, 0);
		if (ac.failed || ac.src < ac.end)
			cut = true;
		n = BLOB_MAX;
	}

	struct scratch *s = begin(K_EXEC, cg);
	if (!s)
		return 0;
	__u64 ug = bpf_get_current_uid_gid();
	s->ev.a[0] = (__u32)ug;
	s->ev.a[1] = ug >> 32;
	/* The IDs the image runs with: a setuid or setgid file changes the
	 * effective ones only (redteam13: uid 1000 running as root). */
	const struct cred *cred = p->cred;
	s->ev.a[3] = cred->euid.val;
	s->ev.a[4] = cred->egid.val;
	s->ev.a[2] = ac.seq;   /* continuation records written */
	s->ev.b[0] = ac.token;
	s->ev.b[1] = ac.sent;  /* argv bytes in them */

	__u32 pos = append_kernel_str(s, 0, 0, bprm->filename);

	__u32 before = pos;
	pos = append_user_bytes(s, pos, 1, (const void *)as, n);
	if (n > 0 && pos == before)
		cut = true;
	if (cut)
		s->ev.flags |= EF_ARGV_TRUNCATED | EF_TRUNCATED;

	struct fs_struct *fs = p->fs;
	pos = append_walk(s, pos, 2, fs->pwd.dentry, fs->pwd.mnt, p, 0, NULL);
	/* The file actually executed: execve's name can be a symlink or
	 * /proc/self/exe (busybox re-executing itself). */
	struct file *exe = bprm->file;
	pos = append_walk(s, pos, 3, exe->f_path.dentry, exe->f_path.mnt, p, EF_DETACHED, NULL);

	/* The step starts at the first exec in the cgroup, whatever the
	 * environment says; no environment byte is read. runc init may
	 * re-execute itself from a sealed copy after runc moved it into the
	 * cgroup: that exec is in runc's mount namespace, which is its parent's
	 * (runc's) and, with buildkitd on the host, the tracer's; nothing in the
	 * container can be in it before its first exec (runc's last stage
	 * unshares it before that exec, so the container's first process is in
	 * another mount namespace than its parent runc). With buildkitd in a
	 * container (docker-container driver), runc's namespace is that
	 * container's, not the tracer's. Go decides (EF_RUNTIME_MNTNS). seen: 1 =
	 * only runc's execs so far, 2 = the container's first exec happened. */
	__u32 mnt = p->nsproxy->mnt_ns->ns.inum;
	bool host = mnt == tracer_mntns || mnt == p->real_parent->nsproxy->mnt_ns->ns.inum;
	if (host)
		s->ev.flags |= EF_RUNTIME_MNTNS;
	__u8 *sv = bpf_map_lookup_elem(&seen, &cg);
	__u8 was = sv ? *sv : 0;
	if (!was)
		s->ev.flags |= EF_FIRST_IN_CGROUP;
	/* The syscall hook was detached: what this image does next may go
	 * unseen until it attaches. Only runc's re-exec of itself (the host's
	 * mount namespace, first in the cgroup) starts nothing of the step. */
	if (!sys_live && !(host && !was))
		stat_inc(st, unhooked);
	if (was < 2) {
		__u8 now = host ? 1 : 2;
		if (now > was && bpf_map_update_elem(&seen, &cg, &now, BPF_ANY) != 0)
			stat_inc(st, map_full);
		/* What the container runtime (runc init) used before this exec
		 * is not the step's: start the process's accounts at minus what
		 * it has so far (unsigned wrap-around), dropping runc's exited
		 * threads too. Done again at the container's first exec when
		 * runc's own re-exec was seen first. */
		__u64 rt = p->se.sum_exec_runtime;
		struct tg_acc base = {
			.rchar = -p->ioac.rchar,
			.wchar = -p->ioac.wchar,
		};
		bpf_map_update_elem(&tgacc, &ptgid, &base, BPF_ANY);
		bpf_map_update_elem(&execbase, &ptgid, &rt, BPF_ANY);
	}
	emit(s, st, pos);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(sched_exit, struct task_struct *p, bool group_dead)
{
	__u64 cg = bpf_get_current_cgroup_id();
	struct cg_stats *st = tracked_stats(cg);
	if (!st)
		return 0;
	__u32 tgid = p->tgid;
	__u64 u, sy, skip = 0;
	if (group_dead)
		bpf_map_delete_elem(&task_step, &tgid);
	if (p->pid == tgid) {
		__u64 *b = bpf_map_lookup_elem(&execbase, &tgid);
		if (b) {
			skip = *b;
			bpf_map_delete_elem(&execbase, &tgid);
		}
	}
	cpu_split(p, skip, &u, &sy);
	/* The process's accounts: its exited threads' (and the exec base's)
	 * in tgacc, this thread's added. A process whose last thread is its
	 * only one, the usual case, has no entry, and none is made for it (an
	 * LRU map's insert and delete per process, in the exec storm). */
	struct tg_acc own = {.utime = u, .stime = sy, .rchar = p->ioac.rchar, .wchar = p->ioac.wchar};
	struct tg_acc *acc = bpf_map_lookup_elem(&tgacc, &tgid);
	if (!acc && !group_dead) {
		if (bpf_map_update_elem(&tgacc, &tgid, &own, BPF_NOEXIST) == 0)
			return 0;
		/* Another thread's exit made it meanwhile. */
		acc = bpf_map_lookup_elem(&tgacc, &tgid);
	}
	if (acc) {
		__sync_fetch_and_add(&acc->utime, own.utime);
		__sync_fetch_and_add(&acc->stime, own.stime);
		__sync_fetch_and_add(&acc->rchar, own.rchar);
		__sync_fetch_and_add(&acc->wchar, own.wchar);
		if (!group_dead)
			return 0;
		own = *acc;
		bpf_map_delete_elem(&tgacc, &tgid);
	}
	if (!group_dead)
		return 0;
	struct scratch *s = begin(K_EXIT, cg);
	if (!s)
		return 0;
	struct signal_struct *sig = p->signal;
	int code = p->exit_code;
	if (sig->flags & SIGNAL_GROUP_EXIT_)
		code = sig->group_exit_code;
	s->ev.a[0] = (code >> 8) & 0xff;
	s->ev.a[1] = code & 0x7f;
	s->ev.b[0] = own.utime;
	s->ev.b[1] = own.stime;
	s->ev.b[2] = (__u64)sig->maxrss * page_size;
	s->ev.b[3] = own.rchar;
	s->ev.b[4] = own.wchar;
	emit(s, st, 0);
	return 0;
}

/* A process's IDs changed without an exec: setuid(2) and its kin, which a
 * process of uid 1000 can call to become root when its file gave it
 * CAP_SETUID (a file capability; redteam13). The IDs it has after the
 * call, read from the task: its arguments say less (-1, 16-bit IDs). */
static __always_inline int do_cred(struct task_struct *t, __u64 cg, struct cg_stats *st)
{
	struct scratch *s = begin(K_CRED, cg);
	if (!s)
		return 0;
	const struct cred *c = t->cred;
	s->ev.a[0] = c->uid.val;
	s->ev.a[1] = c->gid.val;
	s->ev.a[2] = c->fsuid.val;
	s->ev.a[3] = c->euid.val;
	s->ev.a[4] = c->egid.val;
	emit(s, st, 0);
	return 0;
}

SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(io_uring_submit_req, struct io_kiocb *req)
{
	struct cg_stats *st = tracked_stats(bpf_get_current_cgroup_id());
	if (!st)
		return 0;
	stat_inc(st, io_uring);
	return 0;
}


/* ---- sync marker ---- */

/* Never attached: the tracer runs it (BPF_PROG_TEST_RUN) to put a marker
 * carrying args[0] into the events ring after every record written before
 * the run, with or without the syscall hook. */
SEC("raw_tp")
int sync_marker(struct bpf_raw_tracepoint_args *ctx)
{
	struct scratch *s = begin(K_SYNC, 0);
	if (!s)
		return 0;
	s->ev.b[0] = ctx->args[0];
	bpf_ringbuf_output(&events, s, sizeof(struct event), BPF_RB_FORCE_WAKEUP);
	return 0;
}
