"""Teaching-scale runs of the two plug-in tasks behind the chapters "LEGO chains" and "List sorting".

    python scripts/newtasks_runs.py                     # every run below, 3 at a time, into data/lego, data/sorting
    python scripts/newtasks_runs.py --task lego_fused,lego_fused_ordered --seeds 3-4 --jobs 1

Runs (each ``TrainConfig.teaching(task, seed)``, one torch thread, on the CPU):

* ``lego_fused`` and ``lego_fused_ordered``, seeds 0-4 (the tasks' own teaching recipe,
  ``LegoFusedTask.teaching_train``: 4 layers x 4 heads, d 64, no dropout, lr 1e-3, 3,000 steps of 64 fresh prompts);
* the sorting chapter's task (``posym.chapters.sorting.TASK``, ``sorting_long``: lists of 18) with weight decay 0
  and 0.1, seeds 0-4 (1 layer x 2 heads, attention only, no dropout, 3,000 steps of 128).

Each run trains into ``--runs`` (default ``runs/newtasks``; resumes and skips finished work like ``posym
train``), then is analysed by the chapter module's ``run_and_measure`` (the book's metric at every checkpoint,
``posym.analyze.analyze_run`` with 300 prompts; the head-type and length tables of ``posym.chapters.lego`` or
the head-mode table of ``posym.chapters.sorting``), and is packaged into ``data/<lego|sorting>/<run>/``: the
result tables, the run's config, ``final.pt`` for seed 0, and a manifest with provenance and checksums
(``posym verify data/lego data/sorting``).

``--finish`` packages runs whose training was stopped before the end (on a loaded machine, by a deadline): they are
analysed at the checkpoints they have, with fewer prompts, and their manifest says ``complete: false`` and where
they stopped. Running the script again without ``--finish`` resumes them from ``last.pt`` and replaces the package.
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPIED = ("config.json", "eval.csv", "train_log.csv", "scores.parquet", "prompts.json")


def jobs_for(task: str, seeds: list[int], weight_decays=None) -> list[tuple]:
    from posym.chapters.sorting import WEIGHT_DECAYS, variant

    weight_decays = WEIGHT_DECAYS if weight_decays is None else weight_decays

    tasks = ("lego_fused", "sorting", "lego_fused_ordered") if task == "all" else tuple(task.split(","))
    out = []
    for t in tasks:
        if t == "sorting":
            out += [("sorting", s, wd, f"{variant(wd)}-s{s}") for wd in weight_decays for s in seeds]
        elif t in ("lego_fused", "lego_fused_ordered"):
            out += [(t, s, None, f"{t}-s{s}") for s in seeds]
        else:
            raise ValueError(f"unknown task {t!r}: use lego_fused, lego_fused_ordered, sorting or all")
    return out


def one(job: tuple, runs: str, data: str) -> str:
    import torch

    from posym import io as pio
    torch.set_num_threads(1)
    task, seed, wd, name = job
    t0, c0 = time.time(), time.process_time()
    if task == "sorting":
        from posym.chapters import sorting as ch
        run = ch.run_and_measure(seed, wd, Path(runs) / name)
        extra, dest = ("modes.csv",), Path(data) / "sorting" / name
    else:
        from posym.chapters import lego as ch
        run = ch.run_and_measure(task, seed, Path(runs) / name, n_prompts=ch.N_PROMPTS)
        extra, dest = ("types.csv", "length.csv"), Path(data) / "lego" / name
    dest.mkdir(parents=True, exist_ok=True)
    for f in COPIED + extra:
        pio.atomic_write_bytes(dest / f, (run / f).read_bytes())
    if seed == 0:
        from posym.train import list_checkpoints
        pio.atomic_write_bytes(dest / "final.pt", list_checkpoints(run)[-1][1].read_bytes())
    info = {k: v for k, v in pio.read_json(run / "manifest.json").items() if k != "files"}
    import os
    info.update(code_note="trained, analysed and measured by scripts/newtasks_runs.py (one torch thread, "
                          f"nice {os.nice(0)}, a shared 2-core machine)",
                analysis={"n_prompts": 300, "per_frequency": False, "tables": list(extra)},
                train_plus_analysis_wall_s=round(time.time() - t0, 1),
                train_plus_analysis_cpu_s=round(time.process_time() - c0, 1))
    if task == "sorting":  # the head-mode table's prompts
        info["analysis"]["mode_prompts"] = ch.N_MODE_PROMPTS
    pio.write_manifest(dest, info)
    return f"{name}: {time.time() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU -> {dest}"


def finish(job: tuple, runs: str, data: str, n_prompts: int = 60) -> str:
    """Package a run whose training was stopped before its last step (``--finish``): the metric, head-type or
    head-mode tables at the checkpoints it has (``n_prompts`` metric prompts), the length table of its last
    checkpoint, and a manifest that says ``complete: false`` and the step it stopped at."""
    import torch

    from posym import io as pio
    from posym.analyze import analyze_run
    from posym.train import Run, list_checkpoints, load_checkpoint
    torch.set_num_threads(1)
    task, seed, wd, name = job
    run_dir = Path(runs) / name
    ckpts = list_checkpoints(run_dir) if run_dir.exists() else []
    if not ckpts:
        return f"{name}: no checkpoints, nothing to package"
    if (run_dir / "manifest.json").exists() and pio.read_json(run_dir / "manifest.json").get("complete"):
        return f"{name}: complete; run without --finish"
    t0, c0 = time.time(), time.process_time()
    analyze_run(run_dir, n_prompts=n_prompts, per_frequency=False, progress=False)
    last_step, last = ckpts[-1]
    if task == "sorting":
        from posym.chapters import sorting as ch
        pio.atomic_write_table(run_dir / "modes.csv", ch.mode_trajectory(run_dir, seed, n=2 * n_prompts))
        extra, dest = ("modes.csv",), Path(data) / "sorting" / name
    else:
        from posym.chapters import lego as ch
        pio.atomic_write_table(run_dir / "types.csv", ch.type_trajectory(run_dir, task, seed, n=n_prompts))
        model = load_checkpoint(last)[0]
        pio.atomic_write_table(run_dir / "length.csv", ch.length_table(model, task, n=n_prompts // 3, seed=seed))
        extra, dest = ("types.csv", "length.csv"), Path(data) / "lego" / name
    dest.mkdir(parents=True, exist_ok=True)
    for f in COPIED + extra:
        pio.atomic_write_bytes(dest / f, (run_dir / f).read_bytes())
    cfg = Run(run_dir).config
    info = {"complete": False, "stopped_at_step": last_step, "steps": cfg.steps, "config_hash": cfg.hash(),
            "seed": cfg.seed, "task": cfg.task, **pio.provenance("cpu"),
            "code_note": f"training stopped at step {last_step} of {cfg.steps} (the learning-rate schedule is that of "
                         f"{cfg.steps} steps); analysed and packaged by scripts/newtasks_runs.py --finish",
            "analysis": {"n_prompts": n_prompts, "per_frequency": False, "tables": list(extra)},
            "finish_wall_s": round(time.time() - t0, 1), "finish_cpu_s": round(time.process_time() - c0, 1)}
    pio.write_manifest(dest, info)
    return f"{name}: stopped at step {last_step}, packaged -> {dest}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="all",
                   help="all, or a comma-separated list of lego_fused, lego_fused_ordered, sorting")
    p.add_argument("--seeds", default="0-4", help="range 0-4 or list 0,1")
    p.add_argument("--jobs", type=int, default=3, help="runs at a time (one thread each)")
    p.add_argument("--runs", default=str(REPO / "runs" / "newtasks"), help="training folders")
    p.add_argument("--data", default=str(REPO / "data"), help="where the packaged results go")
    p.add_argument("--weight-decays", default=None, help="sorting only: comma-separated (default 0,0.1)")
    p.add_argument("--finish", action="store_true",
                   help="package runs whose training was stopped early (analysed at the checkpoints they have)")
    a = p.parse_args(argv)
    from bookutil import parse_seeds

    try:
        seeds = parse_seeds(a.seeds)
    except ValueError:
        p.error(f"--seeds {a.seeds!r}: use a range like 0-2 or a list like 0,1")
    if a.jobs < 1:
        p.error("--jobs must be at least 1")
    try:
        wds = None if a.weight_decays is None else [float(w) for w in a.weight_decays.split(",")]
        jobs = jobs_for(a.task, seeds, wds)
    except ValueError as e:
        p.error(str(e))
    with ProcessPoolExecutor(max_workers=a.jobs) as ex:
        futs = {ex.submit(finish if a.finish else one, j, a.runs, a.data): j for j in jobs}
        for f in as_completed(futs):
            print(f.result(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
