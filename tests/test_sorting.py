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
