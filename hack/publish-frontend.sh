#!/usr/bin/env bash
# Build the frontend binary and publish it as the lab's frontend image
# (127.0.0.1:5000/buildtrace/frontend:dev unless FRONTEND_IMAGE says otherwise).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
eval "$(hack/lab.sh env)"
IMAGE=${FRONTEND_IMAGE:-$BUILDTRACE_REGISTRY/buildtrace/frontend:dev}
CGO_ENABLED=0 go build -trimpath -o bin/buildtrace-frontend ./cmd/buildtrace-frontend
"$BUILDTRACE_LAB/bin/buildctl" --addr "$BUILDKIT_HOST" build --frontend dockerfile.v0 \
	--local context="$REPO" --local dockerfile="$REPO" \
	--opt filename=Dockerfile.frontend --opt target=local \
	--output "type=image,name=$IMAGE,push=true,registry.insecure=true"
echo "published $IMAGE"
