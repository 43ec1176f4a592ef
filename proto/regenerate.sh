#!/usr/bin/env bash
# Regenerate the Python modules (proto/*_pb2.py, proto/*_pb2.pyi) from proto/*.proto.
#
# Usage: bash proto/regenerate.sh [OUT]
#   Without OUT the modules in proto/ are replaced (stale ones of deleted .proto
#   files removed). With OUT they are written to OUT/proto/ instead, which is how
#   tests/proto/test_generated_is_fresh.py compares them with the committed ones.
#   PYTHON picks the interpreter whose grpcio-tools runs protoc (default python3).
#
# protoc comes from grpcio-tools, pinned exactly in pyproject.toml: another protoc
# writes other bytes (and a different runtime version check into each module).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
out="${1:-}"
if [ -n "$out" ]; then
  mkdir -p "$out"
  out="$(cd "$out" && pwd)"
fi

# Generate into a scratch directory first so a failing protoc leaves proto/ alone.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

cd "$root"
# Run from the root with -I . so that `import "proto/types.proto";` becomes
# `from proto import types_pb2`, an import that works inside the package.
"$python" -m grpc_tools.protoc -I . --python_out="$scratch" --pyi_out="$scratch" proto/*.proto

dest="${out:-$root}/proto"
mkdir -p "$dest"
rm -f "$dest"/*_pb2.py "$dest"/*_pb2.pyi
cp "$scratch"/proto/*_pb2.py "$scratch"/proto/*_pb2.pyi "$dest"/
