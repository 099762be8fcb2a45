#!/usr/bin/env bash
# Builds every Lambda function as a `bootstrap` zip for the provided.al2023 runtime, into
# dist/lambda/<verb>.zip (x86_64) and dist/lambda/arm64/<verb>.zip, which
# terraform/modules/functions consumes (var.lambda_dist_dir, var.architecture).
#
#   scripts/package-functions.sh            # x86_64 (static musl); arm64 too if a linker exists
#   FALAJ_ARCHES="x86_64" scripts/package-functions.sh
#
# Needs: rustup (adds the musl targets), a C compiler for the musl target (Debian: musl-tools,
# for aws-lc-sys), zip or python3; for arm64 an aarch64 C compiler and linker (Debian:
# gcc-aarch64-linux-gnu). Prints each zip's size and the stripped binary size.
# Profile `lambda` (root Cargo.toml): size-optimised, tract's kernels at opt-level 3.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
verbs=${FALAJ_FUNCTIONS:-"ingest validate promote webhook drift rollout"}
arches=${FALAJ_ARCHES:-"x86_64 aarch64"}
out=dist/lambda
mkdir -p "$out"

for arch in $arches; do
  target=$arch-unknown-linux-musl
  case $arch in
    x86_64)
      if ! command -v musl-gcc >/dev/null; then
        echo "package-functions: musl-gcc not found; install it (Debian: apt-get install musl-tools)" >&2
        exit 1
      fi
      export CC_x86_64_unknown_linux_musl=musl-gcc ;;
    aarch64)
      if ! command -v aarch64-linux-musl-gcc >/dev/null && ! command -v aarch64-linux-gnu-gcc >/dev/null; then
        echo "package-functions: no aarch64 linker (aarch64-linux-musl-gcc or aarch64-linux-gnu-gcc); skipping arm64" >&2
        continue
      fi
      linker=$(command -v aarch64-linux-musl-gcc || command -v aarch64-linux-gnu-gcc)
      export CC_aarch64_unknown_linux_musl=$linker CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=$linker ;;
    *) echo "package-functions: unknown arch $arch" >&2; exit 2 ;;
  esac
  rustup target add "$target" >/dev/null
  # One cargo invocation per function: cargo unifies the dependency features of the packages
  # it builds together, so each function is built alone with exactly what its crates need
  # (only validate links falaj-gates and tract). Dependencies built with the same features
  # are shared between the invocations.
  for v in $verbs; do
    echo "building falaj-fn-$v for $target (profile lambda: opt-level s, fat LTO, static)"
    cargo build --profile lambda --locked --target "$target" -p "falaj-fn-$v"
  done
  dir=$out; [ "$arch" = aarch64 ] && dir=$out/arm64
  mkdir -p "$dir"
  for v in $verbs; do
    bin=${CARGO_TARGET_DIR:-target}/$target/lambda/falaj-fn-$v
    stage=$(mktemp -d)
    cp "$bin" "$stage/bootstrap"
    chmod 755 "$stage/bootstrap"
    zipfile=$dir/$v.zip
    rm -f "$zipfile"
    if command -v zip >/dev/null; then
      (cd "$stage" && zip -q -X "$root/$zipfile" bootstrap)
    else
      python3 - "$stage/bootstrap" "$zipfile" <<'PY'
import sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
info = zipfile.ZipInfo("bootstrap", date_time=(1980, 1, 1, 0, 0, 0))
info.external_attr = 0o100755 << 16
info.compress_type = zipfile.ZIP_DEFLATED
with zipfile.ZipFile(dst, "w") as z, open(src, "rb") as f:
    z.writestr(info, f.read())
PY
    fi
    rm -rf "$stage"
    awk -v z="$zipfile" -v b="$(stat -c %s "$bin")" -v s="$(stat -c %s "$zipfile")" \
      'BEGIN { printf "%-24s binary %6.1f MB  zip %6.1f MB\n", z, b / 1e6, s / 1e6 }'
  done
done
