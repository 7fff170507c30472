#!/usr/bin/env bash
# make examples: build every example under examples/ through the lab's buildx
# builder with the buildtrace frontend, push it to the lab registry, and
# verify it with its own policy (examples/<name>/policy.yaml), by default:
# no incomplete.allow, no cached.allow. Every example must pass except
# examples/compromised, which must fail naming the process, the destination
# and the planted file; `buildtrace diff` against node-app (the clean build
# it pretends to be) must show the new destination and file.
#
#   hack/examples.sh [NAME...]    (default: all; the lab must be up)
#
# EXAMPLES_BUILD_FLAGS adds buildx flags, e.g. --no-cache to time full builds
# (a cached step verifies too: with the tracer's evidence of its earlier run).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH=$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
eval "$("$REPO/hack/lab.sh" env)"
BT=$REPO/bin/buildtrace
KEY=$BUILDTRACE_LAB/keys/tracer.pub
ALL=(go-app c-app python-app node-app compromised)
NAMES=("${@:-${ALL[@]}}")
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
fail() { printf 'examples: FAIL: %s\n' "$*" >&2; exit 1; }
image() { echo "$BUILDTRACE_REGISTRY/examples/$1:latest"; }

# attestation_bytes IMAGE: size of the runtime-trace statement in the
# image's attestation manifest (the first platform's).
attestation_bytes() {
	local repo=${1%:*} tag=${1##*:} idx att
	repo=${repo#*/}
	idx=$(curl -fs -H 'Accept: application/vnd.oci.image.index.v1+json' "http://$BUILDTRACE_REGISTRY/v2/$repo/manifests/$tag")
	att=$(jq -r '.manifests[] | select(.annotations["vnd.docker.reference.type"] == "attestation-manifest") | .digest' <<<"$idx" | head -1)
	curl -fs -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$BUILDTRACE_REGISTRY/v2/$repo/manifests/$att" |
		jq '[.layers[] | select(.annotations["in-toto.io/predicate-type"] | startswith("https://in-toto.io/attestation/runtime-trace/")) | .size] | add'
}

# The npm token a CI job would pass; compromised steals it. A fresh random
# value each run, never printed.
NPM_TOKEN=npm_$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
export NPM_TOKEN
GO_VERSION=$(go env GOVERSION | sed 's/^go//')
summary=()
for name in "${NAMES[@]}"; do
	dir=$REPO/examples/$name
	[ -f "$dir/Dockerfile" ] || fail "no examples/$name/Dockerfile"
	ref=$(image "$name")
	say "docker buildx build --builder $BUILDTRACE_BUILDER -t $ref --push examples/$name"
	flags=${EXAMPLES_BUILD_FLAGS:-}
	# diff compares runs it observed, not cached steps: the pair it
	# compares always runs.
	case $name in node-app | compromised) flags="$flags --no-cache" ;; esac
	t0=$(date +%s.%N)
	docker buildx build --builder "$BUILDTRACE_BUILDER" --progress plain \
		--build-arg GO_VERSION="$GO_VERSION" --secret id=npm_token,env=NPM_TOKEN $flags \
		-t "$ref" --push "$dir"
	t1=$(date +%s.%N)
	say "buildtrace verify $ref --key .lab/keys/tracer.pub --policy examples/$name/policy.yaml"
	set +e
	out=$("$BT" verify "$ref" --key "$KEY" --policy "$dir/policy.yaml" 2>&1)
	rc=$?
	set -e
	t2=$(date +%s.%N)
	printf '%s\n' "$out"
	if [ "$name" = compromised ]; then
		[ "$rc" = 1 ] || fail "compromised: verify exited $rc, want 1 (policy failure)"
		for want in 127.0.0.1:8787 /usr/local/bin/colorful-logd node; do
			grep -qF -- "$want" <<<"$out" || fail "compromised: verify does not name $want"
		done
		grep -qF -- "$NPM_TOKEN" <<<"$out" && fail "compromised: verify printed the npm token"
		say "verify failed as expected: node (colorful-log's install script) sent to 127.0.0.1:8787 and planted /usr/local/bin/colorful-logd"
	else
		[ "$rc" = 0 ] || fail "$name: verify exited $rc, want 0"
	fi
	summary+=("$(printf '%-12s build %6.1fs  attestation %8s bytes  verify %5.2fs  %s' "$name" \
		"$(awk "BEGIN{print $t1 - $t0}")" "$(attestation_bytes "$ref")" "$(awk "BEGIN{print $t2 - $t1}")" \
		"$([ "$rc" = 0 ] && echo PASS || echo "FAIL (expected)")")")
done

if [[ " ${NAMES[*]} " == *" compromised "* ]]; then
	say "buildtrace diff $(image node-app) $(image compromised) --key .lab/keys/tracer.pub"
	set +e
	out=$("$BT" diff "$(image node-app)" "$(image compromised)" --key "$KEY" 2>&1)
	rc=$?
	set -e
	printf '%s\n' "$out"
	[ "$rc" = 1 ] || fail "diff exited $rc, want 1 (something new)"
	for want in 8787 /usr/local/bin/colorful-logd; do
		grep -qF -- "$want" <<<"$out" || fail "diff does not show $want"
	done
fi

say "summary"
printf '%s\n' "${summary[@]}"
