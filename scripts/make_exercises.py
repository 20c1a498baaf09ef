#!/usr/bin/env python
"""Write student copies of the notebook chapters, without solutions.

    python scripts/make_exercises.py            # -> _build/exercises/<chapter>.ipynb

Cells tagged `solution` (code or markdown) are removed; everything else, including the
exercise statements, stays. The copies are unexecuted notebooks, ready to hand out.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import jupytext
import nbformat

from bookutil import ROOT, notebook_chapters

SOLUTION_TAG = "solution"


def strip_solutions(nb):
    kept = [c for c in nb.cells if SOLUTION_TAG not in c.get("metadata", {}).get("tags", [])]
    removed = len(nb.cells) - len(kept)
    nb.cells = kept
    return nb, removed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "_build" / "exercises")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for src in notebook_chapters():
        nb, removed = strip_solutions(jupytext.read(src))
        dst = args.out / f"{src.stem}.ipynb"
        nbformat.write(nb, dst)
        print(f"[exercises] {dst.relative_to(ROOT) if dst.is_relative_to(ROOT) else dst}: "
              f"{removed} solution cell(s) removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
