//go:build ignore

// SPDX-License-Identifier: GPL-2.0
// Included by buildtrace.bpf.c.

static __always_inline __u32 id16(__u64 v)
{
	return (v & 0xffff) == 0xffff ? (__u32)-1 : (__u32)(v & 0xffff);
}

/* a->nr is an enum sc; a->a the arguments in the call's own order, 32-bit
 * ones zero-extended (a dirfd is compared as an int). cg is the caller's
 * cgroup, st its counters. */
static __always_inline int do_file(struct sargs *a, long ret, __u64 cg, struct cg_stats *st)
{
	struct scratch *s = begin(K_FILE, cg);
	if (!s)
		return 0;
	__u32 op = 0, pos = 0;
	const void *pa = NULL, *pb = NULL;
	long da = AT_FDCWD_, db = AT_FDCWD_;
	bool rb = true;
	__u64 *x = a->a;
	switch (a->nr) {
	case SC_OPEN: op = FOP_OPEN; pa = (void *)x[0]; s->ev.a[1] = x[1]; s->ev.a[2] = x[2]; break;
	case SC_OPENAT: op = FOP_OPEN; da = x[0]; pa = (void *)x[1]; s->ev.a[1] = x[2]; s->ev.a[2] = x[3]; break;
	case SC_OPENAT2: {
		struct open_how how = {};
		bpf_probe_read_user(&how, sizeof(how), (void *)x[2]);
		op = FOP_OPEN; da = x[0]; pa = (void *)x[1]; s->ev.a[1] = how.flags; s->ev.a[2] = how.mode;
		break;
	}
	case SC_CREAT: op = FOP_OPEN; pa = (void *)x[0]; s->ev.a[1] = O_CREAT_ | O_WRONLY_ | O_TRUNC_; s->ev.a[2] = x[1]; break;
	case SC_TRUNCATE: op = FOP_TRUNCATE; pa = (void *)x[0]; break;
	case SC_FTRUNCATE: op = FOP_TRUNCATE; da = x[0]; break;
	case SC_UNLINK: op = FOP_UNLINK; pa = (void *)x[0]; break;
	case SC_UNLINKAT: op = (x[2] & AT_REMOVEDIR_) ? FOP_RMDIR : FOP_UNLINK; da = x[0]; pa = (void *)x[1]; break;
	case SC_RMDIR: op = FOP_RMDIR; pa = (void *)x[0]; break;
	case SC_RENAME: op = FOP_RENAME; pa = (void *)x[0]; pb = (void *)x[1]; break;
	case SC_RENAMEAT:
		op = FOP_RENAME; da = x[0]; pa = (void *)x[1]; db = x[2]; pb = (void *)x[3]; break;
	case SC_RENAMEAT2: /* RENAME_EXCHANGE swaps the two: both changed */
		op = (x[4] & RENAME_EXCHANGE_) ? FOP_EXCHANGE : FOP_RENAME;
		da = x[0]; pa = (void *)x[1]; db = x[2]; pb = (void *)x[3]; break;
	case SC_CHMOD: op = FOP_CHMOD; pa = (void *)x[0]; s->ev.a[2] = x[1]; s->ev.flags |= EF_HAS_MODE; break;
	case SC_FCHMOD: op = FOP_CHMOD; da = x[0]; s->ev.a[2] = x[1]; s->ev.flags |= EF_HAS_MODE; break;
	case SC_FCHMODAT: case SC_FCHMODAT2:
		op = FOP_CHMOD; da = x[0]; pa = (void *)x[1]; s->ev.a[2] = x[2]; s->ev.flags |= EF_HAS_MODE; break;
	case SC_CHOWN: case SC_LCHOWN:
		op = FOP_CHOWN; pa = (void *)x[0]; s->ev.a[3] = x[1]; s->ev.a[4] = x[2]; s->ev.flags |= EF_HAS_OWNER; break;
	case SC_FCHOWN: op = FOP_CHOWN; da = x[0]; s->ev.a[3] = x[1]; s->ev.a[4] = x[2]; s->ev.flags |= EF_HAS_OWNER; break;
	case SC_CHOWN16: case SC_LCHOWN16: /* i386: 16-bit IDs, 0xffff is -1 */
		op = FOP_CHOWN; pa = (void *)x[0]; s->ev.a[3] = id16(x[1]); s->ev.a[4] = id16(x[2]); s->ev.flags |= EF_HAS_OWNER; break;
	case SC_FCHOWN16:
		op = FOP_CHOWN; da = x[0]; s->ev.a[3] = id16(x[1]); s->ev.a[4] = id16(x[2]); s->ev.flags |= EF_HAS_OWNER; break;
	case SC_FCHOWNAT:
		op = FOP_CHOWN; da = x[0]; pa = (void *)x[1]; s->ev.a[3] = x[2]; s->ev.a[4] = x[3]; s->ev.flags |= EF_HAS_OWNER; break;
	case SC_LINK: op = FOP_LINK; pa = (void *)x[0]; pb = (void *)x[1]; break;
	case SC_LINKAT: op = FOP_LINK; da = x[0]; pa = (void *)x[1]; db = x[2]; pb = (void *)x[3]; break;
	/* symlink: Path is the new link; Target is kept as given */
	case SC_SYMLINK: op = FOP_SYMLINK; pa = (void *)x[1]; pb = (void *)x[0]; rb = false; break;
	case SC_SYMLINKAT: op = FOP_SYMLINK; da = x[1]; pa = (void *)x[2]; pb = (void *)x[0]; rb = false; break;
	case SC_MKDIR: op = FOP_MKDIR; pa = (void *)x[0]; s->ev.a[2] = x[1]; s->ev.flags |= EF_HAS_MODE; break;
	case SC_MKDIRAT: op = FOP_MKDIR; da = x[0]; pa = (void *)x[1]; s->ev.a[2] = x[2]; s->ev.flags |= EF_HAS_MODE; break;
	case SC_MKNOD: op = FOP_MKNOD; pa = (void *)x[0]; s->ev.a[2] = x[1]; s->ev.flags |= EF_HAS_MODE; break;
	case SC_MKNODAT: op = FOP_MKNOD; da = x[0]; pa = (void *)x[1]; s->ev.a[2] = x[2]; s->ev.flags |= EF_HAS_MODE; break;
	/* xattrs (security.capability grants capabilities): the name is the
	 * target, kept as given */
	case SC_SETXATTR: op = FOP_SETXATTR; pa = (void *)x[0]; pb = (void *)x[1]; rb = false; break;
	case SC_FSETXATTR: op = FOP_SETXATTR; da = x[0]; pb = (void *)x[1]; rb = false; break;
	case SC_SETXATTRAT: op = FOP_SETXATTR; da = x[0]; pa = (void *)x[1]; pb = (void *)x[3]; rb = false; break;
	case SC_REMOVEXATTR: op = FOP_REMOVEXATTR; pa = (void *)x[0]; pb = (void *)x[1]; rb = false; break;
	case SC_FREMOVEXATTR: op = FOP_REMOVEXATTR; da = x[0]; pb = (void *)x[1]; rb = false; break;
	case SC_REMOVEXATTRAT: op = FOP_REMOVEXATTR; da = x[0]; pa = (void *)x[1]; pb = (void *)x[3]; rb = false; break;
	default:
		return 0;
	}
	s->ev.a[0] = op;
	if (op == FOP_OPEN && (s->ev.a[1] & O_CREAT_))
		s->ev.flags |= EF_HAS_MODE;
	pos = append_at_path(s, pos, 0, pa, da, true);
	if (pb)
		pos = append_at_path(s, pos, 2, pb, db, rb);
	/* An open that can change the file: also the file it opened (ret is
	 * its descriptor), walked, as blob 2. The string names it as given,
	 * through any symlink, which can lead out of the layer into a cache
	 * mount that no diff shows (redteam10). A thread sharing the
	 * descriptor table can still swap the descriptor before this runs. */
	if (op == FOP_OPEN && (s->ev.a[1] & (O_WRONLY_ | O_RDWR_ | O_CREAT_ | O_TRUNC_))) {
		struct task_struct *t = bpf_get_current_task_btf();
		struct file *f = fd_file(t, ret);
		struct file *kf = f ? kcast(f, struct file) : NULL;
		/* a regular file: not a pipe, socket or device (/dev/stderr) */
		if (kf && (kf->f_inode->i_mode & S_IFMT_) == S_IFREG_) {
			pos = append_walk(s, pos, 2, kf->f_path.dentry, kf->f_path.mnt, t, 0, NULL);
			s->ev.flags |= EF_OPENED;
		}
	}
	emit(s, st, pos);
	return 0;
}

