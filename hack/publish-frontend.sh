#!/usr/bin/env bash
# Build the frontend binary and publish it as the lab's frontend image
# (127.0.0.1:5000/buildtrace/frontend:dev unless FRONTEND_IMAGE says otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
CGO_ENABLED=0 go build -trimpath -o bin/buildtrace-frontend ./cmd/buildtrace-frontend
exec hack/lab.sh push-frontend ${FRONTEND_IMAGE:+"$FRONTEND_IMAGE"}
