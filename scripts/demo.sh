#!/usr/bin/env bash
# The README's first command: the main job on the embedded default (dir://.falaj, no cloud
# account). Builds what `falaj demo` needs on a fresh clone — the falaj, falaj-train and
# falaj-edge binaries and the WASM inference component — then runs it:
#
#   bash scripts/demo.sh                 # train → incoming/ → ingest → gates → approvals →
#                                        # production → falaj-edge → predictions → shifted
#                                        # traffic → drift → retrain → gates
#   bash scripts/demo.sh --clean         # from an empty store
#   bash scripts/demo.sh --epochs 15     # any `falaj demo` option (see --help)
#
# Needs Rust (rustup, 1.95); everything else is built here. Re-running adds new versions.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export FALAJ_STORE=${FALAJ_STORE:-dir://.falaj}
command -v cargo >/dev/null || { echo "error: the demo needs Rust: install it with rustup (https://rustup.rs)" >&2; exit 1; }

echo "==> building falaj, falaj-train and falaj-edge (first time: about 20 minutes on 2 cores)"
# The whole workspace, as scripts/test.sh builds it: one feature set, no second build.
cargo build --quiet --workspace --bins
echo "==> building the inference component (wasm32-wasip2 + SIMD; first time: about 15 minutes)"
bash scripts/wasm-component.sh
exec "${CARGO_TARGET_DIR:-$root/target}/debug/falaj" demo "$@"
