#!/usr/bin/env bash
# The crate map of docs/architecture.md, checked: each falaj crate depends (normal
# dependencies) only on falaj crates below it, and the binaries that must stay small link
# none of what they never call.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Lowest first. A crate may depend on any crate before it in this list, never on one after.
order=(falaj-core falaj-store falaj-runtime falaj-residency falaj falaj-gates falaj-webhook falaj-mlflow falaj-console falaj-lambda falaj-cli)
rank() { local i; for i in "${!order[@]}"; do [ "${order[$i]}" = "$1" ] && { echo "$i"; return; }; done; echo -1; }

bad=0
for c in "${order[@]}"; do
  me=$(rank "$c")
  while read -r dep _; do
    r=$(rank "$dep")
    [ "$r" -ge 0 ] || continue
    if [ "$r" -ge "$me" ]; then
      echo "error: $c depends on $dep, which is not below it (docs/architecture.md, crate map)" >&2
      bad=1
    fi
  done < <(cargo tree -q -p "$c" -e normal --depth 1 --prefix none | tail -n +2 | sort -u)
done

# What each binary must not link: the edge and the trainer need only falaj-core and
# falaj-store (the edge's tract comes only with the component's own engine, falaj-inference,
# which its host inference path runs natively); the functions that run no model link no
# tract; only the webhook function invokes other functions.
forbid() {
  local pkg=$1 pattern=$2
  if cargo tree -q -p "$pkg" -e normal --prefix none | grep -E "^($pattern) "; then
    echo "error: $pkg links the crates above, which it never calls (docs/architecture.md)" >&2
    bad=1
  fi
}
forbid falaj-edge 'falaj|falaj-gates|falaj-webhook|falaj-lambda|falaj-cli|hcl-edit|aws-sdk-lambda'
# The edge's tract: only through falaj-inference (the engine the component runs), never its own.
if cargo tree -q -p falaj-edge -e normal --depth 1 --prefix none | grep -E '^tract-'; then
  echo "error: falaj-edge depends on tract directly; its host path runs falaj-inference's engine" >&2
  bad=1
fi
forbid falaj-train 'falaj|falaj-gates|falaj-webhook|falaj-lambda|falaj-cli|tract-onnx|hcl-edit|aws-sdk-lambda'
for f in falaj-fn-ingest falaj-fn-promote falaj-fn-drift falaj-fn-webhook falaj-fn-rollout; do
  forbid "$f" 'falaj-gates|falaj-cli|tract-onnx|hcl-edit'
done
forbid falaj-fn-validate 'falaj-cli|hcl-edit'
forbid falaj 'tract-onnx|hcl-edit|aws-sdk-lambda|aws-sdk-ssm'
exit "$bad"
