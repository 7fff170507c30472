//go:build ignore

// SPDX-License-Identifier: GPL-2.0
// buildtrace kernel side: follows processes, file changes and network use of
// tasks in cgroups under /buildtrace/ of the cgroup2 hierarchy. Everything
// else returns after one map lookup. See docs/bpf.md.
//
// One object, split by concern (bpf2go compiles this file, which includes
// the parts): common.h (record, maps, helpers), syscalls.h (the syscall
// tables of each ABI), arch_x86.h or arch_arm64.h (the target's pt_regs and
// ABIs), cgroup.bpf.c, proc.bpf.c, file.bpf.c, net.bpf.c. bpf2go compiles
// it once per architecture (gen.go).
#include "common.h"
#include "syscalls.h"
#if defined(__TARGET_ARCH_x86)
#include "arch_x86.h"
#elif defined(__TARGET_ARCH_arm64)
#include "arch_arm64.h"
#else
#error "no syscall ABI for this target: bpf2go -target amd64 or arm64 (see gen.go)"
#endif

char LICENSE[] SEC("license") = "GPL";

#include "cgroup.bpf.c"
#include "proc.bpf.c"
#include "file.bpf.c"
#include "net.bpf.c"

/* ---- syscalls ---- */

/* Only sys_exit is hooked: the argument registers in pt_regs are the
 * caller's still (the kernel writes only the return value's, and keeps the
 * first argument where that overlaps it: arch_*.h), so the arguments need
 * not be saved at entry, and failed calls, which change nothing, are
 * skipped before any map lookup (but for connect: a failed attempt is
 * recorded). The call's ABI decides which table its number is looked up
 * in. */
SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit, struct pt_regs *regs, long ret)
{
	struct task_struct *t = bpf_get_current_task_btf();
	bool compat;
	__u32 sc = sys_call(regs, &compat);
	if (sc == SC_NONE)
		return 0;
	if (ret < 0 && sc != SC_CONNECT && sc != SC_SOCKETCALL)
		return 0;
	__u64 cg = bpf_get_current_cgroup_id();
	struct cg_stats *st = tracked_stats(cg);
	if (!st)
		return 0;
	struct sargs a = {.nr = sc, .compat = compat};
	sys_args(regs, compat, a.a);
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
	case SC_READV: case SC_WRITEV: case SC_PREADV2: case SC_PWRITEV2: case SC_SENDFILE: case SC_SPLICE:
	case SC_SEND: case SC_CONNECT: case SC_SENDTO: case SC_SENDMSG: case SC_SENDMMSG: {
		/* Every call that moves bytes through a descriptor (or
		 * connects one): a socket made outside the step's cgroup is
		 * recorded (foreign_sock). A file or pipe costs fd_sock's
		 * lookup. sendfile(out, in) and splice(in, off, out) can have
		 * the socket on either side. */
		struct sock *sk = fd_sock(t, a.a[0]);
		bool foreign = foreign_sock(sk, cg, st);
		if (a.nr == SC_SENDFILE || a.nr == SC_SPLICE) {
			foreign_sock(fd_sock(t, a.nr == SC_SENDFILE ? a.a[1] : a.a[2]), cg, st);
			return 0;
		}
		if (a.nr == SC_READV || a.nr == SC_WRITEV || a.nr == SC_PREADV2 || a.nr == SC_PWRITEV2)
			return 0;
		/* Of read and write and the receive calls, only UDP sockets
		 * matter further (DNS); skip the rest cheaply. */
		if ((a.nr == SC_READ || a.nr == SC_WRITE || a.nr == SC_RECV || a.nr == SC_RECVFROM ||
		     a.nr == SC_RECVMSG || a.nr == SC_RECVMMSG) && !is_udp(sk))
			return 0;
		return do_net(&a, ret, cg, st, sk, foreign);
	}
	case SC_SOCKET:
		return do_net(&a, ret, cg, st, NULL, false);
	case SC_IO_SUBMIT:
		return do_io_submit(&a, ret, cg);
	case SC_SETUID: case SC_SETGID: case SC_SETREUID: case SC_SETREGID:
	case SC_SETRESUID: case SC_SETRESGID: case SC_SETFSUID: case SC_SETFSGID:
		return do_cred(t, cg, st);
	}
	return do_file(&a, ret, cg, st);
}
