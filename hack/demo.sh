#!/usr/bin/env bash
# make demo: build examples/hello through the lab's buildx builder with the
# buildtrace frontend, push it to the lab registry, then show its runtime
# trace and verify it — once passing, once against a policy that flags the
# destination the example contacts.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH=$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
eval "$("$REPO/hack/lab.sh" env)"
BT=$REPO/bin/buildtrace
IMAGE=$BUILDTRACE_REGISTRY/examples/hello:latest
KEY=$BUILDTRACE_LAB/keys/tracer.pub
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "$(head -1 "$REPO/examples/hello/Dockerfile")   (first line of examples/hello/Dockerfile)"
# The first demo runs every RUN; a second one is served from BuildKit's cache
# and its attestation carries the tracer's signed record of the earlier run
# of each cached step (show prints "cached, with evidence").
say "docker buildx build --builder $BUILDTRACE_BUILDER --attest type=provenance,mode=max -t $IMAGE --push examples/hello"
docker buildx build --builder "$BUILDTRACE_BUILDER" --progress plain \
	--attest type=provenance,mode=max -t "$IMAGE" --push "$REPO/examples/hello"

say "docker buildx imagetools inspect $IMAGE   (provenance and runtime-trace sit in the index)"
docker buildx imagetools inspect --builder "$BUILDTRACE_BUILDER" "$IMAGE"

say "buildtrace show $IMAGE --key .lab/keys/tracer.pub --html .lab/hello-trace.html"
"$BT" show "$IMAGE" --key "$KEY" --html "$BUILDTRACE_LAB/hello-trace.html"
echo "(a page with the timeline, egress and file changes: $BUILDTRACE_LAB/hello-trace.html)"

say "buildtrace verify $IMAGE --key .lab/keys/tracer.pub   (expected: PASS)"
"$BT" verify "$IMAGE" --key "$KEY"

say "buildtrace verify $IMAGE --key .lab/keys/tracer.pub --policy examples/policies/flagged-egress.yaml   (expected: FAIL, the build contacted 127.0.0.1:5000)"
set +e
"$BT" verify "$IMAGE" --key "$KEY" --policy "$REPO/examples/policies/flagged-egress.yaml"
rc=$?
set -e
if [ "$rc" -ne 1 ]; then
	echo "demo: verify against the flagged-egress policy exited $rc, expected 1 (policy failure)" >&2
	exit 1
fi
say "verify failed as expected (exit 1): the policy flags the registry the build fetched from."
