#!/usr/bin/env bash
# Prints the path of a real arm64 kernel image, Debian's current
# linux-image-cloud-arm64 (downloaded once into the cache, never installed),
# for bpf/relocate_test.go: the arm64 BPF object must relocate against that
# kernel's BTF. No arm64 machine is needed; nothing runs the kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/buildtrace
die() { echo "arm64-kernel: $*" >&2; exit 1; }

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
	dpkg --add-architecture arm64
	apt-get update -qq >&2
fi
pkg=$(apt-cache depends linux-image-cloud-arm64:arm64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
[ -n "$pkg" ] || { apt-get update -qq >&2; pkg=$(apt-cache depends linux-image-cloud-arm64:arm64 | awk '/Depends: linux-image-/ {print $2; exit}'); }
[ -n "$pkg" ] || die "apt knows no linux-image-cloud-arm64:arm64 (is arm64 in the apt sources?)"
dir=$CACHE/${pkg%:arm64}
img=$(ls "$dir"/vmlinuz-* 2>/dev/null | head -1 || true)
if [ -z "$img" ]; then
	echo "arm64-kernel: fetching $pkg from Debian" >&2
	# apt downloads as user _apt: give it a directory it can reach and write.
	deb=$(mktemp -d /tmp/buildtrace-arm64-kernel.XXXXXX)
	trap 'rm -rf "$deb"' EXIT
	chown _apt "$deb" 2>/dev/null || true
	(cd "$deb" && apt-get download -qq "$pkg") >&2 || die "cannot download $pkg"
	mkdir -p "$deb/x" "$dir"
	dpkg-deb --fsys-tarfile "$deb"/*.deb | tar -x -C "$deb/x" --wildcards './boot/vmlinuz-*'
	mv "$deb"/x/boot/vmlinuz-* "$dir/"
	img=$(ls "$dir"/vmlinuz-* | head -1)
fi
echo "$img"
