#!/usr/bin/env bash
# Fails when the committed bpf2go output differs from what `make generate`
# produces from bpf/*.c with this machine's clang.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls bpf/*.c >/dev/null 2>&1; then
	echo "check-generate: no BPF sources yet"
	exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -a bpf "$tmp/before"
make -s generate
if ! diff -r "$tmp/before" bpf >/dev/null; then
	diff -r "$tmp/before" bpf | head -20 || true
	echo "check-generate: bpf/ generated files are stale; run 'make generate' and commit the result" >&2
	exit 1
fi
echo "check-generate: bpf2go output is fresh"
