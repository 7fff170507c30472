// SPDX-License-Identifier: GPL-2.0
// System call tables, one per ABI. A number means something only in its
// own ABI, so each table maps its numbers to one internal code (enum sc) and
// a number is only ever decoded by its own ABI's table; which ABI a call
// used is the architecture header's business (arch_x86.h, arch_arm64.h).
//
// Each table is a list of X(number, name, code): name is the call's name in
// the kernel's table for that ABI, as golang.org/x/sys/unix spells it
// (SYS_<NAME>). bpf/syscalls_test.go reads this file and checks every number
// against x/sys for the ABI, that each name has the code its name says, and
// that no ABI lacks a call another ABI's table traces. Keep one entry per
// line, in this form.
#ifndef BUILDTRACE_SYSCALLS_H
#define BUILDTRACE_SYSCALLS_H

/* What a call is, whatever its ABI. The *16 calls take 16-bit IDs. */
enum sc {
	SC_NONE = 0,
	SC_READ, SC_WRITE, SC_RECV, SC_SEND,
	/* moves bytes through descriptors: looked at only for a socket made
	 * outside the caller's cgroup (net.bpf.c, foreign_sock) */
	SC_READV, SC_WRITEV, SC_PREADV2, SC_PWRITEV2, SC_SENDFILE, SC_SPLICE,
	SC_IO_SUBMIT,    /* Linux AIO: each submitted iocb's descriptor */
	SC_OPEN, SC_OPENAT, SC_OPENAT2, SC_CREAT,
	SC_TRUNCATE, SC_FTRUNCATE,
	SC_UNLINK, SC_UNLINKAT, SC_RMDIR,
	SC_RENAME, SC_RENAMEAT, SC_RENAMEAT2,
	SC_CHMOD, SC_FCHMOD, SC_FCHMODAT, SC_FCHMODAT2,
	SC_CHOWN, SC_LCHOWN, SC_FCHOWN, SC_FCHOWNAT,
	SC_CHOWN16, SC_LCHOWN16, SC_FCHOWN16,
	SC_LINK, SC_LINKAT, SC_SYMLINK, SC_SYMLINKAT,
	SC_MKDIR, SC_MKDIRAT, SC_MKNOD, SC_MKNODAT,
	SC_SETXATTR, SC_FSETXATTR, SC_SETXATTRAT,
	SC_REMOVEXATTR, SC_FREMOVEXATTR, SC_REMOVEXATTRAT,
	SC_SOCKET, SC_CONNECT, SC_SENDTO, SC_RECVFROM,
	SC_SENDMSG, SC_RECVMSG, SC_SENDMMSG, SC_RECVMMSG,
	SC_SOCKETCALL,   /* i386 only: decoded into one of the above */
	/* credentials: the IDs are read from the task after the call */
	SC_SETUID, SC_SETGID, SC_SETREUID, SC_SETREGID,
	SC_SETRESUID, SC_SETRESGID, SC_SETFSUID, SC_SETFSGID,
};

/* x86_64 (arch/x86/entry/syscalls/syscall_64.tbl). x32
 * (CONFIG_X86_X32_ABI) is off on the kernels we know: such calls fail with
 * ENOSYS and change nothing. */
