//go:build ignore

// SPDX-License-Identifier: GPL-2.0
// Included by buildtrace.bpf.c.

/* ---- cgroups ---- */

/* Cgroups created in a buildtrace step's tree, for a reader that acts on
 * them at once: a container's overlay root is mounted only while it runs,
 * and the main ring can be seconds behind when another step is busy. */
struct ctl_event {
	__u64 cgroup_id;
	char path[256];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} ctl SEC(".maps");

/* kernfs_node's parent before Linux 6.15 renamed it __parent. */
struct kernfs_node___old {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

static __always_inline struct kernfs_node *kn_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(kn->__parent))
		return BPF_CORE_READ(kn, __parent);
	return BPF_CORE_READ((struct kernfs_node___old *)kn, parent);
}

/* A cgroup directory made by root: kernfs keeps no attributes for a node
 * owned by root:root, and records the owner of any other (a cgroup a user
 * made in a subtree delegated to them). */
static __always_inline bool root_owned(struct kernfs_node *kn)
{
	struct kernfs_iattrs *ia = BPF_CORE_READ(kn, iattr);
	return !ia || BPF_CORE_READ(ia, ia_uid.val) == 0;
}

/* A cgroup2 cgroup one to three levels below a directory named
 * "buildtrace", that directory and the cgroup made by root:
 * /buildtrace/<step>[/buildkit[/<id>]] at the root of the hierarchy (a
 * buildkitd on the host), or the same below a container's cgroup
 * (/docker/<id>/buildtrace/…: a buildkitd in a container with a cgroup
 * namespace of its own). Go decides what each one is (pkg/steptag). */
static __always_inline bool ours(struct cgroup *cgrp)
{
	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0) /* cgroup2 only */
		return false;
	struct kernfs_node *kn = BPF_CORE_READ(cgrp, kn);
	if (!kn || !root_owned(kn))
		return false;
	const char want[] = "buildtrace";
#pragma unroll
	for (int up = 0; up < 3; up++) {
		kn = kn_parent(kn);
		if (!kn)
			return false;
		char name[sizeof(want)];
		const char *n = BPF_CORE_READ(kn, name);
		if (bpf_probe_read_kernel_str(name, sizeof(name), n) != sizeof(want))
			continue;
		bool eq = true;
#pragma unroll
		for (int i = 0; i < sizeof(want); i++)
			if (name[i] != want[i])
				eq = false;
		if (eq)
			return root_owned(kn);
	}
	return false;
}

/* A process of a tracked cgroup moved to another cgroup2 cgroup (by
 * itself or by whoever could write that cgroup's cgroup.procs, e.g. through
 * a descriptor of the host's hierarchy): from then on no hook follows it,
 * so its step is incomplete. */
SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(cgroup_attach_task, struct cgroup *dst, const char *path, struct task_struct *task, bool threadgroup)
{
	if (BPF_CORE_READ(dst, root, hierarchy_id) != 0) /* cgroup2 only */
		return 0;
	__u32 tgid = BPF_CORE_READ(task, tgid);
	__u64 *from = bpf_map_lookup_elem(&task_step, &tgid);
	if (!from)
		return 0;
	__u64 was = *from;
	if (BPF_CORE_READ(dst, kn, id) == was)
		return 0;
	struct cg_stats *st = tracked_stats(was);
	if (st)
		stat_inc(st, escaped);
	bpf_map_delete_elem(&task_step, &tgid);
	return 0;
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	if (!ours(cgrp))
		return 0;
	__u64 id = BPF_CORE_READ(cgrp, kn, id);
	struct cg_stats zs = {};
	/* A full map must not go unnoticed: the record says so, and Go marks
	 * the container's step incomplete. Already there (Go's scan at load
	 * got there first): its counts are kept. */
	__u16 fail = 0;
	long err = bpf_map_update_elem(&tracked, &id, &zs, BPF_NOEXIST);
	if (err && err != -17 /* EEXIST */)
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
	emit(s, tracked_stats(id), append_kernel_str(s, 0, 0, path));
	return 0;
}

SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(cgroup_rmdir, struct cgroup *cgrp, const char *path)
{
	/* Every cgroup of a step's tree, tracked or not (a full tracked map),
	 * so each step the daemon opened is ended. */
	if (!ours(cgrp))
		return 0;
	__u64 id = BPF_CORE_READ(cgrp, kn, id);
	struct scratch *s = begin(K_CGROUP_RMDIR, id);
	if (!s)
		return 0;
	emit(s, tracked_stats(id), append_kernel_str(s, 0, 0, path));
	return 0;
}

