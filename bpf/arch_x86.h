// SPDX-License-Identifier: GPL-2.0
// x86_64: which call sys_exit reports, and its arguments. vmlinux.h is this
// architecture's, so its struct pt_regs is used as is (CO-RE relocated) and read
// with plain loads: sys_exit is tp_btf, so regs is a BTF pointer.
#ifndef BUILDTRACE_ARCH_H
#define BUILDTRACE_ARCH_H

/* TS_COMPAT (arch/x86/include/asm/thread_info.h) is in thread_info.status
 * for the length of an ia32 call (int 0x80, sysenter) and cleared on the
 * return to user mode, which follows this tracepoint. */
#define TS_COMPAT_ 0x0002

/* The call's internal code (enum sc): its number from orig_ax, looked up
 * in the table of the ABI it was made through; *compat for i386. */
static __always_inline __u32 sys_call(struct pt_regs *regs, bool *compat)
{
	long nr = regs->orig_ax;
	struct task_struct *t = bpf_get_current_task_btf();
	*compat = t->thread_info.status & TS_COMPAT_; /* a direct load: BTF pointer */
	return *compat ? sc_i386(nr) : sc_x86_64(nr);
}

/* The call's arguments, which the kernel left in pt_regs (it writes only
 * ax at exit): x86_64 di, si, dx, r10, r8, r9; i386 bx, cx, dx, si, di, bp,
 * 32 bits each. */
static __always_inline void sys_args(struct pt_regs *regs, bool compat, __u64 a[6])
{
	if (compat) {
		a[0] = (__u32)regs->bx;
		a[1] = (__u32)regs->cx;
		a[2] = (__u32)regs->dx;
		a[3] = (__u32)regs->si;
		a[4] = (__u32)regs->di;
		a[5] = (__u32)regs->bp;
	} else {
		a[0] = regs->di;
		a[1] = regs->si;
		a[2] = regs->dx;
		a[3] = regs->r10;
		a[4] = regs->r8;
		a[5] = regs->r9;
	}
}

#endif
