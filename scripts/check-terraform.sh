#!/usr/bin/env bash
# Checks terraform/ without a Terraform binary (none is available from the package registries
# CI can reach):
#   1. parse every .tf file with python-hcl2, a second HCL parser independent of the Rust one
#      used by `falaj residency check`;
#   2. flag formatting drift that `terraform fmt` would fix and that we can see without it:
#      tabs, trailing whitespace, CRLF line ends, a missing final newline;
#   3. run checkov with .checkov.yaml (the one list of skipped checks, each with its reason).
# Installs its tools into target/check-terraform/venv (git-ignored). Exits non-zero on any
# failure and prints a summary.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
tf_dir=${1:-terraform}
venv=${CHECK_TERRAFORM_VENV:-$root/target/check-terraform/venv}
checkov_version=${CHECKOV_VERSION:-3.3.*}
hcl2_version=${PYTHON_HCL2_VERSION:-8.*}

if [ ! -x "$venv/bin/checkov" ] || ! "$venv/bin/python" -c 'import hcl2' 2>/dev/null; then
  echo "==> installing checkov and python-hcl2 into $venv"
  python3 -m venv "$venv" || { echo "FAIL: cannot create a virtualenv (need python3 with venv)"; exit 2; }
  "$venv/bin/pip" install --quiet --upgrade pip >/dev/null
  "$venv/bin/pip" install --quiet "checkov==$checkov_version" "python-hcl2==$hcl2_version" \
    || { echo "FAIL: pip install checkov python-hcl2"; exit 2; }
fi

declare -A result
failed=0

echo "==> parse: every .tf file under $tf_dir with python-hcl2"
if "$venv/bin/python" - "$tf_dir" <<'PY'
import pathlib, sys
import hcl2

root = pathlib.Path(sys.argv[1])
files = sorted(p for p in root.rglob("*.tf") if not any(part.startswith(".") for part in p.parts))
bad = 0
for path in files:
    try:
        with path.open() as f:
            hcl2.load(f)
    except Exception as e:  # lark raises several types; all mean "not valid HCL"
        bad += 1
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"  {path}: {first}")
print(f"  {len(files)} files, {bad} unparsable")
sys.exit(1 if bad or not files else 0)
PY
then result[parse]=ok; else result[parse]=FAIL; failed=1; fi

echo "==> format: tabs, trailing whitespace, CRLF, final newline"
fmt_bad=0
while IFS= read -r -d '' f; do
  if grep -nP '\t| +$|\r$' "$f" | sed "s#^#  $f:#"; then fmt_bad=1; fi
  if [ -s "$f" ] && [ "$(tail -c1 "$f" | od -An -c | tr -d ' ')" != '\n' ]; then
    echo "  $f: no newline at end of file"; fmt_bad=1
  fi
done < <(find "$tf_dir" -name '*.tf' -not -path '*/.*' -print0)
if [ $fmt_bad -eq 0 ]; then result[format]=ok; else result[format]=FAIL; failed=1; fi

echo "==> checkov (config: .checkov.yaml)"
if "$venv/bin/checkov" --config-file .checkov.yaml -d "$tf_dir"; then
  result[checkov]=ok
else
  result[checkov]=FAIL; failed=1
fi

echo
echo "summary for $tf_dir:"
for step in parse format checkov; do
  printf '  %-8s %s\n' "$step" "${result[$step]}"
done
if [ $failed -ne 0 ]; then
  echo "check-terraform: FAILED"
  exit 1
fi
echo "check-terraform: passed"
