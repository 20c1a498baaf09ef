"""Train, analyse and evaluate several (task, seed) runs in parallel processes.

Used for the paper-scale results in data/ (on a GPU when one is lent, otherwise on CPU):

    python scripts/paper_runs.py --scale paper --seeds 0-4 --device cuda --out runs/paper --jobs 10

Every stage is resumable and skipped when already complete (see posym.train.train).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def one(job):
    task, seed, scale, device, out, n_length, threads = job
    import torch

    torch.set_num_threads(threads)
    from posym.analyze import analyze_run, final_analyses
    from posym.train import TrainConfig, train

    run_dir = Path(out) / f"{task}-s{seed}"
    t0 = time.time()
    try:
        cfg = TrainConfig.preset(scale, task=task, seed=seed, device=device)
        train(cfg, run_dir, progress=False)
        t1 = time.time()
        if not (run_dir / "scores.parquet").exists():
            analyze_run(run_dir, device=device, progress=False)
        t2 = time.time()
        if not (run_dir / "flow.parquet").exists():
            final_analyses(run_dir, device=device, n_length=n_length, progress=False)
        t3 = time.time()
        (run_dir / "timing.txt").write_text(f"train {t1 - t0:.1f}\nanalyze {t2 - t1:.1f}\nfinal {t3 - t2:.1f}\n")
        return f"{run_dir}: train {t1 - t0:.0f}s analyze {t2 - t1:.0f}s final {t3 - t2:.0f}s"
    except Exception:  # noqa: BLE001 - report and continue with the other runs
        return f"{run_dir}: FAILED\n{traceback.format_exc()}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--scale", default="paper")
    p.add_argument("--tasks", default="number,letter")
    p.add_argument("--seeds", default="0-4")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/paper")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n-length", type=int, default=500)
    a = p.parse_args()
    lo, _, hi = a.seeds.partition("-")
    seeds = range(int(lo), int(hi or lo) + 1)
    jobs = [(t, s, a.scale, a.device, a.out, a.n_length, a.threads) for s in seeds for t in a.tasks.split(",")]
    ctx = mp.get_context("spawn")
    with ctx.Pool(min(a.jobs, len(jobs))) as pool:
        for msg in pool.imap_unordered(one, jobs):
            print(msg, flush=True)


if __name__ == "__main__":
    main()
