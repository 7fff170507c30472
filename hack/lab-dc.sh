#!/usr/bin/env bash
# The docker-container part of the buildtrace lab (issue 13): Debian's Docker
# Engine, a BuildKit image built from the lab's pinned buildkitd/buildctl and
# the host's runc, two buildx builders of the docker-container driver, and
# buildtraced run from its image (Dockerfile.tracer) as a privileged host-PID
# container, the way deploy/kubernetes runs it. It needs the lab of
# hack/lab.sh (registry, host buildkitd to build the images, keys).
#
#   hack/lab-dc.sh up       install docker.io if missing, start dockerd, publish
#                           the images, create the builders, run the tracer
#                           container in place of the host's buildtraced
#   hack/lab-dc.sh down     stop the tracer container, the builders, dockerd and
#                           the bridge registry; `hack/lab.sh up` starts the
#                           host tracer again
#   hack/lab-dc.sh status   say what runs
#   hack/lab-dc.sh env      print variables for a shell and for test/lab
#
# LAB_DC_NO_TRACER=1 leaves the host's buildtraced in place (for looking at
# cgroups and mounts by hand).
#
# Builders (docs/deploy.md, "docker-container driver"):
#   buildtrace-dc         --driver-opt network=host: the same Dockerfiles and
#                         addresses as the remote builder
#   buildtrace-dc-bridge  docker's default bridge: the frontend reaches the
#                         tracer at the bridge gateway (build arg
#                         BUILDTRACE_TRACER=<gateway>:7390), and buildkitd pulls
#                         127.0.0.1:5000 images through a mirror on the gateway
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB=$REPO/.lab
DC=$LAB/dc
: "${HOME:=/root}"
export HOME
export PATH=/usr/local/go/bin:$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf 'lab-dc: %s\n' "$*" >&2; }
die() { printf 'lab-dc: error: %s\n' "$*" >&2; exit 1; }
source "$REPO/hack/lablib.sh"
need_root() { [ "$(id -u)" = 0 ] || die "the docker-container lab runs dockerd and eBPF programs and needs root (uid 0), not uid $(id -u)"; }

# The host lab's addresses and paths.
eval "$("$REPO/hack/lab.sh" env)"
REGISTRY=$BUILDTRACE_REGISTRY
BK_ADDR=$BUILDKIT_HOST
TRACER_PORT=${BUILDTRACE_TRACER##*:}
BUILDKIT_VERSION=$(awk '$1 == "github.com/moby/buildkit" {print $2; exit}' "$REPO/hack/labtools/buildkit/go.mod")
BUILDKIT_IMAGE=$REGISTRY/buildtrace/buildkit:$BUILDKIT_VERSION
TRACER_IMAGE=$REGISTRY/buildtrace/tracer:dev
BASE_IMAGE=$REGISTRY/library/busybox:latest
BUILDER=buildtrace-dc
BRIDGE_BUILDER=buildtrace-dc-bridge
TRACER_CONTAINER=buildtrace-tracer
DOCKER_SOCK=/var/run/docker.sock


docker_ok() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
tracer_ok() { curl -fs "http://$BUILDTRACE_TRACER/v1/health" >/dev/null; }

# The docker0 gateway address, where bridge containers reach the host.
gateway() { ip -4 -o addr show dev docker0 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}'; }

cmd_deps() {
	need_root
	dpkg-query -W -f='${Status}' docker.io 2>/dev/null | grep -q 'install ok installed' && return 0
	log "installing Debian's docker.io"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq --no-install-recommends docker.io >/dev/null 2>&1 ||
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends docker.io >/dev/null; } ||
		die "apt-get install docker.io failed"
}

# missing_caps names the capabilities the host's bounding set lacks (this
# machine kind has no CAP_SYS_RESOURCE). Docker asks runc for every
# capability for a privileged container, and runc fails with EPERM when one
# is outside the bounding set.
missing_caps() {
	local bnd last i
	bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
	last=$(cat /proc/sys/kernel/cap_last_cap)
	for ((i = 0; i <= last; i++)); do
		if (((0x$bnd >> i) & 1)); then continue; fi
		capsh --decode=$(printf '%x' $((1 << i))) | sed 's/.*=//' | tr a-z A-Z
	done
}

