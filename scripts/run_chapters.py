#!/usr/bin/env python
"""Execute the book's notebook chapters with papermill at one parameter set.

    python scripts/run_chapters.py --params smoke            # all chapters -> _build/executed/smoke/
    python scripts/run_chapters.py --params paper data       # one chapter
    python scripts/run_chapters.py --params smoke -p n_samples 500 data
    python scripts/run_chapters.py --params teaching --record  # also update book/runtimes.csv
    python scripts/run_chapters.py --params smoke --jobs 2   # two chapters at a time (smoke and paper only)

Each chapter is read from book/<name>.md with jupytext and run through papermill's Python API
(`pm.execute_notebook(jupytext.read(path), out, parameters=...)`); papermill injects `scale` (and any
`-p` override) after the cell tagged `parameters`. An executed notebook is written only when the
chapter succeeds, so a failed chapter never leaves a stale or half-run copy behind.

``--jobs N`` executes N chapters at a time, each in its own process and kernel, the longest first (by
``book/runtimes.csv``), each kernel with its share of the cores as torch threads (``OMP_NUM_THREADS``, unless
set). At the smoke scale every chapter trains in its own temporary folder and at the paper
scale none trains, so they can run side by side; at the teaching scale chapters share trained runs
(``_build/runs/teaching``), so it runs them one after the other. Runtimes measured side by side are not
recorded (``--record`` needs ``--jobs 1``).
"""
from __future__ import annotations

import argparse
import ast
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from bookutil import ROOT, book, die, longest_first, notebook_chapters


def parse_value(text: str):
    """`-p` values: Python literals (ints, floats, None, True) or plain strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _execute(src: Path, dst: Path, params: str, overrides: dict, timeout: int):
    """One chapter (a module-level function, so that worker processes can run it): ``(seconds, None)`` or
    ``(None, "<ename>: <evalue>")``."""
    try:
        return book.execute_chapter(src, dst, params, overrides, cwd=src.parent, timeout=timeout), None
    except book.ChapterError as e:
        return None, f"{e.ename}: {e.evalue}"


def share_cores(jobs: int, environ=os.environ) -> str:
    """Give each of ``jobs`` kernels its share of the cores as torch threads (``OMP_NUM_THREADS``, which the
    kernels inherit; a value already set wins): kernels that each take every core spin against each other."""
    return environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chapters", nargs="*", help="chapter names (default: every notebook chapter in _toc.yml)")
    ap.add_argument("--params", default="smoke", help=f"parameter set: {', '.join(book.SCALES)}")
    ap.add_argument("--out", type=Path, help="output folder (default: _build/executed/<params>)")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="override one chapter parameter (validated by the chapter)")
    ap.add_argument("--record", action="store_true", help="store the measured runtimes in book/runtimes.csv")
    ap.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds")
    ap.add_argument("--jobs", type=int, default=1,
                    help="chapters executed at a time, each in its own process (smoke and paper scales)")
    args = ap.parse_args(argv)

    if args.params not in book.SCALES:
        die(f"unknown parameter set PARAMS={args.params!r}; choose one of {', '.join(book.SCALES)}")
    available = {p.stem: p for p in notebook_chapters()}
    names = args.chapters or list(available)
    for n in names:
        if n not in available:
            die(f"unknown chapter {n!r}; notebook chapters in _toc.yml: {', '.join(available) or 'none'}")
    if args.record and args.param:
        die("--record measures the standard parameter sets; do not combine it with -p overrides")
    if args.jobs < 1:
        die(f"--jobs must be at least 1, got {args.jobs}")
    if args.record and args.jobs > 1:
        die("--record measures each chapter alone; do not combine it with --jobs > 1")
    jobs = 1 if args.params == "teaching" else args.jobs
    if jobs < args.jobs:
        print(f"[chapters] scale 'teaching': chapters share trained runs, so they run one at a time "
              f"(--jobs {args.jobs} ignored)", flush=True)
    out_dir = args.out or ROOT / "_build" / "executed" / args.params
    overrides = {k: parse_value(v) for k, v in args.param}
    if "scale" in overrides:
        die(f"-p scale {overrides['scale']!r}: the scale is chosen with --params (one of {', '.join(book.SCALES)}), "
            f"not with -p", 2)

    total = time.perf_counter()

    def started(n: str) -> None:
        dst = out_dir / f"{n}.ipynb"
        shown = dst.relative_to(ROOT) if dst.is_relative_to(ROOT) else dst
        print(f"[chapters] {n}: executing at scale {args.params!r} -> {shown}", flush=True)

    def finished(n: str, seconds, error) -> bool:
        if error is not None:
            print(f"[chapters] {n}: FAILED\n{error}", file=sys.stderr, flush=True)
            return False
        print(f"[chapters] {n}: done in {seconds:.1f} s", flush=True)
        if args.record:
            book.record_runtime(n, args.params, seconds)
        return True

    if jobs == 1:
        for n in names:
            started(n)
            if not finished(n, *_execute(available[n], out_dir / f"{n}.ipynb", args.params, overrides, args.timeout)):
                return 1
    else:
        share_cores(jobs)
        queue, failed = longest_first(names, args.params), False
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            running = {}
            while queue or running:
                while queue and len(running) < jobs and not failed:
                    n = queue.pop(0)
                    started(n)
                    running[pool.submit(_execute, available[n], out_dir / f"{n}.ipynb", args.params, overrides,
                                        args.timeout)] = n
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    failed |= not finished(running.pop(f), *f.result())
        if failed:  # the chapters already running were left to finish; none was started after the failure
            return 1
    print(f"[chapters] all {len(names)} chapter(s) at scale {args.params!r} in {time.perf_counter() - total:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
