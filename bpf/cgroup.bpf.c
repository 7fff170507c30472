//go:build ignore

// SPDX-License-Identifier: GPL-2.0
// Included by buildtrace.bpf.c.

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

/* A cgroup2 cgroup under /buildtrace/. */
static __always_inline bool ours(struct cgroup *cgrp, const char *path)
{
	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0) /* cgroup2 only */
		return false;
	char pfx[12];
	if (bpf_probe_read_kernel(pfx, sizeof(pfx), path) < 0)
		return false;
	const char want[] = "/buildtrace/";
#pragma unroll
	for (int i = 0; i < 12; i++)
		if (pfx[i] != want[i])
			return false;
	return true;
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	if (!ours(cgrp, path))
		return 0;
	__u64 id = BPF_CORE_READ(cgrp, kn, id);
	__u8 one = 1;
	struct cg_stats zs = {};
	/* A full map must not go unnoticed: the record says which insert
	 * failed, and Go marks the container's step incomplete. */
	__u16 fail = 0;
	long err = bpf_map_update_elem(&stats, &id, &zs, BPF_NOEXIST);
	if (err && err != -17 /* EEXIST */)
		fail |= EF_NO_STATS;
	if (bpf_map_update_elem(&tracked, &id, &one, BPF_ANY))
		fail |= EF_UNTRACKED;
	struct ctl_event *ce = bpf_ringbuf_reserve(&ctl, sizeof(*ce), 0);
	if (ce) {
		ce->cgroup_id = id;
		bpf_probe_read_kernel_str(ce->path, sizeof(ce->path), path);
		bpf_ringbuf_submit(ce, 0);
	}
	struct scratch *s = begin(K_CGROUP_MKDIR, id);
	if (!s)
		return 0;
	s->ev.flags |= fail;
	emit(s, append_kernel_str(s, 0, 0, path));
	return 0;
}

SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(cgroup_rmdir, struct cgroup *cgrp, const char *path)
{
	/* Every cgroup under /buildtrace/, tracked or not (a full tracked map),
	 * so each step the daemon opened is ended. */
	if (!ours(cgrp, path))
		return 0;
	__u64 id = BPF_CORE_READ(cgrp, kn, id);
	struct scratch *s = begin(K_CGROUP_RMDIR, id);
	if (!s)
		return 0;
	emit(s, append_kernel_str(s, 0, 0, path));
	return 0;
}

