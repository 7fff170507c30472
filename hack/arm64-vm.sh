#!/usr/bin/env bash
# Runs tracer/probe's tests (they load the arm64 BPF object and trace real
# processes) on a real arm64 kernel, Debian's linux-image-cloud-arm64, booted
# in QEMU's emulated arm64 machine (TCG: no arm64 hardware or KVM needed;
# slow, so timing tests may fail). The machine is an initramfs with Debian's
# busybox-static:arm64, the test binary and a 32-bit arm helper
# (TestArm32Calls: the arm32 EABI table). Nothing of the host is shared.
#
#   hack/arm64-vm.sh [go test -run regexp]
#
# Needs qemu-system-arm and cpio (installed when missing); about 2 minutes.
# ARM64_VM_KERNEL overrides the kernel image.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/buildtrace
die() { echo "arm64-vm: $*" >&2; exit 1; }
run=${1:-.}

need=()
command -v qemu-system-aarch64 >/dev/null || need+=(qemu-system-arm)
command -v cpio >/dev/null || need+=(cpio)
if [ ${#need[@]} -gt 0 ]; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 ||
		die "cannot install ${need[*]}"
fi
kernel=${ARM64_VM_KERNEL:-$(hack/arm64-kernel.sh)}

# busybox-static:arm64 of the host's Debian version, unpacked, never installed.
ver=$(apt-cache policy busybox-static:arm64 | awk '/Candidate:/ {print $2}')
[ -n "$ver" ] && [ "$ver" != "(none)" ] || die "apt knows no busybox-static:arm64"
bb=$CACHE/busybox-arm64-$ver/bin/busybox
if [ ! -x "$bb" ]; then
	deb=$(mktemp -d /tmp/buildtrace-busybox.XXXXXX)
	chown _apt "$deb" 2>/dev/null || true
	(cd "$deb" && apt-get download -qq "busybox-static:arm64=$ver") >&2 || die "cannot download busybox-static:arm64=$ver"
	mkdir -p "$deb/x" && dpkg-deb -x "$deb"/*.deb "$deb/x"
	mkdir -p "$(dirname "$bb")" && mv "$deb/x/bin/busybox" "$bb" && rm -rf "$deb"
fi

work=$(mktemp -d /tmp/buildtrace-arm64-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,etc,proc,sys,dev,tmp,root}
cp "$bb" "$root/bin/busybox"
echo arm64vm >"$root/etc/hostname"
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
echo '127.0.0.1 localhost' >"$root/etc/hosts"
GOARCH=arm64 CGO_ENABLED=0 go test -c -o "$root/probe.test" ./tracer/probe/
GOARCH=arm GOARM=7 CGO_ENABLED=0 go build -o "$root/arm32" ./tracer/probe/testdata/arm32
cat >"$root/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs cgroup /sys/fs/cgroup
mkdir -p /sys/fs/cgroup/unified /sys/fs/cgroup/pids
mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
mount -t cgroup -o pids pids /sys/fs/cgroup/pids
ip link set lo up
hostname arm64vm
echo "arm64-vm: \$(cat /proc/version)"
cd /tmp
CI=true BUILDTRACE_ARM32_HELPER=/arm32 /probe.test -test.v -test.count=1 -test.timeout 20m -test.run '$run'
echo "arm64-vm: go test exit \$?"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$work/initrd.gz"

log=$work/console.log
echo "arm64-vm: booting $(basename "$kernel") (console: $log)" >&2
timeout 1800 qemu-system-aarch64 -M virt -cpu max -m 1536 -smp 1 -nic none -nographic -no-reboot \
	-kernel "$kernel" -initrd "$work/initrd.gz" -append "console=ttyAMA0 rdinit=/init quiet" | tee "$log"
rc=$(sed -n 's/^arm64-vm: go test exit \([0-9]*\).*/\1/p' "$log" | tail -1)
[ -n "$rc" ] || die "the machine stopped before the tests finished"
exit "$rc"
