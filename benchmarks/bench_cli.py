"""How fast the ``posym`` command answers ``--help`` (target: under 1 s), measured in fresh processes.

    .venv/bin/python benchmarks/bench_cli.py            # 5 runs of each command, prints the median and max
    .venv/bin/python benchmarks/bench_cli.py --runs 10

Building the parser imports neither torch nor pandas (``tests/test_cli.py`` checks that); this script measures
what a user waits for: the whole process, interpreter start-up included. For reference it also times
``python -c "import torch"``, which ``posym --help`` used to pay. Run it on a quiet machine; the load average
is printed before and after.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGET_S = 1.0


def posym_command() -> list[str]:
    entry = Path(sys.executable).parent / "posym"
    return [str(entry)] if entry.exists() else [sys.executable, "-m", "posym.cli"]


def subcommands() -> list[str]:
    """Every subcommand the parser offers (those added later included)."""
    import argparse as ap

    sys.path.insert(0, str(REPO / "src"))
    from posym.cli import build_parser

    for action in build_parser()._actions:
        if isinstance(action, ap._SubParsersAction):
            return list(action.choices)
    return []


def timed(cmd: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        out.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs per command (default 5)")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    posym = posym_command()
    rows = [("posym --help", posym + ["--help"])]
    for sub in subcommands():
        rows.append((f"posym {sub} --help", posym + [sub, "--help"]))
    rows.append(("python -c 'import torch' (reference)", [sys.executable, "-c", "import torch"]))
    print(f"load average before: {load0:.2f}; {args.runs} runs each; target for posym --help: < {TARGET_S:.1f} s")
    worst = 0.0
    for name, cmd in rows:
        t = timed(cmd, args.runs)
        med = statistics.median(t)
        if name.startswith("posym"):
            worst = max(worst, med)
        print(f"  {name:40s} median {med:6.3f} s   max {max(t):6.3f} s")
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average after: {load1:.2f}")
    verdict = "meets" if worst < TARGET_S else "MISSES"
    print(f"slowest posym help (median): {worst:.3f} s -> {verdict} the {TARGET_S:.1f} s target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
