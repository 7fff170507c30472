# hack/images.sh — realistic base images for the lab, built offline and
# pushed to the lab registry like the busybox one. Sourced by hack/lab.sh
# (it uses lab.sh's REGISTRY, LAB, CACHE, push_image, published, log, die).
#
#   127.0.0.1:5000/library/golang:<go version>  busybox + this machine's
#       /usr/local/go (linux/amd64 only: the toolchain is the host's).
#   127.0.0.1:5000/library/debian:bookworm      a Debian root file system made
#       by Debian's mmdebstrap from this machine's apt sources, with the
#       packages in DEBIAN_PACKAGES (linux/amd64 only).
#
# The Debian tarball is cached under $CACHE, keyed by the package list and
# the apt sources, so only the first run on a machine downloads packages.

GO_VERSION=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
GOLANG_IMAGE=$REGISTRY/library/golang:$GO_VERSION
DEBIAN_IMAGE=$REGISTRY/library/debian:bookworm
DEBIAN_PACKAGES=build-essential,python3,python3-pip,nodejs,npm,git,curl,ca-certificates
DEBIAN_SOURCES=/etc/apt/sources.list.d/debian.sources

ensure_images() {
	ensure_golang
	ensure_debian
}

# ensure_golang: no copy of the 250 MB toolchain; the build context is
# /usr/local/go itself and the Dockerfile's own .dockerignore drops tests
# and documentation.
ensure_golang() {
	local ctx=$LAB/images/golang sum goroot
	goroot=$(go env GOROOT)
	[ -n "$GO_VERSION" ] && [ -x "$goroot/bin/go" ] || die "no Go toolchain (go env GOROOT) for $REGISTRY/library/golang"
	mkdir -p "$ctx"
	cat >"$ctx/Dockerfile" <<EOF
FROM $BASE_IMAGE
COPY . /usr/local/go
# GOTOOLCHAIN=local: a go.mod asking for a newer Go must not download one.
ENV PATH=/usr/local/go/bin:/bin GOPATH=/go GOTOOLCHAIN=local CGO_ENABLED=0
WORKDIR /src
EOF
	printf 'test\napi\ndoc\nmisc\n**/testdata\n' >"$ctx/Dockerfile.dockerignore"
	sum=$( (cat "$ctx/Dockerfile" "$ctx/Dockerfile.dockerignore"; echo "$GO_VERSION $goroot") | sha256sum | cut -c1-64)
	published "$LAB" golang "$sum" library/golang "$GO_VERSION" && return 0
	log "publishing $GOLANG_IMAGE (busybox + $goroot, linux/amd64)"
	"$LAB/bin/buildctl" --addr "$ADDR" build --frontend dockerfile.v0 \
		--local context="$goroot" --local dockerfile="$ctx" \
		--output "type=image,name=$GOLANG_IMAGE,push=true,registry.insecure=true" >>"$LAB/logs/golang.log" 2>&1 ||
		die "publishing $GOLANG_IMAGE failed (see $LAB/logs/golang.log)"
	echo "$sum" >"$LAB/golang.sum"
}

# debian_rootfs prints the cached mmdebstrap tarball, making it first if
# needed (a few minutes on a fresh machine; apt downloads through the host's
# sources).
debian_rootfs() {
	local key tar
	[ -r "$DEBIAN_SOURCES" ] || die "no $DEBIAN_SOURCES: mmdebstrap takes this machine's apt sources from it"
	key=$( (echo "bookworm $DEBIAN_PACKAGES"; cat "$DEBIAN_SOURCES") | sha256sum | cut -c1-16)
	tar=$CACHE/debian-bookworm-$key.tar
	if [ ! -s "$tar" ]; then
		command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed (hack/lab.sh deps)"
		mkdir -p "$CACHE"
		log "making a Debian bookworm root file system with mmdebstrap ($DEBIAN_PACKAGES; once, a few minutes)"
		local t0=$SECONDS
		# Documentation and translations are dropped, as Debian's own
		# container images do; apt's lists are cleaned by mmdebstrap.
		mmdebstrap --variant=apt --mode=root --format=tar \
			--include="$DEBIAN_PACKAGES" \
			--aptopt='Acquire::Languages "none"' \
			--dpkgopt='path-exclude=/usr/share/man/*' \
			--dpkgopt='path-exclude=/usr/share/doc/*' \
			--dpkgopt='path-include=/usr/share/doc/*/copyright' \
			--dpkgopt='path-exclude=/usr/share/locale/*' \
			--dpkgopt='path-exclude=/usr/share/info/*' \
			bookworm "$tar.tmp" "$DEBIAN_SOURCES" >>"$LAB/logs/mmdebstrap.log" 2>&1 ||
			die "mmdebstrap failed (see $LAB/logs/mmdebstrap.log)"
		mv "$tar.tmp" "$tar"
		log "mmdebstrap took $((SECONDS - t0))s ($(du -h "$tar" | cut -f1))"
	fi
	echo "$tar"
}

ensure_debian() {
	local ctx=$LAB/images/debian tar sum
	tar=$(debian_rootfs)
	sum=$(printf '%s %s\n' "$tar" "$(stat -c '%s %Y' "$tar")" | sha256sum | cut -c1-64)
	published "$LAB" debian "$sum" library/debian bookworm && return 0
	log "publishing $DEBIAN_IMAGE (linux/amd64)"
	rm -rf "$ctx" && mkdir -p "$ctx"
	# A hard link, not a copy: the context is sent to buildkitd as is.
	ln "$tar" "$ctx/rootfs.tar" 2>/dev/null || cp "$tar" "$ctx/rootfs.tar"
	printf 'FROM scratch\nADD rootfs.tar /\nENV LANG=C.UTF-8\nCMD ["bash"]\n' >"$ctx/Dockerfile"
	push_image debian "$DEBIAN_IMAGE" "$ctx"
	rm -f "$ctx/rootfs.tar"
	echo "$sum" >"$LAB/debian.sum"
}
