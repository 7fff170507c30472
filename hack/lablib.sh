# Helpers shared by hack/lab.sh and hack/lab-dc.sh (sourced, not run). The
# sourcing script defines log and die, and LAB (the state directory).

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# detach CMD... starts a daemon in the background in its own session, with
# only the standard descriptors open: a daemon must not keep the caller's
# other files (a lock such as /work/labrun's fd 9, a pipe) open for as long
# as it runs. $! is the daemon's pid.
detach() {
	(
		for fd in $(ls /proc/$BASHPID/fd); do
			[ "$fd" -gt 2 ] && eval "exec $fd>&-"
		done
		exec setsid "$@"
	) &
}

wait_for() { # wait_for WHAT SECONDS CMD...
	local what=$1 secs=$2
	shift 2
	local i
	for ((i = 0; i < secs * 5; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	die "$what did not answer within ${secs}s (logs: $LAB/logs)"
}

# stop_pid NAME [SECONDS] stops the daemon in $LAB/NAME.pid: TERM, then KILL
# after SECONDS (default 5).
stop_pid() {
	local name=$1 f=$LAB/$1.pid ticks=$((${2:-5} * 10))
	if alive "$f"; then
		log "stopping $name"
		kill "$(cat "$f")" 2>/dev/null || true
		for _ in $(seq "$ticks"); do alive "$f" || break; sleep 0.1; done
		alive "$f" && kill -9 "$(cat "$f")" 2>/dev/null || true
	fi
	rm -f "$f"
}

# published STAMPDIR STAMP SUM REPO TAG: the image was pushed from input SUM
# (recorded in STAMPDIR/STAMP.sum) and the registry still has it.
published() {
	[ "$(cat "$1/$2.sum" 2>/dev/null)" = "$3" ] && curl -fs -o /dev/null \
		-H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json' \
		"http://$REGISTRY/v2/$4/manifests/$5"
}
