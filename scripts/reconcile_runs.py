"""Regenerate the committed results of the appendix "Reconciling with the paper" (``data/reconcile/``).

    python scripts/reconcile_runs.py length      # the length-protocol sweep on the seed-0 final models
    python scripts/reconcile_runs.py seed42      # Number (and Letter) at the paper configuration, run seed 42
    python scripts/reconcile_runs.py fp16        # Number at the paper configuration in fp16 (seeds 0-2)
    python scripts/reconcile_runs.py perprompt   # per-prompt scores: seed-0 final models, every seed-42 checkpoint
    python scripts/reconcile_runs.py precision   # fp16 step time and loss on this CPU, two routes beside fp32
    python scripts/reconcile_runs.py status      # how far unfinished runs got (seed42_ and fp16_partial.json)
    python scripts/reconcile_runs.py manifest    # (re)write data/reconcile/manifest.json
    python scripts/reconcile_runs.py all         # all of the above, in this order

Every step writes its tables atomically and then rewrites the manifest (sha256 of every file, the command, the
settings, the git commit, package versions, machine and wall time of each step); ``posym verify data/`` checks
it.  ``--threads`` (default 1) sets torch's threads; run it ``nice``d on a shared machine.  The seed-42 runs
train in ``--runs`` (default ``runs/reconcile``; the checkpoints stay there, too big to commit) and their result
tables are copied to ``data/reconcile/<task>-s42/`` with their own manifest.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "data" / "reconcile"

#: The sweep of the length protocol: constructions per task (the book's first: the paired baseline), lengths, and
#: prompts per length.  The book's construction at every length up to 5,000 and on 500 prompts is in
#: data/paper/*/length.parquet, per hop (its 1-hop rows are the "1-hop only" construction); this sweep stops at
#: 1,000 (Number) and 850 (Letter) tokens, where the paper's and our curves already differ (a Letter prompt of
#: 850 tokens cost about 4 s on the shared CPU it ran on).
LENGTH_PLAN = {
    "number": {"constructions": ("book", "repeat", "vocab", "spread"),
               "lengths": (100, 200, 300, 500, 1000), "n": {}},
    "letter": {"constructions": ("book", "repeat", "vocab", "between", "spread", "vocab-unchecked"),
               "lengths": (500, 850), "n": {3000: 32},
               # the construction closest to the paper at 850 tokens, followed further
               "extra": {"vocab": (1500, 3000)}},
}
N_LENGTH = 64
SEED42_TASKS = ("number", "letter")
FP16_SEEDS = (0, 1, 2)


def provenance_fields(threads: int | None = None) -> dict:
    """The project's provenance (:mod:`posym.io`): commit, package versions and, for a step, the machine with
    the torch threads the step ran with."""
    from posym import io as pio

    out = {"git_commit": pio.git_commit(REPO), "versions": pio.package_versions()}
    if threads is not None:
        out["machine"] = {**pio.machine_info("cpu"), "torch_threads": threads}
    return out


def record(step: str, info: dict) -> None:
    """Add ``info`` to the steps recorded in ``data/reconcile/steps.json`` (rewritten atomically)."""
    from posym import io as pio

    path = OUT / "steps.json"
    steps = json.loads(path.read_text()) if path.exists() else {}
    steps[step] = info
    pio.atomic_write_json(path, dict(sorted(steps.items())))


def write_manifest() -> None:
    from posym import io as pio

    steps = json.loads((OUT / "steps.json").read_text()) if (OUT / "steps.json").exists() else {}
    files = sorted(str(p.relative_to(OUT)) for p in OUT.iterdir()
                   if p.is_file() and p.name not in ("manifest.json", "README.md") and not p.name.startswith("."))
    pio.write_manifest(OUT, {"what": "results of the appendix 'Reconciling with the paper' (book/reconcile.md)",
                             "command": "python scripts/reconcile_runs.py all", **provenance_fields(),
                             "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                             "steps": steps}, files=files)


def _step_info(args, t0: float, **extra) -> dict:
    import posym
    return {"posym_source": str(Path(posym.__file__).resolve().parent), "command": "python scripts/reconcile_runs.py " + " ".join(sys.argv[1:]),
            **provenance_fields(args.threads), "wall_time_s": round(time.time() - t0, 1),
            "finished": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), **extra}


# -----------------------------------------------------------------------------------------------

def cmd_length(args) -> None:
    import pandas as pd
    from posym import io as pio
    from posym.chapters import reconcile as R
    from posym.train import load_checkpoint

    t0 = time.time()
    path = OUT / "length_protocol.parquet"
    frames = [pio.read_table(path)] if path.exists() and not args.fresh else []
    done = {(r.task, r.construction, r.length) for r in frames[0].itertuples()} if frames else set()
    for task, plan in LENGTH_PLAN.items():
        model, _ = load_checkpoint(REPO / "data" / "paper" / f"{task}-s0" / "final.pt")
        for c in plan["constructions"]:
            for L in tuple(plan["lengths"]) + tuple(plan.get("extra", {}).get(c, ())):
                if (task, c, L) in done:
                    continue
                n = plan["n"].get(L, N_LENGTH)
                df = R.length_protocol(model, task, 0, [c], [L], n)
                frames.append(df)
                pio.atomic_write_table(path, pd.concat(frames, ignore_index=True))
                print(f"{task} {c} {L}: {df.loc[df['hop'] == 'all', 'accuracy'].iloc[0]:.3f} "
                      f"({df['seconds'].iloc[0]:.0f} s)", flush=True)
    table = pd.concat(frames, ignore_index=True)
    record("length", _step_info(args, t0, plan=json.loads(json.dumps(LENGTH_PLAN, default=list)),
                                 seconds_all_points=round(float(table.loc[table["hop"] == "all", "seconds"].sum()), 1),
                                 note="wall_time_s is this invocation's; the sweep resumes point by point, and "
                                      "seconds_all_points sums the wall time of every point in the table",
                                 n_default=N_LENGTH, models="data/paper/{task}-s0/final.pt", data_seed=0,
                                 split="test"))
    write_manifest()


def _train_and_package(args, task: str, seed: int, precision: str = "fp32") -> None:
    """Train (resuming) one paper-configuration run in ``--runs``, analyse it in fp32 (400 prompts, per
    frequency) and copy its result tables to ``data/reconcile/<name>/`` with a manifest."""
    from posym import io as pio
    from posym.analyze import analyze_run
    from posym.train import TrainConfig, train

    name = f"{task}-s{seed}" if precision == "fp32" else f"{task}-{precision}-s{seed}"
    t0 = time.time()
    cfg = TrainConfig.preset("paper", task=task, seed=seed, precision=precision)
    run = train(cfg, Path(args.runs) / name, progress=False, threads=args.threads)
    if not (run.path / "freq_scores.parquet").exists():
        analyze_run(run.path, n_prompts=400, per_frequency=True, progress=False)
    dest = OUT / name
    dest.mkdir(parents=True, exist_ok=True)
    files = ("config.json", "eval.csv", "train_log.csv", "scores.parquet", "freq_scores.parquet", "prompts.json")
    for f in files:
        pio.atomic_write_bytes(dest / f, (run.path / f).read_bytes())
    src = pio.read_json(run.path / "manifest.json")
    info = {k: v for k, v in src.items() if k != "files"}
    flag = "" if precision == "fp32" else f" --precision {precision}"
    info["code_note"] = (f"trained by `posym train --task {task} --scale paper --seed {seed}{flag} --threads "
                         f"{args.threads}` on this CPU, analysed in fp32 by `posym analyze` (400 prompts); "
                         f"packaged by scripts/reconcile_runs.py {args.what} (no checkpoint committed)")
    pio.write_manifest(dest, info, files=list(files))
    record(name if precision != "fp32" else f"seed42-{task}",
           _step_info(args, t0, run=str(run.path), config_hash=cfg.hash(), precision=precision))
    write_manifest()


def cmd_seed42(args) -> None:
    """Train (resuming) and analyse the seed-42 runs, and package their result tables."""
    for task in args.tasks:
        _train_and_package(args, task, 42)


def cmd_fp16(args) -> None:
    """The paper's Number configuration with fp16 autocast and a gradient scaler, as the authors trained, on
    this CPU (half matmuls through float32 BLAS, :func:`posym.train.half_gemms`): seeds ``--seeds``, paired with
    the fp32 runs of the same seeds in data/paper."""
    for seed in args.seeds:
        _train_and_package(args, "number", seed, "fp16")


def cmd_perprompt(args) -> None:
    """Per-prompt scores (for the fraction-of-prompts purity rules) and per-prompt max logits per frequency
    (for the Table 1 weightings) of the seed-0 final models; per-prompt scores at every seed-42 checkpoint."""
    import numpy as np
    import pandas as pd
    from posym import io as pio
    from posym.analyze import metric_prompts
    from posym.chapters import reconcile as R
    from posym.metrics import model_scores
    from posym.train import Run, list_checkpoints, load_checkpoint

    t0 = time.time()
    frames, wframes = [], []
    for task in ("number", "letter"):
        ck = load_checkpoint(REPO / "data" / "paper" / f"{task}-s0" / "final.pt")
        model = ck[0]
        step = int(pd.read_csv(REPO / "data" / "paper" / f"{task}-s0" / "eval.csv")["step"].max())
        _, x, _, hops = metric_prompts(task, 0, 400)
        frames.append(R.per_prompt_scores(model, x, hops.numpy(), task=task, seed=0, step=step))
        sc = model_scores(model, x, per_frequency=True)
        for layer, ls in enumerate(sc):
            u = ls.freq_maxlogit[:, 0].numpy().astype(np.float64)  # (N, F)
            for w in ("positive", "absolute", "square", "argmax"):
                if w == "argmax":
                    ids = u.argmax(1) + 1.0
                    wid, mode = float(ids.mean()), float(np.bincount(u.argmax(1)).argmax() + 1)
                else:
                    wts = {"positive": np.clip(u, 0, None), "absolute": np.abs(u), "square": u ** 2}[w].mean(0)
                    wid, mode = float((np.arange(len(wts)) * wts).sum() / wts.sum() + 1), float("nan")
                wframes.append({"task": task, "seed": 0, "layer": layer, "weighting": w, "id": wid,
                                "mode_id": mode})
    runs = Path(args.runs)
    for task in ("number", "letter"):
        rd = runs / f"{task}-s42"
        if not (rd / "manifest.json").exists() or not pio.read_json(rd / "manifest.json").get("complete"):
            print(f"{rd}: not a complete run; its per-prompt scores are skipped", flush=True)
            continue
        run = Run(rd)
        _, x, _, hops = metric_prompts(task, 42, 400)
        model = None
        for step, path in list_checkpoints(rd):
            model, _ = load_checkpoint(path, expect_hash=run.config.hash(), into=model)
            frames.append(R.per_prompt_scores(model, x, hops.numpy(), task=task, seed=42, step=int(step)))
    pio.atomic_write_table(OUT / "per_prompt.parquet", pd.concat(frames, ignore_index=True))
    pio.atomic_write_table(OUT / "weightings_per_prompt.parquet", pd.DataFrame(wframes))
    record("perprompt", _step_info(args, t0, prompts=400, split="test", tau=1e-4,
                                   models="data/paper/{task}-s0/final.pt; every checkpoint of runs/reconcile/{task}-s42"))
    write_manifest()


def cmd_precision(args) -> None:
    """The step time and loss of the paper configuration in fp32, in fp16 as the book trains it on the CPU, and in
    fp16 with torch's own half kernels, from the same weights on the same batches (alternating, one thread)."""
    from posym import io as pio
    from posym.chapters import reconcile as R
    from posym.model import ModelConfig
    from posym.tasks import get_task

    t0 = time.time()
    res = R.precision_probe(ModelConfig.paper(vocab_size=len(get_task("number").vocab)), rounds=args.rounds)
    res["model"] = ("ModelConfig.paper without dropout (Number vocabulary), batch 64, AdamW lr 1e-4, a gradient "
                    "scaler for both fp16 variants")
    res["loadavg"] = list(os.getloadavg())
    pio.atomic_write_json(OUT / "precision_cpu.json", res)
    record("precision", _step_info(args, t0))
    write_manifest()
    print(json.dumps(res["ms_median"]), res["fp16_over_fp32_time"])


