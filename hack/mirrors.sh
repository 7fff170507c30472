# hack/mirrors.sh — loopback package mirrors for the lab's examples, so a
# build downloads its dependencies the way a real one does, without leaving
# the machine. Sourced by hack/lab.sh (uses REPO, LAB, CACHE, log, die,
# alive, wait_for, stop_pid, not_ours).
#
#   Go module proxy   http://127.0.0.1:5010  nginx serving a module download
#       cache ($GOMODCACHE/cache/download is the GOPROXY protocol's layout),
#       filled once by `go mod download` through this machine's Go proxy.
#   Python index      http://127.0.0.1:5011/simple/  nginx serving a PEP 503
#       tree of wheels `pip wheel` built here (PyPI is not reachable).
#   npm registry      http://127.0.0.1:5012  verdaccio, its storage filled once
#       through verdaccio from this machine's npm registry, then served with
#       no uplink.
#
# Each cache is keyed by the examples' lock files, so a changed example
# fills a new one; a filled cache is never refreshed from the network.

GOPROXY_ADDR=127.0.0.1:5010
PYPI_ADDR=127.0.0.1:5011
NPM_ADDR=127.0.0.1:5012
VERDACCIO_VERSION=6.8.0 # the last release that runs on Node 20
# Debian's python3-* packages whose modules become wheels in the index.
PYPI_DEBIAN_PACKAGES="python3-dateutil python3-idna python3-six"
# Debian's Python, with Debian's pip, setuptools and wheel (not a pyenv one).
PYTHON=/usr/bin/python3

mirror_ok() { curl -fs -o /dev/null "$1"; }
goproxy_ok() { mirror_ok "http://$GOPROXY_ADDR/github.com/google/uuid/@v/list"; }
pypi_ok() { mirror_ok "http://$PYPI_ADDR/simple/"; }
npm_ok() { mirror_ok "http://$NPM_ADDR/-/ping"; }

start_mirrors() {
	mkdir -p "$LAB/mirrors" "$LAB/logs"
	local gomod pypi
	gomod=$(fill_goproxy)
	pypi=$(fill_pypi)
	start_nginx "$gomod" "$pypi"
	start_verdaccio
}

stop_mirrors() {
	stop_pid verdaccio
	stop_pid nginx
}

mirrors_status() {
	s goproxy goproxy_ok "http://$GOPROXY_ADDR"
	s pypi pypi_ok "http://$PYPI_ADDR/simple/"
	s npm npm_ok "http://$NPM_ADDR"
}

mirrors_env() {
	cat <<EOF
export BUILDTRACE_GOPROXY=http://$GOPROXY_ADDR
export BUILDTRACE_PYPI=http://$PYPI_ADDR/simple/
export BUILDTRACE_NPM=http://$NPM_ADDR/
EOF
}

