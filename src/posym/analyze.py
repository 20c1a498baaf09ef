"""Metric trajectories over a run's checkpoints, written into the run folder.

``scores.parquet``       one row per step x layer x head: pos, sym (+ sd over prompts), entropy
``freq_scores.parquet``  one row per step x layer x head x frequency: pos, sym, maxlogit
``prompts.json``         the fixed, hop-balanced held-out prompts used (test split of the run's seed)
"""
from __future__ import annotations

import time

import numpy as np
from pathlib import Path

import pandas as pd
import torch

from . import io as pio
from .metrics import TAU, frequency_table, model_scores, scores_table
from .tasks import balanced_eval_set, get_task, to_tensors
from .train import Run, list_checkpoints, load_checkpoint, precision_context

N_PROMPTS = 400


def metric_prompts(task: str, seed: int, n: int = N_PROMPTS):
    """The fixed, hop-balanced prompts of the metric (from the test split, held out from training)."""
    samples = balanced_eval_set(get_task(task), n, seed=seed, split="test")
    x, y, hops = to_tensors(samples, get_task(task).vocab)
    return samples, x, y, hops


def analyze_run(run_dir: str | Path, n_prompts: int = N_PROMPTS, per_frequency: bool = True, tau: float = TAU,
                device: str = "cpu", progress: bool = True, steps: list[int] | None = None,
                timings: dict | None = None, precision: str = "fp32") -> dict[str, pd.DataFrame]:
    """Compute the metric at every checkpoint of a run (or at ``steps``) and store the tables.

    ``timings``: a dict that receives the seconds spent in each part, summed over checkpoints (``load``,
    ``forward``, ``scores``, ``per_frequency``, ``tables``) and ``checkpoints`` (see :func:`timings_line`).
    One model is built and every checkpoint's weights are loaded into it.  ``precision`` (``fp32``, ``bf16``,
    ``fp16``): autocast of the model's matmuls (the scores themselves are always computed in float32/float64);
    anything but fp32 changes the tables and is recorded in ``prompts.json``."""
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
    split = {k: 0.0 for k in TIMING_PARTS}
    model = None
    for step, path in it:
        t = time.perf_counter()
        model, _ = load_checkpoint(path, expect_hash=cfg.hash(), map_location=device, into=model)
        split["load"] += time.perf_counter() - t
        with precision_context(precision, torch.device(device).type):
            sc = model_scores(model, x, tau=tau, per_frequency=per_frequency, timings=split)
        t = time.perf_counter()
        rows.append(scores_table(sc, T, step=step))
        if per_frequency:
            frows.append(frequency_table(sc, step=step))
        split["tables"] += time.perf_counter() - t
    if timings is not None:
        timings.update(split, checkpoints=len(ckpts))
    out = {"scores": pd.concat(rows, ignore_index=True)}
    pio.atomic_write_table(run.path / "scores.parquet", out["scores"])
    if per_frequency:
        out["freq_scores"] = pd.concat(frows, ignore_index=True)
        pio.atomic_write_table(run.path / "freq_scores.parquet", out["freq_scores"])
    pio.atomic_write_json(run.path / "prompts.json", {"split": "test", "seed": cfg.seed, "n": n_prompts,
                                                      "tau": tau, "seconds": round(time.time() - t0, 2),
                                                      **({} if precision == "fp32" else {"precision": precision}),
                                                      "prompts": [s.text() for s in samples]})
    return out


TIMING_PARTS = ("load", "forward", "scores", "per_frequency", "tables")


def timings_line(timings: dict) -> str:
    """Seconds per checkpoint of :func:`analyze_run`'s ``timings``, split into its parts."""
    n = max(1, timings.get("checkpoints", 1))
    total = sum(timings.get(k, 0.0) for k in TIMING_PARTS)
    parts = ", ".join(f"{k.replace('_', '-')} {timings.get(k, 0.0) / n:.3f}" for k in TIMING_PARTS)
    return f"{total / n:.3f} s per checkpoint ({parts}); {total:.1f} s for {n} checkpoints"


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


# ---------------------------------------------------------------------------------------------
# Analyses of the final model
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def flow_traces(model, samples, vocab) -> pd.DataFrame:
    """Information flow (Fig. 3A/B): for every example, layer and query position, the key position with
    the largest attention and its weight.  Rows: example, layer, query_pos, token, argmax_pos, weight."""
    x, _, _ = to_tensors(samples, vocab)
    rows = []
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.cfg.n_layer)]
    _, cache = model.run_with_cache(x, names=names)
    for l, n in enumerate(names):
        p = cache[n][:, 0]  # (N, T, T) head 0
        w, arg = p.max(-1)
        for e, s in enumerate(samples):
            for qpos in range(len(s.tokens)):
                rows.append({"example": e, "layer": l, "query_pos": qpos, "token": s.tokens[qpos],
                             "argmax_pos": int(arg[e, qpos]), "weight": float(w[e, qpos])})
    return pd.DataFrame(rows)


