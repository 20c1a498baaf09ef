"""Paper 1's frequency-control experiment: train frequency-restricted one-layer heads on the canonical tasks.

For every task, frequency spec and seed, train a 1-layer attention-only RoPE head that may use only that
frequency (posym.canonical), then record held-out accuracy per answer position and the head's positional /
symbolic scores.  Partial induction is run twice per frequency: one angle alone, and that angle plus a
(near-)zero-angle channel (Paper 1's two-angle construction).

    python scripts/canonical_sweep.py                                   # the committed CPU sweep
    python scripts/canonical_sweep.py --smoke --out /tmp/canon          # seconds
    python scripts/canonical_sweep.py --device cuda --workers 8 --seeds 0-9 --steps 4000 --batch-size 512

Writes OUT/sweep.parquet (see posym.canonical.sweep for the columns) and OUT/manifest.json (configuration,
seeds, git commit, package versions, machine, wall time, checksum).  Finished jobs are kept in
OUT/.sweep.partial.parquet, so an interrupted sweep with the same settings resumes where it stopped (and one
extended by more seeds, frequencies or tasks only trains the new heads).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pandas as pd  # noqa: E402

from bookutil import parse_seeds  # noqa: E402
from posym import io as pio  # noqa: E402
from posym.canonical import TASKS, Settings, _report, _run_job, head_spec  # noqa: E402

DEFAULT_FREQS = "0,2,4,6,8,10,12,14,16,31,nope"



def parse_freqs(s: str) -> list:
    return [f.strip() if f.strip().lower() == "nope" or "+" in f else int(f) for f in s.split(",") if f.strip()]


def build_jobs(tasks, freqs, seeds, settings: Settings, device: str, threads: int, pi_zero: bool) -> list[tuple]:
    jobs = []
    for task in tasks:
        variants = [False, True] if (task == "partial_induction" and pi_zero) else [False]
        for zc in variants:
            st = replace(settings, zero_channel=zc)
            for f in freqs:
                hs = head_spec(f, st.n_freqs, zc)
                if zc and (hs.nope or hs.freqs == (st.n_freqs - 1,)):
                    continue  # same head as without the zero channel
                for seed in seeds:
                    jobs.append((task, hs, seed, st, device, threads))
    return jobs


def job_key(task, spec_label, zc, seed) -> str:
    return f"{task}|{spec_label}|{bool(zc)}|{int(seed)}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--freqs", default=DEFAULT_FREQS, help="comma-separated specs: index, 'k1+k2', or nope")
    p.add_argument("--seeds", default="0-2")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--eval-size", type=int, default=None)
    p.add_argument("--score-size", type=int, default=None)
    p.add_argument("--no-pi-zero", action="store_true", help="skip the two-angle partial-induction heads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--out", default="data/canonical")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): for checking the pipeline")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)

    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    for t in tasks:
        if t not in TASKS:
            p.error(f"unknown task {t!r}: choose from {', '.join(TASKS)}")
    settings = Settings()
    if a.smoke:
        settings = replace(settings, steps=60, batch_size=32, eval_size=256, score_size=16, warmup_steps=10)
    over = {k: v for k, v in dict(steps=a.steps, batch_size=a.batch_size, lr=a.lr, eval_size=a.eval_size,
                                  score_size=a.score_size).items() if v is not None}
    settings = replace(settings, **over)
    freqs, seeds = parse_freqs(a.freqs), parse_seeds(a.seeds)
    if a.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda requested but torch.cuda.is_available() is False")
    jobs = build_jobs(tasks, freqs, seeds, settings, a.device, a.threads, not a.no_pi_zero)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    config = {"tasks": tasks, "freqs": [str(f) for f in freqs], "seeds": seeds, "settings": settings.to_dict(),
              "pi_zero_channel": not a.no_pi_zero}
    # what changes the numbers of a job (the job key adds task, spec, zero channel and seed), so a sweep can be
    # extended with more seeds / frequencies / tasks and reuse the finished jobs
    chash = pio.config_hash({"settings": settings.to_dict(), "device": a.device})
    partial = out / ".sweep.partial.parquet"
    done: dict[str, pd.DataFrame] = {}
    if partial.exists():
        old = pd.read_parquet(partial)
        if "config_hash" in old and (old["config_hash"] == chash).all():
            for key, g in old.groupby("job"):
                done[key] = g.drop(columns=["job", "config_hash"])
    todo = [j for j in jobs if job_key(j[0], j[1].label, j[3].zero_channel, j[2]) not in done]
    if not a.quiet:
        print(f"{len(jobs)} jobs ({len(jobs) - len(todo)} already done), {a.workers} worker(s) on {a.device}",
              flush=True)

    prov = pio.provenance(a.device)  # at launch: the code that trains is the code checked out now
    t0 = time.time()

    def save(df: pd.DataFrame, i: int):
        r = df.iloc[0]
        done[job_key(r["task"], r["spec"], r["zero_channel"], r["seed"])] = df
        allp = pd.concat([d.assign(job=k, config_hash=chash) for k, d in done.items()], ignore_index=True)
        pio.atomic_write_table(partial, allp)
        if not a.quiet:
            _report(i, len(todo), df)

    if a.workers <= 1:
        for i, j in enumerate(todo):
            save(_run_job(j), i + 1)
    else:
        with mp.get_context("spawn").Pool(a.workers) as pool:
            for i, df in enumerate(pool.imap_unordered(_run_job, todo)):
                save(df, i + 1)
    wall = time.time() - t0

    order = {job_key(j[0], j[1].label, j[3].zero_channel, j[2]): n for n, j in enumerate(jobs)}
    frames = [done[k] for k in sorted(done, key=lambda k: order.get(k, len(order))) if k in order]
    df = pd.concat(frames, ignore_index=True)
    pio.atomic_write_table(out / "sweep.parquet", df)
    info = {"what": "Paper 1 canonical tasks: frequency-restricted 1-layer attention-only RoPE heads",
            "config": config, "config_hash": chash, "seeds": seeds, "n_jobs": len(jobs),
            "device": a.device, "workers": a.workers, "threads_per_worker": a.threads,
            "wall_time_s": round(wall, 1), "resumed_jobs": len(jobs) - len(todo),
            "command": " ".join(["python", "scripts/canonical_sweep.py", *(argv if argv is not None else sys.argv[1:])]),
            **prov}
    if info["git_commit"] == "unknown" and os.environ.get("POSYM_GIT_COMMIT"):
        # run on a copy of the tree without .git (e.g. a lent GPU machine): the caller names the commit
        info["git_commit"] = os.environ["POSYM_GIT_COMMIT"]
        info["git_commit_source"] = "POSYM_GIT_COMMIT"
    pio.write_manifest(out, info, files=["sweep.parquet"])
    partial.unlink(missing_ok=True)
    if not a.quiet:
        print(f"wrote {out / 'sweep.parquet'} ({len(df)} rows, {len(jobs)} heads) in {wall:.0f}s", flush=True)
    return df


if __name__ == "__main__":
    main()