#define SYSCALLS_X86_64(X) \
	X(0, read, SC_READ) \
	X(1, write, SC_WRITE) \
	X(2, open, SC_OPEN) \
	X(19, readv, SC_READV) \
	X(20, writev, SC_WRITEV) \
	X(40, sendfile, SC_SENDFILE) \
	X(41, socket, SC_SOCKET) \
	X(42, connect, SC_CONNECT) \
	X(44, sendto, SC_SENDTO) \
	X(45, recvfrom, SC_RECVFROM) \
	X(46, sendmsg, SC_SENDMSG) \
	X(47, recvmsg, SC_RECVMSG) \
	X(76, truncate, SC_TRUNCATE) \
	X(77, ftruncate, SC_FTRUNCATE) \
	X(82, rename, SC_RENAME) \
	X(83, mkdir, SC_MKDIR) \
	X(84, rmdir, SC_RMDIR) \
	X(85, creat, SC_CREAT) \
	X(86, link, SC_LINK) \
	X(87, unlink, SC_UNLINK) \
	X(88, symlink, SC_SYMLINK) \
	X(90, chmod, SC_CHMOD) \
	X(91, fchmod, SC_FCHMOD) \
	X(92, chown, SC_CHOWN) \
	X(93, fchown, SC_FCHOWN) \
	X(94, lchown, SC_LCHOWN) \
	X(105, setuid, SC_SETUID) \
	X(106, setgid, SC_SETGID) \
	X(113, setreuid, SC_SETREUID) \
	X(114, setregid, SC_SETREGID) \
	X(117, setresuid, SC_SETRESUID) \
	X(119, setresgid, SC_SETRESGID) \
	X(122, setfsuid, SC_SETFSUID) \
	X(123, setfsgid, SC_SETFSGID) \
	X(133, mknod, SC_MKNOD) \
	X(188, setxattr, SC_SETXATTR) \
	X(189, lsetxattr, SC_SETXATTR) \
	X(190, fsetxattr, SC_FSETXATTR) \
	X(197, removexattr, SC_REMOVEXATTR) \
	X(198, lremovexattr, SC_REMOVEXATTR) \
	X(199, fremovexattr, SC_FREMOVEXATTR) \
	X(209, io_submit, SC_IO_SUBMIT) \
	X(257, openat, SC_OPENAT) \
	X(258, mkdirat, SC_MKDIRAT) \
	X(259, mknodat, SC_MKNODAT) \
	X(260, fchownat, SC_FCHOWNAT) \
	X(263, unlinkat, SC_UNLINKAT) \
	X(264, renameat, SC_RENAMEAT) \
	X(265, linkat, SC_LINKAT) \
	X(266, symlinkat, SC_SYMLINKAT) \
	X(268, fchmodat, SC_FCHMODAT) \
	X(275, splice, SC_SPLICE) \
	X(299, recvmmsg, SC_RECVMMSG) \
	X(307, sendmmsg, SC_SENDMMSG) \
	X(316, renameat2, SC_RENAMEAT2) \
	X(327, preadv2, SC_PREADV2) \
	X(328, pwritev2, SC_PWRITEV2) \
	X(437, openat2, SC_OPENAT2) \
	X(452, fchmodat2, SC_FCHMODAT2) \
	X(463, setxattrat, SC_SETXATTRAT) \
	X(466, removexattrat, SC_REMOVEXATTRAT)

/* i386 (arch/x86/entry/syscalls/syscall_32.tbl): ia32 calls on x86_64
 * (int 0x80, sysenter). chown, lchown and fchown take 16-bit IDs; the *32
 * ones full IDs. */
