// SPDX-License-Identifier: GPL-2.0
// System call tables. sys_exit sees the number in orig_ax; its meaning
// depends on the ABI of the call: a task in an ia32 system call (int 0x80,
// sysenter) has TS_COMPAT in thread_info.status, and its number is from the
// i386 table, its arguments in bx, cx, dx, si, di, bp. Each table maps its
// numbers to one internal code (enum sc), so a number is only ever decoded
// by its own ABI's table. x32 (CONFIG_X86_X32_ABI) is off on this kernel:
// such calls fail with ENOSYS and change nothing.
#ifndef BUILDTRACE_SYSCALLS_H
#define BUILDTRACE_SYSCALLS_H

#define TS_COMPAT_ 0x0002

/* x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl) */
#define NR_read 0
#define NR_write 1
#define NR_open 2
#define NR_socket 41
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
#define NR_mknod 133
#define NR_personality 135
#define NR_setxattr 188
#define NR_lsetxattr 189
#define NR_fsetxattr 190
#define NR_removexattr 197
#define NR_lremovexattr 198
#define NR_fremovexattr 199
#define NR_openat 257
#define NR_mkdirat 258
#define NR_mknodat 259
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
#define NR_setxattrat 463
#define NR_removexattrat 466

/* socketcall(2) calls (include/uapi/linux/net.h) */
#define SYS_SOCKET_ 1
#define SYS_CONNECT_ 3
#define SYS_SEND_ 9
#define SYS_RECV_ 10
#define SYS_SENDTO_ 11
#define SYS_RECVFROM_ 12
#define SYS_SENDMSG_ 16
#define SYS_RECVMSG_ 17
#define SYS_RECVMMSG_ 19
#define SYS_SENDMMSG_ 20

/* What a call is, whatever its ABI. The *16 calls take 16-bit IDs. */
enum sc {
	SC_NONE = 0,
	SC_READ, SC_WRITE, SC_RECV, SC_SEND,
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
	SC_SOCKETCALL, /* i386 only: decoded into one of the above */
};

static __always_inline __u32 sc_x86_64(long nr)
{
	switch (nr) {
	case NR_read: return SC_READ;
	case NR_write: return SC_WRITE;
	case NR_open: return SC_OPEN;
	case NR_socket: return SC_SOCKET;
	case NR_connect: return SC_CONNECT;
	case NR_sendto: return SC_SENDTO;
	case NR_recvfrom: return SC_RECVFROM;
	case NR_sendmsg: return SC_SENDMSG;
	case NR_recvmsg: return SC_RECVMSG;
	case NR_truncate: return SC_TRUNCATE;
	case NR_ftruncate: return SC_FTRUNCATE;
	case NR_rename: return SC_RENAME;
	case NR_mkdir: return SC_MKDIR;
	case NR_rmdir: return SC_RMDIR;
	case NR_creat: return SC_CREAT;
	case NR_link: return SC_LINK;
	case NR_unlink: return SC_UNLINK;
	case NR_symlink: return SC_SYMLINK;
	case NR_chmod: return SC_CHMOD;
	case NR_fchmod: return SC_FCHMOD;
	case NR_chown: return SC_CHOWN;
	case NR_fchown: return SC_FCHOWN;
	case NR_lchown: return SC_LCHOWN;
	case NR_openat: return SC_OPENAT;
	case NR_mkdirat: return SC_MKDIRAT;
	case NR_fchownat: return SC_FCHOWNAT;
	case NR_unlinkat: return SC_UNLINKAT;
	case NR_renameat: return SC_RENAMEAT;
	case NR_linkat: return SC_LINKAT;
	case NR_symlinkat: return SC_SYMLINKAT;
	case NR_fchmodat: return SC_FCHMODAT;
	case NR_recvmmsg: return SC_RECVMMSG;
	case NR_sendmmsg: return SC_SENDMMSG;
	case NR_renameat2: return SC_RENAMEAT2;
	case NR_openat2: return SC_OPENAT2;
	case NR_fchmodat2: return SC_FCHMODAT2;
	case NR_mknod: return SC_MKNOD;
	case NR_mknodat: return SC_MKNODAT;
	case NR_setxattr: case NR_lsetxattr: return SC_SETXATTR;
	case NR_fsetxattr: return SC_FSETXATTR;
	case NR_setxattrat: return SC_SETXATTRAT;
	case NR_removexattr: case NR_lremovexattr: return SC_REMOVEXATTR;
	case NR_fremovexattr: return SC_FREMOVEXATTR;
	case NR_removexattrat: return SC_REMOVEXATTRAT;
	}
	return SC_NONE;
}

