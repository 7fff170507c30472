#!/usr/bin/env bash
# The buildtrace lab: a real BuildKit (runc, overlayfs, host network), a
# registry on 127.0.0.1:5000, a buildx builder named "buildtrace", a busybox
# base image built FROM scratch, and buildtraced — all on one machine, as
# root, offline. State and logs live under .lab/ at the repository root.
# For examples/: golang and debian base images (hack/images.sh) and loopback
# Go, Python and npm package mirrors (hack/mirrors.sh).
#
#   hack/lab.sh deps     install Debian packages the lab needs
#   hack/lab.sh tools    build (once, cached) buildkitd, buildctl, buildx
#   hack/lab.sh up       start what is not running; wait until each part answers
#   hack/lab.sh down     stop everything
#   hack/lab.sh status   say what runs
#   hack/lab.sh env      print variables for a shell (eval "$(hack/lab.sh env)")
#   hack/lab.sh push-frontend [IMAGE]
#                        push bin/buildtrace-frontend as IMAGE (default: the lab's)
#
# A second platform, linux/arm64, runs through Debian's qemu-user-static and
# binfmt_misc (see ensure_foreign_platform); the base image is an index for
# linux/amd64 and linux/arm64.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB=$REPO/.lab
: "${HOME:=/root}"
export HOME
export PATH=/usr/local/go/bin:$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/buildtrace
REGISTRY=127.0.0.1:5000
BUILDER=buildtrace
TRACER_ADDR=${BUILDTRACE_TRACER:-127.0.0.1:7390}
BASE_IMAGE=$REGISTRY/library/busybox:latest
FRONTEND_IMAGE=$REGISTRY/buildtrace/frontend:dev
SCANNER_IMAGE=$REGISTRY/buildtrace/sbom-scanner:dev
# The emulated platform: BuildKit's name, Debian's architecture, binfmt's name.
FOREIGN_PLATFORM=linux/arm64
FOREIGN_DEB_ARCH=arm64
FOREIGN_QEMU=aarch64