#define SYSCALLS_I386(X) \
	X(3, read, SC_READ) \
	X(4, write, SC_WRITE) \
	X(5, open, SC_OPEN) \
	X(8, creat, SC_CREAT) \
	X(9, link, SC_LINK) \
	X(10, unlink, SC_UNLINK) \
	X(14, mknod, SC_MKNOD) \
	X(15, chmod, SC_CHMOD) \
	X(16, lchown, SC_LCHOWN16) \
	X(23, setuid, SC_SETUID) \
	X(38, rename, SC_RENAME) \
	X(39, mkdir, SC_MKDIR) \
	X(40, rmdir, SC_RMDIR) \
	X(46, setgid, SC_SETGID) \
	X(70, setreuid, SC_SETREUID) \
	X(71, setregid, SC_SETREGID) \
	X(83, symlink, SC_SYMLINK) \
	X(92, truncate, SC_TRUNCATE) \
	X(93, ftruncate, SC_FTRUNCATE) \
	X(94, fchmod, SC_FCHMOD) \
	X(95, fchown, SC_FCHOWN16) \
	X(102, socketcall, SC_SOCKETCALL) \
	X(138, setfsuid, SC_SETFSUID) \
	X(139, setfsgid, SC_SETFSGID) \
	X(145, readv, SC_READV) \
	X(146, writev, SC_WRITEV) \
	X(164, setresuid, SC_SETRESUID) \
	X(170, setresgid, SC_SETRESGID) \
	X(182, chown, SC_CHOWN16) \
	X(187, sendfile, SC_SENDFILE) \
	X(193, truncate64, SC_TRUNCATE) \
	X(194, ftruncate64, SC_FTRUNCATE) \
	X(198, lchown32, SC_LCHOWN) \
	X(203, setreuid32, SC_SETREUID) \
	X(204, setregid32, SC_SETREGID) \
	X(207, fchown32, SC_FCHOWN) \
	X(208, setresuid32, SC_SETRESUID) \
	X(210, setresgid32, SC_SETRESGID) \
	X(212, chown32, SC_CHOWN) \
	X(213, setuid32, SC_SETUID) \
	X(214, setgid32, SC_SETGID) \
	X(215, setfsuid32, SC_SETFSUID) \
	X(216, setfsgid32, SC_SETFSGID) \
	X(226, setxattr, SC_SETXATTR) \
	X(227, lsetxattr, SC_SETXATTR) \
	X(228, fsetxattr, SC_FSETXATTR) \
	X(235, removexattr, SC_REMOVEXATTR) \
	X(236, lremovexattr, SC_REMOVEXATTR) \
	X(237, fremovexattr, SC_FREMOVEXATTR) \
	X(239, sendfile64, SC_SENDFILE) \
	X(248, io_submit, SC_IO_SUBMIT) \
	X(295, openat, SC_OPENAT) \
	X(296, mkdirat, SC_MKDIRAT) \
	X(297, mknodat, SC_MKNODAT) \
	X(298, fchownat, SC_FCHOWNAT) \
	X(301, unlinkat, SC_UNLINKAT) \
	X(302, renameat, SC_RENAMEAT) \
	X(303, linkat, SC_LINKAT) \
	X(304, symlinkat, SC_SYMLINKAT) \
	X(306, fchmodat, SC_FCHMODAT) \
	X(313, splice, SC_SPLICE) \
	X(337, recvmmsg, SC_RECVMMSG) \
	X(345, sendmmsg, SC_SENDMMSG) \
	X(353, renameat2, SC_RENAMEAT2) \
	X(359, socket, SC_SOCKET) \
	X(362, connect, SC_CONNECT) \
	X(369, sendto, SC_SENDTO) \
	X(370, sendmsg, SC_SENDMSG) \
	X(371, recvfrom, SC_RECVFROM) \
	X(372, recvmsg, SC_RECVMSG) \
	X(378, preadv2, SC_PREADV2) \
	X(379, pwritev2, SC_PWRITEV2) \
	X(417, recvmmsg_time64, SC_RECVMMSG) \
	X(437, openat2, SC_OPENAT2) \
	X(452, fchmodat2, SC_FCHMODAT2) \
	X(463, setxattrat, SC_SETXATTRAT) \
	X(466, removexattrat, SC_REMOVEXATTRAT)

/* arm64 (include/uapi/asm-generic/unistd.h): only the *at calls; no open,
 * creat, unlink, rename, mkdir, chmod, chown, link or symlink. */
