#!/usr/bin/env bash
# make demo: build examples/hello through the lab's buildx builder, push it
# to the lab registry, and show what came out.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
eval "$("$REPO/hack/lab.sh" env)"
IMAGE=$BUILDTRACE_REGISTRY/examples/hello:latest
say() { printf '\n==> %s\n' "$*"; }

say "docker buildx build --builder $BUILDTRACE_BUILDER --attest type=provenance,mode=max -t $IMAGE --push examples/hello"
docker buildx build --builder "$BUILDTRACE_BUILDER" --progress plain \
	--attest type=provenance,mode=max -t "$IMAGE" --push "$REPO/examples/hello"

say "docker buildx imagetools inspect $IMAGE"
docker buildx imagetools inspect --builder "$BUILDTRACE_BUILDER" "$IMAGE"

if ! head -1 "$REPO/examples/hello/Dockerfile" | grep -q '^# syntax=.*buildtrace/frontend'; then
	say "NOT TRACED: examples/hello does not use the buildtrace frontend yet, so this build was not monitored."
	exit 0
fi
