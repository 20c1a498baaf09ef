#!/usr/bin/env python
"""Copies of the executed chapters for NBVAL_RUNS independent nbval runs in one pytest session.

    python scripts/nbval_copies.py _build/executed/smoke 3              # prints the copies' paths
    python scripts/nbval_copies.py _build/executed/smoke 3 --students   # the last run: the student notebooks

Writes ``_build/nbval/run<i>/<chapter>.ipynb`` (i = 1..runs; the folder is emptied first) and prints their paths,
run by run, each run's chapters longest first (``book/runtimes.csv``). nbval starts a fresh kernel for every
notebook it collects and compares each copy's re-executed outputs with the stored ones, so the runs stay
independent; in one session the workers pass from one run to the next without waiting for the slowest chapter
of each run.

With ``--students`` the last run executes, for every chapter with answer checks, its student notebook instead
(``make_exercises.check_notebook``): the chapter's cells, compared with the stored outputs as in the other runs,
and after each exercise a blank answer and the reference answer, each followed by its check, whose printed
line must be "no answer yet" and then "right". That run re-executes the chapter as the others do, and it tests
the student notebooks on the way.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import make_exercises
from bookutil import ROOT, die, longest_first


def make_copies(executed: Path, runs: int, out: Path, students: bool = False) -> list[Path]:
    """The copies, written under ``out`` (emptied first); ``executed`` must hold executed chapters. With
    ``students`` the last run holds the student notebooks of the chapters that have checks."""
    notebooks = {p.stem: p for p in sorted(executed.glob("*.ipynb"))}
    if not notebooks:
        die(f"no executed chapters in {executed}; run `make chapters PARAMS=<scale>` first")
    if runs < 1:
        die(f"NBVAL_RUNS must be at least 1, got {runs}")
    scale = executed.name
    order = longest_first(list(notebooks), scale)
    shutil.rmtree(out, ignore_errors=True)
    paths = []
    for i in range(1, runs + 1):
        folder = out / f"run{i}"
        folder.mkdir(parents=True)
        for name in order:
            dst = folder / f"{name}.ipynb"
            src = ROOT / "book" / f"{name}.md"
            if students and i == runs and src.is_file():
                nb, rep = make_exercises.check_notebook(src, notebooks[name])
                if rep["checked"]:
                    make_exercises.write_atomic(dst, nb)
                    paths.append(dst)
                    continue
            paths.append(Path(shutil.copy2(notebooks[name], dst)))
    return paths


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    students = "--students" in args
    args = [a for a in args if a != "--students"]
    if len(args) != 2 or not args[1].isdigit():
        die("usage: nbval_copies.py EXECUTED_DIR RUNS [--students]", 2)
    for p in make_copies(Path(args[0]), int(args[1]), ROOT / "_build" / "nbval", students):
        print(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
