#!/usr/bin/env bash
# Builds the AssemblyScript test guest (tests/wasm/as, an htlc_accepted policy plugin) into
# a WASM plugin: target/wasm/asguest.wasm by default, or the path given. Needs Node and npm
# (the pinned assemblyscript compiler is installed locally from the npm registry).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:-$root/target/wasm/asguest.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$root/tests/wasm/as"
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
else
    npm install --no-audit --no-fund --loglevel=error
fi
mkdir -p "$(dirname "$out")"
# The incremental runtime collects garbage by itself (no host call needed); the module's
# only imports are then `fulgur.send` and `env.abort`, both provided by fulgurd.
npx --no-install asc assembly/index.ts -o "$out" --runtime incremental -O2
echo "built $out"
