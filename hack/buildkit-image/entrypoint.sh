#!/bin/sh
# Entrypoint of the lab's BuildKit image (Dockerfile.buildkit).
#
# On a hybrid cgroup host (v1 controllers, cgroup2 at /sys/fs/cgroup/unified)
# Docker mounts only the v1 controllers into a container. runc then puts
# build containers into v1 cgroups alone, and in the cgroup2 hierarchy, the
# one buildtraced follows, every RUN step would stay in buildkitd's own
# cgroup. Mounting cgroup2 lets runc give each container its cgroup2 cgroup
# too, below this container's (its cgroup namespace's root). A host with
# cgroup2 only needs nothing: /sys/fs/cgroup is cgroup2 already.
set -e
if [ -d /sys/fs/cgroup/memory ] && ! grep -q ' /sys/fs/cgroup/unified cgroup2 ' /proc/mounts; then
	mkdir -p /sys/fs/cgroup/unified
	mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup/unified ||
		mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified ||
		echo "buildkit-entrypoint: cannot mount cgroup2; build steps will not get cgroup2 cgroups of their own" >&2
fi
exec buildkitd "$@"
