// SPDX-License-Identifier: GPL-2.0
// arm64: which call sys_exit reports, and its arguments.
//
// vmlinux.h is x86's, so the arm64 types used here are declared below with
// only the fields read, as CO-RE flavours ("___bt_arm64" is dropped when
// matching): at load they are relocated against the running kernel's BTF
// by name, wherever the fields are (pt_regs keeps regs..pstate in an
// anonymous union; the loader finds them there). Nothing else here depends
// on vmlinux.h's layout of an architecture-specific type.
#ifndef BUILDTRACE_ARCH_H
#define BUILDTRACE_ARCH_H

/* arch/arm64/include/asm/ptrace.h */
struct pt_regs___bt_arm64 {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
	__u64 orig_x0;
	__s32 syscallno;
} __attribute__((preserve_access_index));

/* SPSR's M[4] (uapi asm/ptrace.h PSR_MODE32_BIT): the task was in AArch32
 * state when it trapped, so the call is an arm32 EABI one. Architectural,
 * unlike the TIF_32BIT flag number, which is kernel-internal and may move. */
#define PSR_MODE32_BIT_ 0x10

/* The call's internal code (enum sc): its number from syscallno (x8 for
 * AArch64, r7 for AArch32, saved at entry), looked up in the table of the
 * state the task trapped from; *compat for arm32. A successful execve that
 * switched state leaves the old number with the new state; the numbers it
 * then names (listxattr, fcntl64, socket with zeroed registers) record
 * nothing. */
static __always_inline __u32 sys_call(struct pt_regs *regs, bool *compat)
{
	struct pt_regs___bt_arm64 *r = (void *)regs;
	long nr = BPF_CORE_READ(r, syscallno);
	*compat = BPF_CORE_READ(r, pstate) & PSR_MODE32_BIT_;
	return *compat ? sc_arm32(nr) : sc_arm64(nr);
}

/* The call's arguments: x0..x5 (r0..r5 for arm32, 32 bits each). At exit
 * x0 holds the return value; the entry code saved the first argument in
 * orig_x0. */
static __always_inline void sys_args(struct pt_regs *regs, bool compat, __u64 a[6])
{
	struct pt_regs___bt_arm64 *r = (void *)regs;
	a[0] = BPF_CORE_READ(r, orig_x0);
	a[1] = BPF_CORE_READ(r, regs[1]);
	a[2] = BPF_CORE_READ(r, regs[2]);
	a[3] = BPF_CORE_READ(r, regs[3]);
	a[4] = BPF_CORE_READ(r, regs[4]);
	a[5] = BPF_CORE_READ(r, regs[5]);
	if (compat) {
#pragma unroll
		for (int i = 0; i < 6; i++)
			a[i] = (__u32)a[i];
	}
}

#endif