# A unix socket path must fit in 108 bytes; a deep checkout gets one in /run.
SOCK_DIR=$LAB/run
if [ ${#SOCK_DIR} -gt 80 ]; then
	SOCK_DIR=/run/buildtrace-lab-$(printf %s "$REPO" | sha256sum | cut -c1-12)
fi
SOCK=$SOCK_DIR/buildkitd.sock
# buildtraced's admin socket: root reads any build's trace there (tests).
TRACER_ADMIN=$SOCK_DIR/buildtraced-admin.sock
ADDR=unix://$SOCK
# Realistic base images and loopback package mirrors for examples/.
source "$REPO/hack/lablib.sh"
source "$REPO/hack/images.sh"
source "$REPO/hack/mirrors.sh"

log() { printf 'lab: %s\n' "$*" >&2; }
die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "the lab runs buildkitd and eBPF programs and needs root (uid 0), not uid $(id -u)"; }

cmd_deps() {
	need_root
	local pkgs=(runc docker-registry busybox-static clang llvm bpftool libbpf-dev iproute2 ca-certificates curl qemu-user-static
		mmdebstrap nginx python3-pip python3-setuptools python3-wheel)
	local missing=()
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "installing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# tools builds the pinned BuildKit and buildx binaries from their Go modules
# once per pin (keyed by the pin files' hash) and copies them into .lab/bin.
cmd_tools() {
	local key dir
	key=$(cat "$REPO"/hack/labtools/*/go.mod "$REPO"/hack/labtools/*/go.sum | sha256sum | cut -c1-16)
	dir=$CACHE/tools-$key
	if [ ! -x "$dir/buildkitd" ] || [ ! -x "$dir/buildctl" ] || [ ! -x "$dir/buildx" ]; then
		log "building buildkitd, buildctl and buildx from their modules (once; a few minutes)"
		mkdir -p "$dir.tmp"
		(cd "$REPO/hack/labtools/buildkit" && go build -trimpath -o "$dir.tmp/" github.com/moby/buildkit/cmd/buildkitd github.com/moby/buildkit/cmd/buildctl)
		(cd "$REPO/hack/labtools/buildx" && go build -trimpath -o "$dir.tmp/" github.com/docker/buildx/cmd/buildx)
		rm -rf "$dir" && mv "$dir.tmp" "$dir"
	fi
	mkdir -p "$LAB/bin"
	for b in buildkitd buildctl buildx; do
		cmp -s "$dir/$b" "$LAB/bin/$b" 2>/dev/null || install -m 0755 "$dir/$b" "$LAB/bin/$b"
	done
	# buildx as a docker CLI plugin, so `docker buildx` works as for any user.
	mkdir -p "$HOME/.docker/cli-plugins"
	cmp -s "$dir/buildx" "$HOME/.docker/cli-plugins/docker-buildx" 2>/dev/null ||
		install -m 0755 "$dir/buildx" "$HOME/.docker/cli-plugins/docker-buildx"
}



registry_ok() { curl -fs "http://$REGISTRY/v2/" >/dev/null; }
buildkit_ok() { "$LAB/bin/buildctl" --addr "$ADDR" debug workers >/dev/null; }
tracer_ok() { curl -fs "http://$TRACER_ADDR/v1/health" >/dev/null; }

# port_owner ADDR names the process listening on a TCP address, if any.
port_owner() {
	ss -Hltnp "sport = :${1##*:}" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2
}

# not_ours dies when another process (another checkout's lab, say) serves
# an address this lab needs: tests would silently talk to it.
not_ours() { # not_ours NAME ADDR PIDFILE
	local pid
	pid=$(port_owner "$2")
	[ -n "$pid" ] && [ "$pid" = "$(cat "$3" 2>/dev/null)" ] && return 1
	die "$2 is already served by another process (pid ${pid:-unknown}: $(tr '\0' ' ' </proc/"${pid:-0}"/cmdline 2>/dev/null)) — not this lab's $1; stop it (its lab's 'hack/lab.sh down') and run again"
}

start_registry() {
	if registry_ok; then
		not_ours registry "$REGISTRY" "$LAB/registry.pid" || return 0
	fi
	mkdir -p "$LAB/registry/data" "$LAB/logs"
	cat >"$LAB/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $LAB/registry/data
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF
	log "starting registry on $REGISTRY"
	detach /usr/bin/docker-registry serve "$LAB/registry/config.yml" >>"$LAB/logs/registry.log" 2>&1 </dev/null
	echo $! >"$LAB/registry.pid"
	wait_for registry 30 registry_ok
}

start_buildkitd() {
	local cfg
	# security.insecure is allowed so that an e2e test can run a hostile
	# RUN --security=insecure step (TestAttackInsecureStep); a build still
	# has to ask for it (--allow security.insecure).
	cfg=$(cat <<EOF
root = "$LAB/buildkit"
insecure-entitlements = ["security.insecure"]
[grpc]
  address = ["$ADDR"]
[worker.oci]
  enabled = true
  snapshotter = "overlayfs"
  binary = "runc"
  networkMode = "host"
  gc = true
  gckeepstorage = "10GB"
[worker.containerd]
  enabled = false
[registry."$REGISTRY"]
  http = true
  insecure = true
EOF
)
	# A running buildkitd is kept only when it runs this configuration.
	if alive "$LAB/buildkitd.pid" && buildkit_ok && [ "$cfg" = "$(cat "$LAB/buildkitd.toml" 2>/dev/null)" ]; then return 0; fi
	if alive "$LAB/buildkitd.pid"; then
		log "restarting buildkitd (its configuration changed, or it does not answer)"
		stop_pid buildkitd
	fi
	mkdir -p "$LAB/buildkit" "$LAB/logs" "$SOCK_DIR"
	rm -f "$SOCK"
	printf '%s\n' "$cfg" >"$LAB/buildkitd.toml"
	log "starting buildkitd at $ADDR"
	detach "$LAB/bin/buildkitd" --config "$LAB/buildkitd.toml" >>"$LAB/logs/buildkitd.log" 2>&1 </dev/null
	echo $! >"$LAB/buildkitd.pid"
	wait_for buildkitd 60 buildkit_ok
}

ensure_builder() {
	local want
	want=$(docker buildx inspect "$BUILDER" 2>/dev/null | awk '/^Endpoint:/ {print $2; exit}') || true
	if [ "$want" != "$ADDR" ]; then
		docker buildx rm "$BUILDER" >/dev/null 2>&1 || true
		log "creating buildx builder $BUILDER (remote driver, $ADDR)"
		docker buildx create --name "$BUILDER" --driver remote "$ADDR" >/dev/null
	fi
	wait_for "buildx builder $BUILDER" 30 docker buildx inspect --bootstrap "$BUILDER"
}

# push_image LOG IMAGE CONTEXT [buildctl args...] builds a Dockerfile with
# BuildKit's built-in frontend and pushes it to the lab registry.
push_image() {
	local name=$1 image=$2 ctx=$3
	shift 3
	"$LAB/bin/buildctl" --addr "$ADDR" build --frontend dockerfile.v0 \
		--local context="$ctx" --local dockerfile="$ctx" "$@" \
		--output "type=image,name=$image,push=true,registry.insecure=true" >>"$LAB/logs/$name.log" 2>&1 ||
		die "publishing $image failed (see $LAB/logs/$name.log)"
}


# The base image: Debian's static busybox and its applet links, FROM scratch,
# for linux/amd64 (the host's busybox-static) and linux/arm64 (the same
# Debian version's busybox-static:arm64, unpacked, never installed).
ensure_base() {
	local index
	index=$(curl -fs -H 'Accept: application/vnd.oci.image.index.v1+json' \
		"http://$REGISTRY/v2/library/busybox/manifests/latest" 2>/dev/null) || true
	# An earlier lab pushed a linux/amd64-only base: replace it.
	if grep -Eq "\"architecture\": ?\"$FOREIGN_DEB_ARCH\"" <<<"$index"; then
		return 0
	fi
	log "building $BASE_IMAGE (linux/amd64, $FOREIGN_PLATFORM) from Debian's busybox-static"
	local ctx=$LAB/base foreign
	foreign=$(foreign_busybox)
	rm -rf "$ctx" && mkdir -p "$ctx"
	base_rootfs "$ctx/rootfs-amd64" /bin/busybox
	base_rootfs "$ctx/rootfs-$FOREIGN_DEB_ARCH" "$foreign"
	printf 'FROM scratch\nARG TARGETARCH\nCOPY rootfs-$TARGETARCH/ /\nENV PATH=/bin\nCMD ["/bin/sh"]\n' >"$ctx/Dockerfile"
	push_image base "$BASE_IMAGE" "$ctx" --opt platform="linux/amd64,$FOREIGN_PLATFORM"
}

# base_rootfs DIR BUSYBOX lays out a root file system around one static busybox.
base_rootfs() {
	local root=$1 bb=$2 a
	mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
	cp "$bb" "$root/bin/busybox"
	# Debian builds busybox-static with one configuration for every
	# architecture, so the host's applet list is the foreign one's too.
	for a in $(/bin/busybox --list); do
		[ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
	done
	chmod 1777 "$root/tmp"
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
}

# foreign_busybox prints the path of the foreign architecture's static busybox,
# downloaded once (same Debian version as the host's) into the cache.
foreign_busybox() {
	local ver dir
	ver=$(dpkg-query -W -f='${Version}' busybox-static)
	dir=$CACHE/busybox-$FOREIGN_DEB_ARCH-$ver
	if [ ! -x "$dir/bin/busybox" ]; then
		log "fetching busybox-static:$FOREIGN_DEB_ARCH $ver from Debian"
		if ! dpkg --print-foreign-architectures | grep -qx "$FOREIGN_DEB_ARCH"; then
			dpkg --add-architecture "$FOREIGN_DEB_ARCH"
			apt-get update -qq >&2
		fi
		local deb
		# apt downloads as user _apt: give it a directory it can reach and write.
		deb=$(mktemp -d /tmp/buildtrace-busybox.XXXXXX)
		chown _apt "$deb" 2>/dev/null || true
		(cd "$deb" && apt-get download -qq "busybox-static:$FOREIGN_DEB_ARCH=$ver" ||
			{ apt-get update -qq && apt-get download -qq "busybox-static:$FOREIGN_DEB_ARCH=$ver"; }) >&2 ||
			die "cannot download busybox-static:$FOREIGN_DEB_ARCH=$ver"
		rm -rf "$dir.tmp"
		dpkg-deb -x "$deb"/*.deb "$dir.tmp"
		rm -rf "$dir" "$deb" && mkdir -p "$dir" && mv "$dir.tmp/bin" "$dir/bin" && rm -rf "$dir.tmp"
	fi
	echo "$dir/bin/busybox"
}

# ensure_foreign_platform lets runc containers run $FOREIGN_PLATFORM binaries:
# Debian's qemu-user-static registered with binfmt_misc, with the F flag so
# the kernel opens the emulator at registration and a container's root file
# system needs no copy of it. Without systemd nothing registers it at boot, so
# the lab writes the package's binfmt.d line itself. BuildKit probes emulators
# when it starts: a buildkitd started before the registration is restarted.
ensure_foreign_platform() {
	local conf=/usr/lib/binfmt.d/qemu-$FOREIGN_QEMU.conf entry=/proc/sys/fs/binfmt_misc/qemu-$FOREIGN_QEMU
	[ -f "$conf" ] || { log "no $conf (qemu-user-static): builds for $FOREIGN_PLATFORM cannot run RUN steps"; return 0; }
	if [ ! -f /proc/sys/fs/binfmt_misc/register ]; then
		mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || {
			log "cannot mount binfmt_misc: builds for $FOREIGN_PLATFORM cannot run RUN steps"
			return 0
		}
	fi
	if [ -f "$entry" ] && ! grep -q '^flags: .*F' "$entry"; then
		# Registered by someone else without F: containers would not find the emulator.
		echo -1 >"$entry"
	fi
	if [ ! -f "$entry" ]; then
		log "registering qemu-$FOREIGN_QEMU-static with binfmt_misc (flags $(awk -F: '{print $NF}' "$conf"))"
		cat "$conf" >/proc/sys/fs/binfmt_misc/register || { log "binfmt_misc registration refused"; return 0; }
	fi
	grep -qx enabled "$entry" || echo 1 >"$entry"
	if alive "$LAB/buildkitd.pid" && buildkit_ok &&
		! "$LAB/bin/buildctl" --addr "$ADDR" debug workers 2>/dev/null | grep -q "$FOREIGN_PLATFORM"; then
		log "restarting buildkitd: it started before $FOREIGN_PLATFORM could be emulated"
		stop_pid buildkitd
	fi
}

# The SBOM generator for `--attest type=sbom,generator=$SCANNER_IMAGE`
# (hack/sbom-scanner), built for the build platform; rebuilt when its source changes.
ensure_scanner() {
	local src=$REPO/hack/sbom-scanner ctx=$LAB/sbom-scanner sum
	sum=$(cat "$src"/*.go "$src/Dockerfile" | sha256sum | cut -c1-64)
	published "$LAB" sbom-scanner "$sum" buildtrace/sbom-scanner dev && return 0
	log "publishing $SCANNER_IMAGE"
	rm -rf "$ctx" && mkdir -p "$ctx"
	(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -o "$ctx/sbom-scanner" ./hack/sbom-scanner) ||
		die "building hack/sbom-scanner failed"
	cp "$src/Dockerfile" "$ctx/Dockerfile"
	push_image sbom-scanner "$SCANNER_IMAGE" "$ctx"
	echo "$sum" >"$LAB/sbom-scanner.sum"
}

ensure_keys() {
	[ -f "$LAB/keys/tracer.key" ] && return 0
	mkdir -p "$LAB/keys"
	"$REPO/bin/buildtrace" keygen --private "$LAB/keys/tracer.key" --public "$LAB/keys/tracer.pub" >/dev/null
}

# buildtraced runs when `make build` produced it; it restarts when its binary changed.
start_tracer() {
	[ -x "$REPO/bin/buildtraced" ] || { log "bin/buildtraced not built: builds are not traced"; return 0; }
	ensure_keys
	local sum
	sum=$(sha256sum "$REPO/bin/buildtraced" | cut -c1-64)
	if alive "$LAB/buildtraced.pid" && tracer_ok && [ "$(cat "$LAB/buildtraced.sum" 2>/dev/null)" = "$sum" ]; then
		return 0
	fi
	if alive "$LAB/buildtraced.pid"; then
		kill "$(cat "$LAB/buildtraced.pid")" 2>/dev/null || true
		for _ in $(seq 50); do alive "$LAB/buildtraced.pid" || break; sleep 0.1; done
	fi
	if tracer_ok; then
		not_ours buildtraced "$TRACER_ADDR" "$LAB/buildtraced.pid"
	fi
	mkdir -p "$LAB/tracer" "$LAB/logs"
	log "starting buildtraced on $TRACER_ADDR"
	mkdir -p "$SOCK_DIR"
	detach "$REPO/bin/buildtraced" --listen "$TRACER_ADDR" --admin-socket "$TRACER_ADMIN" --key "$LAB/keys/tracer.key" --state "$LAB/tracer" \
		>>"$LAB/logs/buildtraced.log" 2>&1 </dev/null
	echo $! >"$LAB/buildtraced.pid"
	echo "$sum" >"$LAB/buildtraced.sum"
	wait_for buildtraced 30 tracer_ok
}

# The frontend image, published "$LAB" when `make build` produced its binary and
# republished when the binary or Dockerfile.frontend changed.
publish_frontend() {
	[ -x "$REPO/bin/buildtrace-frontend" ] && [ -f "$REPO/Dockerfile.frontend" ] || {
		log "bin/buildtrace-frontend not built: $FRONTEND_IMAGE not published"
		return 0
	}
	local sum
	sum=$(cat "$REPO/bin/buildtrace-frontend" "$REPO/Dockerfile.frontend" | sha256sum | cut -c1-64)
	published "$LAB" frontend "$sum" buildtrace/frontend dev && return 0
	log "publishing $FRONTEND_IMAGE"
	push_frontend "$FRONTEND_IMAGE"
	echo "$sum" >"$LAB/frontend.sum"
}

# push_frontend IMAGE packages bin/buildtrace-frontend (Dockerfile.frontend,
# target local) and pushes it.
push_frontend() {
	push_image frontend "$1" "$REPO" --opt filename=Dockerfile.frontend --opt target=local
}

cmd_up() {
	need_root
	cmd_deps
	cmd_tools
	mkdir -p "$LAB/logs"
	start_registry
	ensure_foreign_platform
	start_buildkitd
	ensure_builder
	ensure_base
	ensure_images
	start_mirrors
	ensure_scanner
	start_tracer
	publish_frontend
	cmd_status
}


cmd_down() {
	# The docker-container part (hack/lab-dc.sh), when it ran: its tracer
	# container, builders, dockerd.
	[ ! -f "$LAB/dockerd.pid" ] || "$REPO/hack/lab-dc.sh" down || true
	stop_mirrors
	stop_pid buildtraced
	stop_pid buildkitd
	stop_pid registry
	rm -f "$SOCK"
	# lab-dc.sh made buildkitd's root a shared self-bind (for the tracer
	# container); with buildkitd stopped, undo it so the checkout can be removed.
	if findmnt -n --mountpoint "$LAB/buildkit" >/dev/null 2>&1; then
		umount -R "$LAB/buildkit" 2>/dev/null || log "could not unmount $LAB/buildkit (busy); umount it by hand"
	fi
}

cmd_status() {
	local s
	s() { if "$2" 2>/dev/null; then printf '%-12s up    %s\n' "$1" "$3"; else printf '%-12s down  %s\n' "$1" "$3"; fi; }
	s registry registry_ok "http://$REGISTRY"
	s buildkitd buildkit_ok "$ADDR"
	s buildtraced tracer_ok "http://$TRACER_ADDR"
	mirrors_status
}

cmd_env() {
	cat <<EOF
export BUILDTRACE_LAB=$LAB
export BUILDKIT_HOST=$ADDR
export BUILDTRACE_REGISTRY=$REGISTRY
export BUILDTRACE_BUILDER=$BUILDER
export BUILDTRACE_TRACER=$TRACER_ADDR
export BUILDTRACE_TRACER_ADMIN=$TRACER_ADMIN
export BUILDTRACE_GOLANG_IMAGE=$GOLANG_IMAGE
export BUILDTRACE_DEBIAN_IMAGE=$DEBIAN_IMAGE
export PATH=$LAB/bin:\$PATH
EOF
	mirrors_env
}

case ${1:-} in
deps) cmd_deps ;;
tools) cmd_tools ;;
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
env) cmd_env ;;
push-frontend) push_frontend "${2:-$FRONTEND_IMAGE}" && echo "published ${2:-$FRONTEND_IMAGE}" ;;
*) die "usage: $0 deps|tools|up|down|status|env|push-frontend [IMAGE]" ;;
esac