# runtime_wrapper writes a runc wrapper that removes the capabilities the
# host cannot grant from a bundle's config.json (or an exec's process.json)
# before runc reads it, and
# prints its path; nothing when the host can grant them all.
runtime_wrapper() {
	local caps w=$DC/runc-lab c drop=
	caps=$(missing_caps)
	[ -n "$caps" ] || return 0
	for c in $caps; do
		drop="$drop -e 's/\"$c\",//g' -e 's/,\"$c\"//g' -e 's/\"$c\"//g'"
	done
	cat >"$w.tmp" <<EOF
#!/bin/sh
# Written by hack/lab-dc.sh: this host cannot grant $(echo $caps).
prev=
for a in "\$@"; do
	case "\$prev" in
	--bundle | -b) sed -i $drop "\$a/config.json" ;;
	--process | -p) sed -i $drop "\$a" ;; # docker exec
	esac
	prev=\$a
done
exec $(command -v runc) "\$@"
EOF
	chmod 0755 "$w.tmp" && mv "$w.tmp" "$w"
	echo "$w"
}

# dockerd without its iptables rules and IP forwarding: the lab's containers
# only talk to the host (loopback or the bridge gateway), and other labs'
# network namespaces on this machine keep their forwarding as it was.
start_dockerd() {
	if docker_ok; then
		alive "$LAB/dockerd.pid" || log "using a Docker Engine this lab did not start (it stays up on down)"
		return 0
	fi
	mkdir -p "$LAB/logs" "$DC"
	local rt args=()
	rt=$(runtime_wrapper)
	if [ -n "$rt" ]; then
		log "privileged containers get no $(missing_caps | tr '\n' ' ')(outside this host's capability bounding set)"
		args=(--add-runtime "runc-lab=$rt" --default-runtime runc-lab)
	fi
	log "starting dockerd"
	detach dockerd --iptables=false --ip-forward=false --ip-masq=false \
		--pidfile "$DC/dockerd.run.pid" "${args[@]}" \
		>>"$LAB/logs/dockerd.log" 2>&1 </dev/null
	echo $! >"$LAB/dockerd.pid"
	wait_for dockerd 60 docker_ok
	wait_for "docker0 bridge" 20 gateway
}

# push_image LOG IMAGE CONTEXT [buildctl args...], as hack/lab.sh does.
push_image() {
	local name=$1 image=$2 ctx=$3
	shift 3
	buildctl --addr "$BK_ADDR" build --frontend dockerfile.v0 --local context="$ctx" "$@" \
		--output "type=image,name=$image,push=true,registry.insecure=true" >>"$LAB/logs/$name.log" 2>&1 ||
		die "publishing $image failed (see $LAB/logs/$name.log)"
}


