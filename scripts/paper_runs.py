"""Train, analyse and evaluate several (task, seed) runs in parallel processes -- a thin wrapper over
``posym reproduce``'s plan (:mod:`posym.reproduce`), kept for the command recorded in data/paper manifests:

    python scripts/paper_runs.py --scale paper --seeds 0-4 --device cuda --out runs/paper --jobs 10

is ``posym reproduce --scale paper --seeds 0-4 --device cuda --out runs/paper --engine local --jobs 10 --no-book``.
Every step is skipped when already complete and valid, and resumed when interrupted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from posym.reproduce import PlanError, build_plan, run_plan  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="paper")
    p.add_argument("--tasks", default="number,letter")
    p.add_argument("--seeds", default="0-4", help="a seed (3), a range (0-4) or a list (0,2)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/paper")
    p.add_argument("--jobs", type=int, default=2, help="parallel processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--n-length", type=int, default=None, help="prompts per length (default: the scale's)")
    a = p.parse_args(argv)
    seeds = a.seeds if ("-" in a.seeds or "," in a.seeds) else f"{a.seeds}-{a.seeds}"  # here "3" is seed 3
    try:
        plan = build_plan(a.scale, tasks=a.tasks, seeds=seeds, out=a.out, device=a.device, threads=a.threads,
                          analysis={"n_length": a.n_length} if a.n_length else None)
        print(plan.describe(), flush=True)
        res = run_plan(plan, engine="local", workers=a.jobs)
    except PlanError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(res.summary(), flush=True)
    return 0 if res.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
