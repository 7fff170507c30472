#!/usr/bin/env bash
# Fails when the committed bpf2go output differs from what `make generate`
# produces from bpf/*.c and bpf/*.h with this machine's clang: every
# architecture's object and bindings (buildtrace_{x86,arm64}_bpfel.{go,o}).
# make generate deletes the old outputs first, so a leftover file (a target
# dropped from bpf/gen.go) shows up here as "Only in" the committed tree.
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
	diff -rq "$tmp/before" bpf | head -20 || true
	echo "check-generate: bpf/ generated files are stale; run 'make generate' and commit the result" >&2
	exit 1
fi
echo "check-generate: bpf2go output is fresh"
