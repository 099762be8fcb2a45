"""Runs the recipes of docs/bring-your-model.md exactly as written, as a user would.

  python3 scripts/run-doc-recipes.py FALAJ_BINARY [RECIPE ...]

Each fenced block tagged `recipe=NAME` belongs to a recipe (`python recipe=pytorch`,
`sh recipe=pytorch`, ...); `recipe=setup` blocks run first in every recipe. Each recipe runs
in a fresh folder holding breast_cancer.csv, with a fresh `dir://` store and the given falaj
on PATH: python blocks with the Python running this script, sh blocks with bash -eo pipefail.
A recipe passes when every block exits 0 and the store then holds a signed production
deployment for the model it promoted. Exits non-zero naming the first block that failed.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs/bring-your-model.md"
DATA = ROOT / "tests/fixtures/datasets/breast_cancer.csv"
BLOCK = re.compile(r"^```(\w+) recipe=([\w-]+)\n(.*?)^```", re.S | re.M)


def blocks():
    out = {}
    for lang, name, body in BLOCK.findall(DOC.read_text()):
        out.setdefault(name, []).append((lang, body))
    return out


def run(recipe, steps, falaj, work):
    env = dict(os.environ)
    env["PATH"] = f"{pathlib.Path(falaj).resolve().parent}{os.pathsep}{env['PATH']}"
    env["FALAJ_STORE"] = f"dir://{work}/store"
    env.pop("FALAJ_IDENTITY", None)
    for i, (lang, body) in enumerate(steps, 1):
        started = time.time()
        if lang == "python":
            script = work / f"step{i}.py"
            script.write_text(body)
            cmd = [sys.executable, str(script)]
        elif lang == "sh":
            cmd = ["bash", "-eo", "pipefail", "-c", body]
        else:
            raise SystemExit(f"{recipe}: block {i} is {lang}, neither python nor sh")
        r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        print(f"  {recipe} block {i} ({lang}): exit {r.returncode} in {time.time() - started:.1f} s")
        if r.returncode != 0:
            print(r.stdout[-4000:])
            print(r.stderr[-4000:])
            raise SystemExit(f"docs/bring-your-model.md: recipe {recipe}, block {i} ({lang}) failed")
    promoted = re.findall(r"promote (\S+)@\d+ --to production", "".join(b for _, b in steps))
    if not promoted:
        raise SystemExit(f"{recipe}: the recipe promotes nothing to production")
    for model in promoted:
        signed = work / "store" / "deployments" / "prod" / f"{model}.json"
        if not signed.is_file():
            raise SystemExit(f"{recipe}: no signed deployment {signed} after the recipe")
        print(f"  {recipe}: {model} is in production, signed ({signed.stat().st_size} bytes)")


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    falaj = sys.argv[1]
    all_blocks = blocks()
    setup = all_blocks.pop("setup", [])
    wanted = sys.argv[2:] or list(all_blocks)
    if not all_blocks:
        raise SystemExit(f"no `recipe=` blocks in {DOC}")
    for recipe in wanted:
        if recipe not in all_blocks:
            raise SystemExit(f"no recipe {recipe!r} in {DOC}: {', '.join(all_blocks)}")
        work = pathlib.Path(tempfile.mkdtemp(prefix=f"falaj-recipe-{recipe}-"))
        try:
            shutil.copy(DATA, work / "breast_cancer.csv")
            run(recipe, setup + all_blocks[recipe], falaj, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"recipes passed: {', '.join(wanted)}")


if __name__ == "__main__":
    main()
