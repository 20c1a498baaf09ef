"""Length generalisation (Paper 2, §3.6 and App. H).

We lengthen a prompt by prepending fresh target-window tokens *before* the target window
(:meth:`posym.tasks.Task.extend_target_window`): the instructions, the query and the answer are
unchanged, and the chain never needs the new tokens.  A model that truly follows the chain keeps its
accuracy; what breaks it is attention dispersing over more keys, and RoPE rotations it never saw.

Evaluation is batched, uses the fused attention path (no T x T matrix is materialised on CPU), and
computes only the last query's row in the final block, so 5,000-token prompts fit in a few hundred MB.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from .tasks import QUERY_POS, balanced_eval_set, get_task, to_tensors

DEFAULT_LENGTHS = (17, 25, 50, 100, 200, 300, 500, 850, 1000, 1500, 2000, 3000, 4000, 5000)


def extended_prompts(task: str, seed: int, length: int, n: int, split: str = "test"):
    """``n`` hop-balanced prompts of total ``length`` tokens (17 + prepended target-window tokens)."""
    base = QUERY_POS + 1
    if length < base:
        raise ValueError(f"length must be at least {base} (the task's own length), got {length}")
    t = get_task(task)
    samples = balanced_eval_set(t, n, seed=seed, split=split)
    rng = np.random.default_rng([seed, 104729, length])
    return [t.extend_target_window(s, length - base, rng) for s in samples]


def auto_batch(length: int, device: str, budget_tokens: int | None = None) -> int:
    """Prompts per forward pass so that one batch holds about ``budget_tokens`` tokens."""
    if budget_tokens is None:
        budget_tokens = 400_000 if str(device).startswith("cuda") else 60_000
    return max(1, budget_tokens // length)


@torch.no_grad()
def accuracy_at_length(model, task: str, seed: int, length: int, n: int = 500, device: str = "cpu",
                       batch_size: int | None = None) -> pd.DataFrame:
    """Accuracy overall and per hop for ``n`` prompts of the given length."""
    if model.cfg.max_seq_len is not None and length > model.cfg.max_seq_len:
        raise ValueError(f"length {length} exceeds the model's max_seq_len={model.cfg.max_seq_len}")
    samples = extended_prompts(task, seed, length, n)
    x, y, hops = to_tensors(samples, get_task(task).vocab)
    bs = batch_size or auto_batch(length, device)
    model.eval()
    preds = []
    for i in range(0, len(x), bs):
        preds.append(model(x[i:i + bs].to(device), last_only=True, fast=True)[:, -1].argmax(-1).cpu())
    correct = (torch.cat(preds) == y).float()
    rows = [{"length": length, "hop": "all", "accuracy": correct.mean().item(), "n": len(correct)}]
    for k in range(1, 5):
        m = hops == k
        rows.append({"length": length, "hop": str(k), "accuracy": correct[m].mean().item(), "n": int(m.sum())})
    return pd.DataFrame(rows)


def length_curve(model, task: str, seed: int, lengths=DEFAULT_LENGTHS, n: int = 500, device: str = "cpu",
                 progress: bool = False, **keys) -> pd.DataFrame:
    frames = []
    it = lengths
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(lengths, desc=f"length {task}", leave=False)
    for L in it:
        t0 = time.time()
        df = accuracy_at_length(model, task, seed, L, n=n, device=device)
        df["seconds"] = time.time() - t0
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    for k, v in keys.items():
        out.insert(0, k, v)
    return out