@torch.no_grad()
def geometry(model, x: torch.Tensor, layer: int = 1, freq: int | None = None) -> pd.DataFrame:
    """Queries and keys of one layer projected on one RoPE plane (Fig. 4B).

    ``freq`` defaults to the plane with the largest mean max-logit at the last query (the "dominant" one).
    Rows: prompt, position, kind (q/k), rotated (bool: after RoPE), x, y, freq.
    """
    from .metrics import content_position_logits, residual_inputs

    resid = residual_inputs(model, x)[layer]
    if freq is None:
        _, Mf = content_position_logits(model, layer, resid, per_frequency=True)
        freq = int(torch.diagonal(Mf, dim1=-2, dim2=-1).amax(-1).mean(0)[0].argmax())
    names = [f"blocks.{layer}.attn.hook_{k}" for k in ("q", "k", "rot_q", "rot_k")]
    _, cache = model.run_with_cache(x, names=names)
    frames = []
    for name in names:
        kind = name.rsplit("_", 1)[-1]
        t = cache[name][:, 0, :, 2 * freq:2 * freq + 2]  # (N, T, 2)
        N, T, _ = t.shape
        frames.append(pd.DataFrame({"prompt": np.repeat(np.arange(N), T), "position": np.tile(np.arange(T), N),
                                    "kind": kind, "rotated": "rot_" in name, "x": t[..., 0].reshape(-1).numpy(),
                                    "y": t[..., 1].reshape(-1).numpy(), "freq": freq}))
    return pd.concat(frames, ignore_index=True)


def flow_examples(task: str, seed: int, per_hop: int = 2):
    """A few fixed test examples, ``per_hop`` of each hop count."""
    return balanced_eval_set(get_task(task), 4 * per_hop, seed=seed, split="test")


def final_analyses(run_dir: str | Path, device: str = "cpu", lengths=None, n_length: int = 500,
                   n_test: int | None = None, progress: bool = True) -> dict[str, pd.DataFrame]:
    """Test accuracy, length generalisation, geometry and flow traces of the final model of a run."""
    from .longprompts import DEFAULT_LENGTHS, length_curve
    from .tasks import TaskDataset
    from .train import evaluate

    run = Run(run_dir)
    cfg = run.config
    model = final_model(run.path, device=device)
    task = get_task(cfg.task)
    out = {}
    test = TaskDataset(task, "test", seed=cfg.seed, size=n_test).arrays()
    xt, yt, ht = (torch.from_numpy(test[k].copy()).to(device) for k in ("x", "y", "hops"))
    acc = evaluate(model, xt, yt, ht, batch_size=2000)
    out["test_accuracy"] = pd.DataFrame([{"hop": k, "accuracy": v, "n": len(xt) if k == "all" else int((ht == int(k)).sum())}
                                         for k, v in acc.items()])
    pio.atomic_write_table(run.path / "test_accuracy.csv", out["test_accuracy"])
    out["length"] = length_curve(model, cfg.task, cfg.seed, lengths or DEFAULT_LENGTHS, n=n_length, device=device,
                                 progress=progress)
    pio.atomic_write_table(run.path / "length.parquet", out["length"])
    model_cpu = model.to("cpu")
    _, x, _, _ = metric_prompts(cfg.task, cfg.seed, 40)
    out["geometry"] = geometry(model_cpu, x, layer=1 if cfg.model_config().n_layer > 1 else 0)
    pio.atomic_write_table(run.path / "geometry.parquet", out["geometry"])
    ex = flow_examples(cfg.task, cfg.seed)
    out["flow"] = flow_traces(model_cpu, ex, task.vocab)
    out["flow"].insert(0, "text", out["flow"]["example"].map({i: s.text() for i, s in enumerate(ex)}))
    pio.atomic_write_table(run.path / "flow.parquet", out["flow"])
    return out


# -----------------------------------------------------------------------------------------------
# Reading a trained model's heads on a set of prompts

@torch.no_grad()
def attention_patterns(model, samples, vocab) -> torch.Tensor:
    """Head-0 attention of every layer and query position: (N, L, T, T)."""
    x, _, _ = to_tensors(samples, vocab)
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.cfg.n_layer)]
    model.eval()
    _, cache = model.run_with_cache(x, names=names)
    return torch.stack([cache[n][:, 0] for n in names], dim=1).float()


def last_query_argmax(model, samples, vocab, batch_size: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Arg-max key position and its weight for the last query of every layer: two arrays (N, L)."""
    args, weights = [], []
    for s in range(0, len(samples), batch_size):
        p = attention_patterns(model, samples[s:s + batch_size], vocab)[:, :, -1]  # (n, L, T)
        w, a = p.max(-1)
        args.append(a.numpy())
        weights.append(w.numpy())
    return np.concatenate(args), np.concatenate(weights)


@torch.no_grad()
def scores_by_group(model, samples, vocab, layer: int, groups) -> pd.DataFrame:
    """Positional and symbolic scores and normalised entropy of ``layer``'s head per prompt, averaged within
    each value of ``groups`` (one label per sample).  Columns ``group, prompts, pos, sym, entropy_norm``."""
    import math

    from .metrics import layer_scores, residual_inputs

    x, _, _ = to_tensors(samples, vocab)
    model.eval()
    resid = residual_inputs(model, x)[layer]
    sc = layer_scores(model, layer, resid)
    df = pd.DataFrame({"group": list(groups), "pos": sc.pos[:, 0].numpy(), "sym": sc.sym[:, 0].numpy(),
                       "entropy_norm": sc.entropy[:, 0].numpy() / math.log(x.shape[1])})
    out = df.groupby("group", sort=True).agg(prompts=("pos", "size"), pos=("pos", "mean"), sym=("sym", "mean"),
                                             entropy_norm=("entropy_norm", "mean"))
    return out.reset_index()
