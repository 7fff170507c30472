//go:build ignore

// SPDX-License-Identifier: GPL-2.0
// buildtrace kernel side: follows processes, file changes and network use of
// tasks in cgroups under /buildtrace/ of the cgroup2 hierarchy. Everything
// else returns after one map lookup. See docs/bpf.md.
//
// One object, split by concern (bpf2go compiles this file, which includes
// the parts): common.h (record, maps, helpers), syscalls.h (x86_64 and
// i386 tables), cgroup.bpf.c, proc.bpf.c, file.bpf.c, net.bpf.c.
#include "common.h"
#include "syscalls.h"

char LICENSE[] SEC("license") = "GPL";

#include "cgroup.bpf.c"
#include "proc.bpf.c"
#include "file.bpf.c"
#include "net.bpf.c"

/* ---- syscalls ---- */

/* Only sys_exit is hooked: the argument registers in pt_regs are the
 * caller's still (the kernel writes only ax), so the arguments need not be
 * saved at entry, and failed calls, which change nothing, are skipped
 * before any map lookup (but for connect: a failed attempt is recorded).
 * The call's ABI decides which table its number is looked up in. */
SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit, struct pt_regs *regs, long ret)
{
	long nr = regs->orig_ax;
	struct task_struct *t = bpf_get_current_task_btf();
	/* TS_COMPAT is set for the length of an ia32 call and cleared on the
	 * return to user mode, which follows this tracepoint. */
	bool compat = t->thread_info.status & TS_COMPAT_; /* a direct load: BTF pointer */
	__u32 sc;
	if (compat) {
		sc = sc_i386(nr);
	} else {
		if (nr == NR_personality) {
			if (regs->di != SYNC_MAGIC || (bpf_get_current_pid_tgid() >> 32) != tracer_tgid)
				return 0;
			struct scratch *s = begin(K_SYNC, 0);
			if (!s)
				return 0;
			s->ev.b[0] = regs->si;
			bpf_ringbuf_output(&events, s, sizeof(struct event), BPF_RB_FORCE_WAKEUP);
			return 0;
		}
		sc = sc_x86_64(nr);
	}
	if (sc == SC_NONE)
		return 0;
	if (ret < 0 && sc != SC_CONNECT && sc != SC_SOCKETCALL)
		return 0;
	if (!is_tracked(bpf_get_current_cgroup_id()))
		return 0;
	struct sargs a = {.nr = sc, .compat = compat};
	if (compat) {
		a.a[0] = (__u32)regs->bx;
		a.a[1] = (__u32)regs->cx;
		a.a[2] = (__u32)regs->dx;
		a.a[3] = (__u32)regs->si;
		a.a[4] = (__u32)regs->di;
		a.a[5] = (__u32)regs->bp;
	} else {
		a.a[0] = regs->di;
		a.a[1] = regs->si;
		a.a[2] = regs->dx;
		a.a[3] = regs->r10;
		a.a[4] = regs->r8;
		a.a[5] = regs->r9;
	}
	if (sc == SC_SOCKETCALL) {
		/* socketcall(call, args): the arguments are 32-bit words in user
		 * memory (as many as the call takes; 6 at most). */
		sc = sc_socketcall(a.a[0]);
		if (sc == SC_NONE || (ret < 0 && sc != SC_CONNECT))
			return 0;
		__u32 w[6] = {};
		if (bpf_probe_read_user(w, sizeof(w), (void *)a.a[1]) < 0 &&
		    bpf_probe_read_user(w, 3 * sizeof(__u32), (void *)a.a[1]) < 0)
			return 0;
		a.nr = sc;
#pragma unroll
		for (int i = 0; i < 6; i++)
			a.a[i] = w[i];
	}
	switch (a.nr) {
	case SC_READ: case SC_WRITE: case SC_RECV: case SC_RECVFROM: case SC_RECVMSG: case SC_RECVMMSG:
		/* Only UDP sockets matter here (DNS); skip the rest cheaply. */
		if (!is_udp(fd_sock(t, a.a[0])))
			return 0;
		return do_net(&a, ret);
	case SC_SEND: case SC_SOCKET: case SC_CONNECT: case SC_SENDTO: case SC_SENDMSG: case SC_SENDMMSG:
		return do_net(&a, ret);
	}
	return do_file(&a, ret);
}