#define SYSCALLS_ARM64(X) \
	X(2, io_submit, SC_IO_SUBMIT) \
	X(5, setxattr, SC_SETXATTR) \
	X(6, lsetxattr, SC_SETXATTR) \
	X(7, fsetxattr, SC_FSETXATTR) \
	X(14, removexattr, SC_REMOVEXATTR) \
	X(15, lremovexattr, SC_REMOVEXATTR) \
	X(16, fremovexattr, SC_FREMOVEXATTR) \
	X(33, mknodat, SC_MKNODAT) \
	X(34, mkdirat, SC_MKDIRAT) \
	X(35, unlinkat, SC_UNLINKAT) \
	X(36, symlinkat, SC_SYMLINKAT) \
	X(37, linkat, SC_LINKAT) \
	X(38, renameat, SC_RENAMEAT) \
	X(45, truncate, SC_TRUNCATE) \
	X(46, ftruncate, SC_FTRUNCATE) \
	X(52, fchmod, SC_FCHMOD) \
	X(53, fchmodat, SC_FCHMODAT) \
	X(54, fchownat, SC_FCHOWNAT) \
	X(55, fchown, SC_FCHOWN) \
	X(56, openat, SC_OPENAT) \
	X(63, read, SC_READ) \
	X(64, write, SC_WRITE) \
	X(65, readv, SC_READV) \
	X(66, writev, SC_WRITEV) \
	X(71, sendfile, SC_SENDFILE) \
	X(76, splice, SC_SPLICE) \
	X(143, setregid, SC_SETREGID) \
	X(144, setgid, SC_SETGID) \
	X(145, setreuid, SC_SETREUID) \
	X(146, setuid, SC_SETUID) \
	X(147, setresuid, SC_SETRESUID) \
	X(149, setresgid, SC_SETRESGID) \
	X(151, setfsuid, SC_SETFSUID) \
	X(152, setfsgid, SC_SETFSGID) \
	X(198, socket, SC_SOCKET) \
	X(203, connect, SC_CONNECT) \
	X(206, sendto, SC_SENDTO) \
	X(207, recvfrom, SC_RECVFROM) \
	X(211, sendmsg, SC_SENDMSG) \
	X(212, recvmsg, SC_RECVMSG) \
	X(243, recvmmsg, SC_RECVMMSG) \
	X(269, sendmmsg, SC_SENDMMSG) \
	X(276, renameat2, SC_RENAMEAT2) \
	X(286, preadv2, SC_PREADV2) \
	X(287, pwritev2, SC_PWRITEV2) \
	X(437, openat2, SC_OPENAT2) \
	X(452, fchmodat2, SC_FCHMODAT2) \
	X(463, setxattrat, SC_SETXATTRAT) \
	X(466, removexattrat, SC_REMOVEXATTRAT)

/* arm32 EABI (arch/arm/tools/syscall.tbl; arm64's compat table,
 * arch/arm64/include/asm/unistd32.h): 32-bit tasks on arm64. Like i386,
 * chown, lchown and fchown take 16-bit IDs; unlike it, the socket calls are
 * direct (socketcall is OABI only: ENOSYS under EABI) and send and recv
 * have numbers of their own. */
