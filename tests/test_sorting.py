"""Tests for the list-sorting task (posym/tasks/sorting.py): every prompt checked by an independent solver.

The reference solver scans the list once for the smallest number above the query (no sorting).
"""
from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from posym.tasks import TaskDataset, get_task


def ref_sort(tokens):
    toks = list(tokens)
    assert toks[-2] == "|"
    q = int(toks[-1])
    best, where = None, None
    for p, t in enumerate(toks[:-2]):
        v = int(t)
        if v > q and (best is None or v < best):
            best, where = v, p
    assert best is not None
    return str(best), 1, (len(toks) - 1, where)


def test_registered():
    t = get_task("sorting")
    assert t.task_id == 3 and t.seq_len == 11 and t.max_hops == 1 and t.n_positions == 9
    assert t.answer_tokens == tuple(str(k) for k in range(1, 48))
    assert t.teaching_model["n_layer"] == 1 and t.teaching_model["attn_only"]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_samples_solved_by_reference(split):
    task = get_task("sorting")
    for s in TaskDataset("sorting", split, seed=2, size=1000):
        values = [int(t) for t in s.tokens[:-2]]
        assert len(set(values)) == 9 and int(s.tokens[-1]) in values
        assert ref_sort(s.tokens) == (s.answer, s.hops, s.chain) == task.solve(s.tokens)


def test_arrays_equal_samples_and_are_deterministic():
    ds = TaskDataset("sorting", "val", seed=5)
    a = ds.arrays()
    task = get_task("sorting")
    for i in range(0, 2400, 97):
        assert task.vocab.decode(a["x"][i]) == list(ds[i].tokens)
        assert task.vocab.tokens[a["y"][i]] == ds[i].answer
    again = TaskDataset("sorting", "val", seed=5).arrays()["x"]
    assert hashlib.sha256(again.tobytes()).hexdigest() == hashlib.sha256(a["x"].tobytes()).hexdigest()


def test_balance():
    task = get_task("sorting")
    a = TaskDataset("sorting", "train", seed=0, size=84_600).arrays()
    combos = Counter(zip(a["answer_pos"].tolist(), a["y"].tolist()))
    assert len(combos) == task.n_combos == 423
    assert min(combos.values()) > 120 and max(combos.values()) < 290  # 200 expected each
    # the answer's position is where the balance put it; the query's copy is anywhere else
    pos_q = np.argmax(a["x"][:, :9] == a["x"][:, -1:], axis=1)
    assert (pos_q != a["answer_pos"]).all()
    assert set(np.bincount(pos_q, minlength=9).nonzero()[0]) == set(range(9))
    # ranks of the answer in the sorted list: all of 1..8 occur
    ranks = (a["x"][:, :9] < a["y"][:, None]).sum(1)
    assert set(np.unique(ranks)) == set(range(1, 9))


def test_solver_rejects_bad_prompts(ledger):
    t = get_task("sorting")
    with ledger.raises(ValueError, match="largest"):
        t.solve("3 1 2 | 3".split())
    with ledger.raises(ValueError, match="not in the list"):
        t.solve("3 1 2 | 0".split())
    with ledger.raises(ValueError, match="repeated"):
        t.solve("3 3 2 | 2".split())
    with ledger.raises(ValueError, match="not a sorting prompt"):
        t.solve("3 1 2 4".split())
    assert t.solve("5 1 9 | 1".split()) == ("5", 1, (4, 0))
    with ledger.raises(ValueError, match="'\\|'"):
        t.check_ids(np.ones((2, 11), dtype=np.int64))


# -----------------------------------------------------------------------------
# the chapter's science (posym.chapters.sorting) on hand-made inputs

def _modes(shares):
    import pandas as pd

    rows = []
    for b, (s0, s1) in enumerate(shares):
        rows += [{"seed": 0, "step": 10, "head": 0, "kind": "bin", "bin": b, "contrib_answer": s0},
                 {"seed": 0, "step": 10, "head": 1, "kind": "bin", "bin": b, "contrib_answer": s1}]
    return pd.DataFrame(rows)


def test_splitting_index():
    from posym.chapters import sorting as ch

    split = ch.splitting(_modes([(2.0, 0.0)] * 3 + [(-1.0, 1.5)] * 3)).iloc[0]
    assert split["split_index"] == pytest.approx(1.0) and split["splits"] and split["leaders"] == "000111"
    shared = ch.splitting(_modes([(1.0, 1.0)] * 6)).iloc[0]
    assert shared["split_index"] == pytest.approx(0.5) and not shared["splits"]
    one_head = ch.splitting(_modes([(1.0, 0.0)] * 6)).iloc[0]
    assert one_head["split_index"] == pytest.approx(1.0) and not one_head["splits"]  # head 1 leads no bin


def test_head_modes_shapes_and_ablation():
    import torch

    from posym.chapters import sorting as ch
    from posym.model import GPTJ, ModelConfig

    torch.manual_seed(0)
    t = get_task("sorting")
    model = GPTJ(ModelConfig(vocab_size=len(t.vocab), n_layer=1, n_head=2, d_model=16, attn_only=True)).eval()
    a = TaskDataset("sorting", "val", size=120).arrays()
    x, y = torch.from_numpy(a["x"].copy()), torch.from_numpy(a["y"].copy())
    m = ch.head_modes(model, x, y)
    assert len(m[m["kind"] == "all"]) == 2 and len(m[m["kind"] == "bin"]) == 2 * ch.N_BINS
    # the two heads' contributions add up to the full logit minus the direct path (up to the final LayerNorm)
    with torch.no_grad():
        full = model(x)[:, -1]
        with model.hooks([("blocks.0.attn.hook_z", lambda z, _n: torch.zeros_like(z))]):
            direct = model(x)[:, -1]
    rows = torch.arange(len(x))
    total = (full - direct)[rows, y].mean().item()
    assert m[m["kind"] == "all"]["contrib_answer"].sum() == pytest.approx(total, rel=0.2)