# fill_goproxy prints a module download cache holding every module the Go
# examples need, downloaded once by the machine's go command.
fill_goproxy() {
	local key dir m
	key=$(cat "$REPO"/examples/*/go.sum | sha256sum | cut -c1-16)
	dir=$CACHE/goproxy-$key
	if [ ! -f "$dir/filled" ]; then
		log "filling the Go module proxy's cache (go mod download, once)"
		rm -rf "$dir"
		for m in "$REPO"/examples/*/go.mod; do
			(cd "$(dirname "$m")" && GOMODCACHE=$dir/mod GOFLAGS=-modcacherw go mod download) >&2 ||
				die "go mod download in $(dirname "$m") failed"
		done
		touch "$dir/filled"
	fi
	echo "$dir/mod/cache/download"
}

# fill_pypi prints a PEP 503 simple/ tree. Its wheels are built here by pip:
# the examples' own packages (examples/*/packages/*), and the modules of the
# Debian packages in PYPI_DEBIAN_PACKAGES, as Debian ships them, wrapped in a
# pyproject.toml of their name and version.
fill_pypi() {
	local key dir
	key=$( (cat "$REPO"/examples/*/packages/*/pyproject.toml "$REPO"/examples/*/packages/*/*/*.py; echo "$PYPI_DEBIAN_PACKAGES"
		dpkg-query -W -f='${Version}\n' python3-setuptools python3-wheel python3-pip) 2>/dev/null | sha256sum | cut -c1-16)
	dir=$CACHE/pypi-$key
	if [ ! -f "$dir/filled" ]; then
		log "building the Python index's wheels (pip wheel, once)"
		rm -rf "$dir" && mkdir -p "$dir/wheels" "$dir/src"
		local p
		for p in $PYPI_DEBIAN_PACKAGES; do debian_wheel "$p" "$dir"; done
		for p in "$REPO"/examples/*/packages/*/; do
			$PYTHON -m pip wheel -q --no-deps --no-build-isolation --wheel-dir "$dir/wheels" "$p" >&2 ||
				die "pip wheel $p failed"
			rm -rf "$p/build" "$p"/*.egg-info
		done
		simple_index "$dir"
		touch "$dir/filled"
	fi
	echo "$dir/simple"
}

# debian_wheel PKG DIR: apt downloads PKG; its top-level modules in
# dist-packages become a wheel of the distribution's name and version.
debian_wheel() {
	local pkg=$1 dir=$2 src=$2/src/$1 info name version
	local deb
	# apt downloads as user _apt: give it a directory it can reach and write.
	deb=$(mktemp -d /tmp/buildtrace-pypi.XXXXXX)
	chown _apt "$deb" 2>/dev/null || true
	(cd "$deb" && apt-get download -qq "$pkg" || { apt-get update -qq && apt-get download -qq "$pkg"; }) >&2 ||
		die "apt-get download $pkg failed"
	mkdir -p "$src"
	dpkg-deb -x "$deb"/*.deb "$src/root"
	rm -rf "$deb"
	local dp=$src/root/usr/lib/python3/dist-packages
	info=$(ls -d "$dp"/*.egg-info "$dp"/*.dist-info 2>/dev/null | head -1) || true
	[ -n "$info" ] || die "$pkg has no egg-info or dist-info"
	local meta=$info
	[ ! -d "$info" ] || meta=$(ls "$info"/PKG-INFO "$info"/METADATA 2>/dev/null | head -1) || true
	name=$(sed -n 's/^Name: //p' "$meta" | head -1)
	version=$(sed -n 's/^Version: //p' "$meta" | head -1)
	mkdir -p "$src/proj"
	cp -r "$dp"/. "$src/proj/"
	rm -rf "$src/proj"/*-info
	local mods pkgs deps=
	# (pipefail: a pattern that matches nothing is no error here)
	mods=$(cd "$dp" && ls *.py 2>/dev/null | sed 's/\.py$//' | sed 's/.*/"&"/' | paste -sd,) || true
	pkgs=$(cd "$dp" && for d in */; do [ -f "$d/__init__.py" ] && printf '"%s", "%s.*",' "${d%/}" "${d%/}"; done | sed 's/,$//') || true
	# Its requirements as Debian's metadata states them (an egg-info's
	# requires.txt up to its first [extra] section).
	[ -f "$info/requires.txt" ] && deps=$(sed '/^\[/,$d; /^$/d; s/.*/"&"/' "$info/requires.txt" | paste -sd,) || true
	cat >"$src/proj/pyproject.toml" <<EOF
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "$name"
version = "$version"
description = "$name $version as Debian's $pkg ships it"
dependencies = [$deps]

[tool.setuptools]
py-modules = [$mods]

[tool.setuptools.packages.find]
include = [$pkgs]
EOF
	$PYTHON -m pip wheel -q --no-deps --no-build-isolation --wheel-dir "$dir/wheels" "$src/proj" >&2 ||
		die "pip wheel of $pkg's modules failed"
}

# simple_index DIR writes DIR/simple/<project>/ (PEP 503: normalized names,
# one anchor per file with its sha256) for the wheels in DIR/wheels.
simple_index() {
	local dir=$1 w base proj
	rm -rf "$dir/simple" && mkdir -p "$dir/simple"
	for w in "$dir"/wheels/*.whl; do
		base=$(basename "$w")
		proj=$(printf %s "${base%%-*}" | tr 'A-Z' 'a-z' | sed -E 's/[-_.]+/-/g')
		mkdir -p "$dir/simple/$proj"
		ln -f "$w" "$dir/simple/$proj/$base"
	done
	{
		echo '<!DOCTYPE html><html><body>'
		for proj in "$dir"/simple/*/; do
			proj=$(basename "$proj")
			printf '<a href="%s/">%s</a>\n' "$proj" "$proj"
			{
				echo '<!DOCTYPE html><html><body>'
				for w in "$dir/simple/$proj"/*.whl; do
					printf '<a href="%s#sha256=%s">%s</a>\n' "$(basename "$w")" "$(sha256sum "$w" | cut -d' ' -f1)" "$(basename "$w")"
				done
				echo '</body></html>'
			} >"$dir/simple/$proj/index.html"
		done
		echo '</body></html>'
	} >"$dir/simple/index.html"
}

# start_nginx GOMOD SIMPLE: Debian's nginx serves both static trees.
start_nginx() {
	local gomod=$1 simple=$2 conf=$LAB/mirrors/nginx.conf
	mkdir -p "$LAB/mirrors/nginx"
	cat >"$conf.new" <<EOF
# Written by hack/mirrors.sh.
user root;
worker_processes 1;
pid $LAB/mirrors/nginx/nginx.pid;
error_log $LAB/logs/nginx.log warn;
events { worker_connections 256; }
http {
	include /etc/nginx/mime.types;
	access_log $LAB/logs/nginx-access.log;
	client_body_temp_path $LAB/mirrors/nginx/body;
	proxy_temp_path $LAB/mirrors/nginx/proxy;
	fastcgi_temp_path $LAB/mirrors/nginx/fastcgi;
	uwsgi_temp_path $LAB/mirrors/nginx/uwsgi;
	scgi_temp_path $LAB/mirrors/nginx/scgi;
	# The Go module proxy protocol is plain files (list, .info, .mod, .zip).
	server {
		listen $GOPROXY_ADDR;
		root $gomod;
		types { application/zip zip; application/json info; text/plain mod list; }
		location ~ \.(lock|ziphash|partial)\$ { return 404; }
	}
	# PEP 503: /simple/<project>/ is the project's page.
	server {
		listen $PYPI_ADDR;
		root $(dirname "$simple");
		location /simple/ { index index.html; }
	}
}
EOF
	if alive "$LAB/nginx.pid" && goproxy_ok && pypi_ok && cmp -s "$conf" "$conf.new"; then
		rm -f "$conf.new"
		return 0
	fi
	stop_pid nginx
	for a in "$GOPROXY_ADDR" "$PYPI_ADDR"; do
		mirror_ok "http://$a/" || [ -z "$(port_owner "$a")" ] || not_ours nginx "$a" "$LAB/nginx.pid"
	done
	mv "$conf.new" "$conf"
	log "starting nginx: Go module proxy on $GOPROXY_ADDR, Python index on $PYPI_ADDR"
	detach /usr/sbin/nginx -p "$LAB/mirrors/nginx" -c "$conf" -g 'daemon off;' >>"$LAB/logs/nginx.log" 2>&1 </dev/null
	echo $! >"$LAB/nginx.pid"
	wait_for "nginx (Go proxy)" 30 goproxy_ok
	wait_for "nginx (Python index)" 30 pypi_ok
}

# verdaccio_bin installs verdaccio once from the npm registry with the
# machine's npm (Node 20).
verdaccio_bin() {
	local dir=$CACHE/verdaccio-$VERDACCIO_VERSION
	if [ ! -x "$dir/node_modules/.bin/verdaccio" ]; then
		# The machine's Node 20 brings npm (NodeSource's nodejs package);
		# Debian's npm package would conflict with it, so the lab never installs it.
		command -v npm >/dev/null || die "npm (with Node >= 20) is needed to install verdaccio"
		log "installing verdaccio $VERDACCIO_VERSION from the npm registry (once)"
		rm -rf "$dir.tmp"
		npm install --prefix "$dir.tmp" --no-audit --no-fund --omit=dev "verdaccio@$VERDACCIO_VERSION" >&2 ||
			die "npm install verdaccio@$VERDACCIO_VERSION failed"
		rm -rf "$dir" && mv "$dir.tmp" "$dir"
	fi
	echo "$dir/node_modules/.bin/verdaccio"
}

# verdaccio_config FILE STORAGE [UPLINK] writes a configuration; with UPLINK
# every package is proxied from it, without it only storage is served.
verdaccio_config() {
	local file=$1 storage=$2 uplink=${3:-}
	{
		cat <<EOF
# Written by hack/mirrors.sh.
storage: $storage
listen: $NPM_ADDR
web:
  enable: false
auth:
  htpasswd:
    file: $LAB/mirrors/verdaccio-htpasswd
    max_users: -1
log: { type: stdout, format: pretty, level: warn }
EOF
		if [ -n "$uplink" ]; then
			printf 'uplinks:\n  upstream:\n    url: %s\n    timeout: 60s\n' "$uplink"
		fi
		printf "packages:\n  '**':\n    access: \$all\n    publish: \$authenticated\n"
		[ -z "$uplink" ] || printf '    proxy: upstream\n'
	} >"$file"
}

run_verdaccio() { # run_verdaccio CONFIG
	detach "$(verdaccio_bin)" --config "$1" >>"$LAB/logs/verdaccio.log" 2>&1 </dev/null
	echo $! >"$LAB/verdaccio.pid"
	wait_for verdaccio 60 npm_ok
}

# start_verdaccio serves the storage for the examples' package-lock.json
# files, filling it first (npm ci through verdaccio proxying the machine's
# npm registry, with an empty npm cache so every tarball passes through).
start_verdaccio() {
	local key storage conf=$LAB/mirrors/verdaccio.yaml lock
	key=$( (cat "$REPO"/examples/*/package-lock.json; echo "$VERDACCIO_VERSION") | sha256sum | cut -c1-16)
	storage=$CACHE/npm-$key
	verdaccio_config "$conf.new" "$storage/storage"
	if alive "$LAB/verdaccio.pid" && npm_ok && cmp -s "$conf" "$conf.new"; then
		rm -f "$conf.new"
		return 0
	fi
	stop_pid verdaccio
	if npm_ok; then not_ours verdaccio "$NPM_ADDR" "$LAB/verdaccio.pid"; fi
	if [ ! -f "$storage/filled" ]; then
		local upstream tmp
		upstream=$(npm config get registry 2>/dev/null || echo https://registry.npmjs.org/)
		log "filling the npm registry's storage through verdaccio from $upstream (once)"
		rm -rf "$storage" && mkdir -p "$storage/storage"
		verdaccio_config "$LAB/mirrors/verdaccio-fill.yaml" "$storage/storage" "$upstream"
		run_verdaccio "$LAB/mirrors/verdaccio-fill.yaml"
		for lock in "$REPO"/examples/*/package-lock.json; do
			tmp=$(mktemp -d /tmp/buildtrace-npm.XXXXXX)
			cp -r "$(dirname "$lock")"/. "$tmp/"
			rm -rf "$tmp/node_modules"
			(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --cache "$tmp/.npm-cache" \
				--registry "http://$NPM_ADDR/") >&2 || { stop_pid verdaccio; die "npm ci of $lock through verdaccio failed"; }
			rm -rf "$tmp"
		done
		stop_pid verdaccio
		touch "$storage/filled"
	fi
	mv "$conf.new" "$conf"
	log "starting verdaccio (npm registry) on $NPM_ADDR"
	run_verdaccio "$conf"
}