#define SYSCALLS_ARM32(X) \
	X(3, read, SC_READ) \
	X(4, write, SC_WRITE) \
	X(5, open, SC_OPEN) \
	X(8, creat, SC_CREAT) \
	X(9, link, SC_LINK) \
	X(10, unlink, SC_UNLINK) \
	X(14, mknod, SC_MKNOD) \
	X(15, chmod, SC_CHMOD) \
	X(16, lchown, SC_LCHOWN16) \
	X(23, setuid, SC_SETUID) \
	X(38, rename, SC_RENAME) \
	X(39, mkdir, SC_MKDIR) \
	X(40, rmdir, SC_RMDIR) \
	X(46, setgid, SC_SETGID) \
	X(70, setreuid, SC_SETREUID) \
	X(71, setregid, SC_SETREGID) \
	X(83, symlink, SC_SYMLINK) \
	X(92, truncate, SC_TRUNCATE) \
	X(93, ftruncate, SC_FTRUNCATE) \
	X(94, fchmod, SC_FCHMOD) \
	X(95, fchown, SC_FCHOWN16) \
	X(138, setfsuid, SC_SETFSUID) \
	X(139, setfsgid, SC_SETFSGID) \
	X(145, readv, SC_READV) \
	X(146, writev, SC_WRITEV) \
	X(164, setresuid, SC_SETRESUID) \
	X(170, setresgid, SC_SETRESGID) \
	X(182, chown, SC_CHOWN16) \
	X(187, sendfile, SC_SENDFILE) \
	X(193, truncate64, SC_TRUNCATE) \
	X(194, ftruncate64, SC_FTRUNCATE) \
	X(198, lchown32, SC_LCHOWN) \
	X(203, setreuid32, SC_SETREUID) \
	X(204, setregid32, SC_SETREGID) \
	X(207, fchown32, SC_FCHOWN) \
	X(208, setresuid32, SC_SETRESUID) \
	X(210, setresgid32, SC_SETRESGID) \
	X(212, chown32, SC_CHOWN) \
	X(213, setuid32, SC_SETUID) \
	X(214, setgid32, SC_SETGID) \
	X(215, setfsuid32, SC_SETFSUID) \
	X(216, setfsgid32, SC_SETFSGID) \
	X(226, setxattr, SC_SETXATTR) \
	X(227, lsetxattr, SC_SETXATTR) \
	X(228, fsetxattr, SC_FSETXATTR) \
	X(235, removexattr, SC_REMOVEXATTR) \
	X(236, lremovexattr, SC_REMOVEXATTR) \
	X(237, fremovexattr, SC_FREMOVEXATTR) \
	X(239, sendfile64, SC_SENDFILE) \
	X(246, io_submit, SC_IO_SUBMIT) \
	X(281, socket, SC_SOCKET) \
	X(283, connect, SC_CONNECT) \
	X(289, send, SC_SEND) \
	X(290, sendto, SC_SENDTO) \
	X(291, recv, SC_RECV) \
	X(292, recvfrom, SC_RECVFROM) \
	X(296, sendmsg, SC_SENDMSG) \
	X(297, recvmsg, SC_RECVMSG) \
	X(322, openat, SC_OPENAT) \
	X(323, mkdirat, SC_MKDIRAT) \
	X(324, mknodat, SC_MKNODAT) \
	X(325, fchownat, SC_FCHOWNAT) \
	X(328, unlinkat, SC_UNLINKAT) \
	X(329, renameat, SC_RENAMEAT) \
	X(330, linkat, SC_LINKAT) \
	X(331, symlinkat, SC_SYMLINKAT) \
	X(333, fchmodat, SC_FCHMODAT) \
	X(340, splice, SC_SPLICE) \
	X(365, recvmmsg, SC_RECVMMSG) \
	X(374, sendmmsg, SC_SENDMMSG) \
	X(382, renameat2, SC_RENAMEAT2) \
	X(392, preadv2, SC_PREADV2) \
	X(393, pwritev2, SC_PWRITEV2) \
	X(417, recvmmsg_time64, SC_RECVMMSG) \
	X(437, openat2, SC_OPENAT2) \
	X(452, fchmodat2, SC_FCHMODAT2) \
	X(463, setxattrat, SC_SETXATTRAT) \
	X(466, removexattrat, SC_REMOVEXATTRAT)

#define SC_CASE_(nr, name, code) case nr: return code;

/* Only the architecture's own tables are used; the others compile to
 * nothing. */
static __always_inline __u32 sc_x86_64(long nr)
{
	switch (nr) { SYSCALLS_X86_64(SC_CASE_) }
	return SC_NONE;
}

static __always_inline __u32 sc_i386(long nr)
{
	switch (nr) { SYSCALLS_I386(SC_CASE_) }
	return SC_NONE;
}

static __always_inline __u32 sc_arm64(long nr)
{
	switch (nr) { SYSCALLS_ARM64(SC_CASE_) }
	return SC_NONE;
}

static __always_inline __u32 sc_arm32(long nr)
{
	switch (nr) { SYSCALLS_ARM32(SC_CASE_) }
	return SC_NONE;
}

/* socketcall(2) calls (include/uapi/linux/net.h) → internal code; SC_NONE
 * for the rest. */
#define SOCKETCALLS(X) \
	X(1, socket, SC_SOCKET) \
	X(3, connect, SC_CONNECT) \
	X(9, send, SC_SEND) \
	X(10, recv, SC_RECV) \
	X(11, sendto, SC_SENDTO) \
	X(12, recvfrom, SC_RECVFROM) \
	X(16, sendmsg, SC_SENDMSG) \
	X(17, recvmsg, SC_RECVMSG) \
	X(19, recvmmsg, SC_RECVMMSG) \
	X(20, sendmmsg, SC_SENDMMSG)

static __always_inline __u32 sc_socketcall(__u32 call)
{
	switch (call) { SOCKETCALLS(SC_CASE_) }
	return SC_NONE;
}

#endif