def _partial(rd: Path, resume: str, then: str, note: str) -> dict | None:
    """Where an unfinished run in ``rd`` stopped, and how to finish it (``None``: not started, or complete)."""
    import pandas as pd
    from posym import io as pio

    if not (rd / "train_log.csv").exists():
        return None
    man = pio.read_json(rd / "manifest.json") if (rd / "manifest.json").exists() else {}
    if man.get("complete"):
        return None
    log = pd.read_csv(rd / "train_log.csv")
    cfg = pio.read_json(rd / "config.json")
    return {"last_step": int(log["step"].max()), "steps": int(cfg["train"]["steps"]),
            "last_loss": float(log["loss"].iloc[-1]), "config_hash": cfg.get("config_hash"), "resume": resume,
            "then": then, "note": note}


def cmd_status(args) -> None:
    """Record how far unfinished runs got: the seed-42 runs in ``seed42_partial.json`` (keyed by task), the
    fp16 runs in ``fp16_partial.json`` (keyed by seed)."""
    from posym import io as pio

    runs = Path(args.runs)

    def rel(rd: Path) -> Path:
        return rd.relative_to(REPO) if rd.is_relative_to(REPO) else rd

    found = {"seed42_partial.json": {}, "fp16_partial.json": {}}
    for task in args.tasks:
        rd = runs / f"{task}-s42"
        p = _partial(rd, f"posym train --task {task} --scale paper --seed 42 --threads 1 --out {rel(rd)}",
                     f"python scripts/reconcile_runs.py seed42 --tasks {task} && python scripts/reconcile_runs.py "
                     "perprompt", args.note)
        if p:
            found["seed42_partial.json"][task] = p
    for seed in args.seeds:
        rd = runs / f"number-fp16-s{seed}"
        p = _partial(rd, f"python scripts/reconcile_runs.py fp16 --seeds {seed} --runs {rel(runs)}",
                     "(the same command trains, analyses and packages the run)", args.note)
        if p:
            found["fp16_partial.json"][str(seed)] = p
    for name, out in found.items():
        if out:
            pio.atomic_write_json(OUT / name, out)
        elif (OUT / name).exists():
            (OUT / name).unlink()
    write_manifest()
    print(json.dumps(found, indent=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("length", "seed42", "fp16", "perprompt", "precision", "status", "manifest",
                                     "all"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", default=str(REPO / "runs" / "reconcile"), help="where the seed-42 and fp16 runs train")
    ap.add_argument("--tasks", nargs="+", default=list(SEED42_TASKS), choices=SEED42_TASKS,
                    help="seed-42 tasks (default both)")
    ap.add_argument("--seeds", nargs="+", type=int, default=list(FP16_SEEDS), help="fp16: run seeds (default 0 1 2)")
    ap.add_argument("--rounds", type=int, default=3, help="precision: timed steps per variant")
    ap.add_argument("--fresh", action="store_true", help="length: recompute every point (default: resume)")
    ap.add_argument("--note", default="", help="status: why the unfinished runs stopped")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    steps = {"length": [cmd_length], "seed42": [cmd_seed42], "fp16": [cmd_fp16], "perprompt": [cmd_perprompt],
             "precision": [cmd_precision], "status": [cmd_status], "manifest": [lambda a: write_manifest()],
             "all": [cmd_seed42, cmd_fp16, cmd_perprompt, cmd_length, cmd_precision]}[args.what]
    for f in steps:
        f(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
