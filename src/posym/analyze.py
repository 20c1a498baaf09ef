"""Metric trajectories over a run's checkpoints, written into the run folder.

``scores.parquet``       one row per step x layer x head: pos, sym (+ sd over prompts), entropy
``freq_scores.parquet``  one row per step x layer x head x frequency: pos, sym, maxlogit
``prompts.json``         the fixed, hop-balanced held-out prompts used (test split of the run's seed)
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from . import io as pio
from .metrics import TAU, frequency_table, model_scores, scores_table
from .tasks import balanced_eval_set, get_task, to_tensors
from .train import Run, list_checkpoints, load_checkpoint

N_PROMPTS = 400


def metric_prompts(task: str, seed: int, n: int = N_PROMPTS):
    """The fixed, hop-balanced prompts of the metric (from the test split, held out from training)."""
    samples = balanced_eval_set(get_task(task), n, seed=seed, split="test")
    x, y, hops = to_tensors(samples, get_task(task).vocab)
    return samples, x, y, hops


def analyze_run(run_dir: str | Path, n_prompts: int = N_PROMPTS, per_frequency: bool = True, tau: float = TAU,
                device: str = "cpu", progress: bool = True, steps: list[int] | None = None) -> dict[str, pd.DataFrame]:
    """Compute the metric at every checkpoint of a run (or at ``steps``) and store the tables."""
    run = Run(run_dir)
    cfg = run.config
    ckpts = list_checkpoints(run.path)
    if not ckpts:
        raise pio.ResultError(f"{run.path} has no checkpoints; train it first (posym train ... --out {run.path})")
    if steps is not None:
        have = dict(ckpts)
        missing = [s for s in steps if s not in have]
        if missing:
            raise pio.ResultError(f"{run.path} has no checkpoint for steps {missing}")
        ckpts = [(s, have[s]) for s in steps]
    samples, x, _, _ = metric_prompts(cfg.task, cfg.seed, n_prompts)
    x = x.to(device)
    T = x.shape[1]
    rows, frows = [], []
    it = ckpts
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(ckpts, desc=f"analyze {run.path.name}", leave=False)
    t0 = time.time()
    for step, path in it:
        model, _ = load_checkpoint(path, expect_hash=cfg.hash(), map_location=device)
        sc = model_scores(model, x, tau=tau, per_frequency=per_frequency)
        rows.append(scores_table(sc, T, step=step))
        if per_frequency:
            frows.append(frequency_table(sc, step=step))
    out = {"scores": pd.concat(rows, ignore_index=True)}
    pio.atomic_write_table(run.path / "scores.parquet", out["scores"])
    if per_frequency:
        out["freq_scores"] = pd.concat(frows, ignore_index=True)
        pio.atomic_write_table(run.path / "freq_scores.parquet", out["freq_scores"])
    pio.atomic_write_json(run.path / "prompts.json", {"split": "test", "seed": cfg.seed, "n": n_prompts,
                                                      "tau": tau, "seconds": round(time.time() - t0, 2),
                                                      "prompts": [s.text() for s in samples]})
    return out


def load_trajectory(run_dir: str | Path) -> pd.DataFrame:
    """Scores joined with validation accuracy, one row per step x layer x head."""
    run_dir = Path(run_dir)
    scores = pio.read_table(run_dir / "scores.parquet")
    return scores


def final_model(run_dir: str | Path, device: str = "cpu"):
    run = Run(run_dir)
    ckpts = list_checkpoints(run.path)
    if not ckpts:
        raise pio.ResultError(f"{run.path} has no checkpoints")
    return load_checkpoint(ckpts[-1][1], expect_hash=run.config.hash(), map_location=device)[0]


def best_step(eval_df: pd.DataFrame) -> int:
    """Step of maximal overall validation accuracy (first one on ties)."""
    e = eval_df[eval_df["hop"].astype(str) == "all"].sort_values("step")
    return int(e.loc[e["accuracy"].idxmax(), "step"])


@torch.no_grad()
def attention_rows(model, x: torch.Tensor) -> torch.Tensor:
    """Attention of the last query in every layer: (L, N, H, T)."""
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.cfg.n_layer)]
    _, cache = model.run_with_cache(x, names=names)
    return torch.stack([cache[n][:, :, -1] for n in names])
