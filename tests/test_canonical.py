"""Paper 1's canonical tasks (posym.canonical): generators, frequency-restricted heads, sweep, script."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from posym import canonical as C

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is fastest (and far faster than two on a shared, busy machine)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


# ---------------------------------------------------------------------------------------------
# generators: answers checked independently, row by row
# ---------------------------------------------------------------------------------------------
def test_index_answers_and_layout():
    n, length, V = 3000, 20, 16
    b = C.index_task(n, length=length, n_symbols=V, seed=1)
    x, y, p = (t.numpy() for t in b)
    assert b.x.dtype == b.y.dtype == b.answer_pos.dtype == torch.int64
    assert x.shape == (n, length) and y.shape == p.shape == (n,)
    assert (x[:, :-1] < V).all() and (x[:, -1] >= V).all() and x.max() < C.vocab_size("index", length=length,
                                                                                      n_symbols=V)
    for row, ans, pos in zip(x, y, p):
        q = int(row[-1]) - V + 1  # offset token -> offset 1..length-1
        assert 1 <= q <= length - 1
        assert pos == length - 1 - q  # q positions before the query
        assert ans == row[length - 1 - q]
    # the answer position is uniform over 0..length-2 (every position well represented)
    counts = np.bincount(p, minlength=length - 1)
    assert len(counts) == length - 1 and counts.min() > 0.7 * n / (length - 1)


def _split(x, K, V):
    return x[:, :-1] // V, x[:, :-1] % V, x[:, -1] - K * V


def test_retrieval_answers_distinct_keys():
    n, length, K, V = 2000, 13, 14, 5
    x, y, p = (t.numpy() for t in C.retrieval_task(n, length=length, n_keys=K, n_values=V, seed=2))
    assert x.shape == (n, length)
    keys, vals, qk = _split(x, K, V)
    assert (x[:, :-1] < K * V).all() and ((qk >= 0) & (qk < K)).all()
    assert (y >= K * V + K).all() and (y < C.vocab_size("retrieval", length=length, n_keys=K, n_values=V)).all()
    for i in range(n):
        assert len(set(keys[i].tolist())) == length - 1  # distinct keys
        hits = np.flatnonzero(keys[i] == qk[i])
        assert hits.tolist() == [p[i]]  # the queried key occurs exactly once, at the answer position
        assert y[i] == K * V + K + vals[i, p[i]]  # the value token bound to it
    assert np.bincount(p, minlength=length - 1).min() > 0.7 * n / (length - 1)


def test_partial_induction_most_recent_rule():
    n, length, K, V = 2000, 15, 6, 3
    x, y, p = (t.numpy() for t in C.partial_induction_task(n, length=length, n_keys=K, n_values=V, seed=3))
    keys, vals, qk = _split(x, K, V)
    n_occ = []
    for i in range(n):
        hits = np.flatnonzero(keys[i] == qk[i])
        assert len(hits) >= 2  # keys repeat: the queried key occurs at least twice
        assert hits[-1] == p[i]  # the answer is the MOST RECENT pair with that key
        assert y[i] == K * V + K + vals[i, hits[-1]]
        assert all(vals[i, j] != vals[i, hits[-1]] for j in hits[:-1])  # any earlier occurrence would be wrong
        n_occ.append(len(hits))
    assert max(n_occ) > 2  # more than two copies do occur
    assert set(np.unique(p)) == set(range(1, length - 1))


@pytest.mark.parametrize("task", C.TASKS)
def test_generators_deterministic(task, ledger):
    a, b = C.generate(task, 64, seed=5), C.generate(task, 64, seed=5)
    ledger.rerun()
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    for other in (C.generate(task, 64, seed=6), C.generate(task, 64, seed=5, stream=1)):
        assert not torch.equal(a.x, other.x)
    # a batch is a prefix-independent draw of its own: n changes nothing about determinism
    ledger.rerun()
    assert torch.equal(C.generate(task, 64, seed=5).x, a.x)


def test_bad_inputs_name_the_problem(ledger):
    with ledger.raises(ValueError, match="unknown canonical task 'copy'"):
        C.generate("copy", 4)
    with ledger.raises(ValueError, match="unknown canonical task"):
        C.sweep("copy", [0], [0], steps=1)
    with ledger.raises(ValueError, match="length"):
        C.index_task(4, length=1)
    with ledger.raises(ValueError, match="length"):
        C.retrieval_task(4, length=1)
    with ledger.raises(ValueError, match="length"):
        C.partial_induction_task(4, length=2)
    with ledger.raises(ValueError, match="n_keys"):
        C.retrieval_task(4, length=17, n_keys=8)  # 16 distinct keys needed
    with ledger.raises(ValueError, match="frequency index 32 out of range"):
        C.sweep("index", [32], [0], steps=1)
    with ledger.raises(ValueError, match="frequency index -1 out of range"):
        C.head_spec(-1, 32)
    with ledger.raises(ValueError, match="unknown frequency spec 'fast'"):
        C.head_spec("fast", 32)
    with ledger.raises(ValueError, match="unknown parameter"):
        C.generate("index", 4, n_keys=3)


# ---------------------------------------------------------------------------------------------
# frequency-restricted heads
# ---------------------------------------------------------------------------------------------
def test_head_uses_only_the_chosen_frequencies():
    s = C.Settings(d_model=16)
    cfg = C.model_config("index", 3, s)
    assert cfg.n_layer == 1 and cfg.attn_only and cfg.n_head == 1 and cfg.rotary_dim == 16
    assert cfg.freq_mask == tuple(k == 3 for k in range(8))
    cfgz = C.model_config("partial_induction", 3, C.Settings(d_model=16, zero_channel=True))
    assert [k for k, m in enumerate(cfgz.freq_mask) if m] == [3, 7]  # plus the slowest (near-zero) angle
    assert C.angles(C.Settings(d_model=16))[7] < 0.02
    assert C.head_spec(C.HeadSpec(freqs=(3,)), 8, zero_channel=True).freqs == (3, 7)
    assert C.head_spec(C.band(2, 5), 8).freqs == (2, 3, 4) and C.head_spec("2+4", 8).label == "2+4"
    nope = C.model_config("index", "nope", s)
    assert nope.rotary_dim == 0 and nope.freq_mask is None
    # the masked model's queries and keys really live in the chosen pair only
    torch.manual_seed(0)
    model = C.GPTJ(cfg).eval()
    _, cache = model.run_with_cache(C.generate("index", 4).x, names=["blocks.0.attn.hook_q", "blocks.0.attn.hook_k"])
    for t in cache.values():
        nz = (t.abs().sum(dim=(0, 1, 2)) > 0).nonzero().flatten().tolist()
        assert nz == [6, 7]


def test_tiny_sweep_schema():
    df = C.sweep("retrieval", [0, "nope"], [0, 1], steps=5, batch_size=16, eval_size=64, score_size=8,
                 warmup_steps=1)
    cols = ["task", "spec", "freq", "angle", "zero_channel", "seed", "answer_pos", "distance", "n", "accuracy",
            "chance", "acc_all", "s_pos", "s_sym", "entropy_norm", "train_loss", "train_s", "steps"]
    assert list(df.columns) == cols
    models = C.model_table(df)
    assert len(models) == 4 and set(models["spec"]) == {"0", "nope"}
    assert set(models.loc[models.spec == "nope", "freq"]) == {-1}
    assert set(models.loc[models.spec == "0", "angle"]) == {1.0}
    assert models["acc_all"].between(0, 1).all() and models["s_pos"].between(0, 1 + 1e-6).all()
    # per-position accuracies average back to the overall accuracy
    for _, g in df.groupby(["spec", "seed"]):
        assert np.isclose((g.accuracy * g.n).sum() / g.n.sum(), g.acc_all.iloc[0])
        assert g.n.sum() == 64 and (g.distance == 16 - g.answer_pos).all()
    summ = C.shape_summary(df)
    assert {"ends", "middle", "ends_minus_middle"} <= set(summ.columns) and len(summ) == 2


def test_index_needs_a_fast_frequency():
    """Paper 1: Index is solved with high frequencies; the slowest one (angle ~1e-4) cannot tell positions apart.

    Fixed seed; over seeds 0-5 the fast head reached 0.81-0.90 and the slow one 0.077-0.098 at this budget
    (measured with this exact call), so the margin below is wide.
    """
    s = C.Settings(steps=250, batch_size=64, eval_size=1024, score_size=0)
    fast = C.run_one("index", 0, 0, s)["acc_all"].iloc[0]
    slow = C.run_one("index", 31, 0, s)["acc_all"].iloc[0]
    assert slow < 0.2
    assert fast > slow + 0.4, (fast, slow)


def test_script_writes_table_and_manifest(tmp_path):
    out = tmp_path / "canon"
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "canonical_sweep.py"), "--smoke", "--tasks",
                        "partial_induction", "--freqs", "4,nope", "--seeds", "0", "--steps", "3", "--out", str(out),
                        "--quiet"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert p.returncode == 0, p.stderr
    df = pd.read_parquet(out / "sweep.parquet")
    models = C.model_table(df)
    # one angle, no RoPE, and the one angle plus the zero channel
    assert sorted(zip(models.spec, models.zero_channel)) == [("4", False), ("4+31", True), ("nope", False)]
    man = json.loads((out / "manifest.json").read_text())
    assert man["seeds"] == [0] and man["config"]["settings"]["steps"] == 3
    assert {"git_commit", "versions", "wall_time_s", "files"} <= set(man)
    assert not (out / ".sweep.partial.parquet").exists()
