#!/usr/bin/env python
"""Execute the book's notebook chapters with papermill at one parameter set.

    python scripts/run_chapters.py --params smoke            # all chapters -> _build/executed/smoke/
    python scripts/run_chapters.py --params paper data       # one chapter
    python scripts/run_chapters.py --params smoke -p n_samples 500 data
    python scripts/run_chapters.py --params teaching --record  # also update book/runtimes.csv

Each chapter is read from book/<name>.md with jupytext and run through papermill's Python API
(`pm.execute_notebook(jupytext.read(path), out, parameters=...)`); papermill injects `scale` (and any
`-p` override) after the cell tagged `parameters`. An executed notebook is written only when the
chapter succeeds, so a failed chapter never leaves a stale or half-run copy behind.
"""
from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

from bookutil import ROOT, book, die, notebook_chapters


def parse_value(text: str):
    """`-p` values: Python literals (ints, floats, None, True) or plain strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chapters", nargs="*", help="chapter names (default: every notebook chapter in _toc.yml)")
    ap.add_argument("--params", default="smoke", help=f"parameter set: {', '.join(book.SCALES)}")
    ap.add_argument("--out", type=Path, help="output folder (default: _build/executed/<params>)")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="override one chapter parameter (validated by the chapter)")
    ap.add_argument("--record", action="store_true", help="store the measured runtimes in book/runtimes.csv")
    ap.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds")
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
    out_dir = args.out or ROOT / "_build" / "executed" / args.params
    overrides = {k: parse_value(v) for k, v in args.param}
    if "scale" in overrides:
        die(f"-p scale {overrides['scale']!r}: the scale is chosen with --params (one of {', '.join(book.SCALES)}), "
            f"not with -p", 2)

    total = time.perf_counter()
    for n in names:
        src = available[n]
        dst = out_dir / f"{n}.ipynb"
        print(f"[chapters] {n}: executing at scale {args.params!r} -> {dst.relative_to(ROOT) if dst.is_relative_to(ROOT) else dst}",
              flush=True)
        try:
            seconds = book.execute_chapter(src, dst, args.params, overrides, cwd=src.parent, timeout=args.timeout)
        except book.ChapterError as e:
            print(f"[chapters] {n}: FAILED\n{e.ename}: {e.evalue}", file=sys.stderr, flush=True)
            return 1
        print(f"[chapters] {n}: done in {seconds:.1f} s", flush=True)
        if args.record:
            book.record_runtime(n, args.params, seconds)
    print(f"[chapters] all {len(names)} chapter(s) at scale {args.params!r} in {time.perf_counter() - total:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