/* i386 numbers (arch/x86/entry/syscalls/syscall_32.tbl) */
static __always_inline __u32 sc_i386(long nr)
{
	switch (nr) {
	case 3: return SC_READ;
	case 4: return SC_WRITE;
	case 5: return SC_OPEN;
	case 8: return SC_CREAT;
	case 9: return SC_LINK;
	case 10: return SC_UNLINK;
	case 15: return SC_CHMOD;
	case 16: return SC_LCHOWN16;
	case 38: return SC_RENAME;
	case 39: return SC_MKDIR;
	case 40: return SC_RMDIR;
	case 83: return SC_SYMLINK;
	case 92: return SC_TRUNCATE;
	case 93: return SC_FTRUNCATE;
	case 94: return SC_FCHMOD;
	case 95: return SC_FCHOWN16;
	case 102: return SC_SOCKETCALL;
	case 182: return SC_CHOWN16;
	case 193: return SC_TRUNCATE;  /* truncate64 */
	case 194: return SC_FTRUNCATE; /* ftruncate64 */
	case 198: return SC_LCHOWN;    /* lchown32 */
	case 207: return SC_FCHOWN;    /* fchown32 */
	case 212: return SC_CHOWN;     /* chown32 */
	case 295: return SC_OPENAT;
	case 296: return SC_MKDIRAT;
	case 298: return SC_FCHOWNAT;
	case 301: return SC_UNLINKAT;
	case 302: return SC_RENAMEAT;
	case 303: return SC_LINKAT;
	case 304: return SC_SYMLINKAT;
	case 306: return SC_FCHMODAT;
	case 337: return SC_RECVMMSG;
	case 345: return SC_SENDMMSG;
	case 353: return SC_RENAMEAT2;
	case 359: return SC_SOCKET;
	case 362: return SC_CONNECT;
	case 369: return SC_SENDTO;
	case 370: return SC_SENDMSG;
	case 371: return SC_RECVFROM;
	case 372: return SC_RECVMSG;
	case 417: return SC_RECVMMSG;  /* recvmmsg_time64 */
	case 437: return SC_OPENAT2;
	case 452: return SC_FCHMODAT2;
	case 14: return SC_MKNOD;
	case 297: return SC_MKNODAT;
	case 226: case 227: return SC_SETXATTR; /* setxattr, lsetxattr */
	case 228: return SC_FSETXATTR;
	case 463: return SC_SETXATTRAT;
	case 235: case 236: return SC_REMOVEXATTR; /* removexattr, lremovexattr */
	case 237: return SC_FREMOVEXATTR;
	case 466: return SC_REMOVEXATTRAT;
	}
	return SC_NONE;
}

/* socketcall's call number → internal code; SC_NONE for the rest. */
static __always_inline __u32 sc_socketcall(__u32 call)
{
	switch (call) {
	case SYS_SOCKET_: return SC_SOCKET;
	case SYS_CONNECT_: return SC_CONNECT;
	case SYS_SEND_: return SC_SEND;
	case SYS_RECV_: return SC_RECV;
	case SYS_SENDTO_: return SC_SENDTO;
	case SYS_RECVFROM_: return SC_RECVFROM;
	case SYS_SENDMSG_: return SC_SENDMSG;
	case SYS_RECVMSG_: return SC_RECVMSG;
	case SYS_RECVMMSG_: return SC_RECVMMSG;
	case SYS_SENDMMSG_: return SC_SENDMMSG;
	}
	return SC_NONE;
}

#endif
