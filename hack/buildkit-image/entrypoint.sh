#!/bin/sh
# Entrypoint of the lab's BuildKit image (Dockerfile.buildkit).
#
# 1. A cgroup namespace of its own. Docker gives one by default on cgroup2
#    hosts; on cgroup v1 and hybrid hosts a container shares the host's, and
#    runc would put build containers at the root of the cgroup hierarchy
#    while their mounts stay in this container, where nothing ties the two
#    together for a tracer on the host. In a namespace of its own, the build
#    containers' cgroups nest below this container's: /<its cgroup>/buildtrace/…
# 2. On a hybrid host (v1 controllers, cgroup2 at /sys/fs/cgroup/unified)
#    Docker mounts only the v1 controllers into a container, so runc would
#    give build containers v1 cgroups alone, and in the cgroup2 hierarchy,
#    the one buildtraced follows, every RUN step would stay in buildkitd's
#    own cgroup. Mounting cgroup2 lets runc give each its own there too. A
#    cgroup2-only host needs neither.
set -e
if [ -z "$BUILDKIT_ENTRYPOINT_CGROUPNS" ] && ! grep -qx '0::/' /proc/self/cgroup; then
	export BUILDKIT_ENTRYPOINT_CGROUPNS=1
	exec /usr/bin/unshare --cgroup "$0" "$@"
fi
unset BUILDKIT_ENTRYPOINT_CGROUPNS
if [ -d /sys/fs/cgroup/memory ] && ! grep -q ' /sys/fs/cgroup/unified cgroup2 ' /proc/mounts; then
	mkdir -p /sys/fs/cgroup/unified
	mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified ||
		echo "buildkit-entrypoint: cannot mount cgroup2; build steps will not get cgroup2 cgroups of their own" >&2
fi
exec buildkitd "$@"