# copy_with_libs FILE ROOT DEST copies an executable and every shared library
# ldd names for it into ROOT, libraries at their host paths.
copy_with_libs() {
	local f=$1 root=$2 dest=$3 lib
	install -D -m 0755 "$f" "$root$dest"
	for lib in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*'); do
		[ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
	done
}

# The BuildKit image: the lab's buildkitd and buildctl (linked against glibc)
# and Debian's runc (glibc, libseccomp), with their libraries, on busybox.
publish_buildkit() {
	local ctx=$DC/buildkit-image sum runc
	runc=$(command -v runc) || die "runc not installed (hack/lab.sh deps)"
	sum=$(cat "$LAB/bin/buildkitd" "$LAB/bin/buildctl" "$runc" "$(command -v unshare)" "$REPO/Dockerfile.buildkit" "$REPO/hack/buildkit-image/entrypoint.sh" | sha256sum | cut -c1-64)
	published "$DC" buildkit "$sum" buildtrace/buildkit "$BUILDKIT_VERSION" && return 0
	log "publishing $BUILDKIT_IMAGE"
	rm -rf "$ctx" && mkdir -p "$ctx/rootfs/etc/buildkit" "$ctx/rootfs/var/lib/buildkit"
	copy_with_libs "$LAB/bin/buildkitd" "$ctx/rootfs" /usr/bin/buildkitd
	copy_with_libs "$LAB/bin/buildctl" "$ctx/rootfs" /usr/bin/buildctl
	copy_with_libs "$runc" "$ctx/rootfs" /usr/bin/runc
	# util-linux's unshare: busybox's cannot make a cgroup namespace.
	copy_with_libs "$(command -v unshare)" "$ctx/rootfs" /usr/bin/unshare
	install -m 0755 "$REPO/hack/buildkit-image/entrypoint.sh" "$ctx/rootfs/usr/bin/buildkit-entrypoint"
	push_image buildkit "$BUILDKIT_IMAGE" "$ctx" --local dockerfile="$REPO" --opt filename=Dockerfile.buildkit \
		--opt build-arg:BASE="$BASE_IMAGE"
	echo "$sum" >"$DC/buildkit.sum"
}

# pull IMAGE makes dockerd's copy the registry's: docker run and buildx use
# a local image of the same name without asking the registry.
pull() {
	docker pull -q "$1" >>"$LAB/logs/dockerd-pull.log" 2>&1 || die "docker pull $1 failed (see $LAB/logs/dockerd-pull.log)"
}

# The tracer image, Dockerfile.tracer's offline target "local" around
# bin/buildtraced (static: `make build` links it without cgo).
publish_tracer() {
	local sum
	[ -x "$REPO/bin/buildtraced" ] || die "bin/buildtraced is not built (make build)"
	file -b "$REPO/bin/buildtraced" 2>/dev/null | grep -q 'statically linked' ||
		die "bin/buildtraced is not statically linked; build it with CGO_ENABLED=0 (make build does)"
	sum=$(cat "$REPO/bin/buildtraced" "$REPO/Dockerfile.tracer" | sha256sum | cut -c1-64)
	published "$DC" tracer "$sum" buildtrace/tracer dev && return 0
	log "publishing $TRACER_IMAGE"
	push_image tracer "$TRACER_IMAGE" "$REPO" --local dockerfile="$REPO" --opt filename=Dockerfile.tracer --opt target=local
	echo "$sum" >"$DC/tracer.sum"
}

# buildkitd.toml for a builder; buildx copies it into the builder's container.
write_config() { # write_config FILE BRIDGE(0|1)
	local gw
	{
		cat <<EOF
# Written by hack/lab-dc.sh. RUN steps and the frontend share buildkitd's
# network namespace (the container's): the host's with network=host, the
# container's bridge address otherwise.
[worker.oci]
  enabled = true
  snapshotter = "overlayfs"
  binary = "runc"
  networkMode = "host"
  gc = true
  gckeepstorage = "10GB"
[worker.containerd]
  enabled = false
EOF
		if [ "$2" = 1 ]; then
			gw=$(gateway)
			cat <<EOF
# On the bridge, 127.0.0.1:5000 is the container's own loopback: pulls of
# $REGISTRY images (the frontend, the base) go to the registry's second
# listener on the bridge gateway. Pushes name that address themselves.
[registry."$REGISTRY"]
  mirrors = ["$gw:${REGISTRY##*:}"]
  http = true
  insecure = true
[registry."$gw:${REGISTRY##*:}"]
  http = true
  insecure = true
EOF
		else
			cat <<EOF
[registry."$REGISTRY"]
  http = true
  insecure = true
EOF
		fi
	} >"$1"
}

builder_ok() { timeout 60 docker buildx inspect --bootstrap "$1" >/dev/null 2>&1; }

# ensure_builder NAME BRIDGE(0|1) creates the builder when its image or
# configuration changed, and starts it.
ensure_builder() {
	local name=$1 bridge=$2 cfg=$DC/$1.toml sum opts
	write_config "$cfg" "$bridge"
	sum=$(cat "$cfg" "$DC/buildkit.sum" <(docker image inspect -f '{{.Id}}' "$BUILDKIT_IMAGE" 2>/dev/null) | sha256sum | cut -c1-64)
	if [ "$(cat "$DC/$name.sum" 2>/dev/null)" != "$sum" ] || ! docker buildx inspect "$name" >/dev/null 2>&1; then
		docker buildx rm -f "$name" >/dev/null 2>&1 || true
		opts=image=$BUILDKIT_IMAGE
		[ "$bridge" = 1 ] || opts=$opts,network=host
		log "creating buildx builder $name (docker-container driver, $opts)"
		docker buildx create --name "$name" --driver docker-container --driver-opt "$opts" \
			--buildkitd-config "$cfg" >/dev/null
		echo "$sum" >"$DC/$name.sum"
	fi
	wait_for "buildx builder $name" 120 builder_ok "$name"
}

# A second listener of the lab's registry, on the bridge gateway, over the
# same storage: bridge builders pull and push there.
start_bridge_registry() {
	local gw cfg=$DC/registry-bridge.yml
	gw=$(gateway)
	if alive "$LAB/registry-bridge.pid" && curl -fs "http://$gw:${REGISTRY##*:}/v2/" >/dev/null; then return 0; fi
	[ -f "$LAB/registry/config.yml" ] || die "no $LAB/registry/config.yml: bring the lab up first (hack/lab.sh up)"
	sed "s|^  addr: .*|  addr: $gw:${REGISTRY##*:}|" "$LAB/registry/config.yml" >"$cfg"
	log "starting a registry listener on $gw:${REGISTRY##*:} (bridge builders)"
	detach /usr/bin/docker-registry serve "$cfg" >>"$LAB/logs/registry-bridge.log" 2>&1 </dev/null
	echo $! >"$LAB/registry-bridge.pid"
	wait_for "bridge registry" 30 curl -fs "http://$gw:${REGISTRY##*:}/v2/"
}

tracer_running() { [ "$(docker inspect -f '{{.State.Running}}' "$TRACER_CONTAINER" 2>/dev/null)" = true ]; }

# start_tracer runs buildtraced from its image in place of the host process,
# on the same addresses and paths (key, state, admin socket), so the host
# lab's tests and tools find it where they always do. hack/lab.sh sees it
# through .lab/buildtraced.pid (the container's process) and leaves it alone
# while bin/buildtraced is unchanged.
start_tracer() {
	local sum gw pid
	sum=$(sha256sum "$REPO/bin/buildtraced" | cut -c1-64)
	gw=$(gateway)
	local image
	image=$(docker image inspect -f '{{.Id}}' "$TRACER_IMAGE")
	if tracer_running && tracer_ok && [ "$(cat "$DC/tracer-container.sum" 2>/dev/null)" = "$sum" ] &&
		[ "$(docker inspect -f '{{.Image}}' "$TRACER_CONTAINER")" = "$image" ] &&
		[ "$(cat "$LAB/buildtraced.pid" 2>/dev/null)" = "$(docker inspect -f '{{.State.Pid}}' "$TRACER_CONTAINER")" ]; then
		return 0
	fi
	docker rm -f "$TRACER_CONTAINER" >/dev/null 2>&1 || true
	# The host's buildtraced holds the port and the kernel hooks: stop it.
	if alive "$LAB/buildtraced.pid"; then
		log "stopping the host's buildtraced"
		kill "$(cat "$LAB/buildtraced.pid")" 2>/dev/null || true
		for _ in $(seq 50); do alive "$LAB/buildtraced.pid" || break; sleep 0.1; done
	fi
	tracer_ok && die "$BUILDTRACE_TRACER is still served by another process; stop it first"
	local admin_dir
	admin_dir=$(dirname "$BUILDTRACE_TRACER_ADMIN")
	# The host buildkitd's container roots must appear in the tracer's
	# mount table, as the DaemonSet's HostToContainer mount arranges: its
	# root becomes a shared mount (this host's / is private), bound into the
	# container as a slave. Left in place on down: harmless to the host lab.
	if ! findmnt -n -o PROPAGATION --mountpoint "$LAB/buildkit" 2>/dev/null | grep -q shared; then
		mkdir -p "$LAB/buildkit"
		findmnt -n --mountpoint "$LAB/buildkit" >/dev/null 2>&1 || mount --bind "$LAB/buildkit" "$LAB/buildkit"
		mount --make-shared "$LAB/buildkit"
	fi
	mkdir -p "$LAB/tracer" "$admin_dir"
	log "running buildtraced from $TRACER_IMAGE (privileged, host PID and network) on $BUILDTRACE_TRACER and $gw:$TRACER_PORT"
	# Host PID: eBPF reports host PIDs. Host network: the frontend of the
	# host-network builders connects to 127.0.0.1. Mounts as in the DaemonSet
	# (BTF, cgroups); the key read-only. The bridge listener is not loopback,
	# hence --allow-non-loopback; peer identification still refuses every
	# caller but a build's frontend.
	docker run -d --name "$TRACER_CONTAINER" --privileged --pid host --network host --uts host --cgroupns host \
		--read-only \
		-v /sys/kernel/btf:/sys/kernel/btf:ro \
		-v /sys/fs/cgroup:/sys/fs/cgroup:ro \
		-v "$LAB/keys/tracer.key:/etc/buildtrace/key/tracer.key:ro" \
		-v "$LAB/tracer:/var/lib/buildtrace" \
		-v "$admin_dir:$admin_dir" \
		--mount "type=bind,source=$LAB/buildkit,target=$LAB/buildkit,readonly,bind-propagation=rslave" \
		"$TRACER_IMAGE" \
		--key /etc/buildtrace/key/tracer.key --state /var/lib/buildtrace --admin-socket "$BUILDTRACE_TRACER_ADMIN" \
		--cgroup-root /sys/fs/cgroup/unified \
		--listen "$BUILDTRACE_TRACER" --listen "$gw:$TRACER_PORT" --allow-non-loopback >/dev/null
	pid=$(docker inspect -f '{{.State.Pid}}' "$TRACER_CONTAINER")
	echo "$pid" >"$LAB/buildtraced.pid"
	echo "$sum" >"$LAB/buildtraced.sum"
	echo "$sum" >"$DC/tracer-container.sum"
	(docker logs -f "$TRACER_CONTAINER" >>"$LAB/logs/buildtraced.log" 2>&1 &)
	wait_for "buildtraced container" 30 tracer_ok
}

cmd_up() {
	need_root
	curl -fs "http://$REGISTRY/v2/" >/dev/null || die "the lab's registry is not up (hack/lab.sh up first)"
	cmd_deps
	mkdir -p "$DC" "$LAB/logs"
	start_dockerd
	publish_buildkit
	publish_tracer
	start_bridge_registry
	pull "$BUILDKIT_IMAGE"
	pull "$TRACER_IMAGE"
	ensure_builder "$BUILDER" 0
	ensure_builder "$BRIDGE_BUILDER" 1
	[ -n "${LAB_DC_NO_TRACER:-}" ] || start_tracer
	cmd_status
}


cmd_down() {
	if docker_ok; then
		if docker inspect "$TRACER_CONTAINER" >/dev/null 2>&1; then
			log "stopping the tracer container"
			docker rm -f "$TRACER_CONTAINER" >/dev/null 2>&1 || true
			rm -f "$LAB/buildtraced.pid" "$DC/tracer-container.sum"
		fi
		docker buildx stop "$BUILDER" >/dev/null 2>&1 || true
		docker buildx stop "$BRIDGE_BUILDER" >/dev/null 2>&1 || true
	fi
	stop_pid registry-bridge 10
	stop_pid dockerd 10
}

cmd_status() {
	local s
	s() { # s NAME WHAT CMD...
		local name=$1 what=$2
		shift 2
		if "$@" 2>/dev/null; then printf '%-22s up    %s\n' "$name" "$what"; else printf '%-22s down  %s\n' "$name" "$what"; fi
	}
	s dockerd "$DOCKER_SOCK" docker_ok
	s "$TRACER_CONTAINER" "$TRACER_IMAGE" tracer_running
	s "$BUILDER" "docker-container, network=host" builder_inspect_ok "$BUILDER"
	s "$BRIDGE_BUILDER" "docker-container, bridge $(gateway)" builder_inspect_ok "$BRIDGE_BUILDER"
}
builder_inspect_ok() { docker buildx inspect "$1" 2>/dev/null | grep -q '^Status: *running'; }

cmd_env() {
	cat <<EOF
export BUILDTRACE_DC_BUILDER=$BUILDER
export BUILDTRACE_DC_BRIDGE_BUILDER=$BRIDGE_BUILDER
export BUILDTRACE_DC_GATEWAY=$(gateway)
export BUILDTRACE_DC_BUILDKIT_IMAGE=$BUILDKIT_IMAGE
export BUILDTRACE_DC_TRACER_CONTAINER=$TRACER_CONTAINER
export BUILDTRACE_DC_TRACER_IMAGE=$TRACER_IMAGE
EOF
}

case ${1:-} in
deps) cmd_deps ;;
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
env) cmd_env ;;
*) die "usage: $0 deps|up|down|status|env" ;;
esac
